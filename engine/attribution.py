"""Attribution patching (AtP, with AtP*'s attention fix): every site's effect from one backward pass.

The question per site s: how much does the metric (read at the corrupted prompt's last position)
change when s's activation is taken from the clean run? First order: ∂metric/∂a_s · (a_s^clean −
a_s^corrupt), with the gradient at the corrupted run. Two forward passes (clean: capture; corrupt:
capture, with a zero ``delta`` added at every site) and one backward pass (``mx.value_and_grad``
with respect to the deltas), all through the one hooked forward (``engine.hooks``).

Site kinds (``--sites`` groups): resid_pre, resid_post, attn_out, mlp_out (per layer, position);
``heads``: ``attn_heads`` (a head's output before the output projection, per layer, position,
head) and ``attn_pattern`` (AtP*: the head's query-key part, per query position; see below);
``neurons``: ``mlp_hidden`` (the down projection's input, per layer, position, neuron).

AtP* (Kramár et al. 2024): the gradient through a saturated attention softmax is ~0 although
patching the queries/keys changes the pattern a lot. So the query-key part is not linearised
through the softmax: the pattern the head would have with clean queries and keys is computed
exactly (with both from the clean run it is the clean run's pattern row) and only what follows the
pattern is linear: Σ_k ∂metric/∂A[h,p,k] · (A^clean − A^corrupt)[h,p,k].
"""

from __future__ import annotations

import time
from collections.abc import Callable

import mlx.core as mx
import numpy as np

from engine.distributions import logsumexp_exact
from engine.errors import InputError
from engine.hooks import Batch, CaptureSpec, HookedModel, SiteKind
from engine.models import LoadedModel
from engine.results.attribution import (
    SITE_GROUPS,
    AttentionPattern,
    AttentionRequest,
    AttributeRequest,
    AttributeResult,
    SiteEstimate,
)

GROUP_KINDS: dict[str, tuple[SiteKind, ...]] = {
    "resid_pre": (SiteKind.resid_pre,), "resid_post": (SiteKind.resid_post,), "attn_out": (SiteKind.attn_out,),
    "mlp_out": (SiteKind.mlp_out,), "heads": (SiteKind.attn_heads, SiteKind.attn_pattern),
    "neurons": (SiteKind.mlp_hidden,),
}
VERIFIABLE = {SiteKind.resid_pre, SiteKind.resid_post, SiteKind.attn_out, SiteKind.mlp_out, SiteKind.attn_heads,
              SiteKind.mlp_hidden}


def parse_sites(text: str) -> list[str]:
    """``resid_post,heads`` -> the site groups, checked (one place for both doors)."""
    groups = [s.strip() for s in text.split(",") if s.strip()]
    bad = [g for g in groups if g not in SITE_GROUPS]
    if bad or not groups:
        raise InputError(f"bad --sites {text!r}: choose from {','.join(SITE_GROUPS)}")
    return list(dict.fromkeys(groups))


def metric_fn(req: AttributeRequest, target: int, baseline: int | None) -> Callable[..., mx.array]:
    """``metric(logits [B, vocab], exact=False)`` -> the metric per row (float32). Differentiable; with
    ``exact`` the normaliser is accumulated in float64 (``engine.distributions.logsumexp_exact``: MLX's float32
    reduction over a vocabulary drifts by ~1e-4), for the values reported."""
    def metric(logits: mx.array, exact: bool = False) -> mx.array:
        lg = logits.astype(mx.float32)
        if req.metric == "logit-diff":
            return lg[:, target] - lg[:, baseline]
        lse = logsumexp_exact(lg)[:, 0] if exact else mx.logsumexp(lg, axis=-1)
        lp = lg[:, target] - lse
        return mx.exp(lp) if req.metric == "prob" else lp
    return metric


