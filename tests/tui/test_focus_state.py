"""The focus model, state labels, the chat-template rule and the twin dialog, on every screen
(Pilot on the FakeEngine; docs/tui.md "Keys and focus")."""

from __future__ import annotations

import os
import shlex

import scenarios
from textual.widgets import Input

from lazarus_tui.app import LazarusApp
from lazarus_tui.screens.help import HelpScreen
from lazarus_tui.screens.twin_dialog import TwinDialog

# screen key, a text field on it, the single-key actions of that screen
SCREENS = {
    "lens": ("f1", "#prompt", "b/[]v"),
    "tracking": ("f2", "#prompt", "b/v"),
    "ablation": ("f3", "#prompt", "bs/"),
    "steering": ("f4", "#prompt", "bc[]"),
    "workbench": ("f5", "#f-prompts", "blv"),
    "circuit": ("f6", "#ci-path", "bcav"),
    "attribution": ("f7", "#clean", "bkhpr/v"),
}


async def test_keys_type_in_fields_and_act_after_esc_on_every_screen(fake_engine) -> None:
    app = LazarusApp(fake_engine)
    async with app.run_test(size=(80, 24)) as pilot:
        for key, field, letters in SCREENS.values():
            screen = await scenarios.goto(pilot, key)
            box = screen.query_one(field, Input)
            box.value = "ab"
            box.focus()
            await pilot.pause()
            box.cursor_position = 2
            typed = letters + "123?qm"
            await pilot.press(*typed)
            await pilot.pause()
            assert app.screen is screen, "a key typed in a field must not switch screens or open dialogs"
            assert box.value == "ab" + typed and box.has_focus
            # the footer lists only keys that act here: no single-character screen action
            active = app.screen.active_bindings
            assert not any(len(k) == 1 or k in ("slash", "question_mark", "left_square_bracket") for k in active)
            assert active["escape"].binding.action == "leave_field"
            await pilot.press("escape")  # out of the field, to the screen's main view: never lost
            await pilot.pause()
            assert app.screen.focused is not None and not isinstance(app.screen.focused, Input)
            assert app.screen.focused.display and box.value == "ab" + typed
            assert app.screen.active_bindings["escape"].binding.action == "cancel_job"
            assert "b" in app.screen.active_bindings  # now the letter keys act


async def test_the_footer_keeps_quit_help_and_model_at_80_columns_on_every_screen(fake_engine) -> None:
    """The footer cuts what does not fit; the app's own keys come first, so at 80 columns the way out
    (q), the key list (?) and the model picker (m) are always shown whole (they were cut before)."""
    from textual.widgets import Footer

    app = LazarusApp(fake_engine)
    async with app.run_test(size=(80, 24)) as pilot:
        for key, _, _ in SCREENS.values():
            screen = await scenarios.goto(pilot, key)
            await pilot.press("escape")  # out of the prompt: the view's keys act
            await pilot.pause()
            shown = [k for k in screen.query_one(Footer).children if getattr(k, "key", None)]
            assert [k.key for k in shown[:3]] == ["q", "question_mark", "m"], key
            assert all(0 <= k.region.x and k.region.right <= 80 and k.region.width > 2 for k in shown[:3]), key


async def test_tab_into_a_filled_field_does_not_select_it_on_every_screen(fake_engine) -> None:
    app = LazarusApp(fake_engine)
    async with app.run_test(size=(200, 50)) as pilot:
        for key, field, _ in SCREENS.values():
            screen = await scenarios.goto(pilot, key)
            box = screen.query_one(field, Input)
            box.value = "keep me"
            box.focus()
            await pilot.pause()
            screen.focus_previous()
            await pilot.pause()
            await pilot.press("tab")
            await pilot.pause()
            assert box.has_focus and box.selection.is_empty
            await pilot.press("end", "!")
            assert box.value == "keep me!"


async def test_running_keeps_the_typing_focus_and_slash_reaches_the_prompt(fake_engine) -> None:
    app = LazarusApp(fake_engine)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await scenarios.goto(pilot, "f1")
        prompt = screen.query_one("#prompt", Input)
        assert prompt.has_focus
        await pilot.press(*scenarios.PROMPT, "enter")
        await scenarios.settle(pilot)
        assert screen.result is not None and prompt.has_focus  # the result did not take the focus
        await pilot.press("escape", "slash")  # esc → table, `/` → back to the prompt, not typed
        assert prompt.has_focus and prompt.value == scenarios.PROMPT
        assert fake_engine.requests[-1].prompt == scenarios.PROMPT


