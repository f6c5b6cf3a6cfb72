"""Request and result models of ``directions`` (cosines between saved direction files)."""

from __future__ import annotations

from typing import Literal

from engine.results.base import SCHEMA_VERSION, Frozen


class DirectionFileInfo(Frozen):
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
    directions: list[DirectionFileInfo]
    cosine: list[list[float]]
    pairs: list[DirectionPair]
    mean_abs_cosine: float
    warnings: list[str] = []
