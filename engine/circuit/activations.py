"""Reading collected activation files (``.safetensors`` + the ``.json`` metadata next to it)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import InputError


@dataclass
class Activations:
    path: str
    meta: dict[str, Any]
    layers: list[int]
    _cache: dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def model_id(self) -> str:
        return str(self.meta.get("model_id", "unknown"))

    @property
    def labels(self) -> np.ndarray:
        return np.asarray(self.meta["labels"], dtype=int)

    @property
    def label_names(self) -> list[str]:
        return list(self.meta.get("label_names") or [str(x) for x in sorted(set(self.meta["labels"]))])

    @property
    def categories(self) -> list[str]:
        return list(self.meta.get("categories") or [self.label_names[x] for x in self.meta["labels"]])

    @property
    def n(self) -> int:
        return len(self.meta["labels"])

    @property
    def fingerprint(self) -> str | None:
        """What ``circuit collect`` computed these activations from (model, dtype, prompts, layers,
        options) as a sha256; None for files without it."""
        dataset = self.meta.get("dataset")
        value = dataset.get("sha256") if isinstance(dataset, dict) else None
        return value if isinstance(value, str) else None

    def check_layer(self, layer: int) -> int:
        if layer not in self.layers:
            raise InputError(f"layer {layer} is not in {self.path} (collected layers: {_ranges(self.layers)})")
        return layer

    def get(self, layer: int) -> np.ndarray:
        """float64 [N, hidden] for one collected layer."""
        self.check_layer(layer)
        if layer not in self._cache:
            from safetensors import safe_open

            with safe_open(self.path, framework="numpy") as f:
                self._cache[layer] = f.get_tensor(f"hidden_states.layer_{layer}").astype(np.float64)
        return self._cache[layer]


def _ranges(layers: list[int]) -> str:
    if not layers:
        return "none"
    out, start, prev = [], layers[0], layers[0]
    for x in layers[1:] + [None]:  # type: ignore[list-item]
        if x is not None and x == prev + 1:
            prev = x
            continue
        out.append(str(start) if start == prev else f"{start}-{prev}")
        if x is not None:
            start = prev = x
    return ",".join(out)


def load_activations(path: str | Path) -> Activations:
    p = Path(path)
    if not p.exists() and p.suffix != ".safetensors" and p.with_name(p.name + ".safetensors").exists():
        p = p.with_name(p.name + ".safetensors")
    if not p.exists():
        raise InputError(f"activation file not found: {p}")
    meta_path = p.with_suffix(".json")
    if not meta_path.exists():
        raise InputError(f"metadata file not found: {meta_path} (written by circuit collect next to {p.name})")
    try:
        meta = json.loads(meta_path.read_text())
    except ValueError as exc:
        raise InputError(f"malformed metadata {meta_path}: {exc}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("labels"), list):
        raise InputError(f"malformed metadata {meta_path}: no 'labels' list")
    try:
        from safetensors import safe_open

        with safe_open(str(p), framework="numpy") as f:
            keys = list(f.keys())
            shapes = {k: f.get_slice(k).get_shape() for k in keys}
    except Exception as exc:  # safetensors raises its own error types
        raise InputError(f"cannot read activation file {p}: {type(exc).__name__}: {str(exc).splitlines()[0]}") \
            from None
    layers = []
    n = len(meta["labels"])
    for k in keys:
        if k.startswith("hidden_states.layer_") and k.rsplit("_", 1)[1].isdigit():
            if len(shapes[k]) != 2 or shapes[k][0] != n:
                raise InputError(f"{p}: {k} has shape {shapes[k]}, expected [{n}, hidden] (metadata has {n} prompts)")
            layers.append(int(k.rsplit("_", 1)[1]))
    if not layers:
        raise InputError(f"{p} holds no hidden_states.layer_<i> tensors")
    return Activations(str(p), meta, sorted(layers))


def resolve_layers(acts: Activations, layer: int | None, layers: list[int] | None = None) -> list[int]:
    if layers:
        return [acts.check_layer(x) for x in layers]
    if layer is not None:
        return [acts.check_layer(layer)]
    return list(acts.layers)
