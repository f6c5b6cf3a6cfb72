"""The Ablation screen: Pilot on the real SmolLM2 (a toggled set, a cancelled sweep), the batch
twin reproducing the screen's numbers, error notifications, and a FakeEngine snapshot."""

from __future__ import annotations

import asyncio
import json
import shlex
import subprocess
import sys
import time

import pytest

from engine.results.ablation import AblationRequest
from lazarus_tui.app import LazarusApp
from lazarus_tui.screens.ablation import SWEEP_CHUNK, AblationScreen
from lazarus_tui.widgets.ablation_grid import AblationGrid, ResultsTable, outcome

PROMPT = "The capital of France is"


async def settle(app, pilot) -> None:
    await pilot.pause(0.05)
    await app.workers.wait_for_complete()
    await pilot.pause(0.1)


async def open_screen(app, pilot, prompt: str = PROMPT, criterion: str = "Paris", tokens: str = "4"):
    await settle(app, pilot)
    await pilot.press("f3")
    await pilot.pause(0.1)
    screen = app.screen
    assert isinstance(screen, AblationScreen)
    screen.query_one("#prompt").value = prompt
    screen.query_one("#criterion").value = criterion
    screen.query_one("#tokens").value = tokens
    screen.query_one("#chat").value = False
    return screen


async def goto(pilot, grid: AblationGrid, layer: int, col: int) -> None:
    grid.focus()
    grid.move_cursor(row=layer, column=col)
    await pilot.pause(0.05)


@pytest.mark.real_model
@pytest.mark.timeout(300)
async def test_toggle_two_cells_run_and_twin(real_engine) -> None:
    app = LazarusApp(real_engine)
    async with app.run_test(size=(160, 50)) as pilot:
        screen = await open_screen(app, pilot)
        grid = screen.query_one(AblationGrid)
        assert grid.n_layers == 30 and grid.row_count == 30
        await goto(pilot, grid, 0, 0)
        await pilot.press("space")  # L0 mlp
        await goto(pilot, grid, 29, 1)
        await pilot.press("space")  # L29 attention
        await pilot.press("space", "space")  # toggle off and on again
        assert grid.selected == {(0, "mlp"), (29, "attention")}
        await pilot.press("enter")
        await settle(app, pilot)
        r = screen.result
        assert r is not None and r.num_layers == 30
        assert len(r.points) == 1
        spec = r.points[0].spec
        assert list(zip(spec.layers, [c.value for c in spec.components])) == [(0, "mlp"), (29, "attention")]
        base, abl = r.baseline[0], r.points[0].outputs[0]
        assert "Paris" in base.text and base.passed is True  # SmolLM2 knows it...
        assert abl.passed is False and abl.diverged_at == 0  # ...and not without layer 0's MLP
        # both toggled cells show the set's one result: fail, diverged at token 0
        label, _ = outcome(r.points[0].outputs)
        assert label == "✗ d0"
        assert grid.cell_text((0, "mlp")) == "[x] ✗ d0" == grid.cell_text((29, "attention"))
        assert grid.cell_text((5, "mlp")) == ""
        # the detail panes: baseline vs ablated text of the highlighted cell
        assert base.text.strip()[:10] in str(screen.query_one("#base-pane").render())
        assert abl.text.strip()[:10] in str(screen.query_one("#abl-pane").render())
        assert screen.query_one(ResultsTable).row_count == 2  # baseline + the set

        # b: the batch twin runs the same study and gets the same tokens
        await pilot.press("b")
        twin = screen.twin
        assert twin.startswith("lazarus --batch ablate") and "--cells 0:mlp,29:attention" in twin
        argv = shlex.split(twin)[1:] + ["--json"]
        proc = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "lazarus_tui.cli", *argv],
                                       check=False, capture_output=True, text=True, timeout=240)
        assert proc.returncode == 0, proc.stderr
        batch = json.loads(proc.stdout)
        assert batch["baseline"][0]["token_ids"] == base.token_ids
        assert batch["points"][0]["outputs"][0]["token_ids"] == abl.token_ids
        assert batch["points"][0]["label"] == r.points[0].label


