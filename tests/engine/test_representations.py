"""layer / format-sensitivity on the real SmolLM2."""

from __future__ import annotations

import numpy as np
import pytest

from engine.errors import InputError
from engine.representations import cosine_matrix, format_sensitivity, last_hidden, layer_analysis
from engine.results.layers import FormatSensitivityRequest, LayerRequest
from tests.numerics import assert_vectors_close


def test_batched_capture_matches_single_prompt_runs(smollm):
    prompts = ["Hi", "The capital of France is", "1 + 1 ="]
    layers = [0, 7, 29]
    batched = last_hidden(smollm, prompts, layers)
    assert batched.shape == (3, 3, smollm.info.hidden_size)
    for i, p in enumerate(prompts):  # padded batch vs alone: float32 rounding relative to each vector
        alone = last_hidden(smollm, [p], layers)[:, 0]
        assert_vectors_close(batched[:, i], alone, depth=smollm.info.num_layers)


def test_layer_cosine_matrix_is_symmetric_with_unit_diagonal(smollm):
    prompts = ["The cat sat on the mat", "The dog sat on the rug", "2 + 2 =", "The cat sat on the mat"]
    r = layer_analysis(smollm, LayerRequest(prompts=prompts, layers=[3, 29]))
    assert [ls.layer for ls in r.layers] == [3, 29]
    for ls in r.layers:
        c = np.array(ls.cosine)
        assert c.shape == (4, 4)
        np.testing.assert_allclose(np.diag(c), 1.0)
        np.testing.assert_allclose(c, c.T)
        assert c[0, 3] == pytest.approx(1.0, abs=1e-5)  # the same prompt twice
        assert c[0, 2] < 0.99  # a different prompt is not identical


def test_layer_labels_separation_is_within_minus_between(smollm):
    prompts = ["What is your name?", "Where is the station?", "My name is Tom.", "The station is near."]
    labels = ["q", "q", "s", "s"]
    r = layer_analysis(smollm, LayerRequest(prompts=prompts, labels=labels, layers=[10]))
    ls = r.layers[0]
    c = np.array(ls.cosine)
    within = np.mean([c[0, 1], c[2, 3]])
    between = np.mean([c[0, 2], c[0, 3], c[1, 2], c[1, 3]])
    assert ls.within_label == pytest.approx(within)
    assert ls.between_label == pytest.approx(between)
    assert ls.separation == pytest.approx(within - between)
    assert -1.0 <= ls.silhouette <= 1.0
    assert r.best_layer == 10


def test_layer_attention_weights_are_a_distribution_head(smollm):
    r = layer_analysis(smollm, LayerRequest(prompts=["The cat sat", "A dog ran far"], layers=[1], attention=True))
    tops = r.layers[0].attention
    assert len(tops) == 2
    assert all(0 < w <= 1 for at in tops for w in at.weights)
    assert sum(tops[0].weights) <= 1 + 1e-5


def test_layer_bad_input(smollm):
    with pytest.raises(InputError):
        layer_analysis(smollm, LayerRequest(prompts=["a", "b"], layers=[30]))
    with pytest.raises(InputError):
        layer_analysis(smollm, LayerRequest(prompts=["a", "b"], labels=["x"], layers=[1]))
    with pytest.raises(InputError):
        layer_analysis(smollm, LayerRequest(prompts=["a"], layers=[1]))


def test_cosine_matrix_orthogonal_rows():
    c = cosine_matrix(np.array([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]]))
    np.testing.assert_allclose(c, [[1, 0, -1], [0, 1, 0], [-1, 0, 1]], atol=1e-12)


def test_format_sensitivity_trailing_space_changes_last_token(smollm):
    r = format_sensitivity(smollm, FormatSensitivityRequest(prompts=["156 + 287 =", "50 + 25 = "], layers=[0, 29]))
    assert [p.with_space for p in r.pairs] == ["156 + 287 = ", "50 + 25 = "]
    assert [p.without_space for p in r.pairs] == ["156 + 287 =", "50 + 25 ="]
    for p in r.pairs:
        assert p.last_token_with_space != p.last_token_without_space
        assert all(-1 <= c < 0.999 for c in p.cosine_by_layer.values())
    for fl in r.layers:
        assert fl.separation == pytest.approx(fl.within_label - fl.between_label)
        assert fl.mean_pair_cosine == pytest.approx(np.mean([p.cosine_by_layer[fl.layer] for p in r.pairs]))
    assert "different tokens" in r.note
