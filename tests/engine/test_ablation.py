"""Ablation engine: batched sweeps equal lone runs, real SmolLM2 behaviour, criteria, mean vectors."""

from __future__ import annotations

import mlx.core as mx
import pytest

from engine.ablation import (
    expand_specs,
    mean_activations,
    run_ablation,
    run_group_batched,
    spec_interventions,
)
from engine.criteria import make_criterion
from engine.errors import InputError
from engine.generate import generate_ids
from engine.hooks import Batch, CaptureSpec, HookedModel, SiteKind
from engine.results.ablation import AblationRequest, AblationSpec, ComponentType, PromptCase


def _ids(result):
    return [o.token_ids for o in result.baseline], [[o.token_ids for o in p.outputs] for p in result.points]


def _same(a, b):
    assert [p.label for p in a.points] == [p.label for p in b.points]
    assert _ids(a) == _ids(b)
    for pa, pb in zip(a.points, b.points):
        assert [o.diverged_at for o in pa.outputs] == [o.diverged_at for o in pb.outputs]
        assert [o.passed for o in pa.outputs] == [o.passed for o in pb.outputs]


# -- batched == each ablation alone -----------------------------------------------------------
def test_smollm_sweep_batched_equals_sequential(smollm):
    req = AblationRequest(prompt="The capital of France is", criterion="Paris", layers=[0, 5, 13, 26, 29],
                          chat=False, max_tokens=6)
    batched = run_ablation(smollm, req)
    sequential = run_ablation(smollm, req, strategy="sequential")
    assert batched.strategy == "batched" and sequential.strategy == "sequential"
    _same(batched, sequential)
    # and the batch's baseline is the model's own greedy output
    hm = HookedModel(smollm)
    own = generate_ids(hm, [smollm.tokenizer.prepare(req.prompt, chat=False)], 6, stop_ids=smollm.tokenizer.eos_ids)
    assert batched.baseline[0].token_ids == own[0].ids


def test_smollm_chat_attention_sweep_batched_equals_sequential(smollm):
    req = AblationRequest(prompt="The capital of France is", criterion="Paris", layers=[3, 20],
                          component="attention", chat=True, max_tokens=4)
    batched = run_ablation(smollm, req)
    assert batched.chat_template_used
    _same(batched, run_ablation(smollm, req, strategy="sequential"))


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gemma"])
def test_tiny_every_mode_batched_equals_sequential(fixture, request):
    lm = request.getfixturevalue(fixture)
    cases = [PromptCase(prompt="one two three", expected="a"), PromptCase(prompt="hello", expected="b"),
             PromptCase(prompt="four five six", expected="c")]  # two share a length: one group of two
    for extra in ({"mode": "grid"}, {"mode": "multi", "layers": [1, 3]}, {"component": "attention", "heads": [0, 2]},
                  {"method": "mean", "reference": ["the cat sat", "on a mat"], "component": "both"},
                  {"method": "mean", "reference": ["the cat sat"], "component": "attention", "heads": [1]}):
        req = AblationRequest(prompts=cases, chat=False, max_tokens=5, **extra)
        batched = run_ablation(lm, req)
        _same(batched, run_ablation(lm, req, strategy="sequential"))
        # chunked (the TUI's live grid) gives the same again
        _same(batched, run_ablation(lm, req, chunk_size=2))


def test_row_joins_late_and_reuses_baseline(tiny_llama):
    """A row ablated at the last layer, and a row with no ablation, equal their lone runs."""
    hm = HookedModel(tiny_llama)
    ids = tiny_llama.tokenizer.encode("a b c d")
    ivs = spec_interventions(AblationSpec(layers=[3], component="mlp"), "zero", None)
    base, rows = run_group_batched(hm, [ids], [(0, ivs), (0, [])], 6)
    alone = generate_ids(hm, [ids], 6, interventions=ivs)[0]
    assert rows[0].ids == alone.ids
    assert rows[1].ids == base[0].ids == generate_ids(hm, [ids], 6)[0].ids


# -- real behaviour on SmolLM2 -----------------------------------------------------------------
def test_capital_of_france_mlp_sweep(smollm):
    req = AblationRequest(prompt="The capital of France is", criterion="Paris", component="mlp", chat=False,
                          max_tokens=3)
    r = run_ablation(smollm, req)
    assert len(r.points) == 30
    assert r.baseline[0].passed, r.baseline[0].text
    breaks = [p.label for p in r.points if not p.outputs[0].passed]
    keeps = [p.label for p in r.points if p.outputs[0].passed]
    assert breaks and keeps, (breaks, keeps)
    # pass/fail follows the text, and divergence from the baseline is reported where the answer broke
    for p in r.points:
        o = p.outputs[0]
        assert o.passed == ("Paris" in o.text)
        if not o.passed:
            assert o.diverged_at is not None
        if o.diverged_at is None:
            assert o.token_ids == r.baseline[0].token_ids
    assert set(r.causal_layers) == set(breaks)


def test_difficulty_gradient_three_arithmetic_prompts(smollm):
    cases = [PromptCase(prompt="10 * 10 =", expected="100"), PromptCase(prompt="45 * 45 =", expected="2025"),
             PromptCase(prompt="47 * 47 =", expected="2209")]
    r = run_ablation(smollm, AblationRequest(prompts=cases, layers=[20, 21], chat=False, max_tokens=5))
    assert len(r.baseline) == 3 and [p.label for p in r.points] == ["L20 mlp", "L21 mlp"]
    for outs in [r.baseline] + [p.outputs for p in r.points]:
        assert [o.prompt for o in outs] == [c.prompt for c in cases]
        for o, c in zip(outs, cases):
            assert o.passed == (c.expected in o.text)
            assert 1 <= len(o.token_ids) <= 5


