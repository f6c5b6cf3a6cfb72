"""Request and result models of the logit lens (``analyze``). JSON field names follow the original
toolkit's API.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated

from pydantic import Field, computed_field, field_validator

from engine.results.base import SCHEMA_VERSION, AnyCase, Frozen, LensBinding, LensSpec, TokenPrediction


class LayerStrategy(str, Enum):
    ALL = "all"
    EVENLY_SPACED = "evenly_spaced"
    FIRST_LAST = "first_last"
    CUSTOM = "custom"


class AnalysisConfig(Frozen):
    """Options of a logit-lens analysis (the seed's ``AnalysisConfig``)."""

    layer_strategy: Annotated[LayerStrategy, AnyCase] = LayerStrategy.EVENLY_SPACED
    layer_step: int = Field(4, ge=1)
    custom_layers: list[int] | None = None
    top_k: int = Field(5, ge=1, le=1000)
    track_tokens: list[str] = []
    compute_entropy: bool = True  # always: False is refused (see the validator)
    compute_transitions: bool = True
    embedding_scale: float | None = None
    chat: bool = False
    position: int = -1  # prompt position to read the lens at (-1 = last token)
    lens: LensSpec = "logit"  # logit | tuned (the model's default file) | tuned:FILE (engine.tuned_lens)

    @field_validator("compute_entropy")
    @classmethod
    def _entropy_always(cls, v: bool) -> bool:
        if not v:  # refused rather than silently ignored
            raise ValueError("compute_entropy=False is not supported: the entropy comes out of the same pass "
                             "as the probabilities (it costs nothing) and decides is_confident and the "
                             "decision layer, so every analysis computes it")
        return v


class AnalyzeRequest(AnalysisConfig):
    kind: str = "analyze"
    model: str | None = None
    prompt: str


class LayerPredictionResult(Frozen):
    layer_idx: int
    predictions: list[TokenPrediction]
    entropy: float
    entropy_normalized: float
    is_confident: bool

    @computed_field  # type: ignore[prop-decorator]
    @property
    def top_token(self) -> str:
        return self.predictions[0].token

    @computed_field  # type: ignore[prop-decorator]
    @property
    def top_probability(self) -> float:
        return self.predictions[0].probability


class LayerTransition(Frozen):
    from_layer: int
    to_layer: int
    kl_divergence: float
    js_divergence: float
    top_token_changed: bool


class TokenEvolutionResult(Frozen):
    token: str
    token_id: int
    layer_probabilities: dict[int, float]
    layer_ranks: dict[int, int]
    emergence_layer: int | None
    pieces: list[str] = []  # the tokens the string encodes to; >1 means only the first is tracked
    note: str | None = None


class AnalysisResult(Frozen):
    schema_version: int = SCHEMA_VERSION
    model_id: str
    request: AnalyzeRequest
    prompt: str
    tokens: list[str]
    token_ids: list[int]
    position: int
    num_layers: int
    captured_layers: list[int]
    final_prediction: list[TokenPrediction]
    layer_predictions: list[LayerPredictionResult]
    layer_transitions: list[LayerTransition]
    token_evolutions: list[TokenEvolutionResult]
    decision_layer: int | None
    predicted_token: str
    predicted_probability: float
    final_entropy: float
    vocab_size: int
    final_token_ranks: dict[int, int] = {}  # full-vocabulary rank of the final prediction at each captured layer
    lens: LensBinding | None = None  # the tuned lens read through (None: the logit lens)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def max_kl_transition(self) -> LayerTransition | None:
        if not self.layer_transitions:
            return None
        return max(self.layer_transitions, key=lambda t: t.kl_divergence)
