"""The Workbench screen: Pilot on the real SmolLM2 (layer cosine heatmap, probe accuracy chart,
a bad layer as a notification), the batch twin round trip, and a FakeEngine snapshot."""

from __future__ import annotations

import asyncio
import json
import shlex
import subprocess
import sys

import numpy as np
import pytest

from lazarus_tui.analyses import BY_NAME, build_request, form_fields, twin_command
from lazarus_tui.app import LazarusApp
from lazarus_tui.screens.workbench import AnalysisWorkbenchScreen
from lazarus_tui.widgets.analysis_views import HeatmapTable, LineChart, ValueTable
from lazarus_tui.widgets.request_form import RequestForm

PROMPTS = "The cat sat|The dog ran|2 + 2 =|3 + 5 ="


async def settle(app, pilot) -> None:
    await pilot.pause(0.05)
    await app.workers.wait_for_complete()
    await pilot.pause(0.2)


async def open_analysis(app, pilot, name: str) -> AnalysisWorkbenchScreen:
    await settle(app, pilot)
    await pilot.press("f5")
    await pilot.pause(0.1)
    screen = app.screen
    assert isinstance(screen, AnalysisWorkbenchScreen)
    await screen.choose(name)
    await pilot.pause(0.05)
    assert screen.query_one(RequestForm).analysis.name == name
    return screen


async def run_form(app, pilot, screen, **values) -> None:
    form = screen.query_one(RequestForm)
    for k, v in values.items():
        form.set_value(k, v)
    first = next(iter(values))
    screen.query_one(f"#f-{first}").focus()
    await pilot.press("enter")
    await settle(app, pilot)


@pytest.mark.real_model
@pytest.mark.timeout(300)
async def test_layer_cosine_heatmap_real(real_engine) -> None:
    app = LazarusApp(real_engine)
    async with app.run_test(size=(160, 50)) as pilot:
        screen = await open_analysis(app, pilot, "layer")
        await run_form(app, pilot, screen, prompts=PROMPTS, labels="text|text|math|math", layers="2,29")
        r = screen.result
        assert r is not None and r.model_id == "smollm2-135m" and [ls.layer for ls in r.layers] == [2, 29]
        # independent check: each prompt alone (no batch, no padding), cosine in NumPy
        from engine.representations import last_hidden

        prompts = PROMPTS.split("|")
        acts = real_engine.session.run(lambda ctx: [last_hidden(ctx.model(), [p], [2, 29])[:, 0, :]
                                                     for p in prompts])
        for li, ls in enumerate(r.layers):
            x = np.stack([a[li] for a in acts]).astype(np.float64)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            assert np.allclose(np.array(ls.cosine), x @ x.T, atol=2e-3)
            heat = screen.query_one(f"#cos-{ls.layer}", HeatmapTable)
            texts = heat.texts()
            assert [row[0] for row in texts][:1] == ["'The cat sat' [text]"]
            assert [[float(c) for c in row[1:]] for row in texts] == [[round(v, 3) for v in row] for row in ls.cosine]
        # the separation chart: one point per layer, the best layer marked
        chart = screen.query(LineChart).first()
        assert chart.series["separation"] == [ls.separation for ls in r.layers]
        assert chart.vlines == [r.best_layer]
        assert f"best separation at layer {r.best_layer}" in str(screen.query_one("#wb-summary").render())
        # b (outside the text fields): the batch twin reads back into the same request
        screen.query_one("#wb-list").focus()
        await pilot.press("b")
        from lazarus_tui.batch.layer import build_parser

        args = build_parser().parse_args(shlex.split(screen.twin)[3:])
        assert args.model == "smollm2-135m" and args.prompts == PROMPTS and args.layers == "2,29"
        assert args.labels == "text|text|math|math"
        await pilot.press("escape")  # close the twin dialog
        proc = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "lazarus_tui.cli",
                                                        *shlex.split(screen.twin)[1:], "--json"],
                                       check=False, capture_output=True, text=True, timeout=240)
        assert proc.returncode == 0, proc.stderr
        got = json.loads(proc.stdout)["layers"]  # the twin reproduces the screen's matrices
        assert [g["layer"] for g in got] == [ls.layer for ls in r.layers]
        for g, ls in zip(got, r.layers):
            np.testing.assert_allclose(np.array(g["cosine"]), np.array(ls.cosine), atol=1e-6)


