"""Request and result models of the circuit toolkit (datasets, collect, analyze, directions,
visualize, the probe battery).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from engine.results.base import SCHEMA_VERSION, Frozen


# -- datasets -----------------------------------------------------------------------------
class DatasetPrompt(Frozen):
    """One labelled prompt. ``label`` is the binary label (index into the dataset's ``labels``);
    ``category`` a finer class (a tool name, an operation, ...), defaulting to the label's name."""

    text: str = Field(min_length=1)
    label: int = Field(ge=0)
    category: str | None = None
    tool: str | None = None  # tool-calling datasets: the tool the prompt needs (None: no tool)
    answer: str | None = None  # arithmetic: the expected answer
    pair: int | None = None  # contrastive datasets: prompts sharing a pair id are a contrast pair


class CircuitDataset(Frozen):
    format: Literal["lazarus-circuit-dataset"] = "lazarus-circuit-dataset"
    version: int = 1
    name: str
    kind: str = "custom"  # tool_calling | arithmetic | binary | contrastive | probe | custom
    labels: list[str] = Field(default_factory=lambda: ["negative", "positive"], min_length=1)
    description: str = ""
    probe_category: str | None = None  # built-in probe datasets: syntactic | semantic | decision
    seed: int | None = None
    prompts: list[DatasetPrompt]

    def category_of(self, p: DatasetPrompt) -> str:
        return p.category if p.category is not None else self.labels[p.label]

    @property
    def categories(self) -> list[str]:
        return [self.category_of(p) for p in self.prompts]


class LabelCount(Frozen):
    name: str
    count: int


class DatasetSummary(Frozen):
    schema_version: int = SCHEMA_VERSION
    path: str
    name: str
    kind: str
    total: int
    labels: list[LabelCount]
    categories: list[LabelCount]
    samples: list[DatasetPrompt]


# -- collect ------------------------------------------------------------------------------
class CollectRequest(Frozen):
    kind: str = "circuit_collect"
    model: str | None = None
    dataset: str
    output: str
    layers: str = "all"  # all | decision | a list such as 8,10 or 20-23
    position: Literal["last", "mean"] = "last"
    batch_size: int = Field(16, ge=1, le=1024)
    generate: int = Field(0, ge=0)
    chat: bool = False


class CollectResult(Frozen):
    schema_version: int = SCHEMA_VERSION
    model_id: str
    request: CollectRequest
    activations_file: str
    metadata_file: str
    num_prompts: int
    hidden_size: int
    num_layers: int
    captured_layers: list[int]
    layer_selection: str
    batches_total: int
    batches_computed: int  # this run
    batches_reused: int  # finished by an earlier run (interrupted, or complete with the same settings)
    seconds: float
    prompts_per_second: float
    file_bytes: int
    warnings: list[str] = Field(default_factory=list)


# -- analyze ------------------------------------------------------------------------------
class ProbeScore(Frozen):
    heldout_accuracy: float  # stratified 25% test split, probe trained on the other 75%
    cv_accuracy: float  # stratified k-fold mean
    cv_std: float
    folds: int
    baseline: float  # majority-class accuracy
    classes: int


class LayerGeometry(Frozen):
    layer: int
    variance_explained: list[float]  # per component (first up to 50)
    cumulative_variance: list[float]
    dims_90: int
    dims_95: int
    binary_probe: ProbeScore | None
    category_probe: ProbeScore | None = None
    kmeans_k: int | None = None
    kmeans_silhouette: float | None = None
    kmeans_ari: float | None = None  # adjusted Rand index of k-means clusters vs categories
    umap: list[list[float]] | None = None  # [N, 2]


class AnalyzeResult(Frozen):
    schema_version: int = SCHEMA_VERSION
    model_id: str
    activations_file: str
    num_prompts: int
    labels: list[str]
    label_counts: dict[str, int]
    category_counts: dict[str, int]
    layers: list[LayerGeometry]
    best_layer: int | None  # by binary probe held-out accuracy, ties by CV
    best_category_layer: int | None
    notes: list[str] = Field(default_factory=list)
    activations_fingerprint: str | None = None  # the analysed file's ``Activations.fingerprint``

    def at(self, layer: int | None) -> LayerGeometry | None:
        """The analysed layer's row (None when ``layer`` is None or was not analysed)."""
        return next((g for g in self.layers if g.layer == layer), None) if layer is not None else None


# -- directions ---------------------------------------------------------------------------
class ExtractedDirection(Frozen):
    name: str
    positive: str
    negative: str
    layer: int
    method: str
    norm: float
    n_train: int
    n_test: int
    heldout_accuracy: float  # test split: projection thresholded at the best cut on the training projections
    heldout_separation: float  # (mean_pos - mean_neg) / pooled std of test projections
    train_separation: float
    file: str | None = None


class ExtractedDirectionsResult(Frozen):
    schema_version: int = SCHEMA_VERSION
    model_id: str
    activations_file: str
    layer: int
    method: str
    directions: list[ExtractedDirection]
    cosine: list[list[float]] = Field(default_factory=list)  # between the extracted directions (per-tool)
    output_dir: str | None = None


# -- visualize ----------------------------------------------------------------------------
class VisualizeResult(Frozen):
    schema_version: int = SCHEMA_VERSION
    activations_file: str
    layer: int
    files: list[str]
    terminal_charts: list[str] = Field(default_factory=list)


# -- probes -------------------------------------------------------------------------------
class ProbeLayerScore(Frozen):
    layer: int
    cv_accuracy: float
    cv_std: float


class ProbeBatteryEntry(Frozen):
    name: str
    category: str
    description: str
    labels: list[str]
    n_prompts: int
    baseline: float
    folds: int
    layers: list[ProbeLayerScore]
    emergence_layer: int | None  # first layer with CV accuracy >= threshold (and above baseline)
    peak_layer: int
    peak_accuracy: float


class ProbeBatteryResult(Frozen):
    schema_version: int = SCHEMA_VERSION
    model_id: str
    threshold: float
    captured_layers: list[int]
    forwards: int  # batched forward passes run (each captures every layer)
    probes: list[ProbeBatteryEntry]
