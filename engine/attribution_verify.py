"""Attribution's own check: real activation patching of the top-K sites (``engine.patching``).

Each chosen site becomes one "replace" intervention on one row of a batch of corrupted prompts
(the clean activation written at that position; for a head, its output before the output
projection; for a neuron, the corrupt MLP hidden vector with that one neuron from the clean run),
the same machinery as ``lazarus --batch patch``. The metric of each patched row minus the
corrupted metric is the real effect the estimate approximates. Query-key (attn_pattern) estimates
are not verified (no intervention writes a pattern); they are skipped when choosing the top K.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import mlx.core as mx
import numpy as np

from engine.hooks import Intervention, Site, SiteKind
from engine.patching import patched_rows
from engine.results.attribution import VerifiedSite

if TYPE_CHECKING:
    from engine.attribution import Prepared

BATCH = 32  # patched rows per forward


def top_verifiable(est: dict[str, np.ndarray], k: int) -> list[tuple[float, str, int, int | None, int | None]]:
    """The k largest |estimate| sites that real patching can check: (estimate, site, position, head, neuron)."""
    cands: list[tuple[float, str, int, int | None, int | None]] = []
    for name, e in est.items():
        kind = SiteKind(name.split(".")[2])
        if kind == SiteKind.attn_pattern:
            continue
        flat = np.abs(e).ravel()
        keep = min(k, flat.size)
        for i in np.argpartition(-flat, keep - 1)[:keep]:
            if e.ndim == 1:
                cands.append((float(e[i]), name, int(i), None, None))
            else:
                pos, j = divmod(int(i), e.shape[1])
                head, neuron = (j, None) if kind == SiteKind.attn_heads else (None, j)
                cands.append((float(e[pos, j]), name, pos, head, neuron))
    cands.sort(key=lambda r: -abs(r[0]))
    return cands[:k]


def intervention(site: str, pos: int, head: int | None, neuron: int | None, row: int,
                 clean: dict[str, mx.array], corrupt: dict[str, mx.array]) -> Intervention:
    s = Site.parse(site)
    if s.kind == SiteKind.attn_heads:
        vec = clean[site][pos, head]
        return Intervention(site=Site(layer=s.layer, kind=SiteKind.attn_out), op="replace", head=head,
                            position=pos, row=row, vector=np.array(vec.astype(mx.float32)))
    if s.kind == SiteKind.mlp_hidden:
        hidden = np.array(corrupt[site][pos].astype(mx.float32))
        hidden[neuron] = np.array(clean[site][pos, neuron].astype(mx.float32))
        return Intervention(site=s, op="replace", position=pos, row=row, vector=hidden)
    return Intervention(site=s, op="replace", position=pos, row=row, vector=np.array(clean[site][pos].astype(mx.float32)))


def correlations(x: list[float], y: list[float]) -> tuple[float | None, float | None]:
    """(Pearson, Spearman) of two lists, None where undefined (fewer than 3 points or a constant list)."""
    from scipy.stats import pearsonr, spearmanr

    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None, None
    return float(pearsonr(x, y)[0]), float(spearmanr(x, y)[0])


def verify(p: Prepared, est: dict[str, np.ndarray], clean: dict[str, mx.array], corrupt: dict[str, mx.array],
           m_corrupt: float, k: int, cancel: Callable[[], bool] | None = None,
           progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """The fields of ``AttributeResult`` that verification fills: verified, verify_pearson, verify_spearman."""
    chosen = top_verifiable(est, k)
    rows: list[VerifiedSite] = []
    for start in range(0, len(chosen), BATCH):
        part = chosen[start:start + BATCH]
        ivs = [intervention(site, pos, head, neuron, i, clean, corrupt)
               for i, (_, site, pos, head, neuron) in enumerate(part)]
        logits = patched_rows(p.hm, p.corrupt, ivs, len(part), cancel)
        metrics = np.array(p.metric(logits[:, -1], exact=True), dtype=np.float64)
        for (e, site, pos, head, neuron), m in zip(part, metrics):
            rows.append(VerifiedSite(site=site, position=pos, head=head, neuron=neuron, estimate=e,
                                     real=float(m) - m_corrupt, patched_metric=float(m)))
        if progress is not None:
            progress(len(rows), len(chosen))
    pearson, spearman = correlations([r.estimate for r in rows], [r.real for r in rows])
    return {"verified": rows, "verify_pearson": pearson, "verify_spearman": spearman}
