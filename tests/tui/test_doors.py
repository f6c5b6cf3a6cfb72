"""The two doors side by side: the TUI reads what users type with ``lazarus_tui.inputs``, the
parsers its batch twins use, and reaches ``lazarus_tui/batch/`` only for a twin's command line."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "lazarus_tui"


def _tui_modules() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py") if "batch" not in p.relative_to(ROOT).parts)


def test_the_tui_imports_from_batch_only_twin_commands():
    reached = []
    for path in _tui_modules():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            where = f"{path.relative_to(ROOT.parent)}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lazarus_tui.batch"):
                names = {a.name for a in node.names}
                if node.module == "lazarus_tui.batch" and names == {"dispatch"} and path.name == "cli.py":
                    continue  # the entry point runs the batch door itself
                assert names == {"twin_command"}, f"{where} imports {sorted(names)} from {node.module}"
                reached.append(node.module)
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("lazarus_tui.batch") for a in node.names), where
    assert reached  # the screens do offer their twins (the walk saw them)


def test_the_shared_parsers_read_as_the_batch_flags_do():
    from lazarus_tui import inputs

    assert inputs.split_prompts("a | b|c ") == ["a ", " b", "c "]  # not stripped: spaces are tokens
    assert inputs.split_labels("x, y,x") == ["x", "y", "x"]
    assert inputs.parse_layers("0,4-6") == [0, 4, 5, 6]
    assert inputs.parse_floats("-2,-1,0,1.5") == [-2.0, -1.0, 0.0, 1.5]
    assert inputs.parse_prompt_cases("10 * 10 =:100|a:b:c") == [("10 * 10 =", "100"), ("a:b", "c")]
