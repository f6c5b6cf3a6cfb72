"""The engine-core batch commands end to end: analyze, verify, generate, hooks, doctor, models."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from engine.results.analyze import AnalysisResult
from engine.results.generate import GenerateResult

from .helpers import ROOT, lazarus

pytestmark = pytest.mark.xdist_group("models")  # Gemma's verify (2.8 GB) beside the models worker, not on top of it (conftest)


@pytest.mark.real_model
def test_analyze_json_smollm(tmp_path):
    out = tmp_path / "lens.json"
    proc = lazarus("analyze", "-p", "The capital of France is", "--all-layers", "-t", " Paris", "--json",
                   "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    r = AnalysisResult.model_validate_json(proc.stdout)
    assert r.predicted_token == " Paris" and abs(r.predicted_probability - 0.773) < 0.01
    assert len(r.layer_predictions) == 30
    assert r.token_evolutions[0].emergence_layer is not None
    assert AnalysisResult.model_validate_json(out.read_text()) == r


@pytest.mark.real_model
def test_analyze_human_output_gemma():
    proc = lazarus("analyze", "-m", "gemma3-270m", "-p", "The capital of France is", "--all-layers",
                   "-t", " Paris")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "Family: gemma3" in text and "Layers: 18" in text
    assert "=== Final Prediction ===" in text and "=== Token Evolution ===" in text
    assert text.count("(rank ") == 18  # ' Paris' reported at every layer
    assert "Max KL transition: layers" in text


@pytest.mark.real_model
@pytest.mark.parametrize("model", ["smollm2-135m", "gemma3-270m"])
def test_verify_cli_passes(model):
    proc = lazarus("verify", "-m", model, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(proc.stdout)
    assert data["passed"] is True
    long = [p for p in data["prompts"] if p["label"] == "long"][0]
    assert long["num_tokens"] > 600 and long["max_abs_diff"] < 1e-4


@pytest.mark.real_model
def test_failed_run_leaves_no_output_file(tmp_path):
    out = tmp_path / "r.json"
    proc = lazarus("analyze", "-p", "x", "--layers", "99", "-o", str(out))
    assert proc.returncode == 2 and not out.exists() and not list(tmp_path.iterdir())


@pytest.mark.real_model
def test_generate_compare_format_and_arithmetic():
    proc = lazarus("generate", "-p", "2 + 2 =|The capital of France is", "-n", "6", "--raw",
                   "--compare-format", "--json")
    assert proc.returncode == 0, proc.stderr
    r = GenerateResult.model_validate_json(proc.stdout)
    assert not r.chat_template_used and len(r.generations) == 4
    assert [g.variant for g in r.generations[:2]] == ["with trailing space", "without trailing space"]
    assert r.generations[0].prompt == "2 + 2 = " and r.generations[1].prompt == "2 + 2 ="
    assert r.generations[0].arithmetic["expected"] == "4"
    assert r.generations[3].text.startswith(" Paris")


@pytest.mark.real_model
def test_generate_uses_chat_template_when_asked():
    """The one chat-template rule (docs/tui.md): raw unless --chat."""
    proc = lazarus("generate", "-p", "What is the capital of France?", "-n", "8", "--chat", "--json")
    r = GenerateResult.model_validate_json(proc.stdout)
    assert r.chat_template_used and "Paris" in r.generations[0].text
    assert r.generations[0].formatted_prompt.endswith("<|im_start|>assistant\n")


@pytest.mark.real_model
def test_hooks_command():
    proc = lazarus("hooks", "-p", "The capital of France is", "--layers", "0,29", "--capture-attention", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert [row["layer"] for row in data["layers"]] == [0, 29]
    assert data["layers"][1]["lens_top1"] == " Paris"
    assert data["layers"][0]["sites"][0]["shape"] == [1, 5, 576]
    assert len(data["layers"][0]["attention"]) == 9  # SmolLM2 has 9 heads
    for head in data["layers"][0]["attention"]:
        weights = [w for _, _, w in head["sources"]]
        assert weights == sorted(weights, reverse=True) and 0 < sum(weights) <= 1.0 + 1e-5


def test_doctor_blas_speedup():
    fast = lazarus("doctor", "--json", "--no-load")
    slow = lazarus("doctor", "--json", "--no-load", env={"LAZARUS_BLAS": "none"})
    assert fast.returncode == 0 and slow.returncode == 0, fast.stderr + slow.stderr
    f, s = json.loads(fast.stdout), json.loads(slow.stdout)
    if sys.platform.startswith("linux"):
        assert f["blas_loaded"] and "openblas" in f["blas_loaded"].lower()
        assert s["blas_loaded"] is None and "reference" in s["blas"]
        assert f["gemm_gflops_fp32_1024"] / s["gemm_gflops_fp32_1024"] > 5


def test_engine_and_batch_never_import_textual():
    code = ("import sys, pkgutil, importlib, engine, lazarus_tui.batch as b\n"
            "import engine.lens, engine.hooks, engine.session, engine.generate, engine.verify\n"
            "for m in pkgutil.iter_modules(b.__path__): importlib.import_module('lazarus_tui.batch.' + m.name)\n"
            "for m in pkgutil.walk_packages(engine.__path__, 'engine.'): importlib.import_module(m.name)\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('textual', 'textual_plotext')]\n"
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
