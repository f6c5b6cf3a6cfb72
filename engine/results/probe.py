"""Request and result models of ``probe`` (a linear probe per layer)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from engine.results.base import SCHEMA_VERSION, Frozen


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