# -- pieces ------------------------------------------------------------------------------------
def test_expand_and_validate(tiny_llama):
    n, h = 4, 4
    assert [s.label for s in expand_specs(AblationRequest(prompt="x", layers=[1, 2]), n, h)] == ["L1 mlp", "L2 mlp"]
    assert [s.label for s in expand_specs(AblationRequest(prompt="x", layers=[1, 2], mode="multi"), n, h)] == \
        ["L1+L2 mlp"]
    grid = expand_specs(AblationRequest(prompt="x", mode="grid"), n, h)
    assert len(grid) == 12 and {s.component for s in grid} == set(ComponentType) - {ComponentType.BLOCK}
    assert [s.label for s in expand_specs(AblationRequest(prompt="x", layers=[2], component="block"), n, h)] == \
        ["L2 block"]
    assert expand_specs(AblationRequest(prompt="x", layers=[0], component="attention", heads=[0, 3]), n, h)[0].label \
        == "L0 heads 0,3"
    # the one layer rule (engine.layer_lists): -1 is the last layer, as everywhere else
    assert [s.label for s in expand_specs(AblationRequest(prompt="x", layers=[-1]), n, h)] == [f"L{n - 1} mlp"]
    for bad in ({"layers": [4]}, {"layers": [-5]}, {"layers": [0], "heads": [1]}, {"layers": [0], "heads": [4],
                                                                                      "component": "attention"}):
        with pytest.raises(InputError):
            expand_specs(AblationRequest(prompt="x", **bad), n, h)
    with pytest.raises(InputError):
        run_ablation(tiny_llama, AblationRequest(prompt="x", method="mean", max_tokens=1))


def test_mean_activations_are_capture_means(tiny_llama):
    hm = HookedModel(tiny_llama)
    refs = [tiny_llama.tokenizer.encode(t) for t in ("the cat sat", "on the mat today")]
    sites = {(1, "mlp_out", None), (2, "attn_out", None), (2, "attn_out", 3)}
    means = mean_activations(hm, refs, sites)
    allrows = []
    for ids in refs:
        out = hm.forward(Batch.from_lists([ids]), capture=CaptureSpec(kinds=(SiteKind.mlp_out, SiteKind.attn_out)),
                         logits="none")
        allrows.append(out.captures)
    want = mx.concatenate([c["blocks.1.mlp_out"][0] for c in allrows]).mean(axis=0)
    assert mx.allclose(mx.array(means[(1, "mlp_out", None)]), want, atol=1e-5).item()
    # per-head outputs recombine, through o_proj, into the attention output the hooked forward captures
    out = hm.forward(Batch.from_lists([refs[0]]), capture=CaptureSpec(kinds=(SiteKind.attn_heads, SiteKind.attn_out)),
                     logits="none")
    z = out.captures["blocks.2.attn_heads"]
    assert z.shape == (1, len(refs[0]), tiny_llama.info.num_heads, tiny_llama.info.head_dim)
    attn = hm.blocks[2].self_attn.o_proj(z.reshape(1, z.shape[1], -1))
    assert mx.allclose(attn, out.captures["blocks.2.attn_out"], atol=1e-5).item()
    assert len(means[(2, "attn_out", 3)]) == tiny_llama.info.head_dim


def test_criteria():
    f, _ = make_criterion("function_call")
    assert f('<function_call>{"name": "get_weather"}') and f('{"name": "x", "arguments": {}}') and not f("sunny")
    f, _ = make_criterion("sorry")
    assert f("I'm sorry, I can't") and f("Unfortunately no") and not f("Paris")
    f, _ = make_criterion("refusal")
    assert f("I cannot help with that") and f("As an AI, I won't") and not f("Sure, here it is")
    f, _ = make_criterion("positive")
    assert f("What a great and lovely day") and not f("bad and terrible but good") and not f("Paris")
    f, _ = make_criterion("negative")
    assert f("bad and terrible but good") and not f("great")
    f, d = make_criterion("re:\\b20\\d\\d\\b")
    assert f("it is 2025.") and not f("12025") and "regex" in d
    f, d = make_criterion("Paris")
    assert f(" Paris.") and not f(" paris") and "Paris" in d
    with pytest.raises(InputError):
        make_criterion("re:(")


def test_mixed_component_set(tiny_llama):
    """A hand-picked set (the TUI's toggled cells): L1 mlp + L3 attention together, one row."""
    mixed = AblationSpec(layers=[1, 3], components=["mlp", "attention"])
    assert mixed.label == "L1 mlp+L3 attention"
    ivs = spec_interventions(mixed, "zero", None)
    assert [(iv.site.layer, iv.site.kind.value) for iv in ivs] == [(1, "mlp_out"), (3, "attn_out")]
    # "both" and a repeated layer give each site once
    assert len(spec_interventions(AblationSpec(layers=[2, 2], components=["both", "mlp"]), "zero", None)) == 2
    req = AblationRequest(prompts=[PromptCase(prompt="one two three", expected="a")], chat=False, max_tokens=5,
                          ablations=[mixed, AblationSpec(layers=[1], component="mlp")])
    _same(run_ablation(tiny_llama, req), run_ablation(tiny_llama, req, strategy="sequential"))
    for bad in (AblationSpec(layers=[1, 2], components=["mlp"]),
                AblationSpec(layers=[1], components=["attention"], component="attention", heads=[0])):
        with pytest.raises(InputError):
            expand_specs(AblationRequest(prompt="x", ablations=[bad]), 4, 4)
