"""The app's door onto the engine: submits jobs to the one engine thread.

Every method returns an ``engine.session.Job`` at once; the UI awaits it in a
worker. Job bodies import ``engine.lens`` etc. lazily, so they run (and import
MLX) on the engine thread only; this module imports no MLX. Tests pass a fake
with the same methods (``FakeEngine`` in tests/tui/conftest.py).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.results.analyze import AnalyzeRequest
from engine.session import EngineSession, Job, ProgressEvent

OnProgress = Callable[[ProgressEvent], None] | None


class EngineClient:
    def __init__(self, session: EngineSession | None = None, model: str | None = None,
                 dtype: str = "auto") -> None:
        self.session = session or EngineSession(model, dtype)
        self.model_spec = model
        self.dtype = dtype

    # -- facts -------------------------------------------------------------------------------
    def blas(self) -> str:
        from engine import blas

        return blas.describe()

    def list_models(self) -> Job[list[dict[str, Any]]]:
        """Bundled aliases (pulled or not) and local GGUF files in the lazarus cache."""
        def job(ctx: Any) -> list[dict[str, Any]]:
            from engine.models import registry

            rows = [r for r in registry.cache_listing() if r["kind"] == "bundled"]
            known = {r["path"] for r in rows}
            for path in sorted(registry.models_dir().rglob("*.gguf")):
                if str(path) not in known:
                    rows.append({"name": str(path), "kind": "local", "present": True, "description": path.name})
            hub = Path.home() / ".cache" / "huggingface" / "hub"
            if hub.is_dir():
                for d in sorted(hub.glob("models--*")):
                    snaps = sorted((d / "snapshots").glob("*/config.json"))
                    if snaps:
                        rows.append({"name": str(snaps[-1].parent), "kind": "hf-cache", "present": True,
                                     "description": d.name.removeprefix("models--").replace("--", "/")})
            return rows
        return self.session.submit(job, name="list models")

    # -- jobs --------------------------------------------------------------------------------
    def yield_to_ui(self) -> Job[None]:
        """Lower the priority (nice +5, Linux) of every thread but the UI's: the engine thread and
        the BLAS / MLX worker threads. On a loaded machine the UI thread then keeps drawing while
        the engine computes; alone on the machine the engine loses nothing."""
        ui_tid = threading.get_native_id()

        def job(ctx: Any) -> None:
            task = Path("/proc/self/task")
            if not sys.platform.startswith("linux") or not task.is_dir():
                return
            import engine.models  # noqa: F401  (start MLX's threads first, so that they are reniced too)

            for tid in task.iterdir():
                if int(tid.name) != ui_tid:
                    try:
                        os.setpriority(os.PRIO_PROCESS, int(tid.name), max(5, os.getpriority(os.PRIO_PROCESS, int(tid.name))))
                    except OSError:
                        pass  # a thread that ended meanwhile
        return self.session.submit(job, name="yield to ui")

    def load(self, spec: str | None = None, dtype: str | None = None, on_progress: OnProgress = None) -> Job[Any]:
        """Load (or reuse) a model and make it current; the job's result is its ``ModelInfo``."""
        def job(ctx: Any) -> Any:
            from engine.distributions import prepare

            prepare()  # the lens statistics' loops compile while the model loads
            return ctx.model(spec if spec is not None else self.model_spec, dtype or self.dtype,
                             make_current=True).info
        return self.session.submit(job, name=f"load {spec}", on_progress=on_progress)

    def analyze(self, req: AnalyzeRequest, on_progress: OnProgress = None) -> Job[Any]:
        """The logit lens (``AnalysisResult``), streaming one "layer" event per finished block."""
        def job(ctx: Any) -> Any:
            from engine.lens import analyze

            rows: list[Any] = []  # finished layer rows so far: every event carries all of them, so
            state = {"done": 0, "total": 0}  # coalescing (only the newest event is handled) loses nothing

            def layer(done: int, total: int) -> None:
                state.update(done=done + 1, total=total)
                ctx.progress("layer", done + 1, total, f"layer {done}", payload=list(rows))

            def add_rows(new: list[Any]) -> None:
                rows.extend(new)
                ctx.progress("layer", state["done"], state["total"], "rows", payload=list(rows))

            return analyze(ctx.model(), req, ctx.cancelled, layer, add_rows)
        return self.session.submit(job, name="analyze", on_progress=on_progress)

    def track_generation(self, req: Any, on_progress: OnProgress = None) -> Job[Any]:
        def job(ctx: Any) -> Any:
            from engine.tracking import track_generation

            return track_generation(ctx.model(), req, ctx.cancelled,
                                    lambda stage, d, t: ctx.progress(stage, d, t, stage))
        return self.session.submit(job, name="track generation", on_progress=on_progress)

    def steer_extract(self, req: Any, on_progress: OnProgress = None) -> Job[Any]:
        """A steering direction (``engine.steering.SteeringDirection``) from an ``ExtractRequest``."""
        def job(ctx: Any) -> Any:
            from engine.steering import run_extract

            return run_extract(ctx.model(), req, ctx.cancelled)[1]
        return self.session.submit(job, name="steer extract", on_progress=on_progress)

    def steer(self, req: Any, direction: Any, on_progress: OnProgress = None) -> Job[Any]:
        """Steered generations (``SteerResult``) of a ``SteerRequest`` along ``direction``."""
        def job(ctx: Any) -> Any:
            from engine.steering import run_steer

            return run_steer(ctx.model(), req, ctx.cancelled, lambda i, n: ctx.progress("token", i, n, "steer"),
                             direction=direction)
        return self.session.submit(job, name="steer", on_progress=on_progress)

    def ablate(self, req: Any, on_progress: OnProgress = None, chunk_size: int | None = None) -> Job[Any]:
        """An ablation study (``AblationResult``). With ``chunk_size`` the sweep runs in batches of
        that many points and every event carries the finished points so far (``AblationPoint``s),
        so coalescing (only the newest event is handled) loses none of them."""
        def job(ctx: Any) -> Any:
            from engine.ablation import run_ablation

            points: list[Any] = []

            def progress(stage: str, done: int, total: int, msg: str, payload: Any) -> None:
                if payload is not None:
                    points[:] = payload
                ctx.progress(stage, done, total, msg, payload=list(points))

            return run_ablation(ctx.model(), req, ctx.cancelled, progress, chunk_size=chunk_size)
        return self.session.submit(job, name="ablate", on_progress=on_progress)

    def analysis(self, req: Any, on_progress: OnProgress = None) -> Job[Any]:
        """One of the analyses of ``engine/`` picked by ``req.kind`` (layer, format-sensitivity, probe,
        neurons, directions, compare, weight-diff, activation-diff, patch, attribute,
        attention); the job's result is the
        engine function's result model. A model field left blank means the current model."""
        def job(ctx: Any) -> Any:
            from engine.errors import InputError

            def model(spec: str | None, dtype: str | None = "auto") -> Any:
                cur = ctx.session.current
                if cur is not None and spec in (None, "", cur.info.model_id) and dtype in (None, "", "auto"):
                    return ctx.model()
                return ctx.model(spec or (cur.info.model_id if cur is not None else None), dtype or "auto")

            def pair(spec1: str | None, dtype1: str, spec2: str | None, dtype2: str) -> tuple[Any, Any]:
                ctx.progress("models", 0, 2, "loading model 1")
                a = model(spec1, dtype1)
                ctx.progress("models", 1, 2, "loading model 2")
                return a, model(spec2 if spec2 else spec1, dtype2)

            kind, stop = req.kind, ctx.cancelled
            blocks = ctx.counter("blocks", "activations")
            if kind == "layer":
                from engine.representations import layer_analysis
                return layer_analysis(model(req.model), req, stop, blocks)
            if kind == "format-sensitivity":
                from engine.representations import format_sensitivity
                return format_sensitivity(model(req.model), req, stop, blocks)
            if kind == "probe":
                from engine.probe import run_probe
                return run_probe(model(req.model), req, stop, lambda i, n: ctx.progress("layer", i + 1, n, "probe"))
            if kind == "neurons":
                from engine.neurons import run_neurons
                return run_neurons(model(req.model), req, stop, blocks)
            if kind == "directions":
                from engine.direction_files import compare_directions
                return compare_directions(req)
            if kind == "patch":
                from engine.patching import patch
                return patch(model(req.model), req, stop)
            if kind == "attribute":
                from engine.attribution import attribute
                return attribute(model(req.model), req, stop, ctx.counter("verify", "real patching"))
            if kind == "attention":
                from engine.attribution import attention_pattern
                return attention_pattern(model(req.model), req)
            if kind == "compare":
                from engine.compare import compare
                return compare(*pair(req.model1, req.dtype1, req.model2, req.dtype2), req, stop)
            if kind == "weight-diff":
                from engine.diff import weight_diff
                return weight_diff(*pair(req.base, req.base_dtype, req.finetuned, req.finetuned_dtype), req, stop)
            if kind == "activation-diff":
                from engine.diff import activation_diff
                return activation_diff(*pair(req.base, req.base_dtype, req.finetuned, req.finetuned_dtype), req, stop,
                                       blocks)
            raise InputError(f"unknown analysis {kind!r}")
        return self.session.submit(job, name=req.kind, on_progress=on_progress)

    def lookup(self, text: str) -> Job[tuple[int, list[str]]]:
        """The exact token tracking ``text`` follows, and all the pieces ``text`` encodes to."""
        def job(ctx: Any) -> tuple[int, list[str]]:
            tok = ctx.model().tokenizer
            tid, ids = tok.lookup(text)
            return tid, tok.pieces(ids)
        return self.session.submit(job, name="lookup")

    # -- circuit toolkit (engine/circuit, docs/circuit.md) --------------------------------------
    def circuit_dataset(self, source: str, directory: str, path: str | None = None,
                        options: dict[str, int] | None = None) -> Job[Any]:
        """A circuit dataset's ``DatasetSummary`` (its ``path`` is the file to collect). ``source``:
        "file" loads ``path``; "tool_calling" / "arithmetic" build one (``options``: per_tool, no_tool,
        count, seed) and save it in ``directory``; "probe:NAME" writes the built-in probe datasets to
        ``directory`` (``circuit probes init``) and loads NAME's file."""
        def job(ctx: Any) -> Any:
            from engine.circuit import dataset as D
            from engine.errors import InputError

            o = options or {}
            if source == "file":
                if not path:
                    raise InputError("type a dataset file (.json/.jsonl) in the path field")
                return D.summarize(D.load_dataset(path), path, samples=0)
            d = Path(directory).expanduser()
            d.mkdir(parents=True, exist_ok=True)
            if source.startswith("probe:"):
                from engine.circuit.probes import init_datasets

                name = source.split(":", 1)[1]
                files = {f.stem: f for f in init_datasets(str(d))}
                if name not in files:
                    raise InputError(f"no built-in probe dataset {name!r}")
                return D.summarize(D.load_dataset(files[name]), str(files[name]), samples=0)
            seed = int(o.get("seed", 42))
            if source == "tool_calling":
                ds = D.tool_calling(int(o.get("per_tool", 25)), int(o.get("no_tool", 100)), seed)
                file = d / f"tool_calling_p{o.get('per_tool', 25)}_n{o.get('no_tool', 100)}_s{seed}.json"
            elif source == "arithmetic":
                ds = D.arithmetic(int(o.get("count", 100)), seed)
                file = d / f"arithmetic_c{o.get('count', 100)}_s{seed}.json"
            else:
                raise InputError(f"unknown dataset source {source!r}")
            saved = D.save_dataset(ds, file)
            return D.summarize(ds, str(saved), samples=0)
        return self.session.submit(job, name="circuit dataset")

    def circuit_collect(self, req: Any, on_progress: OnProgress = None) -> Job[Any]:
        """``engine.circuit.collect.collect`` on the current model (``CollectResult``); one "batch"
        event per finished batch; cancellable between batches, and a rerun resumes."""
        def job(ctx: Any) -> Any:
            from engine.circuit.collect import collect

            lm = ctx.model(req.model) if req.model else ctx.model()
            return collect(lm, req, ctx.cancelled, lambda d, t: ctx.progress("batch", d, t, "collect"))
        return self.session.submit(job, name="circuit collect", on_progress=on_progress)

    def circuit_analyze(self, activations: str, on_progress: OnProgress = None) -> Job[Any]:
        """Per-layer PCA and probes of a collected file (``AnalyzeResult``); one "layer" event per layer,
        whose payload is every finished ``LayerGeometry`` so far."""
        def job(ctx: Any) -> Any:
            from engine.circuit.activations import load_activations
            from engine.circuit.geometry import analyze

            return analyze(load_activations(activations), cancel=ctx.cancelled,
                           on_rows=lambda done, total: ctx.progress("layer", len(done), total, "analyze", payload=done))
        return self.session.submit(job, name="circuit analyze", on_progress=on_progress)

    # -- the engine thread --------------------------------------------------------------------
    def on_engine_death(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(reason)`` (from any thread) when the engine thread died and a new one was
        started; the job it was running fails with ``EngineStopped``, queued jobs run on the new one."""
        self.session.on_thread_death = callback

    def ensure_running(self) -> None:
        """Notice an engine thread that died silently and start a new one (the app polls this)."""
        self.session.ensure_running()

    def close(self) -> None:
        """Cancel the jobs and join the engine thread (waiting for the running step)."""
        self.session.shutdown()
