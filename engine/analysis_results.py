"""Request and result models of the remaining analyses (compare, probe, neurons, directions,
layer, format-sensitivity, weight-diff, activation-diff, patch).

Same conventions as ``engine.results``: frozen pydantic models of plain numbers and strings,
each result carrying ``schema_version``, the model id(s) and the request that made it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, computed_field, field_validator

from engine.results import SCHEMA_VERSION, Frozen, TokenPrediction, check_lens_spec


# -- layer / format-sensitivity ----------------------------------------------------------------
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
        scored = [ls for ls in self.layers if ls.separation is not None]
        return max(scored, key=lambda ls: ls.separation).layer if scored else None  # type: ignore[arg-type, return-value]

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


# -- directions --------------------------------------------------------------------------------
class DirectionInfo(Frozen):
    path: str
    name: str
    dim: int
    layer: int | None = None
    model_id: str | None = None
    method: str | None = None
    norm: float  # L2 norm of the stored vector (before normalising)


class DirectionPair(Frozen):
    a: str
    b: str
    cosine: float
    relation: Literal["orthogonal", "aligned", "partial"]


class DirectionsRequest(Frozen):
    kind: str = "directions"
    files: list[str]
    threshold: float = 0.1
    aligned_above: float = 0.5


class DirectionsResult(Frozen):
    schema_version: int = SCHEMA_VERSION
    request: DirectionsRequest
    directions: list[DirectionInfo]
    cosine: list[list[float]]
    pairs: list[DirectionPair]
    mean_abs_cosine: float
    warnings: list[str] = []


# -- probe -------------------------------------------------------------------------------------
class ProbeRequest(Frozen):
    kind: str = "probe"
    model: str | None = None
    class_a: list[str]
    class_b: list[str]
    label_a: str = "A"
    label_b: str = "B"
    layers: list[int] | None = None  # None: every layer
    layer: int | None = None  # the layer for the direction and the test prompts (default: best)
    method: Literal["logistic", "difference"] = "logistic"
    test: list[str] = []
    chat: bool = False
    seed: int = 0


class ProbeLayer(Frozen):
    layer: int
    cv_accuracy: float
    cv_std: float
    heldout_f1: float  # out-of-fold predictions: never scored on training data
    heldout_auc: float
    folds: int


class ProbeTestPrediction(Frozen):
    prompt: str
    label: str
    probability_a: float
    projection: float  # onto the unit direction


class ProbeResult(Frozen):
    schema_version: int = SCHEMA_VERSION
    model_id: str
    request: ProbeRequest
    layers: list[ProbeLayer]
    best_layer: int
    direction_layer: int
    method: str
    direction: list[float] = Field(repr=False)  # unit vector, positive = class A
    direction_norm: float  # norm before normalising
    accuracy: float  # CV accuracy at direction_layer
    separation: float  # (mean proj A - mean proj B) / pooled std, at direction_layer
    test_predictions: list[ProbeTestPrediction] = []
    saved_to: str | None = None


# -- neurons -----------------------------------------------------------------------------------
class NeuronsRequest(Frozen):
    kind: str = "neurons"
    model: str | None = None
    prompts: list[str]
    layers: list[int]
    neurons: list[int] = []
    neuron_names: list[str] = []
    mlp: bool = False  # MLP hidden units instead of residual dimensions
    from_direction: str | None = None
    top_k: int = Field(10, ge=1)
    auto_discover: bool = False
    labels: list[str] | None = None
    steer: str | None = None
    strength: float | None = None
    chat: bool = False


class NeuronStats(Frozen):
    layer: int
    neuron: int
    name: str | None = None
    values: list[float]  # one per prompt
    min: float
    max: float
    mean: float
    std: float
    separation: float | None = None  # auto-discover: max pairwise |mu_i - mu_j| / pooled std
    weight: float | None = None  # from-direction: the direction's weight on this dimension
    steered_values: list[float] | None = None


class NeuronsResult(Frozen):
    schema_version: int = SCHEMA_VERSION
    model_id: str
    request: NeuronsRequest
    site: str  # "resid_post" or "mlp_hidden"
    prompts: list[str]
    labels: list[str] | None
    neurons: list[NeuronStats]
    steering: str | None = None  # description of the steering applied for steered_values


# -- two-model analyses ------------------------------------------------------------------------
class WeightDiffRequest(Frozen):
    kind: str = "weight-diff"
    base: str | None = None
    finetuned: str | None = None
    base_dtype: str = "auto"
    finetuned_dtype: str = "auto"
    flag_above: float = 0.1


class MatrixDiff(Frozen):
    layer: int | None  # None for embedding / unembedding / final norm
    matrix: str
    shape: list[int]
    base_norm: float
    diff_norm: float
    relative: float
    flagged: bool


class WeightDiffResult(Frozen):
    schema_version: int = SCHEMA_VERSION
    base_model_id: str
    finetuned_model_id: str
    base_dtype: str
    finetuned_dtype: str
    request: WeightDiffRequest
    matrices: list[MatrixDiff]
    notes: list[str] = []

    @computed_field  # type: ignore[prop-decorator]
    @property
    def max_relative(self) -> float:
        return max((m.relative for m in self.matrices), default=0.0)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def flagged_count(self) -> int:
        return sum(m.flagged for m in self.matrices)


class ActivationDiffRequest(Frozen):
    kind: str = "activation-diff"
    base: str | None = None
    finetuned: str | None = None
    base_dtype: str = "auto"
    finetuned_dtype: str = "auto"
    prompts: list[str]
    layers: list[int] | None = None
    chat: bool = False


class PromptActivationDiff(Frozen):
    prompt: str
    cosine_by_layer: dict[int, float]
    relative_l2_by_layer: dict[int, float]  # ||h_b - h_a|| / ||h_a||


class ActivationDiffResult(Frozen):
    schema_version: int = SCHEMA_VERSION
    base_model_id: str
    finetuned_model_id: str
    base_dtype: str
    finetuned_dtype: str
    request: ActivationDiffRequest
    layers: list[int]
    prompts: list[PromptActivationDiff]
    mean_cosine_by_layer: dict[int, float]


class CompareRequest(Frozen):
    kind: str = "compare"
    model1: str | None = None
    model2: str | None = None
    dtype1: str = "auto"
    dtype2: str = "auto"
    prompt: str
    top_k: int = Field(5, ge=1, le=1000)
    track: list[str] = []
    chat: bool = False
    lens1: str = "logit"  # model 1's lens (AnalysisConfig.lens)
    lens2: str = "logit"  # model 2's (a tuned lens is bound to one model)

    @field_validator("lens1", "lens2")
    @classmethod
    def _lens(cls, v: str) -> str:
        return check_lens_spec(v)


class CompareRow(Frozen):
    depth: float  # relative depth (layer+1)/num_layers of model 1's layer
    layer1: int
    layer2: int
    top1_model1: TokenPrediction
    top1_model2: TokenPrediction
    same_top1: bool | None  # None when tokenizers differ (token ids not comparable; texts compared)
    kl_1_2: float | None  # KL(P1 || P2), only when tokenizers match


class CompareTracked(Frozen):
    token: str
    emergence_model1: int | None
    emergence_model2: int | None
    rank_final_model1: int
    rank_final_model2: int
    prob_final_model1: float
    prob_final_model2: float


class CompareResult(Frozen):
    schema_version: int = SCHEMA_VERSION
    model1_id: str
    model2_id: str
    request: CompareRequest
    num_layers1: int
    num_layers2: int
    alignment: str  # "by layer index" or "by relative depth"
    same_tokenizer: bool
    tokens1: list[str]
    tokens2: list[str]
    final1: list[TokenPrediction]
    final2: list[TokenPrediction]
    rows: list[CompareRow]
    tracked: list[CompareTracked]
    final_kl: float | None


# -- patch -------------------------------------------------------------------------------------
class PatchRequest(Frozen):
    kind: str = "patch"
    model: str | None = None
    source: str
    target: str
    layers: list[int]
    position: str = "last"  # "last", "all" or an integer prompt position
    blend: float = Field(1.0, ge=0.0, le=1.0)  # 1 = replace; a = (1-a)*target + a*source
    top_k: int = Field(5, ge=1, le=1000)
    chat: bool = False


class PatchLayer(Frozen):
    layer: int
    top: list[TokenPrediction]
    source_answer_prob: float
    source_answer_rank: int
    target_answer_prob: float
    target_answer_rank: int
    source_answer_top1: bool


class PatchResult(Frozen):
    schema_version: int = SCHEMA_VERSION
    model_id: str
    request: PatchRequest
    source_tokens: list[str]
    target_tokens: list[str]
    source_top: list[TokenPrediction]
    target_top: list[TokenPrediction]
    source_answer: str
    target_answer: str
    layers: list[PatchLayer]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def flipped_layers(self) -> list[int]:
        return [pl.layer for pl in self.layers if pl.source_answer_top1]