async def test_esc_cancels_a_running_request_from_the_field(fake_engine) -> None:
    """While a request runs, esc cancels it wherever the focus is (the footer says so); then esc
    leaves the field again."""
    from engine.errors import Cancelled
    from engine.session import Job

    job: Job = Job("slow")
    fake_engine.analyze = lambda req, on_progress=None: job  # never finishes on its own
    app = LazarusApp(fake_engine)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await scenarios.goto(pilot, "f1")
        prompt = screen.query_one("#prompt", Input)
        await pilot.press(*scenarios.PROMPT, "enter")
        await pilot.pause(0.1)
        assert screen.jobs and app.screen.active_bindings["escape"].binding.action == "cancel_job"
        await pilot.press("escape")
        assert job.cancel_requested and prompt.has_focus
        job.future.set_exception(Cancelled("cancelled"))  # the engine stops at its next check
        await scenarios.settle(pilot)
        assert screen.status == "analyze: cancelled" and not screen.jobs
        assert app.screen.active_bindings["escape"].binding.action == "leave_field"
        await pilot.press("escape")
        assert screen.query_one("#layers").has_focus


RUN_FROM_FIELD = {  # screen key, the field enter runs from, values to fill first
    "lens": ("f1", "#prompt", {"#prompt": scenarios.PROMPT}),
    "tracking": ("f2", "#prompt", {"#prompt": scenarios.PROMPT}),
    "ablation": ("f3", "#criterion", {"#prompt": scenarios.PROMPT, "#criterion": "Paris"}),
    "workbench": ("f5", "#f-prompts", {"#f-prompts": "a b|c d", "#f-layers": "0,7"}),
    "circuit": ("f6", "#ci-path", {"#ci-path": "/tmp/x.json"}),
    "attribution": ("f7", "#sites", {"#sites": "resid_post,heads"}),
}


async def test_a_run_never_takes_the_focus_from_the_field(fake_engine) -> None:
    app = LazarusApp(fake_engine)
    async with app.run_test(size=(200, 50)) as pilot:
        for name, (key, field, values) in RUN_FROM_FIELD.items():
            screen = await scenarios.goto(pilot, key)
            if name == "workbench":
                await screen.choose("layer")
            for selector, value in values.items():
                screen.query_one(selector, Input).value = value
            screen.query_one(field, Input).focus()
            await pilot.pause()
            n = len(fake_engine.requests)
            await pilot.press("enter")
            await scenarios.settle(pilot)
            assert len(fake_engine.requests) > n, f"{name}: enter in the field runs the screen's request"
            assert screen.query_one(field, Input).has_focus, name


async def test_narrow_panes_switch_and_the_focus_stays_visible(fake_engine) -> None:
    app = LazarusApp(fake_engine)
    async with app.run_test(size=(80, 24)) as pilot:
        await scenarios.lens(pilot)
        screen = app.screen
        table, side = screen.query_one("#layers"), screen.query_one(".side")
        assert screen.has_class("-narrow") and table.display and not side.display
        await pilot.press("v")
        assert side.display and not table.display
        await pilot.press("v")
        assert table.display and table.has_focus
    async with LazarusApp(fake_engine).run_test(size=(200, 50)) as pilot:
        await scenarios.lens(pilot)
        screen = pilot.app.screen
        assert screen.query_one("#layers").display and screen.query_one(".side").display
        assert "v" not in screen.active_bindings  # nothing to switch when everything fits


