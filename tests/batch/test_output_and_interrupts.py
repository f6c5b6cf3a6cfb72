"""Outputs that are not regular files, file modes, a closed stdout, and Ctrl-C mid-run: the
contract of docs/errors.md beyond the one-line refusals of test_bad_input.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.batch.helpers import ROOT


def _cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lazarus_tui.cli", "--batch", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=300, check=False, **kw)


def test_output_onto_a_device_or_fifo_is_written_through(tmp_path):
    """`-o /dev/null` must leave the device a device; a FIFO gets the bytes, stays a FIFO."""
    import stat
    import threading

    before = os.stat("/dev/null")
    proc = _cli("circuit", "dataset", "create", "--kind", "arithmetic", "--count", "4", "-o", "/dev/null", "--json")
    assert proc.returncode == 0, proc.stderr
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and (after.st_ino, after.st_rdev) == (before.st_ino, before.st_rdev)

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    proc = _cli("circuit", "dataset", "create", "--kind", "arithmetic", "--count", "4", "-o", str(fifo), "--json")
    reader.join(timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and os.listdir(tmp_path) == ["pipe"]
    assert len(json.loads(got[0])["prompts"]) == 4


def test_output_file_mode_follows_the_umask(tmp_path):
    out = tmp_path / "d.json"
    proc = _cli("circuit", "dataset", "create", "--kind", "arithmetic", "--count", "4", "-o", str(out), umask=0o027)
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_mode & 0o777 == 0o640
    out.chmod(0o604)  # a file that is replaced keeps its own mode
    proc = _cli("circuit", "dataset", "create", "--kind", "arithmetic", "--count", "5", "-o", str(out), umask=0o077)
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_mode & 0o777 == 0o604 and len(json.loads(out.read_text())["prompts"]) == 5


STOPPING = "stopping after the current step (Ctrl-C again to stop now)"


def _interrupt_lines(stderr: str) -> bool:
    """Ctrl-C ends with the one line "interrupted"; before it, the engine says once that it is
    finishing its current step when that takes over a second (a notice, not an error)."""
    lines = [x for x in stderr.splitlines() if x.strip()]
    return lines in (["interrupted"], [STOPPING, "interrupted"])


@pytest.mark.real_model
def test_sigint_mid_collect_exits_130_then_resumes(tmp_path):
    import signal
    import time

    ds = tmp_path / "d.json"
    ds.write_text(json.dumps({"name": "d", "labels": ["a", "b"],
                              "prompts": [{"text": f"prompt number {i}", "label": i % 2} for i in range(40)]}))
    cmd = [sys.executable, "-m", "lazarus_tui.cli", "--batch", "circuit", "collect", "-d", str(ds), "-o",
           str(tmp_path / "acts"), "--layers", "2,6", "--batch-size", "2", "--json"]
    parts = tmp_path / "acts.safetensors.parts"
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if parts.exists() and list(parts.glob("batch_*.safetensors")):
                proc.send_signal(signal.SIGINT)
                break
            time.sleep(0.01)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert _interrupt_lines(stderr), stderr
    assert not (tmp_path / "acts.safetensors").exists()
    resumed = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["batches_reused"] >= 1 and summary["batches_reused"] + summary["batches_computed"] == 20


@pytest.mark.parametrize("json_flag", [["--json"], []])
def test_stdout_closed_by_its_reader_ends_quietly(json_flag, tmp_path):
    """`lazarus ... | head`: the reader goes away; exit 0, nothing on stderr (docs/errors.md)."""
    data = tmp_path / "d.json"
    data.write_text(json.dumps({"name": "d", "labels": ["a", "b"],
                                "prompts": [{"text": f"p{i}", "label": i % 2} for i in range(8)]}))
    proc = subprocess.Popen([sys.executable, "-m", "lazarus_tui.cli", "--batch", "circuit", "dataset", "show",
                             str(data), *json_flag], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # before the command has written anything
    stderr = proc.stderr.read()
    assert proc.wait(timeout=120) == 0 and stderr == ""


@pytest.mark.real_model
def test_sigint_mid_sweep_exits_130_promptly(tmp_path):
    """Ctrl-C during an ablation sweep (90 points of 60 tokens: minutes of work) stops it at the
    next check: exit 130, one line, no -o file."""
    import signal
    import time

    out = tmp_path / "r.json"
    proc = subprocess.Popen([sys.executable, "-m", "lazarus_tui.cli", "--batch", "ablate", "-p",
                             "The capital of France is", "-c", "Paris", "--grid", "-n", "60", "--raw", "-o", str(out)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(6)  # the model loads in ~2 s; the sweep runs for minutes
    proc.send_signal(signal.SIGINT)
    sent = time.time()
    try:
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, ("finished before the interrupt?", proc.returncode, stderr)
    assert _interrupt_lines(stderr), stderr
    assert time.time() - sent < 30 and os.listdir(tmp_path) == []
