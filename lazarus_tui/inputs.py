"""What users type, as both doors read it: the TUI's fields and ``lazarus --batch`` flags.

One parser per kind of input, so that a screen and its batch twin accept exactly the same text
(docs/tui.md: every screen has a twin command). Bad text is an ``InputError`` naming what is wrong
(one line; exit 2 in batch, a notification in the TUI).
"""

from __future__ import annotations

import math

from engine.errors import InputError
from engine.layer_lists import parse_layers

__all__ = ["parse_floats", "parse_layers", "parse_prompt_cases", "split_labels", "split_prompts"]


def split_prompts(text: str) -> list[str]:
    """``a|b|c`` → three prompts, NOT stripped; ``@file`` → one prompt per line (trailing spaces kept)."""
    if text.startswith("@"):
        from engine.fileio import read_text

        lines = read_text(text[1:], "prompt file").splitlines()
        return [line.rstrip("\r\n") for line in lines if line.rstrip("\r\n") != ""]
    return text.split("|")


def split_labels(text: str) -> list[str]:
    """``a|b|c`` or ``a,b,c`` (the seed's layer example uses commas); labels are stripped."""
    sep = "|" if "|" in text else ","
    labels = [x.strip() for x in text.split(sep)]
    if any(x == "" for x in labels):
        raise InputError(f"empty label in {text!r}")
    return labels


def parse_floats(text: str, limit: float = 1000) -> list[float]:
    """``-2,-1,0,1,2`` → floats, each finite and within ±limit (steering strengths)."""
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"bad number list {text!r}: expected e.g. -2,-1,0,1,2") from None
    for v in values:
        if not math.isfinite(v) or abs(v) > limit:
            raise InputError(f"bad number list {text!r}: every value must be finite and within ±{limit:g}")
    return values


def parse_prompt_cases(text: str) -> list[tuple[str, str]]:
    """``"p1:exp1|p2:exp2"`` (or @file, one ``prompt:expected`` a line); split at the LAST colon."""
    cases = []
    for entry in split_prompts(text):
        if ":" not in entry:
            raise InputError(f"--prompts entry {entry!r} has no ':' (expected prompt:expected)")
        prompt, expected = entry.rsplit(":", 1)
        if prompt == "" or expected == "":
            raise InputError(f"--prompts entry {entry!r} needs both a prompt and an expected answer")
        cases.append((prompt, expected))
    return cases
