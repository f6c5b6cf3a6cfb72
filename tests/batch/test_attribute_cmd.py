"""`lazarus --batch attribute` end to end: --verify equals `lazarus --batch patch` on the same sites."""

from __future__ import annotations

import json

import pytest

from lazarus_tui.batch import dispatch

pytestmark = [pytest.mark.real_model, pytest.mark.models_in_process]  # in-process CLI runs load the models here

CLEAN, CORRUPT = "The capital of France is", "The capital of Italy is"


def test_verify_matches_patch(capsys, tmp_path):
    out = tmp_path / "attr.json"
    assert dispatch(["attribute", "--clean", CLEAN, "--corrupt", CORRUPT, "--target", " Paris", "--metric", "prob",
                     "--sites", "resid_post", "--layers", "0,8,16,24,29", "--verify", "6", "--json",
                     "-o", str(out)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert json.loads(out.read_text()) == data
    assert len(data["sites"]) == 5 * 5 and len(data["verified"]) == 6
    assert {s["site"].split(".")[1] for s in data["sites"]} == {"0", "8", "16", "24", "29"}
    by_pos: dict[int, list[dict]] = {}
    for v in data["verified"]:
        by_pos.setdefault(v["position"], []).append(v)
    for pos, rows in by_pos.items():
        layers = [int(v["site"].split(".")[1]) for v in rows]
        assert dispatch(["patch", "--source", CLEAN, "--target", CORRUPT, "--layers", ",".join(map(str, layers)),
                         "--position", str(pos), "--json"]) == 0
        patched = json.loads(capsys.readouterr().out)
        assert patched["source_answer"] == " Paris"
        got = {pl["layer"]: pl["source_answer_prob"] for pl in patched["layers"]}
        for v, layer in zip(rows, layers):
            assert v["patched_metric"] == pytest.approx(got[layer], abs=1e-5)
            assert v["real"] == pytest.approx(got[layer] - data["corrupt_metric"], abs=1e-5)


def test_human_output_and_refusals(capsys):
    assert dispatch(["attribute", "--clean", CLEAN, "--corrupt", CORRUPT, "--target", " Paris", "--baseline",
                     " Rome", "--metric", "logit-diff", "--sites", "attn_out", "--layers", "20-23", "--top", "3"]) == 0
    text = capsys.readouterr().out
    assert "logit diff(' Paris' - ' Rome')" in text and "blocks.2" in text and "20 estimates" in text
    for argv, needle in (
        (["--corrupt", "The capital city of Italy is"], "same number of tokens"),
        (["--sites", "resid_post,bogus"], "bad --sites"),
        (["--metric", "logit-diff"], "needs --baseline"),
        (["--top", "0"], "--top"),
        (["--layers", "40"], "out of range"),
    ):
        args = {"--clean": CLEAN, "--corrupt": CORRUPT, "--target": " Paris"}
        extra = list(argv)
        if extra[0] == "--corrupt":
            args["--corrupt"] = extra[1]
            extra = []
        flat = [x for kv in args.items() for x in kv]
        assert dispatch(["attribute", *flat, *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], err
