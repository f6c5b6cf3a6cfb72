"""UI logic with the fake engine: navigation, history, picker, help, headless imports."""

from __future__ import annotations

import subprocess
import sys

from lazarus_tui.app import LazarusApp
from lazarus_tui.screens.ablation import AblationScreen
from lazarus_tui.screens.help import HelpScreen
from lazarus_tui.screens.lens import LensScreen
from lazarus_tui.screens.model_picker import ModelPicker
from lazarus_tui.screens.steering import SteeringScreen
from lazarus_tui.screens.tracking import TrackingScreen
from lazarus_tui.widgets.layer_table import LayerTable


async def settle(app, pilot) -> None:
    await pilot.pause(0.05)
    await app.workers.wait_for_complete()
    await pilot.pause(0.05)


async def test_screen_keys_and_palette_commands(fake_engine) -> None:
    app = LazarusApp(fake_engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        assert app.model_info.model_id == "fake-8l"
        assert "fake-8l" in str(app.screen.query_one("#model-facts").render())
        await pilot.press("1")  # the prompt has focus: a digit is typed, not a screen switch
        assert isinstance(app.screen, LensScreen) and app.screen.query_one("#prompt").value == "1"
        await pilot.press("f3")  # priority key, even while typing
        assert isinstance(app.screen, AblationScreen)
        await pilot.press("f4")
        assert isinstance(app.screen, SteeringScreen)
        await pilot.press("f1")
        app.screen.query_one(LayerTable).focus()
        await pilot.press("2")  # no text field has focus: digits switch
        assert isinstance(app.screen, TrackingScreen)
        await pilot.press("f1")
        assert isinstance(app.screen, LensScreen)
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert {"Screen: Logit lens", "Screen: Token tracking", "Screen: Ablation", "Screen: Steering"} <= set(titles)


async def test_prompt_history_and_decision_marks(fake_engine) -> None:
    app = LazarusApp(fake_engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        for prompt in ("first prompt", "second prompt"):
            await pilot.click("#prompt")
            app.screen.query_one("#prompt").value = prompt
            await pilot.press("enter")
            await settle(app, pilot)
        assert [r.prompt for r in fake_engine.requests] == ["first prompt", "second prompt"]
        await pilot.click("#prompt")
        app.screen.query_one("#prompt").value = "draft"
        await pilot.press("up")
        assert app.screen.query_one("#prompt").value == "second prompt"
        await pilot.press("up")
        assert app.screen.query_one("#prompt").value == "first prompt"
        await pilot.press("down", "down")
        assert app.screen.query_one("#prompt").value == "draft"
        table = app.screen.query_one(LayerTable)
        r = app.screen.result
        assert r.decision_layer == 5 and r.max_kl_transition.to_layer == 6
        assert table.row_texts(6)[0] == "6 *" and table.row_texts(5)[0] == "5 *" and table.row_texts(4)[0] == "4"


async def test_bad_top_k_is_a_notification(fake_engine) -> None:
    app = LazarusApp(fake_engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        app.screen.query_one("#top-k").value = "0"
        app.screen.query_one("#prompt").value = "x"
        await pilot.click("#prompt")
        await pilot.press("enter")
        await settle(app, pilot)
        assert any(n.severity == "error" for n in app._notifications)
        assert fake_engine.requests == []


async def test_model_picker_loads_choice(fake_engine) -> None:
    app = LazarusApp(fake_engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        await pilot.press("f3", "m")  # no text field has focus on the placeholder screen
        await settle(app, pilot)
        assert isinstance(app.screen, ModelPicker)
        await pilot.press("down", "enter")
        await settle(app, pilot)
        assert fake_engine.loaded[-1] == "gemma3-270m"
        assert app.model_info.model_id == "gemma3-270m"


async def test_help_shows_current_screen(fake_engine) -> None:
    app = LazarusApp(fake_engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        await pilot.press("f3", "question_mark")
        assert isinstance(app.screen, HelpScreen) and "Ablation" in app.screen.text
        await pilot.press("escape")
        assert isinstance(app.screen, AblationScreen)


def test_app_never_imports_mlx() -> None:
    """The UI thread stays MLX-free: importing the app and every screen loads no mlx module."""
    code = ("import sys, lazarus_tui.app, lazarus_tui.app_main, lazarus_tui.screens as s; s.screen_entries(); "
            "bad = [m for m in sys.modules if m == 'mlx' or m.startswith(('mlx.', 'mlx_lm.', 'engine.lens', 'engine.hooks'))]; "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_engine_never_imports_textual() -> None:
    code = ("import sys, pkgutil, importlib, engine.tracking, engine.session, engine.results as r; "
            "[importlib.import_module(f'engine.results.{m.name}') for m in pkgutil.iter_modules(r.__path__)]; "
            "sys.exit(1 if any(m.startswith(('textual', 'rich')) for m in sys.modules) else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


async def test_lens_batch_twin_round_trips(fake_engine) -> None:
    """`b` on the lens screen shows the `lazarus --batch analyze` line that rebuilds the same request."""
    import shlex

    from lazarus_tui.batch.analyze import build_parser, request_from_args, twin_command

    app = LazarusApp(fake_engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        await pilot.click("#prompt")
        await pilot.press(*"The capital of France is ", "enter")
        await settle(app, pilot)
        req = app.screen.result.request
        line = twin_command(req, app.screen.result.model_id)
        argv = shlex.split(line)
        assert argv[:3] == ["lazarus", "--batch", "analyze"]
        again = request_from_args(build_parser().parse_args(argv[3:]))
        assert again.prompt == "The capital of France is " and again.layer_strategy == req.layer_strategy
        assert again.top_k == req.top_k and again.position == req.position and again.track_tokens == req.track_tokens
        app.screen.query_one("#layers").focus()
        await pilot.press("b")
        await settle(app, pilot)
        assert app.screen.lines == [line]  # the twin dialog shows that line


async def test_tracked_list_fits_a_narrow_terminal(fake_engine) -> None:
    """At 80 columns the tracked-token list is 24 wide: a token whose text is its vocabulary entry
    shows once with its id; what was typed shows only when it differs (several tokens)."""
    from textual.widgets import OptionList

    app = LazarusApp(fake_engine)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("f2")
        screen = app.screen
        assert isinstance(screen, TrackingScreen)
        for text in (" Paris", "Paris!"):
            screen.query_one("#add-token").focus()
            screen.query_one("#add-token").value = text
            await pilot.press("enter")
            await settle(app, pilot)
        ol = screen.query_one("#tracked", OptionList)
        labels = [str(ol.get_option_at_index(i).prompt) for i in range(ol.option_count)]
        assert labels == ["' Paris' #7", "'Paris!' → 'Paris' #8"]
        assert len(labels[0]) <= ol.content_region.width  # one line in the narrow list
        assert screen.tracked == [" Paris", "Paris!"]


async def test_tokens_added_in_quick_succession_are_each_tracked(fake_engine, monkeypatch) -> None:
    """Typing a token, enter, the next token, enter before the first lookup returns: both are tracked,
    and the second is not typed onto the first (the field clears at enter, not at the answer)."""
    from engine.session import Job

    pending: list[tuple[Job, str]] = []

    def slow_lookup(text: str) -> Job:
        job: Job = Job("lookup")
        pending.append((job, text))
        return job

    monkeypatch.setattr(fake_engine, "lookup", slow_lookup)
    app = LazarusApp(fake_engine)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("f2")
        screen = app.screen
        screen.query_one("#add-token").focus()
        await pilot.press("space", *"Paris", "enter", "space", *"London", "enter")
        await pilot.pause(0.05)
        assert [t for _, t in pending] == [" Paris", " London"]
        assert screen.query_one("#add-token").value == ""
        for i, (job, text) in enumerate(pending):  # the engine answers in order
            job.future.set_result((7 + i, [text]))
        await settle(app, pilot)
        assert screen.tracked == [" Paris", " London"]
