"""`lazarus --batch ablate`: bad input is one line and exit 2; JSON/JSONL output; the twin command line."""

from __future__ import annotations

import json

import pytest

from lazarus_tui.batch import dispatch
from tests.batch.helpers import assert_one_line_error, lazarus

pytestmark = [pytest.mark.real_model, pytest.mark.models_in_process]  # in-process CLI runs load the models here


def test_unknown_component_subprocess():
    proc = lazarus("ablate", "-p", "hi", "--component", "neurons")
    assert_one_line_error(proc, 2, "unknown component 'neurons'")


@pytest.mark.parametrize("args, needle", [
    (["-p", "hi", "--layers", "30"], "layer 30 out of range"),
    (["-p", "x", "--prompts", "2+2=:4|no colon here"], "has no ':'"),
    (["-p", "hi", "--component", "mlp", "--heads", "0"], "--heads"),
    (["-p", "hi", "--method", "mean"], "--reference"),
    (["-p", "hi", "--layers", "3-1"], "bad layer range"),
    (["-p", "hi", "--heads", "0,99", "--layers", "1"], "head 99 out of range"),
    (["-p", "hi", "--cells", "3:neurons"], "bad cell '3:neurons'"),
    (["-p", "hi", "--cells", "3:mlp", "--layers", "3"], "--cells is the whole set"),
    (["-p", "hi", "--cells", "3:mlp,30:both"], "layer 30 out of range"),
])
def test_bad_input_one_line_exit_2(args, needle, capsys):
    assert dispatch(["ablate", *args, "--max-tokens", "1"]) == 2
    captured = capsys.readouterr()
    lines = [x for x in captured.err.splitlines() if x.strip()]
    assert len(lines) == 1 and needle in lines[0], captured.err
    assert "Traceback" not in captured.err


def test_json_and_jsonl(capsys):
    assert dispatch(["ablate", "-p", "The capital of France is", "-c", "Paris", "--layers", "0,26", "--raw",
                     "--max-tokens", "3", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [p["label"] for p in data["points"]] == ["L0 mlp", "L26 mlp"]
    assert data["baseline"][0]["passed"] is True
    for p in data["points"]:
        o = p["outputs"][0]
        assert o["passed"] == ("Paris" in o["text"])
    assert dispatch(["ablate", "-p", "The capital of France is", "-c", "Paris", "--layers", "0,26", "--raw",
                     "--max-tokens", "3", "--jsonl"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["label"] for x in lines] == ["baseline", "L0 mlp", "L26 mlp"]
    assert lines[1]["outputs"][0]["token_ids"] == data["points"][0]["outputs"][0]["token_ids"]


def test_prompts_table_rendering(capsys):
    assert dispatch(["ablate", "-p", "x", "-c", "x", "--prompts", "10 * 10 =:100|45 * 45 =:2025|47 * 47 =:2209",
                     "--layers", "21", "--raw", "--max-tokens", "4"]) == 0
    text = capsys.readouterr().out
    assert "none (baseline)" in text and "L21 mlp" in text and "2209" in text
    rows = [x for x in text.splitlines() if x.startswith("│")]
    assert len(rows) == 2 and all(x.count("✓") + x.count("✗") == 3 for x in rows)  # 2 rows x 3 prompts


def test_twin_command_round_trip():
    import shlex

    import lazarus_tui.batch.ablate as mod
    from engine.results.ablation import AblationRequest
    from lazarus_tui.batch.ablate import build_request, twin_command
    from lazarus_tui.batch.common import ArgumentParser  # noqa: F401

    req = AblationRequest(prompt="The capital of France is", criterion="Paris", layers=[3, 5], component="attention",
                          heads=[0, 2], chat=False, max_tokens=12)
    argv = shlex.split(twin_command(req))[3:]
    captured = {}

    class Stop(Exception):
        pass

    def fake_build(args):
        captured["req"] = build_request(args)
        raise Stop

    orig = mod.build_request
    mod.build_request = fake_build
    try:
        with pytest.raises(Stop):
            mod.main(argv)
    finally:
        mod.build_request = orig
    got = captured["req"]
    assert (got.prompt, got.criterion, got.layers, got.component, got.heads, got.chat, got.max_tokens) == \
        (req.prompt, req.criterion, req.layers, req.component, req.heads, req.chat, req.max_tokens)


def test_cells_twin_round_trip():
    """The TUI's toggled set (mixed components, ablated together) survives twin_command → argv."""
    import shlex
    from types import SimpleNamespace

    from engine.results.ablation import AblationRequest, AblationSpec
    from lazarus_tui.batch.ablate import build_request, twin_command

    spec = AblationSpec(layers=[0, 29], components=["mlp", "attention"])
    req = AblationRequest(prompt="The capital of France is", criterion="Paris", ablations=[spec], chat=False,
                          max_tokens=4)
    argv = shlex.split(twin_command(req))
    assert argv[argv.index("--cells") + 1] == "0:mlp,29:attention"
    args = SimpleNamespace(component=None, heads=None, multi=False, grid=False, max_tokens=4, layers=None,
                           prompts=None, prompt=req.prompt, method="zero", reference=None, criterion="Paris",
                           chat=False, model=None, cells=argv[argv.index("--cells") + 1])
    got = build_request(args)
    assert got.ablations == [spec] and got.prompt == req.prompt and not got.chat
