"""One criteria vocabulary: ablation's pass/fail and steering's scores read positive/negative alike."""

from __future__ import annotations

import pytest

from engine.criteria import make_criterion
from engine.steering import score_criterion


@pytest.mark.parametrize("text,positive,negative,n_pos", [
    ("a happy and wonderful day", True, False, 2),
    ("good but bad and sad", False, True, 1),  # more negative words: steering used to pass it as positive
    ("good and bad", False, False, 1),  # a tie passes neither
    ("nothing to see", False, False, 0),
    ("I am grateful, not sorry", False, False, 1),  # words from the former steering-only list count in both
])
def test_ablation_and_steering_agree(text, positive, negative, n_pos):
    for name, want in (("positive", positive), ("negative", negative)):
        assert make_criterion(name)[0](text) is want
        assert score_criterion(text, name).passed is want
    assert score_criterion(text, "positive").score == n_pos
