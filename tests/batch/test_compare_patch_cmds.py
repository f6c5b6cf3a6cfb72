"""`lazarus --batch compare` / `patch` end to end."""

from __future__ import annotations

import json

import pytest

from lazarus_tui.batch import dispatch

pytestmark = [pytest.mark.real_model, pytest.mark.models_in_process]  # in-process CLI runs load the models here


def test_compare_smollm_vs_gemma(capsys):
    rc = dispatch(["compare", "-m1", "smollm2-135m", "-m2", "gemma3-270m", "-p", "The capital of France is",
                   "--track", " Paris"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "relative depth" in text and "tokenizers differ" in text and "emergence layer" in text
    assert "' Paris'" in text


def test_compare_q4_json(capsys):
    assert dispatch(["compare", "--dtype2", "q4", "-p", "2 + 2 =", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["same_tokenizer"] and data["final_kl"] > 0
    assert data["request"]["dtype2"] == "q4"


def test_patch_json_and_errors(capsys):
    assert dispatch(["patch", "--source", "The capital of France is", "--target", "The capital of Germany is",
                     "-l", "29", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["flipped_layers"] == [29]
    assert dispatch(["patch", "--source", "a", "--target", "b", "-l", "1", "--position", "-1", "--json"]) == 0
    capsys.readouterr()
    assert dispatch(["patch", "--source", "a", "--target", "b"]) == 2
    assert "--layer" in capsys.readouterr().err
    assert dispatch(["patch", "--source", "a", "--target", "b", "-l", "1", "--blend", "2"]) == 2
    assert dispatch(["patch", "--source", "a", "--target", "b", "-l", "1", "--position", "x"]) == 2
