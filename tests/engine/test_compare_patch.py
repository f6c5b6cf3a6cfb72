"""compare (same and different tokenizers) and activation patching on real models."""

from __future__ import annotations

import pytest

from engine.compare import compare
from engine.errors import InputError
from engine.lens import analyze
from engine.patching import patch
from engine.results.analyze import AnalyzeRequest
from engine.results.compare import CompareRequest
from engine.results.patch import PatchRequest

PROMPT = "The capital of France is"


def test_compare_model_with_itself(smollm):
    r = compare(smollm, smollm, CompareRequest(prompt=PROMPT, track=[" Paris"]))
    assert r.alignment == "by layer index" and r.same_tokenizer
    assert len(r.rows) == 30
    assert all(row.same_top1 and row.kl_1_2 == pytest.approx(0.0, abs=1e-6) for row in r.rows)
    assert r.final_kl == pytest.approx(0.0, abs=1e-6)
    tr = r.tracked[0]
    assert tr.emergence_model1 == tr.emergence_model2 and tr.rank_final_model1 == tr.rank_final_model2
    # the per-layer top-1 agrees with the logit lens (analyze)
    a = analyze(smollm, AnalyzeRequest(prompt=PROMPT, layer_strategy="all"))
    assert [row.top1_model1.token_id for row in r.rows] == \
        [lp.predictions[0].token_id for lp in a.layer_predictions]
    assert r.final1[0].probability == pytest.approx(a.final_prediction[0].probability, rel=1e-4)


def test_compare_quantized_kl_is_positive_and_shrinks_with_more_bits(smollm):
    from engine.models import load

    kls = {}
    for dtype in ("q4", "q8"):
        r = compare(smollm, load("smollm2-135m", dtype=dtype), CompareRequest(prompt=PROMPT))
        assert r.same_tokenizer and r.final_kl is not None
        assert all(row.kl_1_2 is not None and row.kl_1_2 >= 0 for row in r.rows)
        kls[dtype] = r.final_kl
    assert 0 < kls["q8"] < kls["q4"] < 10  # 4-bit SmolLM2-135M moves the output a lot (about 1 nat)


def test_compare_different_tokenizers_aligns_by_depth(smollm, gemma):
    r = compare(smollm, gemma, CompareRequest(prompt=PROMPT, track=[" Paris"]))
    assert not r.same_tokenizer and r.final_kl is None
    assert r.num_layers1 == 30 and r.num_layers2 == 18
    assert r.alignment.startswith("by relative depth")
    assert len(r.rows) == 30
    assert all(row.kl_1_2 is None and row.same_top1 is None for row in r.rows)
    assert r.rows[-1].layer2 == 17 and r.rows[0].layer2 == 0
    l2 = [row.layer2 for row in r.rows]
    assert l2 == sorted(l2)  # monotone in depth
    assert r.rows[14].layer2 == round(15 / 30 * 18) - 1
    assert r.tokens1 != r.tokens2 or r.tokens1  # each model's own tokenization


def test_patch_final_layer_last_position_transfers_the_answer(smollm):
    src, tgt = "The capital of France is", "The capital of Germany is"
    r = patch(smollm, PatchRequest(source=src, target=tgt, layers=[29, 0]))
    assert r.source_answer != r.target_answer
    final = next(pl for pl in r.layers if pl.layer == 29)
    assert final.source_answer_top1 and final.source_answer_rank == 1
    assert final.top[0].token == r.source_answer
    assert final.source_answer_prob == pytest.approx(r.source_top[0].probability, rel=1e-3)
    assert r.flipped_layers == [29]


def test_patch_blend_zero_is_the_clean_target(smollm):
    r = patch(smollm, PatchRequest(source="2 + 2 =", target="The capital of Germany is", layers=[5], blend=0.0))
    assert r.layers[0].target_answer_prob == pytest.approx(r.target_top[0].probability, rel=1e-4)
    assert not r.layers[0].source_answer_top1


def test_patch_all_positions_at_layer_0_gives_the_source_run(smollm):
    # same length prompts; replacing every position's layer-0 output reruns the source from layer 1
    src, tgt = "The capital of France is", "The capital of Spain is"
    r = patch(smollm, PatchRequest(source=src, target=tgt, layers=[0], position="all"))
    assert len(r.source_tokens) == len(r.target_tokens)
    assert r.layers[0].top[0].token == r.source_answer
    assert r.layers[0].source_answer_prob == pytest.approx(r.source_top[0].probability, rel=1e-3)


def test_patch_bad_input(smollm):
    with pytest.raises(InputError):
        patch(smollm, PatchRequest(source="a b c", target="a", layers=[1], position="all"))
    with pytest.raises(InputError):
        patch(smollm, PatchRequest(source="a", target="b", layers=[30]))
    with pytest.raises(InputError):
        patch(smollm, PatchRequest(source="a", target="b", layers=[1], position="7"))
