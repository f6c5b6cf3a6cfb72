"""Attribution patching: gradients through the hooked forward, checked against finite differences,
against exact first order (a linear metric), and against real patching (SmolLM2)."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from mlx import nn

from engine.attribution import Prepared, attribute, estimates, gradients
from engine.errors import InputError
from engine.hooks import Batch
from engine.models import wrap_model
from engine.results.attribution import AttributeRequest
from tests.families.factory import build_tiny, tiny_tokenizer

CLEAN, CORRUPT = "The capital of France is", "The capital of Italy is"
T_CLEAN, T_CORRUPT = "The capital of Japan is", "The capital of Italy is"  # 8 tokens each in the tiny vocabulary
ALL = ["resid_pre", "resid_post", "attn_out", "mlp_out", "heads", "neurons"]
FAMILIES = ("llama", "gemma3_text", "gpt2", "qwen3_moe", "granite")  # llama-, gemma-, gpt2-like, a MoE, residual scale


@pytest.fixture(scope="module", params=FAMILIES)
def tiny(request):
    model, _ = build_tiny(request.param)
    return wrap_model(model, tiny_tokenizer(), model_id=f"tiny-{request.param}")


def _metric_at(p: Prepared, deltas: dict[str, mx.array]) -> float:
    out = p.hm.forward(Batch.from_lists([p.corrupt]), logits="last", deltas=deltas)
    return float(p.metric(out.logits[:, -1], exact=True).item())


def test_estimates_are_the_directional_derivative(tiny):
    """Every site kind: the estimate g·Δ equals the central difference of the metric along Δ
    (the site's clean - corrupt difference), measured through the same forward with deltas
    (Richardson-extrapolated: the eps² error of a random model's curvature is removed)."""
    req = AttributeRequest(clean=T_CLEAN, corrupt=T_CORRUPT, target="Tok", sites=ALL)
    p = Prepared(tiny, req)
    clean, corrupt, grads, _, m_corrupt = gradients(p)
    assert _metric_at(p, {}) == pytest.approx(m_corrupt, abs=1e-5)  # zero deltas change nothing
    est = estimates(p, clean, corrupt, grads)
    kinds = {name.split(".")[2] for name in est}
    assert {"resid_pre", "resid_post", "attn_heads", "mlp_hidden"} <= kinds
    eps = 1e-2
    checked = 0
    for name, e in est.items():
        layer = int(name.split(".")[1])
        if layer != 1:
            continue
        diff = clean[name] - corrupt[name]

        def central(h: float, name: str = name, diff: mx.array = diff) -> float:
            return (_metric_at(p, {name: (h * diff)[None]}) - _metric_at(p, {name: (-h * diff)[None]})) / (2 * h)

        fd = (4 * central(eps / 2) - central(eps)) / 3
        total = float(e.sum())  # the whole site (every position, head, neuron) moved at once
        scale = max(1.0, float(np.abs(e).sum()))
        assert total == pytest.approx(fd, abs=1e-3 * scale), name
        checked += 1
    assert checked >= 5


def test_first_order_is_exact_for_a_linear_metric():
    """Final norm removed and logit-diff read from the last block's output: the metric is linear in
    that site, so the estimate equals real patching (verify) to float32 rounding."""
    model, _ = build_tiny("llama", seed=3)
    model.model.norm = nn.Identity()
    lm = wrap_model(model, tiny_tokenizer(), model_id="tiny-llama-linear")
    last = lm.info.num_layers - 1
    req = AttributeRequest(clean=T_CLEAN, corrupt=T_CORRUPT, target="Tok", baseline="Ro", metric="logit-diff",
                           sites=["resid_post"], layers=[last], verify=10)
    r = attribute(lm, req)
    assert len(r.verified) == len(r.clean_tokens)
    scale = max(abs(v.real) for v in r.verified)
    assert scale > 1e-3  # the pair differs at this site
    for v in r.verified:
        assert v.estimate == pytest.approx(v.real, abs=1e-4 * max(1.0, scale))
    # and the whole effect: patching every position moves the corrupt metric to the clean one
    assert sum(s.estimate for s in r.sites) == pytest.approx(r.clean_metric - r.corrupt_metric, abs=1e-3)


def test_sites_and_refusals(tiny_llama):
    req = AttributeRequest(clean=T_CLEAN, corrupt=T_CORRUPT, target="Tok", sites=["resid_post", "heads"], top=7)
    r = attribute(tiny_llama, req)
    assert len(r.sites) == 7
    mags = [abs(s.estimate) for s in r.sites]
    assert mags == sorted(mags, reverse=True)
    n = len(r.clean_tokens)
    assert r.n_estimates == 4 * n + 2 * 4 * 4 * n  # resid_post, heads (output and query-key) per layer
    with pytest.raises(InputError, match="same number of tokens"):
        attribute(tiny_llama, req.model_copy(update={"corrupt": "The capital city of Italy is"}))
    with pytest.raises(InputError, match="baseline"):
        attribute(tiny_llama, req.model_copy(update={"metric": "logit-diff"}))


def test_smollm_resid_post_tracks_real_patching(smollm):
    """The issue's check: every resid_post site of France -> Italy, target ' Paris'."""
    req = AttributeRequest(clean=CLEAN, corrupt=CORRUPT, target=" Paris", sites=["resid_post"], verify=150)
    r = attribute(smollm, req)
    assert len(r.verified) == 30 * len(r.clean_tokens) == 150
    assert r.verify_spearman >= 0.8
    assert r.verify_pearson >= 0.9


def test_deltas_are_additions_at_the_site(tiny):
    """The hooked forward's ``deltas``: zeros everywhere (attention then computed in the open) give the
    model's own logits; a delta at a site equals the "add" intervention of the same vector there."""
    from engine.hooks import CaptureSpec, HookedModel, Intervention, Site, SiteKind

    hm = HookedModel(tiny)
    ids = tiny.tokenizer.prepare(T_CORRUPT, chat=False)
    batch = Batch.from_lists([ids])
    plain = hm.forward(batch, logits="all").logits
    cap = hm.forward(batch, capture=CaptureSpec(
        kinds=[k for k in (SiteKind.resid_post, SiteKind.attn_heads, SiteKind.attn_pattern, SiteKind.mlp_hidden)
               if hm.has_site(k, 1)], layers=[1]), logits="none").captures
    zeros = {n: mx.zeros_like(v) for n, v in cap.items()}
    same = hm.forward(batch, logits="all", deltas=zeros).logits
    assert float(mx.abs(same - plain).max()) <= 1e-4 * max(1.0, float(mx.abs(plain).max()))
    vec = mx.random.normal((tiny.info.hidden_size,), key=mx.random.key(7))
    by_delta = hm.forward(batch, logits="all", deltas={"blocks.1.resid_post": vec[None, None]}).logits
    by_iv = hm.forward(batch, logits="all", interventions=[
        Intervention(site=Site(layer=1, kind=SiteKind.resid_post), op="add", vector=np.array(vec))]).logits
    assert float(mx.abs(by_delta - plain).max()) > 1e-2  # the edit matters
    assert float(mx.abs(by_delta - by_iv).max()) <= 1e-5 * max(1.0, float(mx.abs(plain).max()))


def test_block_out_delta_is_the_add_intervention(tiny):
    """main's block_out site (what block L adds): a delta there equals the "add" intervention there
    (the write-back must happen for a delta too, not only for an intervention)."""
    from engine.hooks import HookedModel, Intervention, Site, SiteKind

    hm = HookedModel(tiny)
    if not hm.has_site(SiteKind.block_out, 1):
        pytest.skip("no block_out site")
    batch = Batch.from_lists([tiny.tokenizer.prepare(T_CORRUPT, chat=False)])
    plain = hm.forward(batch, logits="all").logits
    vec = mx.random.normal((tiny.info.hidden_size,), key=mx.random.key(3))
    by_delta = hm.forward(batch, logits="all", deltas={"blocks.1.block_out": vec[None, None]}).logits
    by_iv = hm.forward(batch, logits="all", interventions=[
        Intervention(site=Site(layer=1, kind=SiteKind.block_out), op="add", vector=np.array(vec))]).logits
    scale = max(1.0, float(mx.abs(plain).max()))
    assert float(mx.abs(by_delta - plain).max()) > 1e-2
    assert float(mx.abs(by_delta - by_iv).max()) <= 1e-5 * scale
