"""Scoring steered outputs: a text criterion (engine.criteria's word lists and polarity rule, word
lists, substrings) and where each output first diverges from its unsteered twin."""

from __future__ import annotations

from collections.abc import Sequence

from engine.criteria import polarity_passes, sentiment_hits, word_hits
from engine.errors import InputError
from engine.fileio import read_text
from engine.results.steering import CriterionScore, SteeredOutput


def _word_hits(text: str, words: Sequence[str] | frozenset[str]) -> list[str]:
    return word_hits(text, {w.lower() for w in words})


def score_criterion(text: str, criterion: str) -> CriterionScore:
    """Score one output: ``positive``/``negative`` (sentiment word lists of ``engine.criteria``:
    score = hits of that polarity, passes by its rule: at least one, and more than of the other),
    ``sentiment`` (positive hits - negative hits; passes when > 0), ``words:a,b,c`` or ``@file``
    (a word list, case-insensitive whole words: hits), else a substring (occurrences)."""
    if criterion in ("positive", "negative"):
        hits = sentiment_hits(text)[0 if criterion == "positive" else 1]
        return CriterionScore(criterion=criterion, score=len(hits), passed=polarity_passes(criterion, text),
                              matches=hits)
    if criterion == "sentiment":
        pos, neg = sentiment_hits(text)
        score = len(pos) - len(neg)
        return CriterionScore(criterion=criterion, score=score, passed=score > 0,
                              matches=[f"+{w}" for w in pos] + [f"-{w}" for w in neg])
    if criterion.startswith(("words:", "@")):
        if criterion.startswith("@"):
            words = [w.strip() for w in read_text(criterion[1:], "word list file").split() if w.strip()]
        else:
            words = [w.strip() for w in criterion[len("words:"):].split(",") if w.strip()]
        if not words:
            raise InputError(f"empty word list in criterion {criterion!r}")
        hits = _word_hits(text, words)
        return CriterionScore(criterion=criterion, score=len(hits), passed=bool(hits), matches=hits)
    if criterion == "":
        raise InputError("empty criterion")
    count = text.count(criterion)
    return CriterionScore(criterion=criterion, score=count, passed=count > 0, matches=[criterion] * count)


def strip_eos(ids: list[int], stopped: str, eos: Sequence[int]) -> list[int]:
    """The generated ids without the end token that stopped them."""
    return ids[:-1] if stopped == "eos" and ids and ids[-1] in eos else ids


def with_divergence(outputs: list[SteeredOutput], prompt_index: Sequence[int]) -> list[SteeredOutput]:
    """``diverged_at`` of each steered output: the first generated token that differs from the output
    of the same prompt (``prompt_index``: its index in the request) and layer at coefficient 0 (None
    when identical or when there is no such row)."""
    baseline = {(pi, o.layer): o.token_ids for pi, o in zip(prompt_index, outputs) if o.coefficient == 0.0}
    done = []
    for pi, o in zip(prompt_index, outputs):
        base, ids, diverged = baseline.get((pi, o.layer)), o.token_ids, None
        if base is not None and o.coefficient != 0.0 and base != ids:
            diverged = next((k for k, (a, b) in enumerate(zip(base, ids)) if a != b), min(len(base), len(ids)))
        done.append(o.model_copy(update={"diverged_at": diverged}))
    return done
