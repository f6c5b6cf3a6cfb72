"""Ctrl-C in a batch run: the job stops at its next check (exit 130, one line); a second Ctrl-C while
one long MLX step still runs leaves at once (exit 130). Never an abort (exit 134)."""

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
    import sys
    from lazarus_tui.batch.common import JobRunner, run_or_cancel

    checks = sys.argv[1] == "checks"

    def job(ctx):
        import mlx.core as mx
        a = mx.random.normal((384, 384))
        print("started", flush=True)
        while True:  # with "no-checks": one long step that never looks at the cancel flag
            mx.eval(a @ a)
            if checks:
                ctx.check()

    sys.exit(run_or_cancel(lambda: JobRunner(None, "auto", quiet=True).run(job, "spin")))
""")


def _start(tmp_path, mode: str) -> subprocess.Popen:
    script = tmp_path / "spin.py"
    script.write_text(_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), mode], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline().strip() == "started"
    return proc


def test_ctrl_c_stops_the_job_at_its_next_check(tmp_path):
    proc = _start(tmp_path, "checks")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.splitlines() == ["interrupted"]


@pytest.mark.timeout(120)
def test_second_ctrl_c_leaves_during_a_long_step(tmp_path):
    proc = _start(tmp_path, "no-checks")
    proc.send_signal(signal.SIGINT)
    hint = proc.stderr.readline()  # said once the job has not stopped within a second
    assert "Ctrl-C again to stop now" in hint
    assert proc.poll() is None  # still waiting for the step
    t = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and time.monotonic() - t < 10
    assert err.splitlines() == ["interrupted"] and "terminate called" not in err
