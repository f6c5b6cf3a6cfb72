"""Request and result models of ``hooks`` (what the capture API sees, layer by layer)."""

from __future__ import annotations

from pydantic import Field

from engine.results.base import SCHEMA_VERSION, Frozen


class HooksRequest(Frozen):
    kind: str = "hooks"
    model: str | None = None
    prompt: str
    layers: list[int] | None = None  # None: first, middle and last layer
    capture_attention: bool = False
    last_only: bool = False
    logit_lens: bool = True
    top_sources: int = Field(3, ge=1)


class SiteCapture(Frozen):
    site: str
    shape: list[int]
    norm_last: float  # L2 norm at the last position
    norm_mean: float  # mean per-token L2 norm over captured positions


class HeadAttention(Frozen):
    head: int
    sources: list[tuple[int, str, float]]  # (position, token, weight) from the last position, strongest first


class LayerHooks(Frozen):
    layer: int
    sites: list[SiteCapture]
    lens_top1: str | None = None
    lens_top1_probability: float | None = None
    attention: list[HeadAttention] = []


class HooksResult(Frozen):
    schema_version: int = SCHEMA_VERSION
    model_id: str
    request: HooksRequest
    tokens: list[str]
    layers: list[LayerHooks]
