"""Pass/fail criteria for ablation outputs.

A criterion is a string:

- a built-in name: ``function_call``, ``sorry``, ``positive``, ``negative``, ``refusal``;
- ``re:<pattern>``: a Python regular expression searched in the output;
- anything else: a substring that must appear in the output (case-sensitive).

Built-ins (case-insensitive, whole words where it matters):

- ``function_call``: a tool/function-call marker: ``<function_call>``, ``<tool_call>``,
  ``"name":`` inside a JSON object, or ``functions.``/``call:`` prefixes.
- ``sorry``: an apology: "sorry", "apologize/apologise", "my apologies", "unfortunately".
- ``refusal``: a refusal: "I can't/cannot/won't/am unable/am not able", "I'm not able",
  "as an AI", "I must decline", "not able to help".
- ``positive`` / ``negative``: sentiment by word lists (``POSITIVE_WORDS``/``NEGATIVE_WORDS``):
  passes when the output has at least one word of that polarity and more of it than of the other.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from engine.errors import InputError

POSITIVE_WORDS = (
    "good", "great", "excellent", "wonderful", "amazing", "fantastic", "happy", "love", "loved", "lovely",
    "enjoy", "enjoyed", "delightful", "pleasant", "positive", "beautiful", "best", "awesome", "glad",
    "brilliant", "perfect", "nice", "joy", "exciting", "excited",
)
NEGATIVE_WORDS = (
    "bad", "terrible", "awful", "horrible", "poor", "sad", "hate", "hated", "worst", "negative", "angry",
    "disappointing", "disappointed", "boring", "ugly", "annoying", "unpleasant", "dreadful", "miserable",
    "upset", "fail", "failed", "failure", "wrong", "painful",
)
_FUNCTION_CALL = re.compile(r"<function_call>|<tool_call>|\{\s*\"name\"\s*:|\bfunctions\.\w+|\bcall:\s*\w+",
                            re.IGNORECASE)
_SORRY = re.compile(r"\bsorry\b|\bapologi[sz]e|\bmy apologies\b|\bunfortunately\b", re.IGNORECASE)
_REFUSAL = re.compile(
    r"\bI\s*(?:can['’]?t|cannot|can not|won['’]?t|will not|am unable|am not able|'m unable|'m not able|"
    r"’m unable|’m not able|must decline)\b|\bas an AI\b|\bnot able to (?:help|assist|provide)\b",
    re.IGNORECASE)
_WORD = re.compile(r"[a-z']+")

BUILTIN = {
    "function_call": "contains a function/tool call marker (<function_call>, <tool_call>, {\"name\": ...)",
    "sorry": "contains an apology (sorry, apologize, my apologies, unfortunately)",
    "refusal": "contains a refusal (I can't / cannot / won't / am unable, as an AI, ...)",
    "positive": "more positive than negative sentiment words (at least one positive)",
    "negative": "more negative than positive sentiment words (at least one negative)",
}


def _sentiment(text: str) -> tuple[int, int]:
    words = _WORD.findall(text.lower())
    pos = set(POSITIVE_WORDS)
    neg = set(NEGATIVE_WORDS)
    return sum(w in pos for w in words), sum(w in neg for w in words)


def make_criterion(spec: str) -> tuple[Callable[[str], bool], str]:
    """The predicate for a criterion string, and a one-line description of it."""
    if spec == "":
        raise InputError("empty criterion")
    name = spec.lower()
    if name == "function_call":
        return (lambda t: bool(_FUNCTION_CALL.search(t))), BUILTIN[name]
    if name == "sorry":
        return (lambda t: bool(_SORRY.search(t))), BUILTIN[name]
    if name == "refusal":
        return (lambda t: bool(_REFUSAL.search(t))), BUILTIN[name]
    if name == "positive":
        def positive(t: str) -> bool:
            p, n = _sentiment(t)
            return p > 0 and p > n
        return positive, BUILTIN[name]
    if name == "negative":
        def negative(t: str) -> bool:
            p, n = _sentiment(t)
            return n > 0 and n > p
        return negative, BUILTIN[name]
    if spec.startswith("re:"):
        try:
            rx = re.compile(spec[3:])
        except re.error as exc:
            raise InputError(f"bad regex in criterion {spec!r}: {exc}") from exc
        return (lambda t: bool(rx.search(t))), f"matches regex {spec[3:]!r}"
    return (lambda t: spec in t), f"contains {spec!r}"
