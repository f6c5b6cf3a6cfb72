"""weight-diff / activation-diff on SmolLM2 float32 vs itself and vs its q4 re-quantization (the refusals
against a tiny random Gemma: another architecture and another tokenizer)."""

from __future__ import annotations

import pytest

from engine.diff import activation_diff, weight_diff
from engine.errors import InputError
from engine.results.diff import ActivationDiffRequest, WeightDiffRequest


@pytest.fixture(scope="module")
def smollm_copy():
    from engine.models import load

    return load("smollm2-135m")  # a separately loaded copy (every load is its own)


@pytest.fixture(scope="module")
def smollm_q4():
    from engine.models import load

    return load("smollm2-135m", dtype="q4")


def test_weight_diff_against_itself_is_exactly_zero(smollm, smollm_copy):
    assert smollm.model is not smollm_copy.model
    r = weight_diff(smollm, smollm_copy, WeightDiffRequest())
    assert len(r.matrices) == 30 * 9 + 2  # 7 linears + 2 norms per layer, embedding, final norm
    assert all(m.diff_norm == 0.0 and m.relative == 0.0 for m in r.matrices)
    assert r.max_relative == 0.0 and r.flagged_count == 0


def test_weight_diff_q4_is_small_but_not_zero(smollm, smollm_q4):
    r = weight_diff(smollm, smollm_q4, WeightDiffRequest())
    linears = [m for m in r.matrices if m.matrix in ("q", "k", "v", "o", "gate", "up", "down", "embedding")]
    norms = [m for m in r.matrices if m.matrix.endswith("norm")]
    assert len(linears) == 30 * 7 + 1
    assert all(0.01 < m.relative < 0.2 for m in linears)  # 4-bit rounding error, ~10%
    assert all(m.relative == 0.0 for m in norms)  # norms are not quantized
    q0 = next(m for m in r.matrices if m.layer == 0 and m.matrix == "q")
    assert q0.shape == [576, 576]
    assert q0.relative == pytest.approx(q0.diff_norm / q0.base_norm)
    assert r.flagged_count == sum(m.relative > 0.1 for m in r.matrices)


def test_weight_diff_refuses_other_architecture(smollm, tiny_gemma):
    with pytest.raises(InputError, match="same architecture"):
        weight_diff(smollm, tiny_gemma, WeightDiffRequest())


def test_activation_diff(smollm, smollm_copy, smollm_q4, tiny_gemma):
    prompts = ["The capital of France is", "2 + 2 ="]
    same = activation_diff(smollm, smollm_copy, ActivationDiffRequest(prompts=prompts, layers=[0, 29]))
    assert all(c == pytest.approx(1.0, abs=1e-6) for p in same.prompts for c in p.cosine_by_layer.values())
    q4 = activation_diff(smollm, smollm_q4, ActivationDiffRequest(prompts=prompts, layers=[0, 15, 29]))
    assert q4.layers == [0, 15, 29]
    for p in q4.prompts:
        assert all(0.8 < c < 0.99999 for c in p.cosine_by_layer.values())
        assert all(r > 0 for r in p.relative_l2_by_layer.values())
    with pytest.raises(InputError, match="same tokenizer"):
        activation_diff(smollm, tiny_gemma, ActivationDiffRequest(prompts=prompts))
