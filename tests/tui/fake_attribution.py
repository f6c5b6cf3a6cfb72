"""Canned attribution results for the FakeEngine (conftest.py): simple functions of the request.

The story the numbers tell: the differing token's residual carries the effect in early layers and
the last position's in late ones; head L4 H1 moves it (attention out at layers 3-5).
"""

from __future__ import annotations

from typing import Any

from engine.errors import InputError
from engine.results.attribution import AttentionPattern, AttributeResult, SiteEstimate, VerifiedSite

N_HEADS = 4


def tokens(text: str) -> list[str]:
    words = text.split(" ")
    return [words[0]] + [" " + w for w in words[1:]]


def _estimates(req: Any, n_layers: int, n: int, diff: int) -> list[SiteEstimate]:
    last, out = n - 1, []
    depth = [x / (n_layers - 1) for x in range(n_layers)]
    for kind in ("resid_pre", "resid_post", "attn_out", "mlp_out"):
        if kind not in req.sites:
            continue
        for layer in range(n_layers):
            for p in range(n):
                if kind.startswith("resid"):
                    v = 1.0 - depth[layer] if p == diff else depth[layer] if p == last else 0.01 * (layer - p)
                elif kind == "attn_out":
                    v = 0.2 if p == last and 3 <= layer <= 5 else 0.01 * ((layer + p) % 3 - 1)
                else:
                    v = 0.3 if p == diff and layer < 2 else 0.01 * ((layer * p) % 3 - 1)
                out.append(SiteEstimate(site=f"blocks.{layer}.{kind}", position=p, estimate=round(v, 4)))
    if "heads" in req.sites:
        for layer in range(n_layers):
            for h in range(N_HEADS):
                for p in range(n):
                    v = 0.5 if (layer, h, p) == (4, 1, last) else 0.01 * ((layer + h + p) % 3 - 1)
                    qk = 0.1 if (layer, h, p) == (4, 1, last) else 0.002 * ((layer + h) % 2)
                    out.append(SiteEstimate(site=f"blocks.{layer}.attn_heads", position=p, head=h, estimate=v))
                    out.append(SiteEstimate(site=f"blocks.{layer}.attn_pattern", position=p, head=h, estimate=qk))
    return out


def attribute(req: Any, n_layers: int) -> AttributeResult:
    clean, corrupt = tokens(req.clean), tokens(req.corrupt)
    if len(clean) != len(corrupt):
        raise InputError(f"clean and corrupt prompts must have the same number of tokens (clean {len(clean)}, "
                         f"corrupt {len(corrupt)})")
    diff = next((i for i, (a, b) in enumerate(zip(clean, corrupt, strict=True)) if a != b), len(clean) - 1)
    sites = _estimates(req, n_layers, len(clean), diff)
    n_estimates = len(sites)
    sites.sort(key=lambda s: -abs(s.estimate))
    if req.top is not None:
        sites = sites[: req.top]
    corrupt_metric, clean_metric = -4.2, -0.5
    verified = [VerifiedSite(site=s.site, position=s.position, head=s.head, neuron=s.neuron, estimate=s.estimate,
                             real=round(0.9 * s.estimate, 4), patched_metric=round(corrupt_metric + 0.9 * s.estimate, 4))
                for s in [s for s in sites if not s.site.endswith("attn_pattern")][: req.verify]]
    return AttributeResult(model_id="fake-8l", request=req, clean_tokens=clean, corrupt_tokens=corrupt,
                           target_token=req.target, baseline_token=req.baseline, clean_metric=clean_metric,
                           corrupt_metric=corrupt_metric, n_layers=n_layers, n_heads=N_HEADS, sites=sites,
                           n_estimates=n_estimates, verified=verified,
                           verify_pearson=0.99 if len(verified) >= 3 else None,
                           verify_spearman=1.0 if len(verified) >= 3 else None, seconds=0.1)


def attention(req: Any, n_layers: int) -> AttentionPattern:
    if not 0 <= req.layer < n_layers or not 0 <= req.head < N_HEADS:
        raise InputError(f"layer {req.layer} head {req.head} out of range")
    toks = tokens(req.prompt)
    weights = [[0.0 if k > q else 1.0 if q == 0 else 0.5 if k == 0 else 0.5 / q for k in range(len(toks))]
               for q in range(len(toks))]  # causal rows summing to 1, half on the first token
    return AttentionPattern(model_id="fake-8l", request=req, tokens=toks, weights=weights)
