"""Python numbers and lists from MLX arrays, and MLX's other loosely typed returns, typed.

``mx.array.item()`` and ``tolist()`` are typed as unions (int | float | complex, nested lists), and
``mlx.utils.tree_flatten`` as a list or a dict, so every caller would otherwise cast or ignore.
These are the one place that narrows them: the list converters check the array's rank, so a
caller gets the type it names or a ValueError.
"""

from __future__ import annotations

from typing import Any, cast

import mlx.core as mx


def _rank(a: mx.array, ndim: int) -> None:
    if a.ndim != ndim:
        raise ValueError(f"expected a {ndim}-d array, got shape {tuple(a.shape)}")


def item_float(a: mx.array) -> float:
    """The one value of a scalar (or one-element) array as a float."""
    return float(cast(float, a.item()))


def item_int(a: mx.array) -> int:
    """The one value of a scalar (or one-element) integer array as an int."""
    return int(cast(int, a.item()))


def float_list(a: mx.array) -> list[float]:
    _rank(a, 1)
    return cast(list[float], a.tolist())


def int_list(a: mx.array) -> list[int]:
    _rank(a, 1)
    return cast(list[int], a.tolist())


def float_rows(a: mx.array) -> list[list[float]]:
    _rank(a, 2)
    return cast(list[list[float]], a.tolist())


def int_rows(a: mx.array) -> list[list[int]]:
    _rank(a, 2)
    return cast(list[list[int]], a.tolist())


def tree_leaves(tree: Any) -> list[tuple[str, mx.array]]:
    """``mlx.utils.tree_flatten(tree)``: (dotted name, array) pairs (a list whenever no destination is given)."""
    from mlx.utils import tree_flatten

    return cast(list[tuple[str, mx.array]], tree_flatten(tree))
