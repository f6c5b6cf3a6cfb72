"""`lazarus --batch circuit ...` end to end on SmolLM2: the pipeline, kill-and-resume, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.batch.helpers import ROOT, assert_one_line_error, lazarus

pytestmark = [pytest.mark.real_model, pytest.mark.slow]


def circuit(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return lazarus("circuit", *args, timeout=timeout)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_pipeline_smollm(tmp_path):
    from PIL import Image

    ds = tmp_path / "tools.json"
    r = json.loads(ok(circuit("dataset", "create", "-o", str(ds), "--per-tool", "6", "--no-tool", "30",
                              "--seed", "7", "--json")).stdout)
    assert r["total"] == 66 and {x["name"]: x["count"] for x in r["labels"]} == {"no_tool": 30, "tool": 36}
    shown = ok(circuit("dataset", "show", str(ds), "--samples", "3")).stdout
    assert "66 prompts" in shown and "get_weather" in shown

    acts = tmp_path / "acts.safetensors"
    c = json.loads(ok(circuit("collect", "-d", str(ds), "-o", str(tmp_path / "acts"), "--layers", "all",
                              "--json")).stdout)
    assert c["captured_layers"] == list(range(30)) and c["num_prompts"] == 66 and c["batches_computed"] == 5
    from safetensors import safe_open

    with safe_open(str(acts), framework="numpy") as f:
        assert len(list(f.keys())) == 30
        h = f.get_tensor("hidden_states.layer_12")
        assert h.shape == (66, 576) and h.dtype == np.float32 and np.isfinite(h).all()

    ok(circuit("analyze", "-a", str(acts), "-o", str(tmp_path / "an.json")))
    an = json.loads((tmp_path / "an.json").read_text())
    best = next(g for g in an["layers"] if g["layer"] == an["best_layer"])
    assert best["binary_probe"]["heldout_accuracy"] >= 0.85
    assert best["binary_probe"]["baseline"] == pytest.approx(36 / 66)
    assert all(1 <= g["dims_90"] <= g["dims_95"] <= 66 for g in an["layers"])

    layer = str(an["best_layer"])
    d = json.loads(ok(circuit("directions", "-a", str(acts), "--layer", layer, "--method", "lda",
                              "-o", str(tmp_path / "dirs"), "--json")).stdout)
    npz = d["directions"][0]["file"]
    assert d["directions"][0]["heldout_accuracy"] >= 0.85 and Path(npz).exists()
    assert d["directions"][0]["n_test"] + d["directions"][0]["n_train"] == 66
    ok(circuit("directions", "-a", str(acts), "--layer", layer, "--per-tool", "-o", str(tmp_path / "dirs")))
    files = sorted(str(p) for p in (tmp_path / "dirs").glob("*.npz"))
    assert len(files) == 1 + 7
    cmp = json.loads(ok(lazarus("directions", *files[:3], "--json")).stdout)
    assert len(cmp["cosine"]) == 3

    v = json.loads(ok(circuit("visualize", "-a", str(acts), "--analysis", str(tmp_path / "an.json"), "--all",
                              "-o", str(tmp_path / "plots"), "--layer", layer, "--json")).stdout)
    assert len(v["files"]) == 4 and len(v["terminal_charts"]) == 4
    for f in v["files"]:
        with Image.open(f) as im:
            im.verify()
        with Image.open(f) as im:
            assert im.format == "PNG" and im.size[0] >= 600

    p = json.loads(ok(circuit("probes", "run", "--category", "decision", "--json")).stdout)
    assert [x["name"] for x in p["probes"]] == ["tool_vs_no_tool", "arithmetic_vs_factual"]
    assert p["forwards"] == 4  # 60 prompts, 16 per batch, every layer in each pass
    for x in p["probes"]:
        assert x["emergence_layer"] is not None and x["peak_accuracy"] >= 0.9 and x["baseline"] == 0.5


def _collect_cmd(ds: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "lazarus_tui.cli", "--batch", "circuit", "collect", "-d", str(ds), "-o", str(out),
            "--layers", "2,6", "--batch-size", "2", "--json"]


def test_kill_and_resume_gives_the_same_file(tmp_path):
    ds = tmp_path / "d.json"
    ok(circuit("dataset", "create", "-o", str(ds), "--per-tool", "4", "--no-tool", "24", "--seed", "1"))
    n_batches = 48 // 2
    parts = tmp_path / "part.safetensors.parts"
    proc = subprocess.Popen(_collect_cmd(ds, tmp_path / "part"), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if parts.exists() and len(list(parts.glob("batch_*.safetensors"))) >= 2:
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.01)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, "collect finished before it could be killed"
    done = {p: p.stat().st_mtime_ns for p in parts.glob("batch_*.safetensors")}
    assert 2 <= len(done) < n_batches and not (tmp_path / "part.safetensors").exists()

    resumed = json.loads(ok(subprocess.run(_collect_cmd(ds, tmp_path / "part"), cwd=ROOT, capture_output=True,
                                           text=True, timeout=600)).stdout)
    assert resumed["batches_reused"] == len(done)
    assert resumed["batches_computed"] == n_batches - len(done)
    full = json.loads(ok(subprocess.run(_collect_cmd(ds, tmp_path / "full"), cwd=ROOT, capture_output=True,
                                        text=True, timeout=600)).stdout)
    assert full["batches_computed"] == n_batches
    assert (tmp_path / "part.safetensors").read_bytes() == (tmp_path / "full.safetensors").read_bytes()
    meta = json.loads((tmp_path / "part.json").read_text())
    assert meta["batches_reused"] == len(done) and not parts.exists()


def test_bad_input_one_line_exit_2(tmp_path):
    from safetensors.numpy import save_file

    bad = tmp_path / "bad.json"
    bad.write_text('{"prompts": [{"text": "hi", "label": 0}, {"text": 3}]}')
    assert_one_line_error(circuit("collect", "-d", str(bad), "-o", str(tmp_path / "x")), 2, "malformed dataset")
    assert_one_line_error(circuit("dataset", "show", str(tmp_path / "nope.json")), 2, "dataset not found")

    x = np.random.default_rng(0).normal(size=(8, 16)).astype(np.float32)
    save_file({"hidden_states.layer_3": x}, str(tmp_path / "one.safetensors"))
    (tmp_path / "one.json").write_text(json.dumps({"labels": [1] * 8, "label_names": ["no_tool", "tool"]}))
    one = str(tmp_path / "one.safetensors")
    assert_one_line_error(circuit("analyze", "-a", one), 2, "needs two labels")
    assert_one_line_error(circuit("directions", "-a", one, "--layer", "3"), 2, "needs two labels")
    (tmp_path / "one.json").write_text(json.dumps({"labels": [0, 1] * 4}))
    assert_one_line_error(circuit("analyze", "-a", one, "--layer", "7"), 2, "layer 7 is not in")
    assert_one_line_error(circuit("visualize", "-a", one, "--layer", "7", "-o", str(tmp_path / "p")), 2,
                          "layer 7 is not in")
    assert_one_line_error(circuit("analyze", "-a", str(tmp_path / "missing.safetensors")), 2, "not found")
    assert_one_line_error(circuit("directions", "-a", one, "--layer", "3", "--method", "magic"), 2, "invalid choice")
    assert_one_line_error(circuit("probes", "run", "--category", "phonetic"), 2, "unknown probe category")
    assert_one_line_error(circuit("frobnicate"), 2, "unknown subcommand")


def test_circuit_entry_point_dispatches():
    from lazarus_tui.cli import circuit_main

    assert circuit_main(["dataset", "show", "/nonexistent.json"]) == 2
