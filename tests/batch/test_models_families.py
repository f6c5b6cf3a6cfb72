"""`lazarus --batch models families`: the family matrix, generated from the table the code uses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from engine.models import family_matrix as fm
from engine.models.families import FAMILIES, VERIFIED

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lazarus_tui.cli", "--batch", "models", "families", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=120, check=False)


def test_docs_carry_the_command_output():
    res = _run("--markdown")
    assert res.returncode == 0, res.stderr
    doc = (ROOT / "docs" / "models.md").read_text()
    assert fm.doc_section(doc) == res.stdout, "docs/models.md is stale: rewrite its matrix with " \
        "`lazarus --batch models families --markdown` (engine.models.family_matrix.rewrite_doc)"


def test_every_mlx_lm_model_type_is_listed_with_a_status():
    res = _run("--json")
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    types = {r["model_type"] for r in rows}
    assert set(fm.mlx_lm_model_types()) <= types
    assert {"llama", "gemma3_text", "qwen3", "gpt2", "mixtral", "mamba2"} <= types
    by = {r["model_type"]: r for r in rows}
    for mt in VERIFIED:
        assert by[mt]["status"] in ("verified", "partial")
    assert by["gemma2"]["status"] == "partial" and "attn_pattern" in by["gemma2"]["detail"]
    assert by["llama"]["status"] == "verified" and by["llama"]["detail"] == ""
    assert all(r["status"] in ("verified", "partial", "untested", "refused") for r in rows)
    assert set(FAMILIES) <= types


def test_every_verified_family_is_built_by_the_family_tests():
    from tests.families.factory import FAMILIES as BUILT

    assert VERIFIED == set(BUILT), "verified = exactly the families tests/families builds and checks"


def test_human_listing_names_each_type_once():
    res = _run()
    assert res.returncode == 0
    lines = res.stdout.splitlines()
    assert len(lines) == len(fm.family_rows())
    assert any(line.split()[:2] == ["qwen3_moe", "partial"] for line in lines)
    assert "verified" in res.stderr
