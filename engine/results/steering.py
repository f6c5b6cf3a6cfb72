"""Request and result models of activation steering (``lazarus --batch steer``, the Steering
screen and ``engine.steer_generate``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, computed_field

from engine.results.base import SCHEMA_VERSION, Frozen

SteerMethod = Literal["mean", "pca"]


class LayerSeparation(Frozen):
    """How well one layer separates the contrastive pairs (last position, layer output).

    ``separation`` = ||mean(h_pos - h_neg)|| / mean per-prompt norm ||h|| at that layer;
    ``consistency`` = mean cosine between each pair's difference and the mean difference of
    the other pairs (leave-one-out; None with a single pair);
    ``pair_accuracy`` = fraction of pairs whose positive projects higher than its negative on
    the leave-one-out direction (None with a single pair)."""

    layer: int
    separation: float
    consistency: float | None = None
    pair_accuracy: float | None = None


class DirectionInfo(Frozen):
    """What a steering direction is, without its numbers (those live in the ``.npz``)."""

    name: str
    source: Literal["extract", "file", "neuron"]
    path: str | None = None
    layer: int | None
    method: str
    model_id: str
    hidden_size: int
    norm: float
    positive_label: str = "positive"
    negative_label: str = "negative"
    positive_prompts: list[str] = []
    negative_prompts: list[str] = []
    neuron: int | None = None
    chat: bool | None = None  # extraction prompts went through the chat template
    layer_separation: list[LayerSeparation] = []


class ExtractRequest(Frozen):
    kind: str = "steer-extract"
    model: str | None = None
    positive: list[str]
    negative: list[str]
    layer: int | None = None  # None = the middle layer
    method: SteerMethod = "mean"
    chat: bool = False  # apply the chat template (when the model has one)
    name: str = "direction"
    positive_label: str = "positive"
    negative_label: str = "negative"


class SteerRequest(Frozen):
    """Generate from each prompt once per (layer, coefficient) setting, as one batch."""

    kind: str = "steer"
    model: str | None = None
    prompts: list[str]
    coefficients: list[float] = [1.0]
    layers: list[int] | None = None  # None = the direction's own layer
    position: int | None = None  # prompt position to steer (negative from the end); None = every position
    max_tokens: int = Field(50, ge=1, le=4096)
    temperature: float = Field(0.0, ge=0.0)
    seed: int = 0
    chat: bool = False
    criterion: str | None = None  # substring, "words:a,b,c", or built-in positive/negative/sentiment
    batched: bool = True  # False: one generation per setting (for comparison; same outputs)
    # where the direction comes from (exactly one): a file, a neuron, or an extraction
    direction_file: str | None = None
    neuron: int | None = None
    extract: ExtractRequest | None = None


class CriterionScore(Frozen):
    criterion: str
    score: float  # substring: occurrences; word list: hits; sentiment: positive hits - negative hits
    passed: bool
    matches: list[str] = []


class SteeredOutput(Frozen):
    prompt: str
    layer: int
    coefficient: float
    scale: float  # s: the per-token norm of layer `layer` on this prompt; the added vector is coef * s * unit
    added_norm: float  # |coef| * s
    text: str
    token_ids: list[int]
    tokens: list[str]
    stopped: str
    criterion: CriterionScore | None = None
    projection: float  # clean model, layer output at the last generated position, on the unit direction
    mean_projection: float  # the same, averaged over the generated positions
    diverged_at: int | None = None  # first generated token differing from the same prompt/layer at coef 0


class SteerResult(Frozen):
    schema_version: int = SCHEMA_VERSION
    model_id: str
    request: SteerRequest
    direction: DirectionInfo
    chat_template_used: bool
    outputs: list[SteeredOutput]
    generation_seconds: float

    @computed_field  # type: ignore[prop-decorator]
    @property
    def baseline_projection(self) -> float | None:
        zero = [o.projection for o in self.outputs if o.coefficient == 0.0]
        return zero[0] if zero else None


class ExtractResult(Frozen):
    schema_version: int = SCHEMA_VERSION
    model_id: str
    request: ExtractRequest
    direction: DirectionInfo
    saved_to: str | None = None
