"""Settings and results of training and evaluating a tuned lens (``tuned-lens train`` / ``eval``)."""

from __future__ import annotations

import math

from pydantic import Field

from engine.results.base import SCHEMA_VERSION, Frozen, LensBinding


class TrainSettings(Frozen):
    corpus: str | None = None  # None: the standard library's docstrings (train split)
    tokens: int = Field(2048, ge=1)  # positions trained on, in all (steps = tokens / batch_tokens)
    steps: int | None = Field(None, ge=1)  # overrides tokens
    batch_tokens: int = Field(16, ge=1)  # positions per step (more steps of fewer positions learn faster per position)
    positions_per_sequence: int = Field(16, ge=1)  # random positions read from each sequence
    seq_len: int = Field(128, ge=2)
    layer_chunk_rows: int = Field(512, ge=1)  # layers x positions unembedded at once (memory)
    lr: float = Field(1e-2, gt=0)  # Adam's rate for β (b = β ⊙ σ: a step moves b by ~lr σ)
    matrix_lr: float = Field(0.05, gt=0)  # for Â, per element matrix_lr / hidden (a step's spectral norm ~matrix_lr)
    adam_eps: float = Field(1e-4, gt=0)
    warmup: int = Field(10, ge=0)
    seed: int = 0

    @property
    def n_steps(self) -> int:
        return self.steps if self.steps is not None else max(1, math.ceil(self.tokens / self.batch_tokens))

    @property
    def sequences_per_step(self) -> int:
        return max(1, math.ceil(self.batch_tokens / self.positions_per_sequence))


class TrainReport(Frozen):
    path: str
    binding: LensBinding
    steps: int
    tokens: int
    seconds: float  # training time, summed over resumed runs
    kl_bits: list[float]  # per layer, mean over the last steps' batches (training text)


class LensEvalRequest(Frozen):
    kind: str = "tuned_lens_eval"
    model: str | None = None
    lens: str  # a file path (or tuned / tuned:FILE)
    text: str | None = None  # None: the default corpus's held-out split
    tokens: int = Field(512, ge=1)  # positions evaluated (default text only)
    seq_len: int = Field(128, ge=2)
    batch_positions: int = Field(256, ge=1)  # positions unembedded at once per layer (memory)


class LensEvalLayer(Frozen):
    layer: int
    logit_kl: float  # bits
    tuned_kl: float
    logit_top1: float  # fraction of positions whose lens top-1 is the final top-1
    tuned_top1: float


class LensEvalResult(Frozen):
    schema_version: int = SCHEMA_VERSION
    model_id: str
    request: LensEvalRequest
    lens: LensBinding
    text: str  # what was evaluated
    tokens: int
    layers: list[LensEvalLayer]
    mean_logit_kl: float  # bits, mean over layers
    mean_tuned_kl: float
