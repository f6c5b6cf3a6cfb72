"""Snapshot tests (pytest-textual-snapshot) of each screen, on the deterministic fake engine.

Update after an intended UI change: ``.venv/bin/pytest tests/tui/test_snapshots.py --snapshot-update``.
Every screen with a result shown (tests/tui/scenarios.py) at 80×24 (narrow: one pane at a time)
and 200×50.
"""

from __future__ import annotations

import pytest
import scenarios

from lazarus_tui.app import LazarusApp

SIZE = (160, 50)


async def _settle(pilot) -> None:
    await pilot.pause(0.05)
    await pilot.app.workers.wait_for_complete()
    await pilot.pause(0.05)


def _app(engine) -> LazarusApp:
    return LazarusApp(engine)


def test_help_modal(snap_compare, fake_engine) -> None:
    async def run_before(pilot) -> None:
        await _settle(pilot)
        await pilot.press("f2")
        await pilot.press("escape", "question_mark")  # out of the prompt, then help
        await _settle(pilot)
    assert snap_compare(_app(fake_engine), terminal_size=SIZE, run_before=run_before)


def test_model_picker(snap_compare, fake_engine) -> None:
    async def run_before(pilot) -> None:
        await _settle(pilot)
        pilot.app.action_pick_model()
        await _settle(pilot)
    assert snap_compare(_app(fake_engine), terminal_size=SIZE, run_before=run_before)


@pytest.mark.parametrize("size", [(80, 24), (200, 50)], ids=["80x24", "200x50"])
@pytest.mark.parametrize("name", list(scenarios.SCENARIOS))
def test_screen_with_result(snap_compare, fake_engine, name, size) -> None:
    async def run_before(pilot) -> None:
        await scenarios.settle(pilot)
        await scenarios.SCENARIOS[name](pilot)
        await scenarios.settle(pilot)
    assert snap_compare(_app(fake_engine), terminal_size=size, run_before=run_before)
