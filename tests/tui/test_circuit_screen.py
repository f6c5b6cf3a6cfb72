"""The Circuit screen: Pilot on the real SmolLM2 (build a dataset, collect a few layers, browse
the per-layer probe/PCA results against engine/circuit run directly, Esc mid-collect, resume,
the batch twin), error notifications, and a FakeEngine snapshot."""

from __future__ import annotations

import asyncio
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine.results.circuit import CollectRequest
from lazarus_tui.app import LazarusApp
from lazarus_tui.screens.circuit import CircuitScreen
from lazarus_tui.widgets.circuit_views import (
    GeometryTable,
    PcaCurveChart,
    PcaDimsChart,
    ProbeAccuracyChart,
)

LAYERS = [2, 8, 14]


async def settle(app, pilot) -> None:
    await pilot.pause(0.05)
    await app.workers.wait_for_complete()
    await pilot.pause(0.1)


class SlowCollect:
    """The real engine, with ``delay`` seconds of sleep on the engine thread after each collect
    batch, so that a test can press Esc while a collection is surely under way."""

    def __init__(self, engine: Any) -> None:
        self.engine, self.delay = engine, 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def circuit_collect(self, req: Any, on_progress: Any = None) -> Any:
        def slow(ev: Any) -> None:
            if on_progress is not None:
                on_progress(ev)
            time.sleep(self.delay)
        return self.engine.circuit_collect(req, on_progress=slow)


async def open_screen(app, pilot, workdir: Path) -> CircuitScreen:
    await settle(app, pilot)
    await pilot.press("f6")
    await pilot.pause(0.1)
    screen = app.screen
    assert isinstance(screen, CircuitScreen)
    screen.workdir = workdir
    return screen


def cell(table: GeometryTable, layer: int, column: str) -> str:
    return str(table.get_cell(str(layer), column))


