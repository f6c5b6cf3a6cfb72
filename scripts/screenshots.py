"""Drive the TUI with Pilot on the real default model and save screenshots to screenshots/.

    .venv/bin/python scripts/screenshots.py [-m MODEL]

Writes SVG (app.save_screenshot) and, when cairosvg is installed, PNG next to it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lazarus_tui.app import LazarusApp  # noqa: E402
from lazarus_tui.engine_client import EngineClient  # noqa: E402

OUT = ROOT / "screenshots"
PROMPT = "The capital of France is"


async def settle(app: LazarusApp, pilot, extra: float = 0.2) -> None:
    await pilot.pause(0.05)
    await app.workers.wait_for_complete()
    await pilot.pause(extra)


def save(app: LazarusApp, name: str) -> None:
    svg = OUT / f"{name}.svg"
    app.save_screenshot(filename=svg.name, path=str(OUT))
    try:
        import cairosvg
    except ImportError:
        print(f"wrote {svg.relative_to(ROOT)} (install cairosvg for PNG)")
        return
    cairosvg.svg2png(url=str(svg), write_to=str(svg.with_suffix(".png")))
    print(f"wrote {svg.relative_to(ROOT)} and .png")


async def ablation(app: LazarusApp, pilot) -> None:
    """The Ablation screen: the mlp column swept, then L0 mlp + L29 attention toggled and run together."""
    screen = app.screen
    screen.query_one("#prompt").value = PROMPT
    screen.query_one("#criterion").value = "Paris"
    screen.query_one("#tokens").value = "6"
    screen.query_one("#raw").value = True
    grid = screen.query_one("#grid")
    grid.focus()
    grid.move_cursor(row=0, column=0)
    await pilot.press("s")
    await settle(app, pilot)
    await pilot.press("space")
    grid.move_cursor(row=29, column=1)
    await pilot.press("space", "enter")
    await settle(app, pilot)
    grid.move_cursor(row=0, column=0)
    await settle(app, pilot)
    save(app, "ablation")


async def workbench(app: LazarusApp, pilot) -> None:
    """The Workbench screen: `layer` (cosine heatmaps) and `probe` (accuracy chart) on their example inputs."""
    screen = app.screen
    screen.query_one("#f-layers").value = "2,29"
    screen.action_run()
    await settle(app, pilot)
    screen.query_one("#wb-list").focus()
    await settle(app, pilot)
    save(app, "workbench-layer")
    await screen.choose("probe")
    screen.query_one("#f-layers").value = "0,2,4,8,12,16,20,24,29"
    screen.query_one("#f-test").value = "Is this a test?|This is a test."
    screen.action_run()
    await settle(app, pilot)
    screen.query_one("#wb-list").focus()
    await settle(app, pilot)
    save(app, "workbench-probe")


async def circuit(app: LazarusApp, pilot) -> None:
    """The Circuit screen: tool-calling (5 per tool, 30 without), all layers collected and analysed,
    the table on a middle layer."""
    screen = app.screen
    screen.query_one("#ci-per-tool").value = "5"
    screen.query_one("#ci-no-tool").value = "30"
    screen.query_one("#ci-sources").focus()
    await pilot.press("enter")
    await settle(app, pilot)
    await pilot.press("c")
    await settle(app, pilot)
    table = screen.query_one("#ci-table")
    table.focus()
    table.move_cursor(row=12)
    await settle(app, pilot)
    save(app, "circuit")


async def attribution(app: LazarusApp, pilot) -> None:
    """The Attribution screen: France -> Italy with heads, the top 10 verified, L23 H4's pattern."""
    screen = app.screen
    screen.query_one("#k").value = "10"
    screen.query_one("#top").focus()  # away from the text fields, where `v` would be typed
    await pilot.press("v")
    await settle(app, pilot)
    grid = screen.query_one("#heads")
    grid.focus()
    grid.move_cursor(row=23, column=5)
    await pilot.press("enter")
    await settle(app, pilot)
    save(app, "attribution")


async def steering(app: LazarusApp, pilot) -> None:
    """The Steering screen: a sentiment direction from the test pairs, steered at +0.3 on a neutral prompt."""
    from pathlib import Path

    data = Path(__file__).resolve().parents[1] / "tests" / "data"
    screen = app.screen
    screen.query_one("#positive").value = f"@{data / 'steering_positive.txt'}"
    screen.query_one("#negative").value = f"@{data / 'steering_negative.txt'}"
    screen.query_one("#layer").value = "10"
    screen.query_one("#raw").value = True
    screen.query_one("#positive").focus()
    await pilot.press("enter")
    await settle(app, pilot)
    screen.query_one("#prompt").value = "I think the movie was"
    screen.query_one("#prompt").focus()
    await pilot.press("enter")
    await settle(app, pilot)
    screen.action_compare()
    await settle(app, pilot)
    save(app, "steering")


async def main(model: str | None) -> None:
    OUT.mkdir(exist_ok=True)
    client = EngineClient(model=model)
    app = LazarusApp(client, model=model)
    try:
        async with app.run_test(size=(160, 50)) as pilot:
            await settle(app, pilot)
            await pilot.click("#prompt")
            await pilot.press(*PROMPT, "enter")
            await settle(app, pilot)
            await pilot.press(*["down"] * 27, "enter")
            await settle(app, pilot)
            save(app, "lens")
            await pilot.press("f2")
            await pilot.click("#add-token")
            await pilot.press("space", *"Paris", "enter")
            await settle(app, pilot)
            await pilot.click("#add-token")
            await pilot.press("space", *"London", "enter")
            await settle(app, pilot)
            await pilot.click("#prompt")
            await pilot.press(*PROMPT, "enter")
            await settle(app, pilot)
            app.screen.query_one("#gen-n").value = "8"
            await pilot.click("#gen-n")
            await pilot.press("enter")
            await settle(app, pilot)
            app.screen.query_one("#gen-grid").focus()
            await settle(app, pilot)
            save(app, "tracking")
            app.screen.action_toggle_log()
            await settle(app, pilot)
            save(app, "tracking-log")
            await pilot.press("f1", "question_mark")
            await settle(app, pilot)
            save(app, "help")
            await pilot.press("escape")
            app.action_pick_model()
            await settle(app, pilot)
            save(app, "model-picker")
            await pilot.press("escape", "f3")
            await settle(app, pilot)
            await ablation(app, pilot)
            await pilot.press("f4")
            await settle(app, pilot)
            await steering(app, pilot)
            await pilot.press("f5")
            await settle(app, pilot)
            await workbench(app, pilot)
            await pilot.press("f6")
            await settle(app, pilot)
            await circuit(app, pilot)
            await pilot.press("f7")
            await settle(app, pilot)
            await attribution(app, pilot)
    finally:
        client.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-m", "--model", default=None)
    asyncio.run(main(p.parse_args().model))
