"""The app says so when the engine thread died and a new one took over (no model needed)."""

from __future__ import annotations

import asyncio

import pytest

from engine.session import EngineStopped
from lazarus_tui.app import LazarusApp
from lazarus_tui.engine_client import EngineClient


async def test_engine_thread_death_is_a_notification_and_work_goes_on(monkeypatch) -> None:
    client = EngineClient()
    session = client.session
    real = session._run_one

    def broken(job, fn, on_progress):  # a bug in the engine loop itself
        monkeypatch.setattr(session, "_run_one", real)
        session._running = job
        raise RuntimeError("loop bug")

    app = LazarusApp(client, load_on_start=False)
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.1)
            monkeypatch.setattr(session, "_run_one", broken)
            victim = session.submit(lambda ctx: "never", name="victim")
            with pytest.raises(EngineStopped):
                await asyncio.wait_for(asyncio.wrap_future(victim.future), 10)
            assert await asyncio.wait_for(session.submit(lambda ctx: 42), 10) == 42
            await pilot.pause(0.2)
            notes = [n.message for n in app._notifications]
            assert any("engine thread stopped (RuntimeError: loop bug)" in m for m in notes), notes
            assert app.engine_status == "engine restarted"
    finally:
        client.close()
