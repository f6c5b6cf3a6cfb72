"""Request and result models of ``neurons``."""

from __future__ import annotations

from pydantic import Field

from engine.results.base import SCHEMA_VERSION, Frozen


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
