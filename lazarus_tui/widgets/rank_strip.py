"""``RankStrip``: a heat-strip of one token's full-vocabulary rank at each layer."""

from __future__ import annotations

import math

from rich.text import Text
from textual.widgets import Static

# rank 1 is bright green; the colour cools with log10(rank) up to 10^4
_SHADES = ("#00d75f", "#5fd700", "#afd700", "#d7af00", "#d75f00", "#870000")


def rank_style(rank: int) -> str:
    shade = _SHADES[min(len(_SHADES) - 1, int(math.log10(max(rank, 1)) + (0 if rank == 1 else 1)))]
    return f"on {shade}"


class RankStrip(Static):
    def show(self, token: str, ranks: dict[int, int]) -> None:
        if not ranks:
            self.update(Text(f"rank of {token!r} per layer: unavailable", style="dim"))
            return
        # one cell per layer, so 30+ layers and the label fit in 80 columns
        text = Text(f"rank of {token!r} by layer ", no_wrap=True, overflow="ellipsis")
        for layer in sorted(ranks):
            r = ranks[layer]
            text.append("1" if r == 1 else " ", style=rank_style(r) + " bold black")
        first, last = min(ranks), max(ranks)
        text.append(f" L{first}→L{last}: {ranks[first]} … {ranks[last]}")
        self.update(text)

    def clear(self) -> None:
        self.update("")
