"""The Attribution screen on the real SmolLM2: run, heatmap/heads/top sites, verify live, an
attention pattern of either prompt, and the batch twin: the screen, `lazarus --batch attribute`
and the Python API give the same numbers."""

from __future__ import annotations

import asyncio
import json
import shlex
import subprocess
import sys

import pytest
import scenarios

from lazarus_tui.app import LazarusApp
from lazarus_tui.screens.attribution import AttributionScreen
from lazarus_tui.screens.twin_dialog import TwinDialog
from lazarus_tui.widgets.attribution_views import HeadsGrid, PatternView, ResidHeatmap, TopSites


async def settle(app, pilot) -> None:
    await pilot.pause(0.05)
    await app.workers.wait_for_complete()
    await pilot.pause(0.1)


def key(s) -> tuple:
    return (s.site, s.position, s.head, s.neuron)


@pytest.mark.real_model
@pytest.mark.timeout(300)
async def test_screen_verify_pattern_and_twin(real_engine) -> None:
    app = LazarusApp(real_engine)
    async with app.run_test(size=(180, 50)) as pilot:
        await settle(app, pilot)
        await pilot.press("f7")
        await pilot.pause(0.1)
        screen = app.screen
        assert isinstance(screen, AttributionScreen)
        screen.query_one("#sites").value = "resid_post,mlp_out,heads"
        screen.query_one("#k").value = "4"
        screen.query_one("#clean").focus()
        await pilot.press("enter")
        await settle(app, pilot)
        r = screen.result
        assert r is not None and not r.verified
        n = len(r.clean_tokens)
        assert r.n_estimates == 2 * 30 * n + 2 * 30 * 9 * n
        heat = screen.query_one(ResidHeatmap)
        assert heat.row_count == 30 and len(heat.columns) == n + 1
        assert heat.values[(20, 3)] == next(s.estimate for s in r.sites if s.site == "blocks.20.resid_post"
                                            and s.position == 3)
        assert screen.query_one(HeadsGrid).row_count == 30
        assert screen.query_one(TopSites).row_count == 40

        # r: the top 4 patched for real, live
        screen.query_one(TopSites).focus()
        await pilot.press("r")
        await settle(app, pilot)
        rv = screen.result
        assert len(rv.verified) == 4 and rv.verify_pearson is not None
        assert [key(v) for v in rv.verified] == [key(s) for s in rv.sites if s.site.split(".")[2] != "attn_pattern"][:4]

        # the attention pattern of one head, then the other prompt
        grid = screen.query_one(HeadsGrid)
        grid.focus()
        grid.move_cursor(row=5, column=3)
        await pilot.press("enter")
        await settle(app, pilot)
        pat = screen.pattern
        assert pat is not None and pat.request.layer == 5 and pat.request.head == 2
        assert pat.request.prompt == rv.request.clean
        assert all(abs(sum(row) - 1) < 1e-3 for row in pat.weights)  # softmax rows (no sink in llama)
        assert all(w == 0 for q, row in enumerate(pat.weights) for w in row[q + 1:])  # causal
        assert screen.query_one(PatternView).row_count == n
        await pilot.press("p")
        await settle(app, pilot)
        assert screen.pattern.request.prompt == rv.request.corrupt

        # b: the batch twin (the twin dialog), run for real, and the API: the same numbers
        await pilot.press("b")
        await pilot.pause(0.1)
        assert isinstance(app.screen, TwinDialog) and app.screen.lines == [screen.twin]
        twin = screen.twin
        assert twin.startswith("lazarus --batch attribute") and "--verify 4" in twin
    argv = shlex.split(twin)[2:]
    proc = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "lazarus_tui.cli", "--batch", *argv,
                                                    "--json"], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    batch = json.loads(proc.stdout)
    from engine import ModelAnalyzer

    async with ModelAnalyzer.from_pretrained(rv.request.model) as analyzer:
        api = await analyzer.attribute(rv.request.clean, rv.request.corrupt, rv.request.target,
                                       sites=rv.request.sites, verify=4)
    for other in (batch, api.model_dump()):
        assert other["clean_metric"] == pytest.approx(rv.clean_metric, abs=1e-4)
        assert other["corrupt_metric"] == pytest.approx(rv.corrupt_metric, abs=1e-4)
        mine = {key(s): s.estimate for s in rv.sites}
        theirs = {(s["site"], s["position"], s["head"], s["neuron"]): s["estimate"] for s in other["sites"]}
        assert theirs.keys() == mine.keys()
        scale = max(abs(v) for v in mine.values())
        assert max(abs(theirs[k] - mine[k]) for k in mine) <= 1e-4 * scale
        assert [v["real"] for v in other["verified"]] == pytest.approx([v.real for v in rv.verified], abs=1e-4)


