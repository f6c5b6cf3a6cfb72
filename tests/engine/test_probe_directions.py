"""probe on real SmolLM2 activations; direction files and the directions comparison."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.direction_files import compare_directions, load_direction, save_direction
from engine.errors import InputError
from engine.probe import run_probe, save_probe_direction
from engine.results.directions import DirectionsRequest
from engine.results.probe import ProbeRequest

DATA = Path(__file__).resolve().parents[1] / "data"


def _lines(name: str) -> list[str]:
    return (DATA / name).read_text().splitlines()


@pytest.fixture(scope="module")
def qs_probe(smollm):
    req = ProbeRequest(class_a=_lines("questions.txt"), class_b=_lines("statements.txt"), label_a="question",
                       label_b="statement", layers=[0, 6, 15, 29], test=["Is this a test?", "This is a test."])
    return run_probe(smollm, req)


def test_probe_separates_questions_from_statements(qs_probe):
    r = qs_probe
    assert len(r.request.class_a) >= 8 and len(r.request.class_b) >= 8
    assert [pl.layer for pl in r.layers] == [0, 6, 15, 29]
    best = next(pl for pl in r.layers if pl.layer == r.best_layer)
    assert best.cv_accuracy >= 0.9
    assert best.cv_accuracy == max(pl.cv_accuracy for pl in r.layers)
    assert best.folds == 5
    assert np.linalg.norm(r.direction) == pytest.approx(1.0)
    assert r.separation > 2.0  # class A projects clearly higher
    labels = [tp.label for tp in r.test_predictions]
    assert labels == ["question", "statement"]
    assert r.test_predictions[0].projection > r.test_predictions[1].projection


def test_probe_direction_sign_follows_class_a(smollm):
    qa, st = _lines("questions.txt")[:6], _lines("statements.txt")[:6]
    fwd = run_probe(smollm, ProbeRequest(class_a=qa, class_b=st, layers=[10], method="difference"))
    rev = run_probe(smollm, ProbeRequest(class_a=st, class_b=qa, layers=[10], method="difference"))
    np.testing.assert_allclose(fwd.direction, -np.array(rev.direction), atol=1e-6)
    assert fwd.separation > 0 and rev.separation > 0
    assert fwd.layers[0].folds == 5


def test_probe_saved_file_is_read_by_directions_and_steering(qs_probe, tmp_path):
    r = save_probe_direction(qs_probe, tmp_path / "q.npz")
    with np.load(r.saved_to, allow_pickle=False) as z:
        for key in ("direction", "layer", "label_positive", "label_negative", "model_id", "method", "accuracy",
                    "separation"):
            assert key in z.files
        assert str(z["label_positive"]) == "question"
        assert int(z["layer"]) == r.direction_layer
    d = load_direction(r.saved_to)
    np.testing.assert_allclose(d.unit, r.direction, atol=1e-6)
    steering = pytest.importorskip("engine.steering")  # the steering loader must accept probe files
    s = steering.SteeringDirection.load(r.saved_to)
    assert s.layer == r.direction_layer and s.hidden_size == 576


def test_probe_bad_input(smollm):
    with pytest.raises(InputError):
        run_probe(smollm, ProbeRequest(class_a=["a?"], class_b=["b.", "c."]))
    with pytest.raises(InputError):
        run_probe(smollm, ProbeRequest(class_a=["a?", "b?"], class_b=["b.", "c."], layers=[40]))


def test_directions_identical_orthogonal_and_opposite(tmp_path):
    rng = np.random.default_rng(0)
    v = rng.normal(size=64)
    w = rng.normal(size=64)
    w -= (w @ v) / (v @ v) * v  # orthogonal to v
    save_direction(tmp_path / "a.npz", v, layer=3, model_id="m", method="mean")
    save_direction(tmp_path / "b.npz", 5 * v, layer=3, model_id="m", method="mean")
    save_direction(tmp_path / "c.npz", w, layer=3, model_id="m", method="mean")
    np.savez(tmp_path / "d.npz", direction=-v)  # only 'direction'
    r = compare_directions(DirectionsRequest(files=[str(tmp_path / f"{x}.npz") for x in "abcd"]))
    c = np.array(r.cosine)
    assert c[0, 1] == pytest.approx(1.0)
    assert abs(c[0, 2]) < 1e-6
    assert c[0, 3] == pytest.approx(-1.0)
    rel = {(p.a, p.b): p.relation for p in r.pairs}
    assert rel[("a", "b")] == "aligned" and rel[("a", "c")] == "orthogonal" and rel[("a", "d")] == "aligned"
    expected = np.mean([abs(c[i, j]) for i in range(4) for j in range(i + 1, 4)])
    assert r.mean_abs_cosine == pytest.approx(expected)
    assert r.directions[3].layer is None


def test_directions_bad_input(tmp_path):
    np.savez(tmp_path / "a.npz", direction=np.ones(4))
    np.savez(tmp_path / "b.npz", direction=np.ones(5))
    np.savez(tmp_path / "nodir.npz", vec=np.ones(4))
    with pytest.raises(InputError, match="different sizes"):
        compare_directions(DirectionsRequest(files=[str(tmp_path / "a.npz"), str(tmp_path / "b.npz")]))
    with pytest.raises(InputError, match="no 'direction'"):
        compare_directions(DirectionsRequest(files=[str(tmp_path / "a.npz"), str(tmp_path / "nodir.npz")]))
    with pytest.raises(InputError, match="not found"):
        compare_directions(DirectionsRequest(files=[str(tmp_path / "a.npz"), str(tmp_path / "zz.npz")]))
    with pytest.raises(InputError):
        compare_directions(DirectionsRequest(files=[str(tmp_path / "a.npz")]))


def test_activation_passes_report_progress_per_block(tiny_llama):
    """last_hidden (behind layer, format-sensitivity, neurons, activation-diff) reports each block
    of each batch of prompts: monotonic, ending at the total."""
    from engine.representations import BATCH, layer_analysis
    from engine.results.layers import LayerRequest

    seen: list[tuple[int, int]] = []
    prompts = [f"prompt number {i}" for i in range(BATCH + 3)]  # two batches
    layer_analysis(tiny_llama, LayerRequest(prompts=prompts, layers=[0, 1]), None, lambda d, n: seen.append((d, n)))
    totals = {n for _, n in seen}
    assert len(totals) == 1
    total = totals.pop()
    assert total == 2 * 2  # two batches x the blocks up to the deepest requested layer (1)
    assert [d for d, _ in seen] == list(range(1, total + 1))
