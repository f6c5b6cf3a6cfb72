"""The lens and tracking twins (`b`) run headless and reproduce the screens' numbers (SmolLM2).
Ablation, Circuit and Workbench twins are run/compared in their own screen tests."""

from __future__ import annotations

import asyncio
import json
import shlex
import subprocess
import sys

import pytest

from lazarus_tui.app import LazarusApp

PROMPT = "The capital of France is"


async def settle(app, pilot) -> None:
    await pilot.pause(0.05)
    await app.workers.wait_for_complete()
    await pilot.pause(0.05)


async def run_twin(line: str) -> dict:
    argv = shlex.split(line)[1:] + ["--json"]
    proc = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "lazarus_tui.cli", *argv],
                                   check=False, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.real_model
@pytest.mark.timeout(400)
async def test_lens_and_tracking_twins_reproduce_the_screens(real_engine) -> None:
    app = LazarusApp(real_engine)
    async with app.run_test(size=(200, 50)) as pilot:
        await settle(app, pilot)
        await pilot.press(*PROMPT, "enter")
        await settle(app, pilot)
        lens = app.screen.result
        await pilot.press("escape", "b")
        lens_lines = app.screen.lines
        await pilot.press("escape", "f2")
        screen = app.screen
        screen.query_one("#add-token").focus()
        await pilot.press("space", *"Paris", "enter")
        await settle(app, pilot)
        screen.query_one("#prompt").focus()
        await pilot.press(*PROMPT, "enter")
        await settle(app, pilot)
        screen.query_one("#gen-n").value = "3"
        await pilot.press("ctrl+g")
        await settle(app, pilot)
        track, gen = screen.result, screen.generation
        await pilot.press("escape", "b")
        track_lines = app.screen.lines
    assert len(lens_lines) == 1 and len(track_lines) == 2
    got = await run_twin(lens_lines[0])
    assert [lp["predictions"][0]["token_id"] for lp in got["layer_predictions"]] == [
        lp.predictions[0].token_id for lp in lens.layer_predictions]
    assert [lp["predictions"][0]["probability"] for lp in got["layer_predictions"]] == pytest.approx(
        [lp.predictions[0].probability for lp in lens.layer_predictions], abs=1e-5)
    got = await run_twin(track_lines[0])
    assert got["token_evolutions"][0]["layer_ranks"] == {str(k): v for k, v in
                                                         track.token_evolutions[0].layer_ranks.items()}
    got = await run_twin(track_lines[1])
    assert [p["token_id"] for p in got["positions"]] == [p.token_id for p in gen.positions]
    assert [p["ranks"] for p in got["positions"]] == [p.ranks for p in gen.positions]
