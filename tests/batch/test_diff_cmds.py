"""`lazarus --batch weight-diff` / `activation-diff` with two models loaded on the engine thread."""

from __future__ import annotations

import json

import pytest

from lazarus_tui.batch import dispatch

pytestmark = [pytest.mark.real_model, pytest.mark.models_in_process]  # in-process CLI runs load the models here


def test_weight_diff_q4_json(capsys, tmp_path):
    out = tmp_path / "wd.json"
    assert dispatch(["weight-diff", "-b", "smollm2-135m", "--dtype2", "q4", "--json", "-o", str(out)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["base_dtype"] == "float32" and data["finetuned_dtype"] == "q4"
    assert 0.05 < data["max_relative"] < 0.2
    assert json.loads(out.read_text())["max_relative"] == data["max_relative"]


# one run per test: each run loads two models, and the teardown gives them back before the next


def test_activation_diff_rich(capsys):
    assert dispatch(["activation-diff", "--dtype2", "q8", "-p", "Hello world|2 + 2 =", "--layers", "0,29"]) == 0
    text = capsys.readouterr().out
    assert "Cosine(base, fine-tuned)" in text and "Most divergent layer" in text


def test_activation_diff_refuses_another_tokenizer(capsys):
    assert dispatch(["activation-diff", "-f", "gemma3-270m", "-p", "hi"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "same tokenizer" in err


def test_weight_diff_refuses_another_architecture(capsys):
    assert dispatch(["weight-diff", "-f", "gemma3-270m"]) == 2
    assert "same architecture" in capsys.readouterr().err


def test_activation_diff_layer_out_of_range(capsys):
    assert dispatch(["activation-diff", "-p", "hi", "--layers", "31"]) == 2
