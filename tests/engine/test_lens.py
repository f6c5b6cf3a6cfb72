"""The logit lens on real models: values, invariants and the original toolkit's mistakes."""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np
import pytest

from engine.errors import InputError
from engine.hooks import Batch, CaptureSpec, HookedModel
from engine.lens import analyze, fast_lens_logits, lens_distributions, select_layers
from engine.results.analyze import AnalysisResult, AnalyzeRequest, LayerStrategy

PROMPT = "The capital of France is"


def test_layer_strategies():
    assert select_layers(LayerStrategy.ALL, 30) == list(range(30))
    assert select_layers(LayerStrategy.EVENLY_SPACED, 30, 4) == [0, 4, 8, 12, 16, 20, 24, 28, 29]
    assert select_layers(LayerStrategy.FIRST_LAST, 18) == [0, 17]
    assert select_layers(LayerStrategy.CUSTOM, 18, custom=[17, 3, 3]) == [3, 17]
    with pytest.raises(InputError, match="out of range"):
        select_layers(LayerStrategy.CUSTOM, 18, custom=[18])
    with pytest.raises(InputError):
        select_layers(LayerStrategy.CUSTOM, 18, custom=[])


@pytest.fixture(scope="module")
def smollm_all(smollm):
    req = AnalyzeRequest(prompt=PROMPT, layer_strategy="all", track_tokens=[" Paris"], top_k=5)
    return analyze(smollm, req)


@pytest.mark.real_model
def test_smollm_lens_predicts_paris(smollm_all):
    r = smollm_all
    assert r.num_layers == 30 and len(r.layer_predictions) == 30
    assert r.tokens == ["The", " capital", " of", " France", " is"]
    assert r.predicted_token == " Paris"
    assert abs(r.predicted_probability - 0.773) < 0.01
    evo = r.token_evolutions[0]
    assert evo.token_id == 7042 and evo.pieces == [" Paris"]
    assert evo.emergence_layer is not None and evo.emergence_layer <= 29
    assert evo.layer_ranks[29] == 1
    # ranks over the full vocabulary: far beyond any top-100 cut-off early on
    assert evo.layer_ranks[0] > 100


@pytest.mark.real_model
def test_last_layer_lens_equals_model_output(smollm, smollm_all):
    ids = smollm.tokenizer.encode(PROMPT)
    model_logits = np.array(smollm.model(mx.array([ids]))[0, -1].astype(mx.float32), dtype=np.float64)
    # the reference distribution in float64 (MLX's CPU softmax is off by ~1e-4 here; see docs/PERFORMANCE.md)
    model_p = np.exp(model_logits - model_logits.max())
    model_p /= model_p.sum()
    hm = HookedModel(smollm)
    out = hm.forward(Batch.from_lists([ids]), capture=CaptureSpec(layers=[29], positions="last"), logits="none")
    resid = out.captures["blocks.29.resid_post"][0]
    # each float32 logit against the float64 product of the same normed residual and matrix, within
    # Higham & Mary's probabilistic bound for a float32 dot product of K terms (lambda = 1):
    # sqrt(K) * u * sum_k |h_k w_vk|. The lens's loop and the model's BLAS sum in different orders.
    hn = np.array(hm.adapter.final_norm(hm.model)(resid), dtype=np.float64)[0]
    w = np.array(hm.adapter.unembed_weight(hm.model), dtype=np.float64)
    exact = w @ hn
    tol = np.sqrt(w.shape[1]) * np.finfo(np.float32).eps * (np.abs(w) @ np.abs(hn))
    lens_logits = np.array(fast_lens_logits(hm, resid), dtype=np.float64)[0]
    for logits in (model_logits, lens_logits, np.array(lens_distributions(hm, resid)[0])[0]):
        assert (np.abs(logits - exact) <= tol).all()
    # probabilities: the float64 softmax of the lens's own logits, to float32's exp (the normaliser sums
    # float32 exponentials in float64: relative error ~ eps); the model's, within what
    # logit differences of up to 2 tol move a softmax (first order: p_t (d_t + sum_u p_u d_u))
    lens_p = np.exp(lens_logits - lens_logits.max())
    lens_p /= lens_p.sum()
    for t in smollm_all.final_prediction:
        assert abs(t.probability - lens_p[t.token_id]) <= np.finfo(np.float32).eps * lens_p[t.token_id]
        assert abs(t.probability - model_p[t.token_id]) <= model_p[t.token_id] * (2 * tol[t.token_id] + model_p @ (2 * tol))
    assert abs(smollm_all.final_entropy - float(-(lens_p * np.log(lens_p)).sum())) < 1e-5


@pytest.mark.real_model
def test_ranks_kl_and_decision_layer_match_independent_numpy(smollm, smollm_all):
    r = smollm_all
    ids = smollm.tokenizer.encode(PROMPT)
    hm = HookedModel(smollm)
    out = hm.forward(Batch.from_lists([ids]), capture=CaptureSpec(layers=[20, 21], positions="last"), logits="none")
    logits = [np.array(lens_distributions(hm, out.captures[f"blocks.{layer}.resid_post"][0])[0][0], dtype=np.float64)
              for layer in (20, 21)]
    p = [np.exp(x - x.max()) / np.exp(x - x.max()).sum() for x in logits]
    paris = 7042
    assert r.token_evolutions[0].layer_ranks[20] == int((logits[0] > logits[0][paris]).sum()) + 1
    kl = float((p[0] * (np.log(p[0]) - np.log(p[1]))).sum())
    t = [t for t in r.layer_transitions if t.from_layer == 20][0]
    assert t.to_layer == 21 and abs(t.kl_divergence - kl) < 1e-3 * max(1.0, kl)
    ent = float(-(p[0] * np.log(p[0])).sum())
    lp20 = r.layer_predictions[20]
    assert abs(lp20.entropy - ent) < 1e-3 and abs(lp20.entropy_normalized - ent / math.log(49152)) < 1e-4
    confident_same = [lp.layer_idx for lp in r.layer_predictions
                      if lp.top_token == r.predicted_token and lp.entropy_normalized < 0.3]
    assert r.decision_layer == (confident_same[0] if confident_same else None)
    assert r.max_kl_transition.kl_divergence == max(t.kl_divergence for t in r.layer_transitions)


