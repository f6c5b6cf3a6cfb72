"""`lazarus --batch neurons` end to end."""

from __future__ import annotations

import json

import pytest

from lazarus_tui.batch import dispatch

pytestmark = [pytest.mark.real_model, pytest.mark.models_in_process]  # in-process CLI runs load the models here


def test_neurons_table_and_json(capsys):
    assert dispatch(["neurons", "-l", "12", "-p", "What is this?|This is it.", "-n", "15,293",
                     "--neuron-names", "Q|S"]) == 0
    text = capsys.readouterr().out
    assert "Layer 12: value per prompt" in text and "15 Q" in text and "[1]" in text
    assert dispatch(["neurons", "--layers", "3,4", "-p", "a b|c d|e f|g h", "--auto-discover", "--labels", "x|y|x|y",
                     "--top-k", "2", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [n["layer"] for n in data["neurons"]] == [3, 3, 4, 4]
    assert all(n["separation"] is not None for n in data["neurons"])


def test_neurons_bad_input(capsys):
    assert dispatch(["neurons", "-l", "12", "-p", "a|b", "-n", "x"]) == 2
    assert dispatch(["neurons", "-l", "99", "-p", "a|b", "-n", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "out of range" in err[1]
    assert dispatch(["neurons", "-l", "1", "-p", "a|b", "--from-direction", "/nonexistent.npz"]) == 2