@pytest.mark.real_model
@pytest.mark.timeout(400)
async def test_collect_browse_cancel_resume_on_smollm2(real_engine, tmp_path) -> None:
    from engine.circuit.activations import load_activations
    from engine.circuit.geometry import analyze

    engine = SlowCollect(real_engine)
    app = LazarusApp(engine)
    async with app.run_test(size=(160, 50)) as pilot:
        screen = await open_screen(app, pilot, tmp_path)

        # dataset: tool-calling, 2 per tool, 10 without
        screen.query_one("#ci-per-tool").value = "2"
        screen.query_one("#ci-no-tool").value = "10"
        screen.query_one("#ci-sources").focus()
        screen.query_one("#ci-sources").highlighted = 0
        await pilot.press("enter")
        await settle(app, pilot)
        s = screen.summary
        assert s is not None and s.total == 22 and Path(s.path).is_file()
        assert {lc.name: lc.count for lc in s.labels} == {"no_tool": 10, "tool": 12}
        assert {lc.name: lc.count for lc in s.categories}["no_tool"] == 10
        counts = str(screen.query_one("#ci-counts").render())
        assert "22 prompts" in counts and "get_weather" in counts

        # collect three layers, batches of 8, then the analysis
        screen.query_one("#ci-layers").value = "list"
        screen.query_one("#ci-list").value = ",".join(map(str, LAYERS))
        screen.query_one("#ci-batch").value = "8"
        screen.query_one("#ci-sources").focus()
        await pilot.press("c")
        await settle(app, pilot)
        c = screen.collect_result
        assert c is not None and c.captured_layers == LAYERS and c.num_prompts == 22
        assert (c.batches_total, c.batches_computed, c.batches_reused) == (3, 3, 0)
        assert Path(c.activations_file).is_file() and Path(c.activations_file).parent == tmp_path
        r = screen.result
        assert r is not None and [g.layer for g in r.layers] == LAYERS

        # the same collection and analysis run directly give the same numbers
        direct_c = real_engine.circuit_collect(CollectRequest(dataset=s.path, output=str(tmp_path / "direct"),
                                                              layers="2,8,14", batch_size=8)).result()
        assert Path(direct_c.activations_file).read_bytes() == Path(c.activations_file).read_bytes()
        direct = analyze(load_activations(c.activations_file))
        assert direct.best_layer == r.best_layer
        table = screen.query_one(GeometryTable)
        assert table.row_count == 3
        for g in direct.layers:
            assert cell(table, g.layer, "PCA 90%") == str(g.dims_90)
            assert cell(table, g.layer, "bin held").rstrip("*") == f"{g.binary_probe.heldout_accuracy:.3f}"
            assert cell(table, g.layer, "bin CV") == f"{g.binary_probe.cv_accuracy:.3f}"
            assert cell(table, g.layer, "cat held").rstrip("*") == f"{g.category_probe.heldout_accuracy:.3f}"
        acc = screen.query_one(ProbeAccuracyChart).series
        assert acc["binary held-out"] == (LAYERS, [g.binary_probe.heldout_accuracy for g in direct.layers])
        assert acc["binary CV"][1] == [g.binary_probe.cv_accuracy for g in direct.layers]
        assert acc["binary baseline"][1] == [pytest.approx(12 / 22)] * 3
        assert acc["category held-out (7 classes)"][1] == [g.category_probe.heldout_accuracy for g in direct.layers]
        assert acc["category baseline"][1] == [pytest.approx(10 / 22)] * 3
        assert screen.query_one(PcaDimsChart).series["dims 95%"] == (LAYERS, [g.dims_95 for g in direct.layers])
        assert max(acc["binary held-out"][1]) > 12 / 22  # SmolLM2 separates tool requests above baseline

        # arrows move through layers: the curve is the highlighted layer's PCA
        curve = screen.query_one(PcaCurveChart)
        assert screen.current_layer == r.best_layer and curve.at_layer == r.best_layer
        table.focus()
        table.move_cursor(row=0)
        await pilot.pause(0.1)
        await pilot.press("down")
        await pilot.pause(0.1)
        assert screen.current_layer == 8 and curve.at_layer == 8
        assert curve.series["cumulative"][1] == direct.layers[1].cumulative_variance
        assert screen.query_one(ProbeAccuracyChart).at_layer == 8

        # Esc during a collection (batches of 2, slowed down): cancelled, finished shards kept
        screen.query_one("#ci-batch").value = "2"
        screen.query_one("#ci-output").value = str(tmp_path / "resume")
        engine.delay = 0.5
        table.focus()
        await pilot.press("c")
        bar = screen.query_one("#ci-progress")
        deadline = time.monotonic() + 120
        while (bar.progress or 0) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert bar.progress >= 2 and bar.total == 11
        await pilot.press("escape")
        await settle(app, pilot)
        assert app.screen.status.endswith("cancelled") and not screen.jobs
        shards = list((tmp_path / "resume.safetensors.parts").glob("batch_*.safetensors"))
        assert 2 <= len(shards) < 11
        assert not (tmp_path / "resume.safetensors").exists()
        assert screen.result is r  # the earlier results stay on screen
        assert "resume" in str(screen.query_one("#ci-summary").render())

        # the screen stays usable: collecting again resumes from the finished batches
        engine.delay = 0.0
        await pilot.press("c")
        await settle(app, pilot)
        c2 = screen.collect_result
        assert c2.batches_total == 11 and c2.batches_reused == len(shards)
        assert c2.batches_computed == 11 - len(shards)
        assert not (tmp_path / "resume.safetensors.parts").exists()
        resumed = load_activations(c2.activations_file)
        first = load_activations(c.activations_file)
        for layer in LAYERS:  # batches of 2 vs 8: the same activations up to padding numerics
            assert np.allclose(resumed.get(layer), first.get(layer), rtol=1e-3, atol=1e-3)
        assert screen.result.activations_file == c2.activations_file
        assert f"11 batches ({c2.batches_computed} computed, {c2.batches_reused} reused)" in str(
            screen.query_one("#ci-summary").render())

        # b: the batch twin; its analyze line gives the screen's numbers
        await pilot.press("b")
        lines = screen.twin.splitlines()
        assert lines[0].startswith("lazarus --batch circuit dataset create -o ")
        assert "--per-tool 2 --no-tool 10" in lines[0]
        assert lines[1].startswith("lazarus --batch circuit collect -m ") and "--layers 2,8,14" in lines[1]
        assert "--batch-size 2" in lines[1] and f"-d {s.path}" in lines[1]
        assert lines[2] == f"lazarus --batch circuit analyze -a {c2.activations_file}"
        proc = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "lazarus_tui.cli",
                                                        *shlex.split(lines[2])[1:], "--json"],
                                       check=False, capture_output=True, text=True, timeout=240)
        assert proc.returncode == 0, proc.stderr
        batch = json.loads(proc.stdout)
        assert [g["binary_probe"]["heldout_accuracy"] for g in batch["layers"]] == [
            g.binary_probe.heldout_accuracy for g in screen.result.layers]


