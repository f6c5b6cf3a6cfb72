"""Activation steering: extraction, files, scaling, batched sweeps, the batch command, the docs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

import engine  # noqa: F401  (BLAS before mlx)
from engine.errors import InputError
from engine.generate import generate_ids
from engine.hooks import Batch, CaptureSpec, HookedModel
from engine.results.steering import SteerRequest
from engine.steering import (
    SteeringDirection,
    prompt_scale,
    run_steer,
    score_criterion,
    steer_generate,
)
from tests.numerics import assert_vectors_close

DATA = Path(__file__).resolve().parents[1] / "data"
POS = (DATA / "steering_positive.txt").read_text().splitlines()
NEG = (DATA / "steering_negative.txt").read_text().splitlines()
DOC = Path(__file__).resolve().parents[2] / "docs" / "steering.md"


def _last_state(lm, prompt: str, layer: int, chat: bool = False) -> np.ndarray:
    """Layer output at the last token of one prompt, run alone (no padding)."""
    hm = HookedModel(lm)
    ids = lm.tokenizer.prepare(prompt, chat)
    out = hm.forward(Batch.from_lists([ids]), capture=CaptureSpec(layers=[layer]), logits="none")
    return np.array(out.captures[f"blocks.{layer}.resid_post"])[0, -1].astype(np.float64)


# -- extraction -------------------------------------------------------------------------------
def test_mean_direction_equals_mean_of_pair_differences(tiny_llama):
    pos = ["I love it so much", "great", "What a wonderful day it is today"]
    neg = ["I hate it", "terrible and awful", "What a bad day"]
    d = SteeringDirection.extract(tiny_llama, pos, neg, layer=2, chat=False)
    manual = np.mean([_last_state(tiny_llama, p, 2) - _last_state(tiny_llama, n, 2) for p, n in zip(pos, neg)], axis=0)
    np.testing.assert_allclose(d.direction, manual, rtol=1e-4, atol=1e-5)
    assert d.layer == 2 and d.method == "mean" and d.hidden_size == 64
    assert d.norm == pytest.approx(float(np.linalg.norm(manual)), rel=1e-5)
    # every layer was extracted in the same forward
    assert sorted(d.per_layer) == [0, 1, 2, 3]
    np.testing.assert_allclose(d.per_layer[2], d.direction)
    m0 = np.mean([_last_state(tiny_llama, p, 0) - _last_state(tiny_llama, n, 0) for p, n in zip(pos, neg)], axis=0)
    np.testing.assert_allclose(d.per_layer[0], m0, rtol=1e-4, atol=1e-5)
    assert [s.layer for s in d.layer_separation] == [0, 1, 2, 3]
    assert all(s.consistency is not None for s in d.layer_separation)


def test_pca_direction_is_first_axis_with_positive_sign(tiny_llama):
    pos = ["I love it so much", "great", "What a wonderful day it is today", "yes"]
    neg = ["I hate it", "terrible and awful", "What a bad day", "no"]
    d = SteeringDirection.extract(tiny_llama, pos, neg, layer=3, method="pca", chat=False)
    diffs = np.stack([_last_state(tiny_llama, p, 3) - _last_state(tiny_llama, n, 3) for p, n in zip(pos, neg)])
    _, _, vt = np.linalg.svd(diffs, full_matrices=False)
    u = d.unit()
    assert abs(float(u @ vt[0])) == pytest.approx(1.0, abs=1e-4)
    assert float((diffs @ u).mean()) > 0  # positives project higher
    assert d.norm == pytest.approx(float((diffs @ u).mean()), rel=1e-4)
    # with one pair the axis is the difference itself
    one = SteeringDirection.extract(tiny_llama, pos[:1], neg[:1], layer=3, method="pca", chat=False)
    diff = diffs[0]
    np.testing.assert_allclose(one.unit(), diff / np.linalg.norm(diff), atol=1e-4)


def test_extract_input_errors(tiny_llama):
    with pytest.raises(InputError, match="pair up"):
        SteeringDirection.extract(tiny_llama, ["a", "b"], ["c"], layer=1, chat=False)
    with pytest.raises(InputError, match="out of range"):
        SteeringDirection.extract(tiny_llama, ["a"], ["c"], layer=9, chat=False)
    with pytest.raises(InputError, match="zero"):
        SteeringDirection.extract(tiny_llama, ["same"], ["same"], layer=1, chat=False)
    with pytest.raises(InputError, match="method"):
        SteeringDirection.extract(tiny_llama, ["a"], ["b"], layer=1, method="lda", chat=False)


# -- files ------------------------------------------------------------------------------------
def test_npz_round_trip(tiny_llama, tmp_path):
    d = SteeringDirection.extract(tiny_llama, ["good day", "nice"], ["bad day", "awful"], layer=1, chat=False,
                                  name="mood", positive_label="happy", negative_label="sad")
    path = d.save(tmp_path / "mood")  # .npz appended
    assert path.name == "mood.npz"
    with np.load(path, allow_pickle=False) as z:
        keys = set(z.files)
        assert {"direction", "layer", "model_id", "method", "norm", "positive_prompts", "negative_prompts",
                "hidden_size", "labels", "name"} <= keys
        assert z["direction"].dtype == np.float32 and z["direction"].shape == (64,)
        assert int(z["layer"]) == 1 and str(z["model_id"]) == "tiny-llama"
        assert list(z["positive_prompts"]) == ["good day", "nice"]
    back = SteeringDirection.load(path, tiny_llama)
    np.testing.assert_allclose(back.direction, d.direction.astype(np.float32), rtol=1e-6)
    assert (back.layer, back.model_id, back.method, back.name) == (1, "tiny-llama", "mean", "mood")
    assert back.positive_prompts == ["good day", "nice"] and back.negative_prompts == ["bad day", "awful"]
    assert (back.positive_label, back.negative_label) == ("happy", "sad")
    assert back.norm == pytest.approx(d.norm, rel=1e-6)
    assert back.chat is False and back.source == "file"
    assert [round(s.separation, 6) for s in back.layer_separation] == [round(s.separation, 6) for s in d.layer_separation]


def test_other_hidden_size_is_refused_in_one_line(tiny_llama, tmp_path):
    path = SteeringDirection(np.ones(640), layer=5, model_id="gemma3-270m").save(tmp_path / "g.npz")
    with pytest.raises(InputError) as exc:
        SteeringDirection.load(path, tiny_llama)
    msg = str(exc.value)
    assert "\n" not in msg and "640" in msg and "64" in msg
    req = SteerRequest(prompts=["hi"], coefficients=[1.0], direction_file=str(path), chat=False, max_tokens=2)
    with pytest.raises(InputError, match="hidden size 640"):
        run_steer(tiny_llama, req)


@pytest.mark.real_model
def test_batch_command_refuses_other_hidden_size(tmp_path, capsys):
    from lazarus_tui.batch import dispatch

    path = SteeringDirection(np.ones(640), layer=5, model_id="gemma3-270m").save(tmp_path / "g.npz")
    rc = dispatch(["steer", "-d", str(path), "-p", "hello", "--compare", "-1,0,1", "-n", "2"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and "hidden size 640" in err and "576" in err


# -- application ------------------------------------------------------------------------------
def test_scale_is_mean_token_norm_without_position_zero(tiny_llama):
    hm = HookedModel(tiny_llama)
    rows = [tiny_llama.tokenizer.encode("The weather is nice today"), tiny_llama.tokenizer.encode("Hi")]
    s = prompt_scale(hm, rows, [1, 3])
    for r, ids in enumerate(rows):
        out = hm.forward(Batch.from_lists([ids]), capture=CaptureSpec(layers=[1, 3]), logits="none")
        for i, lay in enumerate([1, 3]):
            norms = np.linalg.norm(np.array(out.captures[f"blocks.{lay}.resid_post"])[0], axis=-1)
            expected = norms[1:].mean() if len(ids) > 1 else norms[0]  # a one-token prompt uses its token
            assert s[i, r] == pytest.approx(float(expected), rel=1e-4)
    assert len(rows[1]) == 1


def test_added_vector_is_coef_times_s_times_unit(tiny_llama):
    """The steered layer output minus the clean one is coef * s * unit at every prompt position."""
    from engine.hooks import Intervention, Site, SiteKind

    d = SteeringDirection.extract(tiny_llama, ["good"], ["bad"], layer=2, chat=False)
    res = steer_generate(tiny_llama, "The weather is", d, [0.7], max_tokens=1, chat=False)
    o = res.outputs[0]
    ids = tiny_llama.tokenizer.encode("The weather is")
    hm = HookedModel(tiny_llama)
    s = prompt_scale(hm, [ids], [2])[0, 0]
    assert o.scale == pytest.approx(s, rel=1e-6) and o.added_norm == pytest.approx(0.7 * s, rel=1e-6)
    iv = Intervention(site=Site(layer=2, kind=SiteKind.resid_post), op="add", vector=d.unit().tolist(), factor=0.7 * s)
    clean = hm.forward(Batch.from_lists([ids]), capture=CaptureSpec(layers=[2]), logits="none")
    steered = hm.forward(Batch.from_lists([ids]), capture=CaptureSpec(layers=[2]), interventions=[iv], logits="none")
    delta = np.array(steered.captures["blocks.2.resid_post"] - clean.captures["blocks.2.resid_post"])[0]
    # a difference of two residuals: rounding relative to the residual's size, not the delta's
    assert_vectors_close(delta, np.tile(0.7 * s * d.unit(), (len(ids), 1)), depth=3,
                         scale=np.array(clean.captures["blocks.2.resid_post"])[0])


def test_zero_coefficient_is_exactly_unsteered(tiny_llama):
    d = SteeringDirection.extract(tiny_llama, ["good"], ["bad"], layer=1, chat=False)
    res = steer_generate(tiny_llama, "Once upon a time", d, [-3.0, 0.0, 3.0], max_tokens=8, chat=False)
    plain = generate_ids(HookedModel(tiny_llama), [tiny_llama.tokenizer.encode("Once upon a time")], 8,
                         stop_ids=tiny_llama.tokenizer.eos_ids)[0]
    zero = res.outputs[1]
    assert zero.coefficient == 0.0 and zero.token_ids == plain.ids[:len(zero.token_ids)]
    assert zero.diverged_at is None
    assert res.outputs[0].token_ids != zero.token_ids or res.outputs[2].token_ids != zero.token_ids


def test_batched_grid_equals_one_at_a_time(tiny_llama):
    d = SteeringDirection.extract(tiny_llama, ["good day", "nice"], ["bad day", "awful"], layer=1, chat=False)
    kw = dict(coefficients=[-2.0, -1.0, 0.0, 1.0, 2.0], layers=[1, 3], max_tokens=10, chat=False,
              criterion="the")
    batched = steer_generate(tiny_llama, ["Once upon a time", "The cat"], d, batched=True, **kw)
    single = steer_generate(tiny_llama, ["Once upon a time", "The cat"], d, batched=False, **kw)
    assert len(batched.outputs) == 2 * 2 * 5
    for a, b in zip(batched.outputs, single.outputs):
        assert (a.prompt, a.layer, a.coefficient) == (b.prompt, b.layer, b.coefficient)
        assert a.token_ids == b.token_ids and a.text == b.text
        assert a.scale == pytest.approx(b.scale, rel=1e-5)
        assert a.projection == pytest.approx(b.projection, rel=1e-3, abs=1e-3)
        assert a.criterion == b.criterion
    # the layer grid used each layer's own extracted direction
    assert {o.layer for o in batched.outputs} == {1, 3}
    assert len({round(o.scale, 4) for o in batched.outputs}) == 4  # per prompt and layer
    # different settings really produce different text
    assert len({tuple(o.token_ids) for o in batched.outputs}) > 4


def test_layer_override_and_neuron(tiny_llama, tmp_path):
    d = SteeringDirection.extract(tiny_llama, ["good"], ["bad"], layer=1, chat=False)
    path = d.save(tmp_path / "d.npz")
    req = SteerRequest(prompts=["Hello there"], coefficients=[1.0], layers=[3], direction_file=str(path),
                       chat=False, max_tokens=3)
    res = run_steer(tiny_llama, req)
    assert res.outputs[0].layer == 3 and res.direction.layer == 3
    res = run_steer(tiny_llama, req.model_copy(update={"layers": None}))
    assert res.outputs[0].layer == 1
    n = SteeringDirection.neuron(tiny_llama, 7, layer=2)
    assert n.unit()[7] == 1.0 and np.count_nonzero(n.direction) == 1
    with pytest.raises(InputError, match="out of range"):
        SteeringDirection.neuron(tiny_llama, 64)
    res = run_steer(tiny_llama, SteerRequest(prompts=["Hello there"], coefficients=[0.0, 2.0], layers=[2], neuron=7,
                                             chat=False, max_tokens=3))
    assert res.direction.neuron == 7 and res.direction.source == "neuron"


def test_position_steers_one_prompt_position(tiny_llama):
    d = SteeringDirection.extract(tiny_llama, ["good"], ["bad"], layer=1, chat=False)
    req = SteerRequest(prompts=["Once upon a time there"], coefficients=[0.0, 5.0], layers=[1], position=-1,
                       chat=False, max_tokens=4)
    res = run_steer(tiny_llama, req, direction=d)
    assert res.outputs[1].token_ids != res.outputs[0].token_ids
    with pytest.raises(InputError, match="position 40 out of range"):
        run_steer(tiny_llama, req.model_copy(update={"position": 40}), direction=d)


def test_criteria():
    assert score_criterion("a happy and wonderful day", "positive").score == 2
    s = score_criterion("Happy? No, sad and awful.", "sentiment")
    assert s.score == -1 and not s.passed
    assert score_criterion("the cat sat on the mat", "words:cat,dog,mat").score == 2
    c = score_criterion("abcabc", "bc")
    assert c.score == 2 and c.passed
    assert not score_criterion("xyz", "bc").passed


def test_compare_flag_with_negative_values_parses():
    from lazarus_tui.batch.common import fix_negative_values
    from lazarus_tui.batch.steer import _VALUE_FLAGS, build_parser
    from lazarus_tui.inputs import parse_floats

    argv = ["-d", "x.npz", "-p", "hi", "--compare", "-2,-1,0,1,2", "-c", "-0.5", "--position", "-1", "-l", "3"]
    args = build_parser().parse_args(fix_negative_values(argv, _VALUE_FLAGS))
    assert parse_floats(args.compare) == [-2.0, -1.0, 0.0, 1.0, 2.0]
    assert (args.coefficient, args.position, args.layer, args.max_tokens) == (-0.5, -1, 3, 50)


# -- SmolLM2: does it steer? ------------------------------------------------------------------
@pytest.fixture(scope="module")
def sentiment(smollm):
    return SteeringDirection.extract(smollm, POS, NEG, layer=10, chat=False, name="sentiment")


@pytest.mark.real_model
def test_sentiment_steering_moves_text(smollm, sentiment):
    prompt = "I think the movie was"
    res = steer_generate(smollm, prompt, sentiment, [-0.3, 0.0, 0.3], max_tokens=12, chat=False,
                         criterion="sentiment")
    neg, zero, pos = res.outputs
    # coefficient 0 is exactly the unsteered text
    plain = generate_ids(HookedModel(smollm), [smollm.tokenizer.encode(prompt)], 12,
                         stop_ids=smollm.tokenizer.eos_ids)[0]
    assert zero.token_ids == [i for i in plain.ids if i not in smollm.tokenizer.eos_ids]
    assert neg.token_ids != zero.token_ids and pos.token_ids != zero.token_ids
    # the clean model reads the steered outputs further along the direction, in order
    assert pos.mean_projection > zero.mean_projection > neg.mean_projection
    assert pos.mean_projection - neg.mean_projection > 5.0
    # and a sentiment word count moves the same way
    assert pos.criterion.score > neg.criterion.score
    assert pos.criterion.score >= 1


@pytest.mark.real_model
def test_five_coefficient_compare_batched_equals_one_at_a_time(smollm, sentiment):
    kw = dict(coefficients=[-2.0, -1.0, 0.0, 1.0, 2.0], max_tokens=6, chat=True)
    a = steer_generate(smollm, "Tell me about your weekend.", sentiment, batched=True, **kw)
    b = steer_generate(smollm, "Tell me about your weekend.", sentiment, batched=False, **kw)
    assert a.chat_template_used
    assert [o.token_ids for o in a.outputs] == [o.token_ids for o in b.outputs]
    assert len({tuple(o.token_ids) for o in a.outputs}) >= 3


@pytest.mark.real_model
def test_batch_command_extract_save_and_apply(smollm, tmp_path, capsys):
    from lazarus_tui.batch import dispatch

    npz = tmp_path / "sent.npz"
    rc = dispatch(["steer", "--extract", "--positive", f"@{DATA / 'steering_positive.txt'}", "--negative",
                   f"@{DATA / 'steering_negative.txt'}", "-l", "10", "--raw", "--name", "sentiment", "-o", str(npz)])
    out = capsys.readouterr().out
    assert rc == 0 and npz.exists() and "Layer 10:" in out and "<- chosen" in out
    d = SteeringDirection.load(npz, smollm)
    assert d.layer == 10 and d.name == "sentiment" and len(d.positive_prompts) == 8
    rc = dispatch(["steer", "-d", str(npz), "-p", "I think the movie was", "--raw", "--compare", "-0.3,0,0.3",
                   "-n", "4", "-l", "12", "--criterion", "sentiment", "--json"])
    res = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert [o["coefficient"] for o in res["outputs"]] == [-0.3, 0.0, 0.3]
    assert {o["layer"] for o in res["outputs"]} == {12} and res["direction"]["layer"] == 12
    assert res["outputs"][1]["added_norm"] == 0.0 and res["outputs"][2]["added_norm"] > 10


# -- docs -------------------------------------------------------------------------------------
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL) if DOC.exists() else []


@pytest.mark.real_model
@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_docs_examples_run(index, smollm, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(BLOCKS[index], f"{DOC.name}[{index}]", "exec"), {"__name__": "__doc_example__"})
    assert capsys.readouterr().out.strip(), "example printed nothing"
