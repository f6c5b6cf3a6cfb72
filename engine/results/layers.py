"""Request and result models of ``layer`` (per-layer cosine of the prompts) and
``format-sensitivity``.
"""

from __future__ import annotations

from pydantic import computed_field

from engine.results.base import SCHEMA_VERSION, Frozen


class LayerRequest(Frozen):
    kind: str = "layer"
    model: str | None = None
    prompts: list[str]
    labels: list[str] | None = None
    layers: list[int] | None = None  # None: every 4th layer plus the last
    attention: bool = False
    chat: bool = False


class AttentionTop(Frozen):
    """Where the last position attends (mean over heads): the top source tokens."""

    prompt_index: int
    tokens: list[str]
    positions: list[int]
    weights: list[float]


class LayerSimilarity(Frozen):
    layer: int
    cosine: list[list[float]]  # N x N, prompts in request order
    within_label: float | None = None
    between_label: float | None = None
    separation: float | None = None  # within - between
    silhouette: float | None = None  # cosine-distance silhouette of the labels
    attention: list[AttentionTop] = []


class LayerResult(Frozen):
    schema_version: int = SCHEMA_VERSION
    model_id: str
    request: LayerRequest
    prompts: list[str]
    last_tokens: list[str]  # the last token of each prompt (what is compared)
    labels: list[str] | None
    layers: list[LayerSimilarity]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def best_layer(self) -> int | None:
        scored = [(ls.separation, ls.layer) for ls in self.layers if ls.separation is not None]
        return max(scored, key=lambda s: s[0])[1] if scored else None  # the first of equal separations

    @property
    def label_note(self) -> str | None:
        """What the labels cannot give, and why (None when every label statistic is computed)."""
        if not self.labels:
            return None
        counts = {lab: self.labels.count(lab) for lab in self.labels}
        if len(counts) < 2:
            return ("every prompt has the same label: the between-label cosine and the separation "
                    "need at least two labels")
        if max(counts.values()) < 2:
            return ("one prompt per label: the within-label cosine and the separation need two prompts "
                    "with the same label")
        return None


class FormatSensitivityRequest(Frozen):
    kind: str = "format-sensitivity"
    model: str | None = None
    prompts: list[str]  # base prompts; each is run as b.rstrip() + " " and b.rstrip()
    layers: list[int] | None = None
    chat: bool = False


class FormatPair(Frozen):
    base: str
    with_space: str
    without_space: str
    last_token_with_space: str
    last_token_without_space: str
    cosine_by_layer: dict[int, float]  # cos(with-space, without-space) at each layer


class FormatLayer(Frozen):
    layer: int
    within_label: float
    between_label: float
    separation: float
    mean_pair_cosine: float


class FormatSensitivityResult(Frozen):
    schema_version: int = SCHEMA_VERSION
    model_id: str
    request: FormatSensitivityRequest
    pairs: list[FormatPair]
    layers: list[FormatLayer]
    note: str
