"""neurons on real SmolLM2 activations."""

from __future__ import annotations

import numpy as np
import pytest

from engine.direction_files import save_direction
from engine.errors import InputError
from engine.neurons import run_neurons, separation_scores
from engine.representations import last_hidden
from engine.results.neurons import NeuronsRequest

PROMPTS = ["What is this?", "This is it.", "Where are you?", "I am here."]


def test_neuron_values_are_the_residual_dimensions(smollm):
    r = run_neurons(smollm, NeuronsRequest(prompts=PROMPTS, layers=[12], neurons=[10, 300], neuron_names=["a", "b"]))
    h = last_hidden(smollm, PROMPTS, [12])[0]
    assert [n.neuron for n in r.neurons] == [10, 300] and r.neurons[0].name == "a"
    for n in r.neurons:
        np.testing.assert_allclose(n.values, h[:, n.neuron], rtol=1e-5, atol=1e-5)
        assert n.min == pytest.approx(min(n.values)) and n.mean == pytest.approx(np.mean(n.values))
        assert n.std == pytest.approx(np.std(n.values))


def test_mlp_units(smollm):
    r = run_neurons(smollm, NeuronsRequest(prompts=PROMPTS[:2], layers=[3], neurons=[1535], mlp=True))
    assert r.site == "mlp_hidden" and len(r.neurons[0].values) == 2
    with pytest.raises(InputError):
        run_neurons(smollm, NeuronsRequest(prompts=PROMPTS[:2], layers=[3], neurons=[1536], mlp=True))


def test_auto_discover_ranks_by_label_separation(smollm):
    labels = ["q", "s", "q", "s"]
    r = run_neurons(smollm, NeuronsRequest(prompts=PROMPTS, layers=[12], auto_discover=True, labels=labels, top_k=3))
    h = last_hidden(smollm, PROMPTS, [12])[0].astype(np.float64)
    scores = separation_scores(h, labels)
    assert [n.neuron for n in r.neurons] == list(np.argsort(-scores)[:3])
    top = r.neurons[0]
    v = np.array(top.values)
    q, s = v[[0, 2]], v[[1, 3]]
    assert top.separation == pytest.approx(abs(q.mean() - s.mean()) / np.sqrt(0.5 * (q.var() + s.var())), rel=1e-4)
    assert top.separation >= r.neurons[1].separation >= r.neurons[2].separation


def test_from_direction_and_steering(smollm, tmp_path):
    d = np.zeros(576)
    d[[5, 77, 400]] = [0.1, -3.0, 2.0]
    f = save_direction(tmp_path / "d.npz", d, layer=6, model_id="smollm2-135m", method="mean")
    r = run_neurons(smollm, NeuronsRequest(prompts=PROMPTS[:2], layers=[], from_direction=str(f), top_k=2))
    assert [(n.layer, n.neuron) for n in r.neurons] == [(6, 77), (6, 400)]
    assert r.neurons[0].weight == pytest.approx(-3.0)
    # steering along dimension 77 at layer 6 raises exactly that dimension at layer 6 by coef * s
    r = run_neurons(smollm, NeuronsRequest(prompts=PROMPTS[:2], layers=[5, 6], neurons=[77, 5],
                                           steer=f"{tmp_path / 'd.npz'}:2"))
    assert r.steering is not None
    by = {(n.layer, n.neuron): n for n in r.neurons}
    np.testing.assert_allclose(by[(5, 77)].steered_values, by[(5, 77)].values, atol=1e-5)  # before the layer
    delta77 = np.array(by[(6, 77)].steered_values) - np.array(by[(6, 77)].values)
    delta5 = np.array(by[(6, 5)].steered_values) - np.array(by[(6, 5)].values)
    unit = d / np.linalg.norm(d)
    np.testing.assert_allclose(delta5 / delta77, unit[5] / unit[77], rtol=1e-3)
    assert np.all(delta77 < 0)


def test_neurons_bad_input(smollm):
    with pytest.raises(InputError):
        run_neurons(smollm, NeuronsRequest(prompts=PROMPTS, layers=[12]))  # no selection
    with pytest.raises(InputError):
        run_neurons(smollm, NeuronsRequest(prompts=PROMPTS, layers=[12], auto_discover=True))
    with pytest.raises(InputError):
        run_neurons(smollm, NeuronsRequest(prompts=PROMPTS, layers=[12], neurons=[576]))
    with pytest.raises(InputError):
        run_neurons(smollm, NeuronsRequest(prompts=PROMPTS, layers=[], neurons=[1]))
