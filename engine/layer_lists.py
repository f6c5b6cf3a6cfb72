"""Layer lists as users type them: ``5``, ``5,8``, ``20-23`` and mixtures (``-1`` = the last layer)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from engine.errors import InputError


def parse_layers(text: str, n_layers: int | None = None) -> list[int]:
    """The layers ``text`` names, in order given. With ``n_layers`` they are range-checked,
    negatives resolved from the end, and the result sorted without repeats."""
    layers: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
        try:
            if m:
                lo, hi = int(m.group(1)), int(m.group(2))
                if hi < lo:
                    raise InputError(f"bad layer range {part!r}: {hi} < {lo}")
                layers.extend(range(lo, hi + 1))
            else:
                layers.append(int(part))
        except ValueError as exc:
            raise InputError(f"bad layer list {text!r}: expected e.g. 5 or 5,8 or 20-23") from exc
    if not layers:
        raise InputError(f"empty layer list {text!r}")
    return layers if n_layers is None else resolve_layer_list(layers, n_layers)


def check_layer(layer: int, n_layers: int) -> int:
    """The one layer rule: ``-n_layers <= layer < n_layers``, negatives counted from the end
    (``-1`` = the last layer); returns the index in ``0..n_layers-1``, else an ``InputError``."""
    if not -n_layers <= layer < n_layers:
        raise InputError(f"layer {layer} out of range (model has {n_layers} layers: 0-{n_layers - 1})")
    return layer % n_layers


def resolve_layer_list(layers: Sequence[int], n_layers: int) -> list[int]:
    """``layers`` range-checked against a model of ``n_layers`` (``check_layer``), sorted without
    repeats."""
    return sorted({check_layer(layer, n_layers) for layer in layers})


def evenly_spaced(n_layers: int, step: int = 4) -> list[int]:
    """Every ``step``-th layer from 0, and the last."""
    if step < 1:
        raise InputError("--layer-step must be at least 1")
    return sorted(set(range(0, n_layers, step)) | {n_layers - 1})