async def test_errors_are_notifications(fake_engine, tmp_path) -> None:
    app = LazarusApp(fake_engine)
    async with app.run_test(size=(160, 50)) as pilot:
        screen = await open_screen(app, pilot, tmp_path)
        await pilot.press("c")  # no dataset yet
        await settle(app, pilot)
        assert any("pick a dataset first" in n.message for n in app._notifications)
        screen.query_one("#ci-path").value = "missing.txt"
        screen.query_one("#ci-path").focus()
        await pilot.press("enter")
        await settle(app, pilot)
        assert any("dataset not found" in n.message for n in app._notifications)
        assert screen.summary is None
        screen.query_one("#ci-path").value = "data.json"
        await pilot.press("enter")
        await settle(app, pilot)
        assert screen.summary is not None and screen.summary.path == "data.json"
        screen.query_one("#ci-layers").value = "list"
        screen.query_one("#ci-list").value = "3,x"
        screen.query_one("#ci-sources").focus()
        await pilot.press("c")
        await settle(app, pilot)
        assert any("bad --layers" in n.message for n in app._notifications)
        assert screen.result is None and isinstance(app.screen, CircuitScreen)


async def test_analysis_rows_stream_in_and_a_late_event_keeps_the_result(fake_engine, tmp_path) -> None:
    from engine.session import ProgressEvent
    from lazarus_tui.widgets.messages import EngineProgress

    app = LazarusApp(fake_engine)
    async with app.run_test(size=(160, 50)) as pilot:
        screen = await open_screen(app, pilot, tmp_path)
        result = fake_engine.circuit_analyze("acts.safetensors").result()
        table = screen.query_one(GeometryTable)
        assert table.result is None
        rows = result.layers

        def event(done: int) -> EngineProgress:
            return EngineProgress("analyze", ProgressEvent(1, "layer", done, len(rows), "analyze", rows[:done]))

        screen.on_engine_progress(event(2))  # mid-analysis: the finished layers, no best marker yet
        assert table.row_count == 2
        assert cell(table, rows[1].layer, "bin held") == f"{rows[1].binary_probe.heldout_accuracy:.3f}"
        table.show(result)  # the result arrives
        assert table.row_count == len(rows)
        assert cell(table, result.best_layer, "bin held").endswith("*")
        screen.on_engine_progress(event(1))  # a coalesced event delivered late changes nothing
        assert table.row_count == len(rows)


def test_circuit_snapshot(snap_compare, fake_engine) -> None:
    async def run_before(pilot) -> None:
        app = pilot.app
        screen = await open_screen(app, pilot, Path("/tmp/lazarus-circuit-snapshot"))
        screen.query_one("#ci-per-tool").value = "2"
        screen.query_one("#ci-no-tool").value = "10"
        await pilot.press("enter")
        await settle(app, pilot)
        await pilot.press("c")
        await settle(app, pilot)
        await pilot.press("up", "up")
        await settle(app, pilot)
    assert snap_compare(LazarusApp(fake_engine), terminal_size=(160, 50), run_before=run_before)


def test_dataset_sources_on_the_real_engine(tmp_path) -> None:
    """EngineClient.circuit_dataset (no model needed): the generators, a probe dataset via
    ``probes init``, a file, and a malformed file as one-line InputError."""
    from engine.circuit.dataset import load_dataset
    from engine.errors import InputError
    from lazarus_tui.engine_client import EngineClient

    client = EngineClient()
    try:
        s = client.circuit_dataset("tool_calling", str(tmp_path), options={"per_tool": 3, "no_tool": 7,
                                                                           "seed": 1}).result(60)
        assert s.total == 25 and Path(s.path).name == "tool_calling_p3_n7_s1.json"
        assert {lc.name: lc.count for lc in s.labels} == {"no_tool": 7, "tool": 18}
        assert len(load_dataset(s.path).prompts) == 25
        a = client.circuit_dataset("arithmetic", str(tmp_path), options={"count": 12, "seed": 1}).result(60)
        assert a.total == 12 and {lc.name for lc in a.categories} == {"add", "subtract", "multiply"}
        p = client.circuit_dataset("probe:past_vs_present", str(tmp_path / "probes")).result(60)
        assert p.total == 30 and [lc.count for lc in p.labels] == [15, 15]
        assert len(list((tmp_path / "probes").glob("*.json"))) == 8  # probes init wrote all of them
        f = client.circuit_dataset("file", str(tmp_path), path=p.path).result(60)
        assert f.total == 30 and f.path == p.path
        bad = tmp_path / "bad.json"
        bad.write_text('{"prompts": [{"label": 0}]}')
        with pytest.raises(InputError, match="prompts.0.text: Field required"):
            client.circuit_dataset("file", str(tmp_path), path=str(bad)).result(60)
    finally:
        client.close()