class Prepared:
    """What attribution and its verification share: tokens, ids, the hooked model, the sites."""

    def __init__(self, lm: LoadedModel, req: AttributeRequest) -> None:
        if not req.clean or not req.corrupt:
            raise InputError("clean and corrupt prompts must not be empty")
        tok = lm.tokenizer
        self.hm = hm = HookedModel(lm)
        self.clean = tok.prepare(req.clean, chat=req.chat)
        self.corrupt = tok.prepare(req.corrupt, chat=req.chat)
        if len(self.clean) != len(self.corrupt):
            raise InputError(f"clean and corrupt prompts must have the same number of tokens (clean "
                             f"{len(self.clean)}, corrupt {len(self.corrupt)}): change a word for one of equal "
                             "token length")
        self.notes: list[str] = []
        self.target, ids = tok.lookup(req.target)
        if len(ids) > 1:
            self.notes.append(f"target {req.target!r} is {len(ids)} tokens; the metric uses the first")
        self.baseline = None
        if req.metric == "logit-diff":
            if req.baseline is None:
                raise InputError("--metric logit-diff needs --baseline TOKEN")
            self.baseline, bids = tok.lookup(req.baseline)
            if len(bids) > 1:
                self.notes.append(f"baseline {req.baseline!r} is {len(bids)} tokens; the metric uses the first")
        self.layers = (list(range(hm.n_layers)) if req.layers is None else
                       sorted({hm.check_layer(x) for x in req.layers}))
        groups = req.sites
        bad = [g for g in groups if g not in SITE_GROUPS]
        if bad or not groups:
            raise InputError(f"bad sites {groups}: choose from {','.join(SITE_GROUPS)}")
        self.keys: list[tuple[int, SiteKind]] = []
        for g in groups:
            for kind in GROUP_KINDS[g]:
                have = [layer for layer in self.layers if hm.has_site(kind, layer)]
                if len(have) < len(self.layers):
                    self.notes.append(f"{lm.adapter.model_type} has no {kind.value} site at "
                                      f"{len(self.layers) - len(have)} of the chosen layers (skipped)")
                self.keys += [(layer, kind) for layer in have]
        if not self.keys:
            raise InputError("no sites to attribute: this family has none of the chosen kinds")
        self.metric = metric_fn(req, self.target, self.baseline)
        self.kinds = sorted({k for _, k in self.keys}, key=lambda k: k.value)
        self.capture = CaptureSpec(kinds=self.kinds, layers=sorted({layer for layer, _ in self.keys}), positions="all")


def gradients(p: Prepared, cancel: Callable[[], bool] | None = None
              ) -> tuple[dict[str, mx.array], dict[str, mx.array], dict[str, mx.array], float, float]:
    """(clean activations, corrupt activations, gradients at the corrupt run, clean metric, corrupt metric);
    every dict keyed by site name, arrays without the batch axis."""
    hm = p.hm
    c_out = hm.forward(Batch.from_lists([p.clean]), capture=p.capture, logits="last", cancel=cancel)
    clean = c_out.captures
    names = [f"blocks.{layer}.{kind.value}" for layer, kind in p.keys]
    zeros = {n: mx.zeros(clean[n].shape, clean[n].dtype) for n in names}
    batch = Batch.from_lists([p.corrupt])

    def run(deltas: dict[str, mx.array]) -> tuple[mx.array, dict[str, mx.array], mx.array]:
        out = hm.forward(batch, capture=p.capture, logits="last", cancel=cancel, deltas=deltas)
        assert out.logits is not None
        return p.metric(out.logits[:, -1]).sum(), out.captures, out.logits[:, -1]

    (_, corrupt, logits), grads = mx.value_and_grad(run)(zeros)
    clean_metric = p.metric(c_out.logits[:, -1], exact=True)[0]  # type: ignore[index]
    corrupt_metric = p.metric(mx.stop_gradient(logits), exact=True)[0]
    mx.eval(clean_metric, corrupt_metric, grads, corrupt, clean)
    return ({n: clean[n][0] for n in names}, {n: corrupt[n][0] for n in names}, {n: grads[n][0] for n in names},
            float(np.array(clean_metric)), float(np.array(corrupt_metric)))


def estimates(p: Prepared, clean: dict[str, mx.array], corrupt: dict[str, mx.array], grads: dict[str, mx.array]
              ) -> dict[str, np.ndarray]:
    """site name -> estimates: [S] (residual kinds), [S, heads] (attn_heads, attn_pattern by query
    position), [S, neurons] (mlp_hidden)."""
    out = {}
    for layer, kind in p.keys:
        n = f"blocks.{layer}.{kind.value}"
        prod = grads[n].astype(mx.float32) * (clean[n].astype(mx.float32) - corrupt[n].astype(mx.float32))
        if kind == SiteKind.attn_pattern:  # [H, S, K] -> [S, H]
            e = prod.sum(axis=-1).T
        elif kind in (SiteKind.attn_heads,):  # [S, H, Dh] -> [S, H]
            e = prod.sum(axis=-1)
        elif kind == SiteKind.mlp_hidden:  # [S, I]
            e = prod
        else:  # [S, d] -> [S]
            e = prod.sum(axis=-1)
        out[n] = np.array(e, dtype=np.float64)
    return out