@pytest.mark.real_model
@pytest.mark.timeout(300)
async def test_probe_accuracy_chart_real_and_bad_layer(real_engine) -> None:
    app = LazarusApp(real_engine)
    async with app.run_test(size=(160, 50)) as pilot:
        screen = await open_analysis(app, pilot, "probe")
        await run_form(app, pilot, screen, class_a="Is it raining?|Where are you?|What is this?|Who came?",
                       class_b="It is raining.|You are here.|This is it.|Someone came.", layers="0,15,29",
                       label_a="question", label_b="statement", test="Is this a test?|This is a test.")
        r = screen.result
        assert r is not None and [pl.layer for pl in r.layers] == [0, 15, 29]
        chart = screen.query_one("#probe-chart", LineChart)
        assert chart.xs == [0, 15, 29]
        assert chart.series["CV accuracy"] == [pl.cv_accuracy for pl in r.layers]
        assert chart.vlines == [r.best_layer]
        assert max(chart.series["CV accuracy"]) >= 0.75  # '?' vs '.' is easy for SmolLM2
        table = screen.query_one("#probe-table", ValueTable).texts()
        assert [row[1] for row in table] == [f"{pl.cv_accuracy:.3f}" for pl in r.layers]
        preds = {t.prompt: t for t in r.test_predictions}
        assert preds["Is this a test?"].probability_a > preds["This is a test."].probability_a

        # a layer out of range: one notification, the screen stays usable
        before = len(app._notifications)
        await run_form(app, pilot, screen, layers="0,99")
        new = [n.message for n in list(app._notifications)[before:]]
        assert any("layer 99 out of range" in m for m in new), new
        assert screen.result is r and isinstance(app.screen, AnalysisWorkbenchScreen)
        # a bad form value never reaches the engine
        await run_form(app, pilot, screen, layers="0,x")
        assert any("bad layer list" in n.message for n in app._notifications)


def test_forms_are_generated_and_twins_round_trip() -> None:
    """Every analysis has a form field per batch flag; the twin of a request parses back into it."""
    for a in BY_NAME.values():
        assert [ff.name for ff in form_fields(a)] == [n for n in a.request.model_fields if n in a.flags]
    a = BY_NAME["patch"]
    req = build_request(a, {"source": "The capital of France is", "target": "The capital of Germany is",
                            "layers": "0,10-11", "position": "-1", "blend": "0.5", "top_k": "5", "chat": False})
    assert req.layers == [0, 10, 11] and req.position == "-1" and req.blend == 0.5
    twin = twin_command(a, req, "smollm2-135m")
    from lazarus_tui.batch.common import fix_negative_values
    from lazarus_tui.batch.patch import build_parser

    args = build_parser().parse_args(fix_negative_values(shlex.split(twin)[3:], ("--position",)))
    assert (args.model, args.source, args.target, args.layers, args.position, args.blend) == \
        ("smollm2-135m", req.source, req.target, "0,10,11", "-1", 0.5)


async def test_bad_form_is_a_notification(fake_engine) -> None:
    app = LazarusApp(fake_engine)
    async with app.run_test(size=(160, 50)) as pilot:
        screen = await open_analysis(app, pilot, "layer")
        await run_form(app, pilot, screen, prompts="a|b", layers="3-1")
        assert any("bad layer range" in n.message for n in app._notifications)
        await run_form(app, pilot, screen, layers="9")
        assert any("layer 9 out of range" in n.message for n in app._notifications)
        assert screen.result is None and fake_engine.requests[-1].layers == [9]


