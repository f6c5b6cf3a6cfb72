"""Each screen driven to a shown result on the deterministic FakeEngine (conftest.py): shared by
the snapshot tests at 80×24 and 200×50 and by the focus/state tests. The keys are pressed as a
user would (the focus model of docs/tui.md), so the snapshots show the focus where it lands."""

from __future__ import annotations

from pathlib import Path

PROMPT = "The capital of France is"
CIRCUIT_DIR = Path("/tmp/lazarus-circuit-snapshot")


async def settle(pilot) -> None:
    await pilot.pause(0.05)
    await pilot.app.workers.wait_for_complete()
    await pilot.pause(0.05)
    await pilot.pause()  # and until the screen has processed what that produced (a loaded machine is slow)


async def goto(pilot, key: str):
    await settle(pilot)
    await pilot.press(key)
    await pilot.pause(0.05)
    return pilot.app.screen


async def lens(pilot) -> None:
    await goto(pilot, "f1")
    await pilot.press(*PROMPT, "enter")
    await settle(pilot)
    await pilot.press("escape", "down", "down", "down", "down", "down")  # to the table: layer 5's detail
    await settle(pilot)


async def tracking(pilot) -> None:
    screen = await goto(pilot, "f2")
    screen.query_one("#add-token").focus()
    await pilot.press("space", *"Paris", "enter")
    await settle(pilot)
    await pilot.press(*" the", "enter")
    await settle(pilot)
    screen.query_one("#prompt").focus()
    await pilot.press(*PROMPT, "enter")
    await settle(pilot)
    screen.query_one("#gen-n").value = "4"
    await pilot.press("ctrl+g")
    await settle(pilot)
    await pilot.press("escape")
    await settle(pilot)


async def ablation(pilot) -> None:
    screen = await goto(pilot, "f3")
    screen.query_one("#prompt").value = PROMPT
    screen.query_one("#criterion").value = "Paris"
    screen.query_one("#tokens").value = "4"
    grid = screen.query_one("#grid")
    grid.focus()
    grid.move_cursor(row=5, column=0)
    await pilot.press("space")
    grid.move_cursor(row=3, column=1)
    await pilot.press("space", "enter")
    await settle(pilot)
    grid.move_cursor(row=0, column=2)
    await pilot.press("s")
    await settle(pilot)
    grid.move_cursor(row=6, column=2)
    await settle(pilot)


async def steering(pilot) -> None:
    screen = await goto(pilot, "f4")
    screen.query_one("#positive").value = "I love it.|What a great day."
    screen.query_one("#negative").value = "I hate it.|What an awful day."
    screen.query_one("#layer").value = "5"
    screen.query_one("#positive").focus()
    await pilot.press("enter")
    await settle(pilot)
    screen.query_one("#prompt").focus()
    await pilot.press(*"I think the movie was", "enter")
    await settle(pilot)
    await pilot.press("escape", "right", "right")  # to the strength bar: +0.10
    await settle(pilot)
    await pilot.press("c")  # the coefficient list side by side
    await settle(pilot)


async def workbench(pilot) -> None:
    screen = await goto(pilot, "f5")
    await screen.choose("layer")
    form = screen.query_one("#wb-form")
    form.set_value("prompts", "The cat sat|The dog ran|2 + 2 =|3 + 5 =")
    form.set_value("layers", "0,7")
    screen.query_one("#f-prompts").focus()
    await pilot.press("enter")
    await settle(pilot)
    await pilot.press("escape")
    await settle(pilot)


async def circuit(pilot) -> None:
    screen = await goto(pilot, "f6")
    screen.workdir = CIRCUIT_DIR
    screen.query_one("#ci-per-tool").value = "2"
    screen.query_one("#ci-no-tool").value = "10"
    screen.query_one("#ci-sources").focus()
    await pilot.press("enter")
    await settle(pilot)
    await pilot.press("c")
    await settle(pilot)
    await pilot.press("up", "up")
    await settle(pilot)


async def attribution(pilot) -> None:
    screen = await goto(pilot, "f7")
    screen.query_one("#k").value = "4"
    await pilot.press("enter")  # from the clean prompt (the screen's first focus)
    await settle(pilot)
    await pilot.press("escape", "r")  # esc: to the top sites; r: the top 4 patched for real
    await settle(pilot)
    grid = screen.query_one("#heads")
    screen.reveal(grid)
    grid.focus()
    grid.move_cursor(row=4, column=2)  # L4 H1
    await pilot.press("enter")  # its attention pattern (narrow: the pattern pane comes forward)
    await settle(pilot)


SCENARIOS = {"lens": lens, "tracking": tracking, "ablation": ablation, "steering": steering, "workbench": workbench,
             "circuit": circuit, "attribution": attribution}
