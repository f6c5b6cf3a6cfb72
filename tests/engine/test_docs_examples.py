"""Every ```python block in docs/python-api.md runs and its assertions hold."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "python-api.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.mark.real_model
@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_python_api_example_runs(index, smollm, capsys):
    exec(compile(BLOCKS[index], f"{DOC.name}[{index}]", "exec"), {"__name__": "__doc_example__"})
    printed = capsys.readouterr().out
    assert printed.strip(), "example printed nothing"
    if index == 0:
        assert "Predicted: ' Paris'" in printed
        assert "Token ' Paris': emerges at layer" in printed
    if index == 1:
        assert "Layer 29:" in printed and "shape (1, 1, 576)" in printed