async def test_help_is_generated_from_the_bindings(fake_engine) -> None:
    app = LazarusApp(fake_engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await scenarios.goto(pilot, "f6")
        app.screen.query_one("#ci-sources").focus()
        # every action of the screen is in the command palette too (reachable from any focus)
        titles = {c.title for c in app.get_system_commands(app.screen)}
        assert {"Circuit: Collect", "Circuit: Analyze", "Circuit: Batch twin", "Circuit: Cancel"} <= titles
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        text = app.screen.keys
        for entry in app.entries:  # every screen, with its digit and F-key
            assert f"`{entry.key}` `f{entry.key}` | {entry.title} screen" in text
        for label in ("Collect", "Analyze", "Batch twin", "Switch view", "cancel the running request"):
            assert label in text
        assert "1`–`4" not in text and "f1`–`f4" not in text


async def test_status_belongs_to_its_screen(fake_engine) -> None:
    app = LazarusApp(fake_engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await scenarios.lens(pilot)
        assert str(app.screen.query_one("#engine-status").render()) == "analyze: done"
        await scenarios.goto(pilot, "f3")
        assert "analyze" not in str(app.screen.query_one("#engine-status").render())


async def test_results_are_labelled_and_marked_stale(fake_engine) -> None:
    app = LazarusApp(fake_engine)
    async with app.run_test(size=(200, 50)) as pilot:
        await scenarios.lens(pilot)
        screen = app.screen
        line = screen.query_one("#provenance")
        assert "fake-8l · chat template off · position 4" in str(line.render())
        screen.query_one("#chat").value = True
        await pilot.pause()
        assert str(line.render()).startswith("STALE (chat template now on)")
        assert screen.query_one("#layers").has_class("-stale")
        screen.query_one("#chat").value = False  # back to what the results were computed with
        await pilot.pause()
        assert not str(line.render()).startswith("STALE")
        app.load_model("gemma3-270m", None)
        await scenarios.settle(pilot)
        assert str(line.render()).startswith("STALE (the model is now gemma3-270m)")
        await pilot.press("enter")  # rerun from the prompt: fresh, labelled with the new model
        await scenarios.settle(pilot)


async def test_chat_template_is_off_unless_asked(fake_engine) -> None:
    app = LazarusApp(fake_engine)
    async with app.run_test(size=(200, 50)) as pilot:
        for name in ("lens", "tracking", "ablation", "steering", "workbench", "attribution"):
            await scenarios.SCENARIOS[name](pilot)
            first = fake_engine.requests[-1]
            assert first.chat is False, name
            chat = app.screen.query("#chat, #f-chat").first()
            assert chat.value is False and chat.display
            chat.value = True
            await pilot.pause()
            assert "STALE" in str(app.screen.query_one("#provenance").render())
            if name in ("workbench", "attribution"):
                app.screen.action_run()
            elif name == "ablation":
                app.screen.action_run_set()
            else:
                app.screen.query_one("#prompt").focus()
                await pilot.press("enter")
            await scenarios.settle(pilot)
            assert fake_engine.requests[-1].chat is True, name
            assert "chat template on" in str(app.screen.query_one("#provenance").render())
            chat.value = False


async def test_twin_dialog_on_every_screen(fake_engine, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LAZARUS_CACHE", str(tmp_path))
    app = LazarusApp(fake_engine)
    async with app.run_test(size=(80, 24)) as pilot:
        for name, scenario in scenarios.SCENARIOS.items():
            await scenario(pilot)
            screen = app.screen
            if screen.in_text_field():
                await pilot.press("escape")
            await pilot.press("b")
            await pilot.pause()
            dialog = app.screen
            assert isinstance(dialog, TwinDialog), name
            lines = dialog.lines
            assert lines and all(line.startswith("lazarus --batch ") for line in lines)
            assert dialog.query_one("#twin-text").text == "\n".join(lines)  # the whole command, not a toast
            for line in lines:
                shlex.split(line)  # a valid shell line
            await pilot.press("c")
            assert app.clipboard == "\n".join(lines)
            await pilot.press("s")
            script = dialog.saved
            assert script is not None and script.parent == tmp_path / "twins"
            assert os.access(script, os.X_OK) and script.read_text().splitlines()[3:] == lines
            if name == "tracking":  # the grid on screen: the generate-and-track line is part of the twin
                assert lines[1].startswith("lazarus --batch track-generation") and "-n 4" in lines[1]
            await pilot.press("escape")
            assert app.screen is screen


async def test_screenshot_goes_to_a_known_place(fake_engine, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LAZARUS_CACHE", str(tmp_path / "new"))
    app = LazarusApp(fake_engine)
    async with app.run_test(size=(80, 24)) as pilot:
        await scenarios.settle(pilot)
        path = app.deliver_screenshot()
        assert path is not None and os.path.exists(path)
        assert os.path.dirname(path) == str(tmp_path / "new" / "screenshots")
        await pilot.pause()
        assert any(str(path) in n.message for n in app._notifications)


async def test_changed_settings_mark_results_stale(fake_engine) -> None:
    """Circuit: other collect settings than the shown results'; lens: another layer strategy."""
    app = LazarusApp(fake_engine)
    async with app.run_test(size=(200, 50)) as pilot:
        await scenarios.circuit(pilot)
        screen = app.screen
        line = screen.query_one("#provenance")
        assert "layers all · position last" in str(line.render())
        screen.query_one("#ci-position").value = "mean"
        await pilot.pause()
        assert str(line.render()).startswith("STALE (settings now all / mean")
        assert screen.query_one("#ci-right").has_class("-stale")
        screen.query_one("#ci-position").value = "last"
        await pilot.pause()
        assert not str(line.render()).startswith("STALE")
        await scenarios.lens(pilot)
        screen = app.screen
        screen.query_one("#strategy").value = "first_last"
        await pilot.pause()
        assert str(screen.query_one("#provenance").render()).startswith("STALE (layers now first_last")
