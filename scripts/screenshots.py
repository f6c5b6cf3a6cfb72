"""Drive the TUI with Pilot on the real default model and save screenshots to screenshots/.

    .venv/bin/python scripts/screenshots.py [-m MODEL] [--sizes 80x24,200x50]

Every screen with a result, at each size: ``NAME-80x24.svg`` / ``.png`` (narrow: one pane at a
time, the one the user lands on) and ``NAME-200x50``. Writes SVG (app.save_screenshot) and, when
cairosvg is installed, PNG next to it.
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


SUFFIX = ""  # "-80x24" while that size is being shot


def save(app: LazarusApp, name: str) -> None:
    svg = OUT / f"{name}{SUFFIX}.svg"
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
    if not screen.narrow():  # narrow: the view switched to the result pane
        screen.query_one("#wb-list").focus()
    await settle(app, pilot)
    save(app, "workbench-layer")
    await screen.choose("probe")
    screen.query_one("#f-layers").value = "0,2,4,8,12,16,20,24,29"
    screen.query_one("#f-test").value = "Is this a test?|This is a test."
    screen.action_run()
    await settle(app, pilot)
    if not screen.narrow():
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
    """The Attribution screen: France -> Italy with heads, the top 10 verified, L23 H4's pattern
    (80×24: the pattern pane, and the top sites pane with the real effects)."""
    screen = app.screen
    screen.query_one("#k").value = "10"
    screen.query_one("#clean").focus()
    await pilot.press("escape", "r")  # esc: to the top sites; r: run and patch the top 10 for real
    await settle(app, pilot)
    grid = screen.query_one("#heads")
    screen.reveal(grid)
    grid.focus()
    grid.move_cursor(row=23, column=5)
    await pilot.press("enter")
    await settle(app, pilot)
    save(app, "attribution")
    if screen.narrow():
        await pilot.press("v")  # the top sites pane
        await settle(app, pilot)
        save(app, "attribution-top")


async def steering(app: LazarusApp, pilot) -> None:
    """The Steering screen: a sentiment direction from the test pairs, steered at +0.3 on a neutral prompt."""
    from pathlib import Path

    data = Path(__file__).resolve().parents[1] / "tests" / "data"
    screen = app.screen
    screen.query_one("#positive").value = f"@{data / 'steering_positive.txt'}"
    screen.query_one("#negative").value = f"@{data / 'steering_negative.txt'}"
    screen.query_one("#layer").value = "10"
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


async def shoot(app: LazarusApp, pilot) -> None:
    await settle(app, pilot)
    app.screen.query_one("#prompt").focus()
    await pilot.press(*PROMPT, "enter")
    await settle(app, pilot)
    await pilot.press("escape", *["down"] * 27)  # esc: to the table, layer 27's detail
    await settle(app, pilot)
    save(app, "lens")
    if app.screen.narrow():
        await pilot.press("v")  # the chart pane
        await settle(app, pilot)
        save(app, "lens-chart")
    await pilot.press("f2")
    screen = app.screen
    screen.query_one("#add-token").focus()
    await pilot.press("space", *"Paris", "enter")
    await settle(app, pilot)
    await pilot.press("space", *"London", "enter")
    await settle(app, pilot)
    screen.query_one("#prompt").focus()
    await pilot.press(*PROMPT, "enter")
    await settle(app, pilot)
    screen.query_one("#gen-n").value = "8"
    await pilot.press("ctrl+g")
    await settle(app, pilot)
    await pilot.press("escape")
    await settle(app, pilot)
    save(app, "tracking")
    if screen.narrow():
        screen.show_pane(2)  # the generation grid
        await settle(app, pilot)
        save(app, "tracking-generation")
    await pilot.press("b")
    await settle(app, pilot)
    save(app, "twin")
    await pilot.press("escape")
    screen.action_toggle_log()
    screen.show_pane(0)
    await settle(app, pilot)
    save(app, "tracking-log")
    await pilot.press("f1", "escape", "question_mark")
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


async def main(model: str | None, sizes: list[tuple[int, int]]) -> None:
    global SUFFIX
    OUT.mkdir(exist_ok=True)
    client = EngineClient(model=model)
    try:
        for w, h in sizes:
            SUFFIX = f"-{w}x{h}"
            app = LazarusApp(client, model=model)
            async with app.run_test(size=(w, h)) as pilot:
                await shoot(app, pilot)
    finally:
        client.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-m", "--model", default=None)
    p.add_argument("--sizes", default="80x24,200x50")
    a = p.parse_args()
    asyncio.run(main(a.model, [tuple(int(x) for x in s.split("x")) for s in a.sizes.split(",")]))
