"""Layer representations: last-position layer outputs for many prompts, their cosine geometry
(``layer``) and the trailing-space check (``format-sensitivity``).

Every prompt set goes through the hooked forward as left-padded batches capturing all the
requested layers in one pass; nothing runs one forward per layer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import mlx.core as mx
import numpy as np

from engine.distributed import World
from engine.errors import InputError
from engine.hooks import Batch, CaptureSpec, HookedModel, SiteKind
from engine.layer_lists import evenly_spaced, resolve_layer_list
from engine.models import LoadedModel
from engine.results.layers import (
    AttentionTop,
    FormatLayer,
    FormatPair,
    FormatSensitivityRequest,
    FormatSensitivityResult,
    LayerRequest,
    LayerResult,
    LayerSimilarity,
)

BATCH = 16  # prompts per forward (bounds memory; all layers are captured in each pass)


def resolve_layers(layers: Sequence[int] | None, n_layers: int, step: int = 4) -> list[int]:
    """Check a layer list against the model (negative counts from the end); None → default."""
    if layers is None:
        return evenly_spaced(n_layers, step)
    if not layers:
        raise InputError("no layers selected")
    return resolve_layer_list(layers, n_layers)


def encode_prompts(lm: LoadedModel, prompts: Sequence[str], chat: bool = False) -> list[list[int]]:
    if not prompts:
        raise InputError("no prompts given")
    rows = []
    for i, p in enumerate(prompts):
        if p == "":
            raise InputError(f"prompt {i + 1} is empty")
        rows.append(lm.tokenizer.prepare(p, chat=chat))
    return rows


Progress = Callable[[int, int], None]  # (blocks done, blocks in all) of the passes over the prompts


def last_hidden(lm: LoadedModel, prompts: Sequence[str], layers: Sequence[int], *, chat: bool = False,
                kind: SiteKind = SiteKind.resid_post, cancel: Callable[[], bool] | None = None,
                interventions: Sequence = (), rows: list[list[int]] | None = None,
                progress: Progress | None = None, world: World | None = None) -> np.ndarray | None:
    """Last-position ``kind`` activations, float32 [len(layers), len(prompts), width].

    Left-padded batches of up to ``BATCH`` prompts; each batch captures every layer in one forward.
    ``interventions`` (same for every row) are applied in each pass. ``progress(done, total)`` is
    called as each block of each batch finishes.

    With an active ``world`` (a distributed launcher) the batches are shared among the ranks: each
    batch is the same rows padded to the same width as in one process, so rank 0 gets bit-identical
    activations; the other ranks get None.
    """
    hm = HookedModel(lm)
    layers = [hm.check_layer(x) for x in layers]
    rows = rows if rows is not None else encode_prompts(lm, prompts, chat)
    stop = max(layers) + 1
    if any(iv.site.layer >= stop for iv in interventions):
        stop = hm.n_layers
    starts = range(0, len(rows), BATCH)

    def batch(bi: int, per_block: bool) -> np.ndarray:  # [len(layers), rows in batch bi, width]
        part = rows[starts[bi]:starts[bi] + BATCH]
        cap = CaptureSpec(kinds=(kind,), layers=layers, positions="last")
        on_layer = None if progress is None or not per_block else (
            lambda layer, _n: progress(bi * stop + layer + 1, len(starts) * stop))
        out = hm.forward(Batch.from_lists(part, lm.tokenizer.batch_pad_id), capture=cap, interventions=interventions,
                         logits="none", stop_layer=stop, cancel=cancel, on_layer=on_layer)
        stacked = mx.stack([out.captures[f"blocks.{layer}.{kind.value}"][:, 0, :] for layer in layers])
        return np.array(stacked.astype(mx.float32))

    if world is None or not world.active:
        return np.concatenate([batch(bi, True) for bi in range(len(starts))], axis=1)
    parts: dict[int, bytes] = {}
    world.map_items(len(starts), lambda bi: batch(bi, False).tobytes(), parts.__setitem__, cancel,
                    None if progress is None else (lambda done, n: progress(done * stop, n * stop)))
    if not world.root:
        return None
    return np.concatenate([np.frombuffer(parts[bi], dtype=np.float32).reshape(
        len(layers), len(rows[starts[bi]:starts[bi] + BATCH]), -1) for bi in range(len(starts))], axis=1)


def cosine_matrix(x: np.ndarray) -> np.ndarray:
    """Cosine similarity of the rows of ``x`` [N, d] (float64; exactly 1 on the diagonal, symmetric)."""
    x = x.astype(np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    unit = x / np.maximum(norms, 1e-30)
    c = unit @ unit.T
    c = 0.5 * (c + c.T)
    np.fill_diagonal(c, 1.0)
    return np.clip(c, -1.0, 1.0)


def label_separation(cos: np.ndarray, labels: Sequence[str]) -> tuple[float | None, float | None, float | None]:
    """(mean within-label cosine over distinct pairs, mean between-label cosine, within - between)."""
    lab = np.array(labels)
    same = lab[:, None] == lab[None, :]
    off = ~np.eye(len(lab), dtype=bool)
    within = cos[same & off]
    between = cos[~same]
    w = float(within.mean()) if within.size else None
    b = float(between.mean()) if between.size else None
    return w, b, (w - b if w is not None and b is not None else None)


def silhouette(x: np.ndarray, labels: Sequence[str]) -> float | None:
    n_labels = len(set(labels))
    if n_labels < 2 or n_labels >= len(labels):
        return None
    from sklearn.metrics import silhouette_score

    return float(silhouette_score(x.astype(np.float64), list(labels), metric="cosine"))


def _attention_tops(lm: LoadedModel, rows: list[list[int]], layers: list[int], k: int = 3,
                    cancel: Callable[[], bool] | None = None) -> dict[int, list[AttentionTop]]:
    """Per layer and prompt: the top-k source tokens of the last position's attention (mean over heads)."""
    hm = HookedModel(lm)
    tok = lm.tokenizer
    res: dict[int, list[AttentionTop]] = {layer: [] for layer in layers}
    for i, ids in enumerate(rows):  # one prompt per pass: patterns are [H, S, S] per row
        cap = CaptureSpec(kinds=(SiteKind.attn_pattern,), layers=layers, positions="last")
        out = hm.forward(Batch.from_lists([ids]), capture=cap, logits="none", stop_layer=max(layers) + 1,
                         cancel=cancel)
        for layer in layers:
            pat = np.array(out.captures[f"blocks.{layer}.attn_pattern"][0, :, 0, :].astype(mx.float32)).mean(axis=0)
            top = np.argsort(-pat)[:k]
            res[layer].append(AttentionTop(prompt_index=i, tokens=[tok.piece(ids[j]) for j in top],
                                           positions=[int(j) for j in top], weights=[float(pat[j]) for j in top]))
    return res


