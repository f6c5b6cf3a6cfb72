"""The UI thread never waits on MLX: a UI timer keeps firing while the engine runs a long lens."""

from __future__ import annotations

import os
import time

import pytest

from lazarus_tui.app import LazarusApp

pytestmark = [pytest.mark.real_model, pytest.mark.alone, pytest.mark.timeout(300)]
MAX_GAP_S = 0.25


async def test_ui_timer_keeps_firing_during_long_analysis(real_engine) -> None:
    prompt = "In the beginning the town was small and quiet, and its people farmed the hills. " * 40
    app = LazarusApp(real_engine)
    async with app.run_test(size=(160, 50)) as pilot:
        await pilot.pause(0.05)
        await app.workers.wait_for_complete()
        ticks: list[float] = []
        app.set_interval(0.02, lambda: ticks.append(time.perf_counter()))
        screen = app.screen
        screen.query_one("#prompt").value = prompt
        await pilot.click("#prompt")
        t0 = time.perf_counter()
        await pilot.press("enter")
        await pilot.pause(0.01)
        job = screen.jobs["lens"]
        finished: list[float] = []
        job.future.add_done_callback(lambda _: finished.append(time.perf_counter()))  # on the engine thread
        while not job.done():
            await pilot.pause(0.02)
        await app.workers.wait_for_complete()
        t1 = finished[0]
        result = screen.result
        assert result is not None and len(result.tokens) >= 600
        during = [t for t in ticks if t0 <= t <= t1]
        assert t1 - t0 > 1.0, "the analysis must be long enough for the measurement to mean something"
        gaps = [b - a for a, b in zip([t0, *during], [*during, t1])]
        max_gap = max(gaps)
        worst = sorted(zip(gaps, [t0, *during]), reverse=True)[:3]
        print(f"\nanalysis of {len(result.tokens)} tokens took {t1 - t0:.2f}s; {len(during)} UI ticks; "
              f"max gap {max_gap * 1000:.0f} ms; worst (gap ms, at s): "
              f"{[(round(g * 1000), round(a - t0, 2)) for g, a in worst]}")
        # Always: the UI was never blocked for a sizeable part of the run (MLX on the UI thread would
        # leave one gap as long as the whole analysis) and kept most of its tick rate.
        assert max_gap < min(2.0, (t1 - t0) / 5)
        assert len(during) > 0.5 * (t1 - t0) / 0.02
        # The 250 ms bound holds unless other processes oversubscribe the CPUs (a shared 2-core
        # box at load 8 starves any thread, idle or not); then report instead of failing.
        load_per_cpu = os.getloadavg()[0] / (os.cpu_count() or 1)
        if max_gap >= MAX_GAP_S and load_per_cpu > 1.5:
            pytest.xfail(f"max gap {max_gap * 1000:.0f} ms under external load {load_per_cpu:.1f}/cpu")
        assert max_gap < MAX_GAP_S
