"""The tuned lens on a tiny random llama: training lowers KL on held-out text at every layer but the
last (which stays the identity), a lens for another model is refused, every reader (analyze,
tracking, compare) applies the translators as a hand computation does, and an interrupted
training resumes to the same lens."""

from __future__ import annotations

import numpy as np
import pytest

from engine.errors import Cancelled, InputError
from engine.results.analyze import AnalyzeRequest, LayerStrategy

SETTINGS = {"steps": 12, "batch_tokens": 16, "positions_per_sequence": 8, "seq_len": 32, "lr": 3e-3, "warmup": 2}
PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def tiny_lens(tiny_llama, tmp_path_factory):
    from engine.results.tuned_lens import TrainSettings
    from engine.tuned_lens_train import train_lens

    path = tmp_path_factory.mktemp("lens") / "tiny.safetensors"
    report = train_lens(tiny_llama, TrainSettings(**SETTINGS), path)
    return path, report


def _weights(path):
    from engine.tuned_lens import read_lens_file

    tensors, _, binding = read_lens_file(path)
    return tensors["weight"].astype(np.float64), tensors["bias"].astype(np.float64), binding


def test_training_lowers_held_out_kl_and_keeps_the_last_layer(tiny_llama, tiny_lens):
    from engine.results.tuned_lens import LensEvalRequest
    from engine.tuned_lens_eval import evaluate

    path, report = tiny_lens
    assert report.steps == 12 and report.tokens == 12 * 16 and report.binding.model_id == "tiny-llama"
    r = evaluate(tiny_llama, LensEvalRequest(lens=str(path), tokens=96, seq_len=32))
    assert r.tokens == 96 and [x.layer for x in r.layers] == [0, 1, 2, 3]
    assert "eval split" in r.text  # held-out files, not the training ones
    for x in r.layers[:-1]:  # lower by far more than rounding (KL here is ~0.2-0.9 bits)
        assert x.tuned_kl < x.logit_kl - 0.01, x
    last = r.layers[-1]
    assert last.logit_kl < 1e-6 and last.tuned_kl < 1e-6 and last.tuned_top1 == 1.0
    w, b, _ = _weights(path)
    moved = [np.abs(w[i]).max() for i in range(3)]
    assert min(moved) > 1e-3  # the other translators did move
    assert np.abs(w[3]).max() < 1e-3 * min(moved) and np.abs(b[3]).max() < 1e-3 * np.abs(b[:3]).max()


