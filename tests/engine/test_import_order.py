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


def test_import_engine_leaves_mlx_lm_alone():
    """``import engine`` registers nothing in sys.modules; a script that imports mlx_lm itself gets the
    real package. The light stand-in comes with the first model class the engine needs, and only
    when mlx_lm is not imported yet: the family's code loads without transformers."""
    r = _run("import engine, sys\nprint('mlx_lm' in sys.modules)\nimport mlx_lm\nprint(mlx_lm.__file__ is not None, "
             "hasattr(mlx_lm, 'convert'), 'transformers' in sys.modules)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "True", "True", "True"]
    r = _run("import engine, sys\nfrom engine._imports import model_module\nm = model_module('llama')\n"
             "print(m.__name__, 'transformers' in sys.modules)\nprint(callable(sys.modules['mlx_lm'].load))")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["mlx_lm.models.llama", "False", "True"]  # mlx_lm.load: imported on first use
