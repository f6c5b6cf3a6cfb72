"""Request and result models shared by the TUI, the batch commands and the Python API.

Results are frozen pydantic models of plain numbers and strings (never mx arrays),
carrying a ``schema_version``, the model id and the request that made them.
JSON field names for analyze follow the original toolkit's API.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator, model_validator

SCHEMA_VERSION = 1


class Frozen(BaseModel):
    """Immutable; unknown fields are errors, except computed ones (present in dumped JSON)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _drop_computed(cls, data: Any) -> Any:
        computed = cls.model_computed_fields
        if computed and isinstance(data, dict):
            return {k: v for k, v in data.items() if k not in computed}
        return data


class LayerStrategy(str, Enum):
    ALL = "all"
    EVENLY_SPACED = "evenly_spaced"
    FIRST_LAST = "first_last"
    CUSTOM = "custom"


def check_lens_spec(spec: str) -> str:
    """A lens spec's form: ``logit``, ``tuned`` or ``tuned:FILE`` (ValueError otherwise)."""
    if spec in ("logit", "tuned") or (spec.startswith("tuned:") and len(spec) > len("tuned:")):
        return spec
    raise ValueError(f"bad lens {spec!r}: expected logit, tuned (the model's default file) or tuned:FILE")


class LensBinding(Frozen):
    """What a tuned lens file says about the model it was trained for (engine.tuned_lens)."""

    path: str
    model_id: str
    weights_hash: str  # engine.tuned_lens.weights_hash: final norm and unembedding, a sample of the rest
    hidden_size: int
    num_layers: int
    dtype: str
    corpus: str
    tokens: int  # training tokens (positions whose KL was minimised)
    steps: int


class AnalysisConfig(Frozen):
    """Options of a logit-lens analysis (the seed's ``AnalysisConfig``)."""

    layer_strategy: LayerStrategy = LayerStrategy.EVENLY_SPACED
    layer_step: int = Field(4, ge=1)
    custom_layers: list[int] | None = None
    top_k: int = Field(5, ge=1, le=1000)
    track_tokens: list[str] = []
    compute_entropy: bool = True  # always: False is refused (see the validator)
    compute_transitions: bool = True
    embedding_scale: float | None = None
    chat: bool = False
    position: int = -1  # prompt position to read the lens at (-1 = last token)
    lens: str = "logit"  # logit | tuned (the model's default file) | tuned:FILE (engine.tuned_lens)

    @field_validator("lens")
    @classmethod
    def _lens(cls, v: str) -> str:
        return check_lens_spec(v)

    @field_validator("layer_strategy", mode="before")
    @classmethod
    def _strategy(cls, v: Any) -> Any:
        return v.lower() if isinstance(v, str) else v

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


class TokenPrediction(Frozen):
    token: str
    token_id: int
    probability: float
    rank: int | None = None


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


class GenerateRequest(Frozen):
    kind: str = "generate"
    model: str | None = None
    prompts: list[str]
    max_tokens: int = Field(10, ge=1, le=4096)
    temperature: float = Field(0.0, ge=0.0)
    seed: int = 0
    chat: bool = True
    compare_format: bool = False
    show_tokens: bool = False


class GeneratedToken(Frozen):
    token: str
    token_id: int


class Generation(Frozen):
    prompt: str
    variant: str = ""  # "" or "with trailing space"/"without trailing space" for --compare-format
    formatted_prompt: str
    text: str
    tokens: list[GeneratedToken]
    stopped: str  # "eos" or "max_tokens"
    arithmetic: dict[str, Any] | None = None  # for "A op B =" prompts: expected, found, onset_token


class GenerateResult(Frozen):
    schema_version: int = SCHEMA_VERSION
    model_id: str
    request: GenerateRequest
    chat_template_used: bool
    generations: list[Generation]


class VerifyPrompt(Frozen):
    label: str
    num_tokens: int
    max_abs_diff: float
    passed: bool


class VerifyResult(Frozen):
    schema_version: int = SCHEMA_VERSION
    model_id: str
    dtype: str
    tolerance: float
    prompts: list[VerifyPrompt]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def passed(self) -> bool:
        return all(p.passed for p in self.prompts)
