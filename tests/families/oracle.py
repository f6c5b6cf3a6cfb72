"""The twin: the reference every per-family test compares lazarus with, and edits made to it.

Each family is built twice from one seed: lazarus gets one model, the twin is never shown to
lazarus, so wrappers lazarus installs on its model cannot make a comparison agree with itself.
An intervention is checked against the same edit made by hand to the twin's own modules (a
module's output zeroed, a head's slice of the output projection's input zeroed, a block's output
plus a vector...), located with the small tables below, independent of the engine's family table.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import pytest

from engine.errors import UnsupportedArchitecture
from engine.hooks import Batch, HookedModel, Intervention, KVState, SiteKind

TOL = 1e-4  # max |Δlogit| between two computations of the same float32 function (as `verify`)
CHANGED = 10 * TOL  # an edit that matters moves some logit by far more than rounding can
PROMPT = "The capital of France is Paris. one two three four five six seven"
SHORT = "Hi! How are you?"

# Where each family's attention and MLP modules sit in a block, for the reference edits (an
# oracle independent of the engine's own table). None: no such module, or its share of the
# residual is not one module's output (falcon_h1 adds attention and a Mamba mixer side by side).
ATTN: dict[str, str | None] = {"gpt2": "attn", "gpt_bigcode": "attn", "gpt_neox": "attention",
                               "internlm2": "attention", "exaone": "attn.attention", "mamba": None, "mamba2": None,
                               "falcon_h1": None}
O_PROJ: dict[str, str] = {"gpt2": "c_proj", "gpt_bigcode": "c_proj", "gpt_neox": "dense", "phi": "dense",
                         "internlm2": "wo", "exaone": "out_proj", "lfm2": "out_proj"}
DOWN: dict[str, str] = {"phi": "fc2", "gpt2": "c_proj", "gpt_bigcode": "c_proj", "starcoder2": "c_proj",
                       "gpt_neox": "dense_4h_to_h", "internlm2": "w2", "exaone": "c_proj", "lfm2": "w2"}
MLP: dict[str, tuple[str, ...]] = {"mixtral": ("block_sparse_moe",), "granitemoe": ("block_sparse_moe",),
                                   "phimoe": ("block_sparse_moe",), "mamba": (),
                                   "internlm2": ("feed_forward",), "lfm2": ("feed_forward",),
                                   "falcon_h1": ("feed_forward",), "mamba2": (),
                                   "granitemoehybrid": ("block_sparse_moe", "shared_mlp")}


@dataclass(repr=False)
class Family:
    name: str
    ref: Any  # the twin lazarus never sees
    model: Any  # the twin lazarus gets
    tok: Any
    ids: list[int]
    short: list[int]
    native: mx.array  # [1, S, vocab] float32, the twin's logits on `ids`
    native_short: mx.array
    lm: Any = None

    def __repr__(self) -> str:  # failure reports would print every weight otherwise
        return f"Family({self.name})"

    def hooked(self) -> HookedModel:
        """The engine's hooked model of this family; its refusal makes the test an expected failure."""
        from engine.models import wrap_model

        with refusal_is_xfail(self.name):
            if self.lm is None:
                self.lm = wrap_model(self.model, self.tok, model_id=f"tiny-{self.name}")
            return HookedModel(self.lm)


@contextlib.contextmanager
def refusal_is_xfail(name: str) -> Iterator[None]:
    """The engine's own refusal (``UnsupportedArchitecture``) marks the test an expected failure."""
    try:
        yield
    except UnsupportedArchitecture as exc:
        pytest.xfail(f"engine refuses {name}: {exc}")


def logits_of(model: Any, rows: list[list[int]], cache: Any = None) -> mx.array:
    out = model(mx.array(rows, dtype=mx.int32), cache=cache)
    out = out.astype(mx.float32)
    mx.eval(out)
    return out


