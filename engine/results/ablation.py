"""Request and result models of ablation studies (the batch command, the TUI and the API)."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Literal

from pydantic import Field, computed_field

from engine.results.base import SCHEMA_VERSION, AnyCase, Frozen


class ComponentType(str, Enum):
    """What an ablation removes: the MLP output, the attention output, both, or everything the block
    adds to the residual (``block``: whole-layer ablation, for every family, state-space ones included)."""

    MLP = "mlp"
    ATTENTION = "attention"
    BOTH = "both"
    BLOCK = "block"


Component = Annotated[ComponentType, AnyCase]  # "MLP" and "mlp" both name ComponentType.MLP
AblationMethod = Literal["zero", "mean"]


class AblationSpec(Frozen):
    """One sweep point: a set of layers whose component (or listed heads) are ablated together."""

    layers: list[int]
    component: Component = ComponentType.MLP
    heads: list[int] | None = None  # attention heads (component must be attention)
    # one component per entry of ``layers`` (a hand-picked mixed set, e.g. L3 mlp + L5 attention,
    # ablated together); overrides ``component`` when given
    components: list[Component] | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def label(self) -> str:
        if not self.layers:
            return "none"
        if self.components is not None:
            return "+".join(f"L{x} {c.value}" for x, c in zip(self.layers, self.components))
        layers = "+".join(f"L{x}" for x in self.layers)
        if self.heads is not None:
            return f"{layers} heads {','.join(str(h) for h in self.heads)}"
        return f"{layers} {self.component.value}"


class PromptCase(Frozen):
    """A prompt and what must appear in its output (``--prompts "p:exp|..."``)."""

    prompt: str
    expected: str


class AblationConfig(Frozen):
    """Options of an ablation (the seed's ``AblationConfig``)."""

    component: Component = ComponentType.MLP
    heads: list[int] | None = None
    method: AblationMethod = "zero"
    reference: list[str] = Field(default_factory=list)  # prompts whose mean activation ``mean`` ablation writes in
    max_new_tokens: int = Field(60, ge=1, le=4096)
    chat: bool = False


class AblationRequest(Frozen):
    kind: str = "ablate"
    model: str | None = None
    prompt: str | None = None
    criterion: str = ""  # built-in name, substring, or "re:<regex>"; unused with ``prompts``
    prompts: list[PromptCase] | None = None  # difficulty gradient: each prompt with its expected substring
    component: Component = ComponentType.MLP
    heads: list[int] | None = None
    layers: list[int] | None = None  # None = every layer
    mode: Literal["sweep", "multi", "grid"] = "sweep"
    method: AblationMethod = "zero"
    reference: list[str] = Field(default_factory=list)
    chat: bool = False
    max_tokens: int = Field(60, ge=1, le=4096)
    # explicit sweep points (the TUI's hand-picked cells); overrides layers/mode/component when given
    ablations: list[AblationSpec] | None = None


class AblationOutput(Frozen):
    """One generation: for one prompt, under one ablation (or none)."""

    prompt: str
    text: str
    token_ids: list[int]
    stopped: str  # "eos" | "max_tokens"
    passed: bool | None  # None when no criterion applies
    diverged_at: int | None = None  # first generated token index that differs from the baseline; None = identical


class AblationPoint(Frozen):
    """One sweep point with its output for every prompt."""

    spec: AblationSpec
    outputs: list[AblationOutput]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def label(self) -> str:
        return self.spec.label


class AblationResult(Frozen):
    schema_version: int = SCHEMA_VERSION
    model_id: str
    num_layers: int
    request: AblationRequest
    chat_template_used: bool
    notes: list[str] = Field(default_factory=list)
    criterion_description: str = ""
    baseline: list[AblationOutput]  # one per prompt
    points: list[AblationPoint]
    strategy: str = "batched"  # "batched" (one batch, prefix reuse) or "sequential"
    elapsed_s: float = 0.0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def causal_layers(self) -> list[str]:
        """Labels of sweep points that flip the first prompt's pass/fail against the baseline."""
        base = self.baseline[0].passed if self.baseline else None
        return [p.label for p in self.points if p.outputs and p.outputs[0].passed is not None
                and p.outputs[0].passed != base]