def site_rows(est: dict[str, np.ndarray], req: AttributeRequest) -> tuple[list[SiteEstimate], int]:
    """Every estimate as a row, largest |estimate| first, cut to ``top`` (neurons to ``max_neurons``)."""
    rows: list[tuple[float, str, int, int | None, int | None]] = []
    neurons: list[tuple[float, str, int, int | None, int | None]] = []
    total = 0
    for name, e in est.items():
        total += e.size
        if e.ndim == 1:
            rows += [(float(v), name, pos, None, None) for pos, v in enumerate(e)]
        elif name.endswith(SiteKind.mlp_hidden.value):
            keep = min(e.size, req.top or req.max_neurons)
            flat = np.argpartition(-np.abs(e).ravel(), keep - 1)[:keep]
            neurons += [(float(e.flat[i]), name, int(i // e.shape[1]), None, int(i % e.shape[1])) for i in flat]
        else:
            rows += [(float(e[pos, h]), name, pos, h, None) for pos in range(e.shape[0]) for h in range(e.shape[1])]
    if neurons:
        neurons.sort(key=lambda r: -abs(r[0]))
        rows += neurons[:req.top or req.max_neurons]
    rows.sort(key=lambda r: -abs(r[0]))
    if req.top is not None:
        rows = rows[:req.top]
    return [SiteEstimate(site=n, position=pos, head=h, neuron=nn, estimate=v) for v, n, pos, h, nn in rows], total


def attribute(lm: LoadedModel, req: AttributeRequest, cancel: Callable[[], bool] | None = None,
              progress: Callable[[int, int], None] | None = None) -> AttributeResult:
    """Attribution patching of ``req`` on ``lm`` (see the module doc); ``req.verify`` > 0 also patches the
    top sites for real (``engine.attribution_verify``), calling ``progress(done, total)`` per batch."""
    t0 = time.perf_counter()
    p = Prepared(lm, req)
    clean, corrupt, grads, m_clean, m_corrupt = gradients(p, cancel)
    est = estimates(p, clean, corrupt, grads)
    rows, total = site_rows(est, req)
    seconds = time.perf_counter() - t0
    tok = lm.tokenizer
    extra = {}
    if req.verify:
        from engine.attribution_verify import verify

        extra = verify(p, est, clean, corrupt, m_corrupt, req.verify, cancel, progress)
    return AttributeResult(model_id=lm.info.model_id, request=req, clean_tokens=tok.pieces(p.clean),
                           corrupt_tokens=tok.pieces(p.corrupt), target_token=tok.piece(p.target),
                           baseline_token=None if p.baseline is None else tok.piece(p.baseline),
                           clean_metric=m_clean, corrupt_metric=m_corrupt, n_layers=p.hm.n_layers,
                           n_heads=p.hm.n_heads, sites=rows, n_estimates=total, seconds=seconds,
                           notes=p.notes, **extra)


def attention_pattern(lm: LoadedModel, req: AttentionRequest) -> AttentionPattern:
    """One head's attention probabilities on one prompt, captured by the hooked forward."""
    hm = HookedModel(lm)
    layer = hm.check_layer(req.layer)
    if not hm.has_site(SiteKind.attn_pattern, layer):
        raise InputError(f"{lm.adapter.model_type} has no attention pattern at layer {layer}")
    if req.head >= hm.n_heads:
        raise InputError(f"head {req.head} out of range (0-{hm.n_heads - 1})")
    ids = lm.tokenizer.prepare(req.prompt, chat=req.chat)
    out = hm.forward(Batch.from_lists([ids]), capture=CaptureSpec(kinds=(SiteKind.attn_pattern,), layers=[layer]),
                     logits="none")
    probs = out.captures[f"blocks.{layer}.attn_pattern"][0, req.head].astype(mx.float32)
    return AttentionPattern(model_id=lm.info.model_id, request=req, tokens=lm.tokenizer.pieces(ids),
                            weights=np.array(probs, dtype=np.float64).tolist())
