"""Request and result models of token tracking over a generation (``track-generation``)."""

from __future__ import annotations

from pydantic import Field

from engine.results.base import SCHEMA_VERSION, Frozen, LensBinding, LensSpec

MAX_TRACKED_GENERATION = 128  # generated positions × layers × vocab logits are held at once


class TrackGenerationRequest(Frozen):
    kind: str = "track_generation"
    model: str | None = None
    prompt: str
    max_new_tokens: int = Field(10, ge=1, le=MAX_TRACKED_GENERATION)
    chat: bool = False
    lens: LensSpec = "logit"  # as AnalysisConfig.lens


class GeneratedPosition(Frozen):
    index: int  # 0-based among the generated tokens
    position: int  # sequence position whose output chose this token
    token: str
    token_id: int
    ranks: list[int]  # per layer 0..L-1, over the full vocabulary
    probabilities: list[float]  # per layer
    top_tokens: list[str]  # the lens top-1 per layer
    emergence_layer: int | None  # first layer where the chosen token is top-1
    settled_layer: int | None  # first layer from which it stays top-1 to the end


class TrackGenerationResult(Frozen):
    schema_version: int = SCHEMA_VERSION
    model_id: str
    request: TrackGenerationRequest
    prompt_tokens: list[str]
    num_layers: int
    text: str
    stopped: str  # "eos" | "max_tokens"
    positions: list[GeneratedPosition]
    lens: LensBinding | None = None  # the tuned lens read through (None: the logit lens)