@pytest.mark.real_model
def test_json_round_trip_and_field_names(smollm_all):
    data = smollm_all.model_dump(mode="json")
    for key in ("prompt", "tokens", "num_layers", "captured_layers", "final_prediction", "layer_predictions",
                "layer_transitions", "token_evolutions", "decision_layer", "predicted_token",
                "predicted_probability"):
        assert key in data
    assert set(data["layer_predictions"][0]) >= {"layer_idx", "predictions", "entropy", "entropy_normalized",
                                                 "is_confident"}
    assert set(data["token_evolutions"][0]) >= {"token", "token_id", "layer_probabilities", "layer_ranks",
                                                "emergence_layer"}
    again = AnalysisResult.model_validate_json(smollm_all.model_dump_json())
    assert again.token_evolutions[0].layer_ranks == smollm_all.token_evolutions[0].layer_ranks


@pytest.mark.real_model
def test_position_selector_reads_an_earlier_position(smollm):
    r = analyze(smollm, AnalyzeRequest(prompt=PROMPT, layer_strategy="first_last", position=3))
    assert r.position == 3 and r.tokens[3] == " France"
    ids = smollm.tokenizer.encode(PROMPT)
    logits = smollm.model(mx.array([ids]))[0, 3]
    assert r.final_prediction[0].token_id == int(mx.argmax(logits).item())


@pytest.mark.real_model
def test_multi_token_tracking_says_so(smollm):
    r = analyze(smollm, AnalyzeRequest(prompt=PROMPT, layer_strategy="first_last", track_tokens=[" Parisians"]))
    evo = r.token_evolutions[0]
    if len(evo.pieces) > 1:
        assert evo.note and "tracking the first" in evo.note
        assert evo.token_id == smollm.tokenizer.encode(" Parisians", add_bos=False)[0]


@pytest.mark.real_model
def test_gemma_lens(gemma):
    r = analyze(gemma, AnalyzeRequest(prompt=PROMPT, layer_strategy="all", track_tokens=[" Paris"]))
    assert r.num_layers == 18 and len(r.layer_predictions) == 18
    assert r.tokens[0] == "<bos>"
    assert " Paris" in [t.token for t in r.final_prediction[:3]]
    evo = r.token_evolutions[0]
    assert sorted(evo.layer_probabilities) == list(range(18))
    assert all(0.0 <= p <= 1.0 for p in evo.layer_probabilities.values())
    assert evo.layer_ranks[17] <= 3


def test_bad_requests(tiny_llama):
    with pytest.raises(InputError, match="empty prompt"):
        analyze(tiny_llama, AnalyzeRequest(prompt=""))
    with pytest.raises(InputError, match="tracked token is empty"):
        analyze(tiny_llama, AnalyzeRequest(prompt="x", track_tokens=[""]))
    with pytest.raises(InputError, match="out of range"):
        analyze(tiny_llama, AnalyzeRequest(prompt="x", layer_strategy="custom", custom_layers=[7]))
    with pytest.raises(InputError, match="position"):
        analyze(tiny_llama, AnalyzeRequest(prompt="x", position=5))


@pytest.mark.real_model
def test_live_rows_equal_the_final_result(smollm, smollm_all):
    seen = []
    r = analyze(smollm, AnalyzeRequest(prompt=PROMPT, layer_strategy="all", track_tokens=[" Paris"]),
                on_rows=seen.extend)
    assert [row.layer_idx for row in seen] == list(range(30))  # every layer arrives, in order
    for live, final in zip(seen, r.layer_predictions):
        assert [p.token_id for p in live.predictions] == [p.token_id for p in final.predictions]
        assert abs(live.entropy - final.entropy) < 1e-6
    for seg, one in zip(r.layer_predictions, smollm_all.layer_predictions):  # segmented vs one pass
        assert [p.token_id for p in seg.predictions] == [p.token_id for p in one.predictions]
        assert abs(seg.predictions[0].probability - one.predictions[0].probability) < 1e-5
    # the final prediction's rank per layer equals the tracked ' Paris' ranks (it is ' Paris')
    assert r.final_token_ranks == smollm_all.token_evolutions[0].layer_ranks


@pytest.mark.real_model
def test_padded_unembedding_rows_equal_the_unpadded_ones(smollm):
    """30 layers' rows go through the head padded to 32 under OpenBLAS; the values must not move."""
    from engine import blas
    from engine.lens import _row_padding

    assert _row_padding(30) == (2 if blas.state().loaded else 0) and _row_padding(5) == 0 and _row_padding(16) == 0
    ids = smollm.tokenizer.encode(PROMPT)
    hm = HookedModel(smollm)
    out = hm.forward(Batch.from_lists([ids]), capture=CaptureSpec(positions="last"), logits="none")
    resid = mx.concatenate([out.captures[f"blocks.{layer}.resid_post"][0] for layer in range(30)], axis=0)
    padded = np.array(fast_lens_logits(hm, resid))
    assert padded.shape == (30, 49152)
    one_by_one = np.concatenate([np.array(lens_distributions(hm, resid[i:i + 1])[0]) for i in range(30)])
    assert np.abs(padded - one_by_one).max() < 1e-4
