"""Pilot test of the Steering screen on the real SmolLM2: extract, live strength with ← → (also pressed
while the engine is busy), cancel, then a lens on another screen."""

from __future__ import annotations

import asyncio
import json
import shlex
import subprocess
import sys
import threading

import pytest

from lazarus_tui.app import LazarusApp
from lazarus_tui.screens.lens import LensScreen
from lazarus_tui.screens.steering import SeparationChart, SteeringScreen

pytestmark = [pytest.mark.real_model, pytest.mark.timeout(300)]


async def settle(app, pilot) -> None:
    await pilot.pause(0.05)
    await app.workers.wait_for_complete()
    await pilot.pause(0.1)


async def settle_within(app, pilot, seconds: float) -> None:
    """``settle``, failing instead of hanging when a job never ends."""
    await pilot.pause(0.05)
    await asyncio.wait_for(app.workers.wait_for_complete(), seconds)
    await pilot.pause(0.1)


async def test_steering_screen_live_strength_and_cancel(real_engine) -> None:
    app = LazarusApp(real_engine)
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(app, pilot)
        await pilot.press("f4")
        await settle(app, pilot)
        screen = app.screen
        assert isinstance(screen, SteeringScreen)

        # extract: two pairs, raw prompts, layer 10
        screen.query_one("#chat").value = False
        screen.query_one("#positive").value = "I love this, it is wonderful.|What a fantastic day."
        screen.query_one("#negative").value = "I hate this, it is awful.|What a terrible day."
        screen.query_one("#layer").value = "10"
        screen.query_one("#positive").focus()
        await pilot.press("enter")
        await settle(app, pilot)
        d = screen.direction
        assert d is not None and d.layer == 10 and len(d.per_layer) == 30
        chart = screen.query_one(SeparationChart)
        assert len(chart.separation) == 30 and chart.steer_layer == 10

        # a prompt at strength 0: the unsteered continuation
        screen.query_one("#tokens").value = "6"
        screen.query_one("#prompt").focus()
        screen.query_one("#prompt").value = "I think the movie was"
        await pilot.press("enter")
        await settle(app, pilot)
        base = screen.live_result.outputs[0]
        assert base.coefficient == 0.0 and base.added_norm == 0.0 and base.text
        assert screen.query_one("#prompt").has_focus  # the run left the focus where the user typed
        await pilot.press("escape")  # to the strength bar, where ← → act
        assert screen.query_one("#strength").has_focus

        # → six times ~150 ms apart: strength +0.30, re-generated live, the text changes. Each press
        # replaces a generation still queued behind a busy engine (as with a long prompt or a slow
        # machine; held busy here so that this happens on any machine): the engine thread used to die
        # on the replaced job's cancelled future (InvalidStateError) and every later job hung.
        session = real_engine.session
        restarts = session.restarts
        release = threading.Event()
        busy = session.submit(lambda ctx: release.wait(30), name="busy")
        for _ in range(6):
            await pilot.press("right")
            await pilot.pause(0.15)
        release.set()
        assert busy.result(timeout=30)
        await settle_within(app, pilot, 60)
        assert session.alive() and session.restarts == restarts
        up = screen.live_result.outputs[0]
        assert screen.strength == pytest.approx(0.3)
        assert up.coefficient == pytest.approx(0.3) and up.layer == 10
        assert up.token_ids != base.token_ids
        assert "+0.30" in str(screen.query_one("#live").render())
        # ← back to a weaker strength updates again
        await pilot.press("left")
        await settle(app, pilot)
        assert screen.live_result.outputs[0].coefficient == pytest.approx(0.25)

        # the batch twin: the dialog's line runs headless and generates the same tokens
        await pilot.press("b")
        assert app.screen.lines == [screen.twin_command()]
        await pilot.press("escape")
        twin = screen.twin_command()
        assert "lazarus --batch steer --extract" in twin and "-c 0.25" in twin and "--chat" not in twin
        proc = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "lazarus_tui.cli",
                                                        *shlex.split(twin)[1:], "--json"],
                                       check=False, capture_output=True, text=True, timeout=240)
        assert proc.returncode == 0, proc.stderr
        got = json.loads(proc.stdout)["outputs"][0]
        live = screen.live_result.outputs[0]
        assert got["token_ids"] == live.token_ids and got["layer"] == live.layer == 10

        # cancel: a long generation, esc right away; the shown result stays the previous one
        screen.query_one("#tokens").value = "400"
        screen.query_one("#strength").focus()
        await pilot.press("right")
        await pilot.pause(0.3)
        assert screen.jobs, "the live generation should be running"
        await pilot.press("escape")
        await settle(app, pilot)
        assert not screen.jobs
        assert app.screen.status.endswith("cancelled")
        assert screen.live_result.outputs[0].coefficient == pytest.approx(0.25)

        # another screen's job still runs: the lens
        await pilot.press("f1")
        await settle_within(app, pilot, 60)
        lens = app.screen
        assert isinstance(lens, LensScreen)
        lens.query_one("#prompt").focus()
        lens.query_one("#prompt").value = "The capital of France is"
        await pilot.press("enter")
        await settle_within(app, pilot, 60)
        assert lens.result is not None and lens.result.predicted_token == " Paris"

