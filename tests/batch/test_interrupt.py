"""Ctrl-C in a batch run: the job stops at its next check (exit 130, one line); a second Ctrl-C while
one long MLX step still runs leaves at once (exit 130). Never an abort (exit 134).

The script runs a job through what ``lazarus --batch`` really uses: ``dispatch`` (which turns the
job's Cancelled into "interrupted" and exit 130, and stops the engine thread) and ``JobRunner``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tests.batch.helpers import ROOT

_SCRIPT = textwrap.dedent("""
    import signal
    import sys
    import types

    from lazarus_tui import batch
    from lazarus_tui.batch import common

    mode = sys.argv[1]

    def job(ctx):
        import mlx.core as mx
        a = mx.random.normal((384, 384))
        print("started", flush=True)
        while True:  # without "checks": one long step that never looks at the cancel flag
            mx.eval(a @ a)
            if mode == "checks":
                ctx.check()

    def main(argv):
        common.JobRunner(None, "auto", quiet=True).run(job, "spin")
        return 0

    if mode == "racy":
        class Racy:
            '''stderr that takes the second Ctrl-C just after the hint reached it, inside Rich's
            own write: where a handler that prints used to print the hint a second time'''

            def __init__(self, f):
                self.f, self.done = f, False

            def write(self, text):
                n = self.f.write(text)
                if "Ctrl-C again" in text and not self.done:
                    self.done = True
                    self.f.flush()
                    signal.raise_signal(signal.SIGINT)
                return n

            def __getattr__(self, name):
                return getattr(self.f, name)

        common.err.file = Racy(sys.stderr)

    command = types.ModuleType("lazarus_tui.batch.spin")
    command.main = main
    sys.modules[command.__name__] = command
    batch.COMMANDS["spin"] = "spin"
    sys.exit(batch.dispatch(["spin"]))
""")

_HINT = "stopping after the current step (Ctrl-C again to stop now)"


def _start(tmp_path, mode: str) -> subprocess.Popen:
    script = tmp_path / "spin.py"
    script.write_text(_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), mode], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline().strip() == "started"  # the job runs, so Ctrl-C is JobRunner's
    return proc


@pytest.mark.timeout(120)
def test_ctrl_c_stops_the_job_at_its_next_check(tmp_path):
    proc = _start(tmp_path, "checks")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.splitlines() == ["interrupted"]


@pytest.mark.timeout(120)
def test_second_ctrl_c_leaves_during_a_long_step(tmp_path):
    proc = _start(tmp_path, "no-checks")
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    hint = proc.stderr.readline()  # said once the job has not stopped within a second
    assert hint.rstrip("\n") == _HINT and time.monotonic() - t0 >= 1.0
    assert proc.poll() is None  # still waiting for the step
    t = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and time.monotonic() - t < 10
    assert err.splitlines() == ["interrupted"] and "terminate called" not in err


@pytest.mark.timeout(120)
def test_second_ctrl_c_inside_the_hints_write_says_each_line_once(tmp_path):
    """The cause of the doubled hint, made deterministic: the second SIGINT arrives while the
    console is still inside its write of the hint. One hint, one "interrupted", exit 130."""
    proc = _start(tmp_path, "racy")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.splitlines() == [_HINT, "interrupted"]