def layer_analysis(lm: LoadedModel, req: LayerRequest, cancel: Callable[[], bool] | None = None,
                   progress: Progress | None = None, world: World | None = None) -> LayerResult | None:
    """Per layer: the N x N cosine matrix of the prompts' last-position outputs; label statistics.
    ``world``: the forward batches are shared among the ranks; rank 0 computes the rest (and the
    attention tops) and returns the result, the other ranks None."""
    if len(req.prompts) < 2:
        raise InputError("layer analysis needs at least 2 prompts (separate them with |)")
    if req.labels is not None and len(req.labels) != len(req.prompts):
        raise InputError(f"{len(req.labels)} labels for {len(req.prompts)} prompts: give one label per prompt")
    layers = resolve_layers(req.layers, lm.num_layers)
    rows = encode_prompts(lm, req.prompts, req.chat)
    acts = last_hidden(lm, req.prompts, layers, rows=rows, cancel=cancel, progress=progress, world=world)  # [L, N, d]
    if acts is None:
        return None
    attn = _attention_tops(lm, rows, layers, cancel=cancel) if req.attention else {}
    out = []
    for li, layer in enumerate(layers):
        cos = cosine_matrix(acts[li])
        w = b = sep = sil = None
        if req.labels is not None:
            w, b, sep = label_separation(cos, req.labels)
            sil = silhouette(acts[li], req.labels)
        out.append(LayerSimilarity(layer=layer, cosine=cos.tolist(), within_label=w, between_label=b,
                                   separation=sep, silhouette=sil, attention=attn.get(layer, [])))
    return LayerResult(model_id=lm.info.model_id, request=req, prompts=list(req.prompts),
                       last_tokens=[lm.tokenizer.piece(r[-1]) for r in rows], labels=req.labels, layers=out)


FORMAT_NOTE = ("The two variants end in different tokens (the with-space prompt's last token is the "
               "trailing space, or a token that contains it), so their last-position outputs are "
               "read at different tokens: a low cosine is expected and says the model sees the "
               "prompts differently at the point where it predicts the next token.")


def format_sensitivity(lm: LoadedModel, req: FormatSensitivityRequest, cancel: Callable[[], bool] | None = None,
                       progress: Progress | None = None, world: World | None = None) -> FormatSensitivityResult | None:
    """For each base prompt: ``b.rstrip() + " "`` vs ``b.rstrip()``, through the layer analysis
    (``world``: as :func:`layer_analysis`)."""
    bases = list(req.prompts)
    if not bases:
        raise InputError("no prompts given")
    stripped = [b.rstrip() for b in bases]
    for b, s in zip(bases, stripped):
        if s == "":
            raise InputError(f"prompt {b!r} is empty once trailing whitespace is removed")
    spaced = [s + " " for s in stripped]
    layers = resolve_layers(req.layers, lm.num_layers)
    prompts = spaced + stripped
    rows = encode_prompts(lm, prompts, req.chat)
    acts = last_hidden(lm, prompts, layers, rows=rows, cancel=cancel, progress=progress, world=world)  # [L, 2N, d]
    if acts is None:
        return None
    n = len(bases)
    labels = ["with space"] * n + ["without space"] * n
    pair_cos = np.empty((len(layers), n))
    layer_out = []
    for li, layer in enumerate(layers):
        cos = cosine_matrix(acts[li])
        pair_cos[li] = [cos[i, n + i] for i in range(n)]
        if n >= 2:
            w, b, sep = label_separation(cos, labels)
        else:  # one pair: no within-label pairs; separation = 1 - pair cosine (within is trivially 1)
            w, b = 1.0, float(pair_cos[li, 0])
            sep = w - b
        layer_out.append(FormatLayer(layer=layer, within_label=float(w), between_label=float(b),
                                     separation=float(sep), mean_pair_cosine=float(pair_cos[li].mean())))
    pairs = [FormatPair(base=bases[i], with_space=spaced[i], without_space=stripped[i],
                        last_token_with_space=lm.tokenizer.piece(rows[i][-1]),
                        last_token_without_space=lm.tokenizer.piece(rows[n + i][-1]),
                        cosine_by_layer={layer: float(pair_cos[li, i]) for li, layer in enumerate(layers)})
             for i in range(n)]
    return FormatSensitivityResult(model_id=lm.info.model_id, request=req, pairs=pairs, layers=layer_out,
                                   note=FORMAT_NOTE)
