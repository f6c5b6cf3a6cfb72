"""The hooked forward's data: sites, interventions, capture specs, batches (see engine.hooks; the
KV cache is engine.kv_cache)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal

import mlx.core as mx
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from engine.errors import InputError


class SiteKind(str, Enum):
    resid_pre = "resid_pre"
    attn_out = "attn_out"
    mlp_out = "mlp_out"
    resid_post = "resid_post"
    attn_pattern = "attn_pattern"
    mlp_hidden = "mlp_hidden"
    attn_heads = "attn_heads"
    moe_router = "moe_router"
    block_out = "block_out"


class Site(BaseModel):
    model_config = ConfigDict(frozen=True)
    layer: int
    kind: SiteKind

    def __str__(self) -> str:
        return f"blocks.{self.layer}.{self.kind.value}"

    @classmethod
    def parse(cls, text: str) -> Site:
        parts = text.split(".")
        if len(parts) != 3 or parts[0] != "blocks" or not parts[1].lstrip("-").isdigit():
            raise InputError(f"bad site {text!r}: expected blocks.<layer>.<kind>")
        try:
            return cls(layer=int(parts[1]), kind=SiteKind(parts[2]))
        except ValueError as exc:
            raise InputError(f"bad site kind in {text!r} (kinds: {', '.join(k.value for k in SiteKind)})") from exc


class _Arrays:
    """``Intervention.vector`` as MLX arrays, one per dtype, held by the intervention (and shared by
    its ``model_copy``s, which hold the same list). Not part of its value: every holder compares
    equal, and a copy or a pickle starts empty."""

    __slots__ = ("by_dtype", "source")

    def __init__(self) -> None:
        self.source: list[float] | None = None  # the list the arrays were made from
        self.by_dtype: dict[Any, mx.array] = {}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Arrays)

    __hash__ = None  # type: ignore[assignment]  # mutable: never a dict key

    def __deepcopy__(self, memo: dict[int, Any]) -> _Arrays:
        return _Arrays()

    def __reduce__(self) -> tuple[type, tuple[()]]:
        return (_Arrays, ())


InterventionOp = Literal["zero", "mean", "scale", "add", "replace"]


class Intervention(BaseModel):
    """One change to one site. ``vector`` is the mean (mean), the added direction (add) or the
    activation written in (replace); its length is the site's width, or head_dim with ``head``."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)
    site: Site
    op: InterventionOp
    head: int | None = None
    position: int | None = None  # prompt position (negative counts from the end of the prompt); None = all
    row: int | None = None  # batch row; None = every row
    factor: float = 1.0  # scale factor, or multiplier of `vector` for add
    vector: list[float] | None = Field(default=None, repr=False)

    @field_validator("vector", mode="before")
    @classmethod
    def _to_list(cls, v: Any) -> Any:
        if v is not None and not isinstance(v, list):
            return [float(x) for x in (v.tolist() if hasattr(v, "tolist") else v)]
        return v

    _arrays: _Arrays = PrivateAttr(default_factory=_Arrays)

    def array(self, dtype: Any) -> mx.array:
        """``vector`` as an MLX array of ``dtype``, made once and kept here (generation applies the
        same intervention at every step). A copy whose ``vector`` was replaced makes its own."""
        if self.vector is None:
            raise ValueError(f"intervention {self.op} on {self.site} has no vector")
        held = self._arrays
        if held.source is not self.vector:
            held.source, held.by_dtype = self.vector, {}
        vec = held.by_dtype.get(dtype)
        if vec is None:
            vec = held.by_dtype[dtype] = mx.array(self.vector, dtype=dtype)
        return vec


PositionSpec = Literal["all", "last"] | list[int]


@dataclass
class CaptureSpec:
    """Which sites to keep: kinds at layers (None = every layer), at positions."""

    kinds: Sequence[SiteKind] = (SiteKind.resid_post,)
    layers: Sequence[int] | None = None
    positions: PositionSpec = "all"


@dataclass
class Batch:
    """Left-padded token ids and each row's padding."""

    ids: mx.array  # [B, S]
    pad: list[int]  # left padding per row
    lengths: list[int]  # real tokens per row

    @classmethod
    def from_lists(cls, rows: Sequence[Sequence[int]], pad_id: int = 0) -> Batch:
        if not rows or any(len(r) == 0 for r in rows):
            raise InputError("empty prompt: nothing to run")
        width = max(len(r) for r in rows)
        pads = [width - len(r) for r in rows]
        ids = [[pad_id] * p + list(r) for p, r in zip(pads, rows)]
        return cls(mx.array(ids, dtype=mx.int32), pads, [len(r) for r in rows])


@dataclass
class ForwardOutput:
    logits: mx.array | None  # [B, P, vocab] at the requested positions
    captures: dict[str, mx.array] = field(default_factory=dict)
    resid: mx.array | None = None  # the residual after the last block run (before the final norm)