async def test_bad_input_is_one_notification(fake_engine) -> None:
    app = LazarusApp(fake_engine)
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(app, pilot)
        await pilot.press("f7")
        await pilot.pause(0.1)
        screen = app.screen
        assert isinstance(screen, AttributionScreen)
        cases = (({"#corrupt": ""}, "type a clean and a corrupted prompt"),
                 ({"#sites": "resid_post,x"}, "bad --sites"),
                 ({"#metric": "logit-diff"}, "logit-diff needs a baseline"))
        for values, needle in cases:
            old = {f: screen.query_one(f).value for f in values}
            for f, v in values.items():
                screen.query_one(f).value = v
            screen.query_one("#clean").focus()
            await pilot.press("enter")
            await settle(app, pilot)
            assert any(needle in n.message for n in app._notifications), needle
            for f, v in old.items():
                screen.query_one(f).value = v
        screen.query_one("#metric").value = "logprob"
        screen.query_one("#k").value = "0"
        screen.query_one("#top").focus()
        await pilot.press("r")  # verification needs K >= 1
        await settle(app, pilot)
        assert any("K must be at least 1" in n.message for n in app._notifications)
        assert screen.result is None and not [r for r in fake_engine.requests if r.kind == "attribute"]


async def test_labels_stale_chat_twin_and_narrow_panes(fake_engine) -> None:
    """The result is labelled; chat and model changes mark it STALE; the chat run's twin has
    --chat; at 80×24 one view at a time (`v`), and a head's pattern brings its pane forward."""
    app = LazarusApp(fake_engine)
    async with app.run_test(size=(80, 24)) as pilot:
        await scenarios.attribution(pilot)
        screen = app.screen
        r = screen.result
        assert r is not None and len(r.verified) == 4 and r.request.chat is False
        assert [v.real for v in r.verified] == [round(0.9 * s.estimate, 4) for s in r.sites[:4]]
        line = screen.query_one("#provenance")
        assert str(line.render()).startswith("results from fake-8l · chat template off · metric logprob")
        # the pattern of L4 H1 (scenario) is shown, in its pane, alone
        assert screen.pattern.request.layer == 4 and screen.pattern.request.head == 1
        shown = [sel for sel in screen.PANES if screen.query_one(sel).display]
        assert shown == ["#pattern-box"] and screen.focused is screen.query_one("#pattern")
        await pilot.press("v")  # wraps to the top sites
        assert [sel for sel in screen.PANES if screen.query_one(sel).display] == ["#top"]
        assert screen.focused is screen.query_one("#top")

        screen.query_one("#chat").value = True
        await pilot.pause()
        assert str(line.render()).startswith("STALE (chat template now on)")
        assert screen.query_one("#attr-main").has_class("-stale")
        await pilot.press("r")  # rerun (with verification) from the table, chat on
        await scenarios.settle(pilot)
        req = fake_engine.requests[-1]
        assert req.kind == "attribute" and req.chat is True and req.verify == 4
        assert "chat template on" in str(line.render()) and not screen.query_one("#attr-main").has_class("-stale")
        await pilot.press("b")
        await pilot.pause(0.1)
        assert isinstance(app.screen, TwinDialog)
        twin = app.screen.lines
        assert len(twin) == 1 and "--chat" in shlex.split(twin[0]) and "--verify 4" in twin[0]
        await pilot.press("escape")
        app.load_model("gemma3-270m", None)
        await scenarios.settle(pilot)
        assert str(line.render()).startswith("STALE (the model is now gemma3-270m)")
        n = len(fake_engine.requests)
        await pilot.press("p")  # a pattern for the old results would load their model again: refused
        await scenarios.settle(pilot)
        assert len(fake_engine.requests) == n
        assert any("rerun (enter) first" in x.message for x in app._notifications)