def maxdiff(a: mx.array, b: mx.array) -> float:
    return float(mx.abs(a.astype(mx.float32) - b.astype(mx.float32)).max().item())


def claimed_kinds(hm: HookedModel) -> tuple[SiteKind, ...]:
    """The site kinds the engine claims for this family (every kind where it does not say)."""
    kinds = getattr(hm, "site_kinds", None) or getattr(hm.adapter, "site_kinds", None)
    return tuple(SiteKind(k) for k in kinds) if kinds is not None else tuple(SiteKind)


def new_kv(hm: HookedModel, pad: list[int]) -> KVState:
    return KVState(hm.n_layers, pad)


def layers_of(model: Any) -> list[Any]:
    for path in ("model.layers", "language_model.model.layers", "model.h", "transformer.h", "backbone.layers"):
        obj = model
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        return obj
    raise AssertionError(f"no block list found in {type(model).__module__}")


class Edited(nn.Module):
    """A module whose output goes through ``fn`` (attributes still read through to the original)."""

    def __init__(self, inner: Any, fn: Callable[[Any], Any]) -> None:
        super().__init__()
        self.inner = inner
        self._fn = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._fn(self.inner(*args, **kwargs))

    def __getattr__(self, key: str) -> Any:
        try:
            return super().__getattr__(key)
        except AttributeError:
            if key == "inner" or "inner" not in self:
                raise
            return getattr(self["inner"], key)


@contextlib.contextmanager
def edited(block: Any, dotted: str, fn: Callable[[Any], Any]) -> Iterator[None]:
    """Temporarily pass the output of ``block.<dotted>`` through ``fn``."""
    *parents, name = dotted.split(".")
    owner = block
    for p in parents:
        owner = getattr(owner, p)
    orig = getattr(owner, name)
    setattr(owner, name, Edited(orig, fn))
    try:
        yield
    finally:
        setattr(owner, name, orig)


class EditedInput(Edited):
    """A module whose input goes through ``fn`` first."""

    def __call__(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        return self.inner(self._fn(x), *args, **kwargs)


@contextlib.contextmanager
def edited_input(owner: Any, name: str, fn: Callable[[Any], Any]) -> Iterator[None]:
    orig = getattr(owner, name)
    setattr(owner, name, EditedInput(orig, fn))
    try:
        yield
    finally:
        setattr(owner, name, orig)


@contextlib.contextmanager
def edited_layer(model: Any, layer: int, fn: Callable[[Any], Any]) -> Iterator[None]:
    layers = layers_of(model)
    orig = layers[layer]
    layers[layer] = Edited(orig, fn)
    try:
        yield
    finally:
        layers[layer] = orig


def attn_layer(fam: Family) -> tuple[int, str] | None:
    """(layer, module path) of the last block with an attention module the oracle can edit."""
    path = ATTN.get(fam.name, "self_attn")
    if path is None:
        return None
    blocks = layers_of(fam.ref)
    for layer in reversed(range(len(blocks))):
        owner = blocks[layer]
        try:
            for part in path.split("."):
                owner = getattr(owner, part)
        except AttributeError:
            continue
        return layer, path
    return None


def hooked_logits(fam: Family, hm: HookedModel, ivs: list[Intervention]) -> mx.array:
    with refusal_is_xfail(fam.name):
        return hm.forward(Batch.from_lists([fam.ids]), logits="all", interventions=ivs).logits


def greedy(model: Any, ids: list[int], n: int) -> list[int]:
    """The twin's greedy continuation, each step a full pass (no cache)."""
    out: list[int] = []
    for _ in range(n):
        out.append(int(mx.argmax(logits_of(model, [ids + out])[0, -1]).item()))
    return out


class Skipped(Edited):
    """A block that still runs (its cache stays in step) but hands its input on unchanged."""

    def __call__(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        self.inner(x, *args, **kwargs)
        return x


class Recorded(Edited):
    """A module that records the arguments of each call."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self._fn(args)
        return self.inner(*args, **kwargs)