def test_workbench_snapshot(snap_compare, fake_engine) -> None:
    async def run_before(pilot) -> None:
        app = pilot.app
        screen = await open_analysis(app, pilot, "layer")
        await run_form(app, pilot, screen, prompts=PROMPTS, layers="0,7")
        screen.query_one("#wb-list").focus()
        await settle(app, pilot)
    assert snap_compare(LazarusApp(fake_engine), terminal_size=(160, 50), run_before=run_before)


async def type_fast(app, pilot, *keys: str) -> None:
    """Send keys the way a terminal does when someone types faster than the UI handles them: all
    queued at once (``pilot.press`` waits for the app to go idle after each key). Not for keys of
    priority bindings (F-keys): Textual handles those before non-priority keys queued earlier."""
    from textual import events

    for key in keys:
        event = events.Key(key, key if len(key) == 1 else None)
        event.set_sender(app)
        app._driver.send_message(event)
    await pilot.pause(0.05)


async def test_fast_keys_after_runs_leave_one_live_screen(fake_engine, monkeypatch) -> None:
    """The issue's sequence: `layer` run twice, then `l` ↓ ↓ enter enter ? pagedown×8 esc b 3 5 f5,
    typed faster than the form rebuilds. Two queued highlights used to bounce the list between two
    analyses forever, rebuilding the form each time (UI thread at 100%, memory growing)."""
    import asyncio
    import time

    from textual.widgets import OptionList

    builds: list[str] = []
    real_build = RequestForm.build

    async def counting_build(self, analysis):
        builds.append(analysis.name)
        await real_build(self, analysis)
    monkeypatch.setattr(RequestForm, "build", counting_build)

    app = LazarusApp(fake_engine)
    async with app.run_test(size=(160, 50)) as pilot:
        screen = await open_analysis(app, pilot, "layer")
        await pilot.press("ctrl+r")
        await settle(app, pilot)
        await pilot.press("ctrl+r")
        await settle(app, pilot)
        assert [r.kind for r in fake_engine.requests] == ["layer", "layer"]

        await type_fast(app, pilot, "l", "down", "down", "enter", "enter")  # faster than the form builds
        await pilot.press("question_mark", *["pagedown"] * 8, "escape", "b", "3", "5", "f5")
        await asyncio.wait_for(settle(app, pilot), 10)
        settled_builds = len(builds)
        t = time.perf_counter()
        await asyncio.wait_for(pilot.pause(1.0), 5)
        assert time.perf_counter() - t < 3, "the UI should answer within a second or two"
        assert len(builds) == settled_builds, f"the form keeps rebuilding: {builds[settled_builds:][:6]}"

        assert app.current_mode == "workbench" and app.screen is screen and app.screen_stack == [app.screen]
        listing = screen.query_one("#wb-list", OptionList)
        assert listing.highlighted == 2 and screen.query_one(RequestForm).analysis.name == "probe"
        assert screen.analysis.name == "probe"
        await pilot.press("f1")  # still answers keys
        assert app.current_mode == "lens" and len(app.screen_stack) == 1


def test_layer_view_with_one_prompt_per_label_says_what_is_missing() -> None:
    from textual.widgets import Static

    from engine.results.layers import LayerRequest, LayerResult, LayerSimilarity
    from lazarus_tui.widgets.analysis_views import views_for

    req = LayerRequest(prompts=["a", "b"], labels=["working", "broken"], layers=[2])
    r = LayerResult(model_id="m", request=req, prompts=["a", "b"], last_tokens=["a", "b"], labels=["working", "broken"],
                    layers=[LayerSimilarity(layer=2, cosine=[[1.0, 0.25], [0.25, 1.0]], between_label=0.25)])
    texts = [str(w.render()) for w in views_for(r) if isinstance(w, Static)]
    assert any("one prompt per label" in t for t in texts)
    assert any("layer 2: cosine (last position) · between 0.250" in t for t in texts)
    assert not any(isinstance(w, LineChart) for w in views_for(r))
