"""Chart helpers: whole-number layer ticks, the tracked-token legend, charts sized to their pane."""

from __future__ import annotations

from engine.results.analyze import TokenEvolutionResult
from lazarus_tui.widgets.charts import integer_ticks, legend_label


def test_integer_ticks() -> None:
    assert integer_ticks(list(range(30)), 10) == [0, 5, 10, 15, 20, 25, 29]
    assert integer_ticks(list(range(30)), 4) == [0, 10, 20, 29]
    assert integer_ticks(list(range(8)), 10) == list(range(8))
    assert integer_ticks(list(range(18)), 12) == [0, 2, 4, 6, 8, 10, 12, 14, 17]
    assert integer_ticks([3], 5) == [3]
    assert integer_ticks(list(range(1, 51)), 8) == [1, 10, 20, 30, 40, 50]
    for n, slots in ((30, 7), (18, 3), (200, 9), (2, 2)):
        ticks = integer_ticks(list(range(n)), slots)
        assert ticks[0] == 0 and ticks[-1] == n - 1 and len(ticks) <= slots + 1
        assert all(isinstance(t, int) for t in ticks) and ticks == sorted(set(ticks))


def test_legend_names_the_tracked_vocabulary_entry() -> None:
    def ev(token: str, pieces: list[str]) -> TokenEvolutionResult:
        return TokenEvolutionResult(token=token, token_id=1, layer_probabilities={0: 0.1}, layer_ranks={0: 3},
                                    emergence_layer=None, pieces=pieces)

    assert legend_label(ev("Xyzzyplugh", ["X", "yz", "zy"])) == "'X' (first of 'Xyzzyplugh')"
    assert legend_label(ev(" Paris", [" Paris"])) == "' Paris'"
    assert legend_label(ev(" Paris", [])) == "' Paris'"
