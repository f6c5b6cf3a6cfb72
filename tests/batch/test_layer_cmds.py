"""`lazarus --batch layer` and `format-sensitivity` end to end."""

from __future__ import annotations

import json

import pytest

from lazarus_tui.batch import dispatch

pytestmark = [pytest.mark.real_model, pytest.mark.models_in_process]  # in-process CLI runs load the models here


def test_layer_json_and_output_file(capsys, tmp_path):
    out = tmp_path / "layer.json"
    rc = dispatch(["layer", "-p", "100 - 37 = |100 - 37 =|The cat", "-l", "a,a,b", "--layers", "2,29",
                   "--json", "-o", str(out)])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    assert data == json.loads(out.read_text())
    assert data["prompts"] == ["100 - 37 = ", "100 - 37 =", "The cat"]  # not stripped
    assert [ls["layer"] for ls in data["layers"]] == [2, 29]
    assert data["layers"][0]["cosine"][1][1] == 1.0


def test_layer_rich_output_shows_matrix(capsys):
    rc = dispatch(["layer", "-p", "Hello there|Good morning", "--layers", "5"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "Layer 5: cosine similarity" in text and "1.000" in text


def test_layer_bad_input_is_one_line_exit_2(capsys):
    assert dispatch(["layer", "-p", "a|b", "--layers", "99"]) == 2
    err = capsys.readouterr().err.strip()
    assert "out of range" in err and len(err.splitlines()) == 1
    assert dispatch(["layer", "-p", "a|b", "-l", "x"]) == 2
    assert dispatch(["layer"]) == 2


def test_format_sensitivity_summary(capsys):
    rc = dispatch(["format-sensitivity", "-p", "2 + 2 =", "--layers", "0,29", "-s"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "Format sensitivity by layer" in text and "different tokens" in text
    assert "last token with space" not in text  # --summary-only


def test_layer_labels_that_cannot_give_a_separation_report_what_they_can(capsys, tmp_path):
    """The seed's own example (one prompt per label) and all-same labels: the matrices and the label
    statistics that exist, n/a for the rest, and one note saying why; never a traceback."""
    seed = tmp_path / "seed.json"
    rc = dispatch(["layer", "-p", "100 - 37 = |100 - 37 =", "-l", "working,broken", "--layers", "2,4,6,8",
                   "-o", str(seed)])
    text = capsys.readouterr().out
    assert rc == 0
    data = json.loads(seed.read_text())
    lines = [x.strip() for x in text.splitlines() if x.strip().startswith("within-label")]
    assert lines == [f"within-label n/a  between-label {ls['cosine'][0][1]:.4f}  separation n/a"
                     for ls in data["layers"]]
    assert "one prompt per label" in text and "Separation by layer" not in text
    assert data["best_layer"] is None

    same = tmp_path / "same.json"
    rc = dispatch(["layer", "-p", "100 - 37 = |100 - 37 =|2 + 2 =", "-l", "x,x,x", "--layers", "4", "-o", str(same)])
    text = capsys.readouterr().out
    assert rc == 0
    cos = json.loads(same.read_text())["layers"][0]["cosine"]
    within = (cos[0][1] + cos[0][2] + cos[1][2]) / 3
    assert f"within-label {within:.4f}  between-label n/a  separation n/a" in text
    assert "every prompt has the same label" in text
