"""`lazarus --batch tuned-lens train|eval` and `--lens` on analyze/compare, on SmolLM2 with tiny budgets:
the file is written and bound to its model, eval's JSON has the documented shape, a lens is refused
on another model (one line, exit 2), Ctrl-C saves a checkpoint and exits 130."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from tests.batch.helpers import ROOT, assert_one_line_error, lazarus

pytestmark = [pytest.mark.real_model, pytest.mark.timeout(600)]
TINY = ["--steps", "2", "--batch-tokens", "4", "--seq-len", "16"]


@pytest.fixture(scope="module")
def smol_lens(tmp_path_factory):
    path = tmp_path_factory.mktemp("lens") / "smol.safetensors"
    proc = lazarus("tuned-lens", "train", "-m", "smollm2-135m", *TINY, "-o", str(path), "--json")
    assert proc.returncode == 0, proc.stderr
    return path, json.loads(proc.stdout)


def test_train_writes_a_bound_lens_and_eval_has_the_documented_shape(smol_lens):
    path, report = smol_lens
    assert path.is_file() and report["steps"] == 2 and report["tokens"] == 8
    b = report["binding"]
    assert b["model_id"] == "smollm2-135m" and b["num_layers"] == 30 and b["hidden_size"] == 576
    assert len(b["weights_hash"]) == 16 and "stdlib docstrings (train split" in b["corpus"]
    text = "The capital of France is Paris. It is known for the Eiffel Tower and its museums."
    proc = lazarus("tuned-lens", "eval", "-m", "smollm2-135m", "--lens", str(path), "--text", text, "--json")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert set(r["layers"][0]) == {"layer", "logit_kl", "tuned_kl", "logit_top1", "tuned_top1"}
    assert [x["layer"] for x in r["layers"]] == list(range(30))
    n_text = int(r["text"].removeprefix("given text (").split()[0])
    assert n_text > 10 and r["tokens"] == n_text - 1  # every position but the first
    last = r["layers"][-1]
    assert last["logit_kl"] < 1e-4 and last["tuned_kl"] < 1e-4 and last["logit_top1"] == 1.0
    assert all(x["logit_kl"] >= 0 and 0 <= x["tuned_top1"] <= 1 for x in r["layers"])
    # the human table and chart
    proc = lazarus("tuned-lens", "eval", "-m", "smollm2-135m", "--lens", str(path), "--text", text)
    assert proc.returncode == 0, proc.stderr
    assert "tuned KL" in proc.stdout and "KL(final ‖ lens), bits, by layer" in proc.stdout


def test_analyze_and_compare_read_through_the_lens(smol_lens):
    path, _ = smol_lens
    proc = lazarus("analyze", "-m", "smollm2-135m", "-p", "The capital of France is", "--all-layers",
                   "--lens", f"tuned:{path}", "--json")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["lens"]["path"] == str(path) and r["request"]["lens"] == f"tuned:{path}"
    assert r["predicted_token"] == " Paris"
    proc = lazarus("compare", "-m1", "smollm2-135m", "-p", "The capital of France is", "--lens", f"tuned:{path}",
                   "--json")
    assert proc.returncode == 0, proc.stderr
    c = json.loads(proc.stdout)
    assert c["request"]["lens1"] == f"tuned:{path}" and c["request"]["lens2"] == "logit"
    assert c["rows"][-1]["kl_1_2"] < 1e-4  # the last layer reads the same through both
    proc = lazarus("track-generation", "-p", "The capital of France is", "-n", "1", "--lens", f"tuned:{path}", "--json")
    assert proc.returncode == 0, proc.stderr
    g = json.loads(proc.stdout)
    assert g["lens"]["path"] == str(path) and g["positions"][0]["ranks"][-1] == 1


def test_lens_on_another_model_is_refused(smol_lens):
    path, _ = smol_lens
    proc = lazarus("analyze", "-m", "gemma3-270m", "-p", "hi", "--lens", f"tuned:{path}")
    assert_one_line_error(proc, 2, "is for smollm2-135m")


def test_bad_input_is_one_line(tmp_path):
    assert_one_line_error(lazarus("tuned-lens", "train", "--tokens", "0"), 2, "--tokens must be at least 1")
    assert_one_line_error(lazarus("tuned-lens", "frob"), 2, "unknown tuned-lens command")
    assert_one_line_error(lazarus("tuned-lens", "eval", "-m", "smollm2-135m"), 2, "--lens")
    assert_one_line_error(lazarus("analyze", "-p", "x", "--lens", "tuned:"), 2, "bad lens")
    assert_one_line_error(lazarus("analyze", "-p", "x", "--lens", f"tuned:{tmp_path}/none.safetensors"), 2,
                          "tuned lens file not found")
    assert_one_line_error(lazarus("tuned-lens", "train", *TINY, "-o", f"{tmp_path}/no/dir/x.safetensors"), 2,
                          "output directory does not exist")


def test_ctrl_c_saves_a_checkpoint_and_exits_130(tmp_path):
    out = tmp_path / "lens.safetensors"
    proc = subprocess.Popen([sys.executable, "-m", "lazarus_tui.cli", "--batch", "tuned-lens", "train", "--steps", "40",
                             "--batch-tokens", "4", "--seq-len", "16", "-o", str(out)], cwd=ROOT,
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    deadline = time.monotonic() + 300
    for line in proc.stderr:  # a step line means training is under way
        if line.startswith("step ") or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert (tmp_path / "lens.ckpt.safetensors").is_file() and not out.exists()
    assert "--resume" in err and "Traceback" not in err
    proc2 = lazarus("tuned-lens", "train", "--steps", "40", "--batch-tokens", "4", "--seq-len", "16", "-o", str(out))
    assert_one_line_error(proc2, 2, "pass --resume")