@pytest.mark.real_model
@pytest.mark.timeout(300)
async def test_sweep_cancel_keeps_partial_cells_then_new_run(real_engine) -> None:
    app = LazarusApp(real_engine)
    async with app.run_test(size=(160, 50)) as pilot:
        screen = await open_screen(app, pilot, tokens="6")
        grid = screen.query_one(AblationGrid)
        await goto(pilot, grid, 0, 0)
        await pilot.press("s")  # sweep the mlp column, SWEEP_CHUNK layers per batch
        deadline = time.monotonic() + 120
        while not grid.results and time.monotonic() < deadline:  # the first batch lands live
            await asyncio.sleep(0.1)
        assert grid.results, "no live cells from the sweep"
        await pilot.press("escape")
        await settle(app, pilot)
        done = sorted(grid.results)
        assert SWEEP_CHUNK <= len(done) < 30  # cancelled before the end, finished batches kept
        assert not grid.pending and screen.result is None
        assert "cancelled" in app.screen.status
        # the live cells hold the engine's real numbers: the same points run directly
        req = AblationRequest(prompt=PROMPT, criterion="Paris", chat=False, max_tokens=6,
                              layers=list(range(SWEEP_CHUNK)))
        direct = real_engine.ablate(req).result()
        for p in direct.points:
            cell = (p.spec.layers[0], "mlp")
            assert grid.results[cell] == outcome(p.outputs)
            assert screen.cell_outputs[cell][1][0].token_ids == p.outputs[0].token_ids

        # the screen stays usable: a set runs to the end
        await goto(pilot, grid, 29, 0)
        await pilot.press("space", "enter")
        await settle(app, pilot)
        r = screen.result
        assert r is not None and r.points[0].spec.layers == [29]
        assert grid.cell_text((29, "mlp")) == "[x] " + outcome(r.points[0].outputs)[0]
        assert "done" in app.screen.status


async def test_errors_are_notifications(fake_engine) -> None:
    app = LazarusApp(fake_engine)
    async with app.run_test(size=(160, 50)) as pilot:
        screen = await open_screen(app, pilot, criterion="re:(")
        grid = screen.query_one(AblationGrid)
        await goto(pilot, grid, 2, 0)
        await pilot.press("enter")
        await settle(app, pilot)
        assert any("bad regex" in n.message for n in app._notifications)
        screen.query_one("#criterion").value = "Paris"
        screen.query_one("#cases").value = "no colon here"
        await pilot.press("s")
        await settle(app, pilot)
        assert any("has no ':'" in n.message for n in app._notifications)
        assert screen.result is None and isinstance(app.screen, AblationScreen)
        # difficulty gradient: one column per prompt, pass counts in the grid
        screen.query_one("#cases").value = "The capital of France is:Paris|Paris is the capital of:France"
        await pilot.press("s")
        await settle(app, pilot)
        r = screen.result
        assert [c.expected for c in r.request.prompts] == ["Paris", "France"]
        table = screen.query_one(ResultsTable)
        assert table.row_count == 1 + 8 and len(table.columns) == 3
        assert grid.cell_text((6, "mlp")) == outcome(r.points[6].outputs)[0] == "0/2 d0"
        assert grid.cell_text((1, "mlp")) == "1/2 ="  # ' Paris. It is' has no 'France'


def test_ablation_snapshot(snap_compare, fake_engine) -> None:
    async def run_before(pilot) -> None:
        app = pilot.app
        screen = await open_screen(app, pilot)
        grid = screen.query_one(AblationGrid)
        await goto(pilot, grid, 5, 0)
        await pilot.press("space")
        await goto(pilot, grid, 3, 1)
        await pilot.press("space", "enter")
        await settle(app, pilot)
        await goto(pilot, grid, 0, 2)
        await pilot.press("s")
        await settle(app, pilot)
        await goto(pilot, grid, 6, 2)
        await settle(app, pilot)
    assert snap_compare(LazarusApp(fake_engine), terminal_size=(160, 50), run_before=run_before)