def _by_hand(lm, path, layer_resid: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """Probabilities per layer: translator, final RMSNorm, tied unembedding, softmax, in float64 NumPy."""
    w, b, _ = _weights(path)
    norm_w = np.array(lm.model.model.norm.weight, dtype=np.float64)
    emb = np.array(lm.model.model.embed_tokens.weight, dtype=np.float64)
    eps = lm.config["rms_norm_eps"]
    out = {}
    for layer, h in layer_resid.items():
        h = h.astype(np.float64)
        t = h + w[layer] @ h + b[layer]
        x = t / np.sqrt(np.mean(t * t) + eps) * norm_w
        z = emb @ x
        p = np.exp(z - z.max())
        out[layer] = p / p.sum()
    return out


def _resid_at(lm, ids, pos):
    from engine.hooks import Batch, CaptureSpec, HookedModel, SiteKind

    hm = HookedModel(lm)
    fwd = hm.forward(Batch.from_lists([ids]), capture=CaptureSpec(kinds=(SiteKind.resid_post,), positions=[pos]),
                     logits="none")
    return {layer: np.array(fwd.captures[f"blocks.{layer}.resid_post"][0, 0]) for layer in range(hm.n_layers)}


def test_analyze_with_tuned_lens_equals_translators_by_hand(tiny_llama, tiny_lens):
    from engine.lens import analyze

    path, _ = tiny_lens
    req = AnalyzeRequest(prompt=PROMPT, layer_strategy=LayerStrategy.ALL, top_k=5, lens=f"tuned:{path}",
                         track_tokens=[" Paris"])
    r = analyze(tiny_llama, req)
    ids = tiny_llama.tokenizer.prepare(PROMPT, chat=False)
    probs = _by_hand(tiny_llama, path, _resid_at(tiny_llama, ids, len(ids) - 1))
    assert r.lens is not None and r.lens.path == str(path)
    paris = tiny_llama.tokenizer.lookup(" Paris")[0]
    for lp in r.layer_predictions:
        p = probs[lp.layer_idx]
        order = np.argsort(-p, kind="stable")[:5]
        assert [t.token_id for t in lp.predictions] == order.tolist()
        assert [t.probability for t in lp.predictions] == pytest.approx(p[order].tolist(), rel=1e-4, abs=1e-7)
        ev = r.token_evolutions[0]
        assert ev.layer_probabilities[lp.layer_idx] == pytest.approx(p[paris], rel=1e-4, abs=1e-9)
        assert ev.layer_ranks[lp.layer_idx] == int((p > p[paris]).sum()) + 1
    logit = analyze(tiny_llama, req.model_copy(update={"lens": "logit"}))
    assert logit.lens is None
    # the translators change what the early layers read, and leave the last layer alone
    assert logit.layer_predictions[0].predictions != r.layer_predictions[0].predictions
    assert logit.predicted_probability == pytest.approx(r.predicted_probability, rel=1e-5)


def test_tracking_and_compare_read_through_the_same_lens(tiny_llama, tiny_lens):
    from engine.compare import compare
    from engine.lens import analyze
    from engine.results.compare import CompareRequest
    from engine.results.tracking import TrackGenerationRequest
    from engine.tracking import track_generation

    path, _ = tiny_lens
    spec = f"tuned:{path}"
    tr = track_generation(tiny_llama, TrackGenerationRequest(prompt=PROMPT, max_new_tokens=1, lens=spec))
    first = tr.positions[0]
    assert tr.lens is not None
    r = analyze(tiny_llama, AnalyzeRequest(prompt=PROMPT, layer_strategy=LayerStrategy.ALL, lens=spec,
                                           track_tokens=[tiny_llama.tokenizer.decode([first.token_id])]))
    ev = r.token_evolutions[0]
    assert ev.token_id == first.token_id
    assert first.ranks == [ev.layer_ranks[i] for i in range(4)]
    assert first.probabilities == pytest.approx([ev.layer_probabilities[i] for i in range(4)], rel=1e-4, abs=1e-9)
    c = compare(tiny_llama, tiny_llama, CompareRequest(prompt=PROMPT, lens1=spec, lens2="logit"))
    logit = analyze(tiny_llama, AnalyzeRequest(prompt=PROMPT, layer_strategy=LayerStrategy.ALL))
    for row in c.rows:
        assert row.top1_model1.token_id == r.layer_predictions[row.layer1].predictions[0].token_id
        assert row.top1_model2.token_id == logit.layer_predictions[row.layer2].predictions[0].token_id
    assert c.rows[-1].kl_1_2 == pytest.approx(0.0, abs=1e-6)  # the last layer reads the same either way
    assert c.rows[0].kl_1_2 > 1e-3


def test_lens_for_another_model_is_refused(tiny_llama, tiny_gemma, tiny_lens):
    from engine.lens import analyze
    from engine.tuned_lens import load_lens

    path, _ = tiny_lens
    # same shapes (4 layers, hidden 64): the weights hash is what tells them apart
    with pytest.raises(InputError) as exc:
        load_lens(tiny_gemma, path)
    msg = str(exc.value)
    assert "\n" not in msg and "tiny-llama" in msg and "tiny-gemma3_text" in msg
    with pytest.raises(InputError, match="trained for tiny-llama"):
        analyze(tiny_gemma, AnalyzeRequest(prompt=PROMPT, lens=f"tuned:{path}"))
    with pytest.raises(InputError, match="not found"):
        analyze(tiny_llama, AnalyzeRequest(prompt=PROMPT, lens=f"tuned:{path}.missing"))
    bad = path.with_name("bad.safetensors")
    bad.write_bytes(b"not a lens")
    with pytest.raises(InputError, match="cannot read tuned lens"):
        load_lens(tiny_llama, bad)
    with pytest.raises(ValueError, match="bad lens"):
        AnalyzeRequest(prompt=PROMPT, lens="tuned:")


def test_interrupted_training_resumes_to_the_same_lens(tiny_llama, tmp_path):
    from engine.results.tuned_lens import TrainSettings
    from engine.tuned_lens_train import checkpoint_path, train_lens

    s = TrainSettings(**{**SETTINGS, "steps": 5})
    whole = tmp_path / "whole.safetensors"
    train_lens(tiny_llama, s, whole)
    part = tmp_path / "part.safetensors"
    done = []
    with pytest.raises(Cancelled):
        train_lens(tiny_llama, s, part, cancel=lambda: len(done) >= 3, on_step=lambda i, n, kl: done.append(i))
    assert not part.exists() and checkpoint_path(part).is_file()
    with pytest.raises(InputError, match="--resume"):
        train_lens(tiny_llama, s, part)
    report = train_lens(tiny_llama, s, part, resume=True, on_step=lambda i, n, kl: done.append(i))
    assert done == [1, 2, 3, 4, 5] and report.steps == 5 and not checkpoint_path(part).exists()
    w1, b1, _ = _weights(whole)
    w2, b2, _ = _weights(part)
    assert np.array_equal(w1, w2) and np.array_equal(b1, b2)


def test_low_level_logit_lens_reads_the_tuned_lens_too(tiny_llama, tiny_lens):
    from engine.api import LogitLens, ModelHooks
    from engine.lens import analyze

    path, _ = tiny_lens
    hooks = ModelHooks(tiny_llama)
    hooks.forward(tiny_llama.tokenizer.prepare(PROMPT, chat=False))
    rows = LogitLens(hooks, lens=f"tuned:{path}").layer_predictions(top_k=3)
    r = analyze(tiny_llama, AnalyzeRequest(prompt=PROMPT, layer_strategy=LayerStrategy.ALL, top_k=3,
                                           lens=f"tuned:{path}"))
    for (layer, preds), lp in zip(rows, r.layer_predictions, strict=True):
        assert layer == lp.layer_idx and [t for t, _ in preds] == [t.token for t in lp.predictions]
        assert [p for _, p in preds] == pytest.approx([t.probability for t in lp.predictions], rel=1e-4)


def test_user_corpus_file_and_directory(tiny_llama, tmp_path):
    from engine.results.tuned_lens import TrainSettings
    from engine.tuned_lens_corpus import load_corpus
    from engine.tuned_lens_train import train_lens

    text = "The quick brown fox jumps over the lazy dog. " * 40
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text(text)
    (tmp_path / "docs" / "b.md").write_text(text.upper())
    (tmp_path / "docs" / "skip.bin").write_text("not read")
    c = load_corpus(str(tmp_path / "docs"), "train", 0)
    assert c.documents == [text, text.upper()] and "2 files" in c.description
    report = train_lens(tiny_llama, TrainSettings(**{**SETTINGS, "steps": 2, "corpus": str(tmp_path / "docs" / "a.txt")}),
                        tmp_path / "lens.safetensors")
    assert report.binding.corpus.startswith("a.txt (1 file)") and report.tokens == 32
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no text"):
        load_corpus(str(tmp_path / "empty"), "train", 0)
