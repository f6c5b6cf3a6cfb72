"""Pilot tests of each screen on the real SmolLM2 (the bundled default model)."""

from __future__ import annotations

import asyncio

import pytest

from lazarus_tui.app import LazarusApp
from lazarus_tui.screens.lens import LensScreen
from lazarus_tui.screens.tracking import TrackingScreen
from lazarus_tui.widgets.charts import TrackedTokenChart
from lazarus_tui.widgets.generation_grid import GenerationGrid
from lazarus_tui.widgets.layer_table import LayerTable
from lazarus_tui.widgets.rank_table import RankTable

pytestmark = [pytest.mark.real_model, pytest.mark.timeout(300)]
PROMPT = "The capital of France is"


async def settle(app, pilot) -> None:
    await pilot.pause(0.05)
    await app.workers.wait_for_complete()
    await pilot.pause(0.1)


async def type_prompt(pilot, text: str) -> None:
    await pilot.click("#prompt")
    await pilot.press(*text)
    await pilot.press("enter")


async def test_lens_shows_paris(real_engine) -> None:
    app = LazarusApp(real_engine)
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(app, pilot)
        assert app.model_info.model_id == "smollm2-135m"
        assert isinstance(app.screen, LensScreen)
        await type_prompt(pilot, PROMPT)
        await settle(app, pilot)
        table = app.screen.query_one(LayerTable)
        assert table.row_count == 30  # default strategy: all layers
        last = table.row_texts(table.row_count - 1)
        assert last[0].startswith("29") and last[1] == "' Paris'"
        assert 0.5 < float(last[2]) <= 1.0
        r = app.screen.result
        assert r.predicted_token == " Paris" and r.request.prompt == PROMPT
        # the heat-strip's ranks are full-vocabulary ranks of ' Paris': 1 at the last layer, large early
        ranks = app.screen.final_ranks
        assert ranks[29] == 1 and ranks[0] > 100
        # enter on a layer row shows its full top-k and KL to the next layer
        table.focus()
        table.move_cursor(row=28)
        await pilot.press("enter")
        detail = str(app.screen.query_one("#detail").render())
        assert "layer 28" in detail and "KL to layer 29" in detail
        # the position selector: `[` re-runs the lens one prompt position earlier (after " France")
        await pilot.press("left_square_bracket")
        await settle(app, pilot)
        assert app.screen.result.position == len(r.tokens) - 2
        assert app.screen.result.request.position == len(r.tokens) - 2


async def test_tracking_paris_probability_per_layer(real_engine) -> None:
    app = LazarusApp(real_engine)
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(app, pilot)
        await pilot.press("f2")  # the prompt has focus: digits type, F-keys switch
        await pilot.pause(0.1)
        screen = app.screen
        assert isinstance(screen, TrackingScreen)
        await pilot.click("#add-token")
        await pilot.press("space", *"Paris", "enter")
        await settle(app, pilot)
        assert screen.tracked == [" Paris"]
        assert "' Paris' → token" in str(screen.query_one("#lookup-note").render())
        await type_prompt(pilot, PROMPT)
        await settle(app, pilot)
        ev = screen.result.token_evolutions[0]
        assert ev.token == " Paris" and len(ev.layer_probabilities) == 30
        assert ev.layer_ranks[29] == 1 and ev.emergence_layer is not None
        # the same probability the lens screen's engine call computes for the final layer
        lens = await real_engine.analyze(screen.result.request.model_copy(update={"track_tokens": []}))
        assert ev.layer_probabilities[29] == pytest.approx(lens.predicted_probability, rel=1e-5)
        chart = screen.query_one(TrackedTokenChart)
        assert [e.token for e in chart.evolutions] == [" Paris"]
        rank_table = screen.query_one(RankTable)
        assert rank_table.row_count == 30
        assert str(rank_table.get_row_at(29)[2]).startswith("1")
        # generation tracking: 3 greedy tokens, a positions x layers grid
        gen_n = screen.query_one("#gen-n")
        gen_n.value = "3"
        await pilot.click("#gen-n")
        await pilot.press("enter")
        await settle(app, pilot)
        res = screen.generation
        assert res is not None and len(res.positions) == 3
        first = res.positions[0]
        assert first.token == " Paris" and first.ranks[-1] == 1
        assert first.ranks[:5] == [ev.layer_ranks[i] for i in range(5)]  # same lens, two code paths
        grid = screen.query_one(GenerationGrid)
        assert grid.row_count == 3 and len(grid.columns) == 4 + 30


async def test_multi_token_warning(real_engine) -> None:
    app = LazarusApp(real_engine)
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(app, pilot)
        await pilot.press("f2")
        await pilot.click("#add-token")
        await pilot.press(*"xqzvw", "enter")
        await settle(app, pilot)
        notes = [n.message for n in app._notifications]
        assert any("tokens" in m and "tracking the first" in m for m in notes), notes


async def test_empty_prompt_is_a_notification(real_engine) -> None:
    app = LazarusApp(real_engine)
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(app, pilot)
        await pilot.click("#prompt")
        await pilot.press("enter")
        await settle(app, pilot)
        errors = [n for n in app._notifications if n.severity == "error"]
        assert errors and "empty prompt" in errors[0].message
        assert app.is_running and isinstance(app.screen, LensScreen)


async def test_cancel_leaves_screen_usable(real_engine) -> None:
    app = LazarusApp(real_engine)
    long_prompt = "The quick brown fox jumps over the lazy dog. " * 150  # ~1500 tokens
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(app, pilot)
        screen = app.screen
        await pilot.click("#prompt")
        screen.query_one("#prompt").value = long_prompt
        await pilot.press("enter")
        for _ in range(200):  # until the engine reports its first layer
            await pilot.pause(0.02)
            if "layer" in app.screen.status:
                break
        job = screen.jobs["lens"]
        await pilot.press("escape")  # cancels, though the focus is still in the prompt
        await settle(app, pilot)
        assert job.cancel_requested and job.done()
        assert app.screen.status == "analyze: cancelled"
        assert screen.result is None
        await pilot.click("#prompt")
        screen.query_one("#prompt").value = PROMPT
        await pilot.press("enter")
        await settle(app, pilot)
        assert screen.result.predicted_token == " Paris"


async def test_new_request_supersedes_running_one(real_engine) -> None:
    app = LazarusApp(real_engine)
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(app, pilot)
        screen = app.screen
        screen.query_one("#prompt").value = "The quick brown fox jumps over the lazy dog. " * 150
        await pilot.click("#prompt")
        await pilot.press("enter")
        await pilot.pause(0.05)
        first = screen.jobs["lens"]
        screen.query_one("#prompt").value = PROMPT
        await pilot.click("#prompt")
        await pilot.press("enter")
        await settle(app, pilot)
        assert first.cancel_requested
        assert screen.result.prompt == PROMPT and screen.result.predicted_token == " Paris"
        await asyncio.sleep(0)
