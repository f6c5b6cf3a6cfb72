"""`lazarus --batch probe` / `directions` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lazarus_tui.batch import dispatch

pytestmark = [pytest.mark.real_model, pytest.mark.models_in_process]  # in-process CLI runs load the models here

DATA = Path(__file__).resolve().parents[1] / "data"


def test_probe_save_then_directions(capsys, tmp_path):
    f = tmp_path / "qs.npz"
    rc = dispatch(["probe", "--class-a", f"@{DATA / 'questions.txt'}", "--class-b", f"@{DATA / 'statements.txt'}",
                   "--label-a", "question", "--label-b", "statement", "--layers", "2,20", "--method", "difference",
                   "--save-direction", str(f), "--json"])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    assert data["saved_to"] == str(f) and data["method"] == "difference"
    assert max(pl["cv_accuracy"] for pl in data["layers"]) >= 0.9
    # the same file twice: cos 1; against an orthogonal one-hot-free vector: 0
    d = np.load(f, allow_pickle=False)["direction"].astype(np.float64)
    o = np.zeros_like(d)
    o[np.argmin(np.abs(d))] = 1.0
    o -= (o @ d) / (d @ d) * d
    np.savez(tmp_path / "orth.npz", direction=o)
    rc = dispatch(["directions", str(f), str(f), str(tmp_path / "orth.npz"), "--json"])
    assert rc == 0
    r = json.loads(capsys.readouterr().out)
    assert abs(r["cosine"][0][1] - 1.0) < 1e-6
    assert abs(r["cosine"][0][2]) < 1e-6
    rc = dispatch(["directions", str(f), str(tmp_path / "orth.npz")])
    assert rc == 0
    text = capsys.readouterr().out
    assert "Orthogonal pairs" in text and "Mean |cos|" in text


def test_probe_and_directions_bad_input(capsys, tmp_path):
    assert dispatch(["probe", "--class-a", "a?", "--class-b", "b.|c."]) == 2
    assert "at least 2 prompts" in capsys.readouterr().err
    assert dispatch(["probe", "--class-a", "@/nonexistent", "--class-b", "b.|c."]) == 2
    assert dispatch(["directions", str(tmp_path / "missing.npz"), str(tmp_path / "m2.npz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "not found" in err[-1]
    assert dispatch(["probe", "--class-a", "a?|b?", "--class-b", "b.|c.", "--method", "pca"]) == 2
