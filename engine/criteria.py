"""Pass/fail criteria for generated text, for ablation and steering alike (one vocabulary).

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
- ``positive`` / ``negative``: sentiment by word lists (``POSITIVE_WORDS``/``NEGATIVE_WORDS``,
  whole words, case-insensitive): passes when the output has at least one word of that polarity
  and more of it than of the other (``sentiment_hits`` gives the words found). Steering's scores
  count the same words with the same rule.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from engine.errors import InputError

POSITIVE_WORDS = frozenset([
    "good", "great", "excellent", "wonderful", "amazing", "fantastic", "happy", "happiness", "joy", "joyful", "love",
    "loved", "lovely", "beautiful", "delightful", "pleasant", "best", "awesome", "brilliant", "glad", "excited",
    "exciting", "perfect", "nice", "enjoy", "enjoyed", "enjoying", "fun", "cheerful", "grateful", "thankful", "superb",
    "positive", "success", "successful", "smile", "smiling", "warm", "kind", "bright", "peaceful", "calm", "proud",
    "hope", "hopeful", "incredible", "fabulous",
])
NEGATIVE_WORDS = frozenset([
    "bad", "terrible", "awful", "horrible", "sad", "sadness", "unhappy", "angry", "hate", "hated", "worst", "poor",
    "boring", "disappointing", "disappointed", "disappointment", "miserable", "depressed", "depressing", "painful",
    "pain", "ugly", "nasty", "annoying", "annoyed", "upset", "frustrating", "frustrated", "negative", "failure",
    "failed", "fail", "cry", "crying", "lonely", "fear", "afraid", "scared", "worried", "worry", "anxious", "hurt",
    "broken", "tired", "dull", "disgusting", "dreadful", "gloomy", "grim", "tragic", "unfortunate", "sorry",
    "unpleasant", "wrong",
])
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


def word_hits(text: str, words: frozenset[str] | set[str]) -> list[str]:
    """The words of ``text`` (lower-cased, whole words) that are in ``words``, in order."""
    return [w for w in _WORD.findall(text.lower()) if w in words]


def sentiment_hits(text: str) -> tuple[list[str], list[str]]:
    """(positive words, negative words) found in ``text``."""
    return word_hits(text, POSITIVE_WORDS), word_hits(text, NEGATIVE_WORDS)


def polarity_passes(criterion: str, text: str) -> bool:
    """``positive``/``negative``: at least one word of that polarity and more of it than of the other."""
    pos, neg = sentiment_hits(text)
    mine, other = (pos, neg) if criterion == "positive" else (neg, pos)
    return len(mine) > 0 and len(mine) > len(other)


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
    if name in ("positive", "negative"):
        return (lambda t: polarity_passes(name, t)), BUILTIN[name]
    if spec.startswith("re:"):
        try:
            rx = re.compile(spec[3:])
        except re.error as exc:
            raise InputError(f"bad regex in criterion {spec!r}: {exc}") from exc
        return (lambda t: bool(rx.search(t))), f"matches regex {spec[3:]!r}"
    return (lambda t: spec in t), f"contains {spec!r}"
