"""Seed examples of issue 14: `lazarus introspect <command>`, AnalysisConfig(compute_entropy=False),
`circuit visualize --analysis` made from another activation file."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError

from lazarus_tui.batch import dispatch
from lazarus_tui.cli import main

pytestmark = [pytest.mark.real_model, pytest.mark.models_in_process]  # in-process CLI runs load the models here


def test_introspect_is_a_synonym_of_batch(capsys):
    assert main(["introspect", "layer", "-p", "a|b", "--layers", "99"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "layer 99 out of range" in err[0]
    assert main(["introspect", "layer", "-p", "The cat sat|The dog ran", "--layers", "3", "--json"]) == 0
    via_introspect = json.loads(capsys.readouterr().out)
    assert main(["--batch", "layer", "-p", "The cat sat|The dog ran", "--layers", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["layers"] == via_introspect["layers"]
    assert main(["introspect"]) == 2  # no command: the usage line


def test_compute_entropy_false_is_refused_not_ignored():
    from engine.results.analyze import AnalysisConfig, AnalyzeRequest

    assert AnalysisConfig().compute_entropy is True
    for make in (lambda: AnalysisConfig(compute_entropy=False),
                 lambda: AnalyzeRequest(prompt="x", compute_entropy=False)):
        with pytest.raises(ValidationError, match="compute_entropy=False is not supported"):
            make()


def _acts(path, x, labels, fingerprint=None, model="synthetic"):
    from safetensors.numpy import save_file

    save_file({f"hidden_states.layer_{k}": v.astype(np.float32) for k, v in x.items()}, str(path))
    meta = {"model_id": model, "labels": list(map(int, labels)), "label_names": ["neg", "pos"]}
    if fingerprint:
        meta["dataset"] = {"sha256": fingerprint}
    path.with_suffix(".json").write_text(json.dumps(meta))
    return str(path)


@pytest.mark.parametrize("other", ["fingerprint", "model", "labels", "layers"])
def test_visualize_refuses_an_analysis_of_another_activation_file(tmp_path, capsys, other):
    rng = np.random.default_rng(0)
    y = np.array([0, 1] * 12)
    x = {0: rng.normal(size=(24, 8)), 1: rng.normal(size=(24, 8))}
    a = _acts(tmp_path / "a.safetensors", x, y, fingerprint="f" * 64)
    assert dispatch(["circuit", "analyze", "-a", a, "-o", str(tmp_path / "an.json")]) == 0
    assert json.loads((tmp_path / "an.json").read_text())["activations_fingerprint"] == "f" * 64
    capsys.readouterr()
    b = _acts(tmp_path / "b.safetensors", {0: x[0] + 1.0, 1: x[1] - 1.0} if other != "layers" else {0: x[0]},
              y[::-1] if other == "labels" else y,
              fingerprint="e" * 64 if other == "fingerprint" else None,
              model="other-model" if other == "model" else "synthetic")
    if other == "labels":  # same counts, other order: only the fingerprint would tell; give the labels names away
        b_meta = json.loads((tmp_path / "b.json").read_text())
        b_meta["label_names"] = ["no", "yes"]
        (tmp_path / "b.json").write_text(json.dumps(b_meta))
    plots = tmp_path / "plots"
    assert dispatch(["circuit", "visualize", "-a", b, "--analysis", str(tmp_path / "an.json"), "--pca",
                     "-o", str(plots), "--no-terminal"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "made from another activation file" in err[0] and "circuit analyze -a" in err[0]
    assert not plots.exists()
    # the file it was made from is accepted
    assert dispatch(["circuit", "visualize", "-a", a, "--analysis", str(tmp_path / "an.json"), "--pca",
                     "-o", str(plots), "--no-terminal"]) == 0
    assert (plots / "pca_variance_L0.png").exists() or (plots / "pca_variance_L1.png").exists()
