"""The OpenBLAS preload only works when engine is imported before mlx.core: the other order must
say so once on stderr (Python API) and in doctor's BLAS line, never claim OpenBLAS serves MLX."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the preload is Linux-only")

PROBE = "from engine import blas; st = blas.state(); print(st.mlx_first, st.loaded is not None); print(blas.describe())"


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"})


def test_mlx_first_warns_once_and_reports_no_openblas():
    r = _run(f"import mlx.core\nimport engine\nimport engine.lens\n{PROBE}")
    assert r.returncode == 0, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "mlx was imported before engine" in lines[0] and "python-api.md" in lines[0]
    first, loaded = r.stdout.splitlines()[0].split()
    assert (first, loaded) == ("True", "False")
    assert "mlx was imported before engine" in r.stdout.splitlines()[1]  # doctor's BLAS line


def test_engine_first_is_silent():
    r = _run(f"import engine\nimport mlx.core\n{PROBE}")
    assert r.returncode == 0, r.stderr
    assert "mlx was imported before engine" not in r.stderr
    assert r.stdout.splitlines()[0].split()[0] == "False"
