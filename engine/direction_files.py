"""``.npz`` direction files and the ``directions`` comparison.

A direction file needs only a ``direction`` array; ``layer``, ``model_id``, ``method``,
``norm``, ``label_positive``/``label_negative``, ``accuracy``, ``separation`` ... are read when
present. Probe files (``probe --save-direction``) and steering files (``steer --extract``) are
both accepted, and both are written with ``np.savez`` and read with ``allow_pickle=False``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import InputError
from engine.fileio import output_name, save_npz_atomic
from engine.results.directions import DirectionFileInfo, DirectionPair, DirectionsRequest, DirectionsResult


@dataclass
class DirectionFile:
    path: str
    direction: np.ndarray  # float64 [d], as stored (not normalised)
    layer: int | None = None
    model_id: str | None = None
    method: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return Path(self.path).stem

    @property
    def unit(self) -> np.ndarray:
        n = float(np.linalg.norm(self.direction))
        if n == 0.0:
            raise InputError(f"direction in {self.path} is all zeros")
        return self.direction / n


def load_direction(path: str | Path) -> DirectionFile:
    p = Path(path)
    if not p.exists():
        raise InputError(f"direction file not found: {p}")
    try:
        with np.load(p, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except Exception as exc:
        msg = str(exc).splitlines()[0] if str(exc) else ""
        raise InputError(f"cannot read direction file {p}: {type(exc).__name__}: {msg}") from exc
    if "direction" not in data:
        raise InputError(f"direction file {p} has no 'direction' array")
    vec = np.asarray(data["direction"], dtype=np.float64).reshape(-1)
    if vec.size == 0 or not np.all(np.isfinite(vec)):
        raise InputError(f"direction in {p} is empty or not finite")

    def scalar(key: str) -> Any:
        v = data.get(key)
        return v.item() if v is not None and v.ndim == 0 else None

    layer = scalar("layer")
    layer = None if layer is None or int(layer) < 0 else int(layer)
    extra = {k: (v.item() if v.ndim == 0 else v) for k, v in data.items()
             if k not in ("direction", "layer", "model_id", "method")}
    model_id = scalar("model_id")
    method = scalar("method")
    return DirectionFile(str(p), vec, layer, None if model_id is None else str(model_id),
                         None if method is None else str(method), extra)


def save_direction(path: str | Path, direction: np.ndarray, *, layer: int, model_id: str, method: str,
                   **extra: Any) -> Path:
    """Write a direction ``.npz`` atomically (temp file + rename). Strings become unicode arrays."""
    target = output_name(path, ".npz")
    vec = np.asarray(direction, dtype=np.float32).reshape(-1)
    fields: dict[str, Any] = {"direction": vec, "layer": np.int64(layer), "model_id": np.str_(model_id),
                              "method": np.str_(method), "hidden_size": np.int64(vec.size)}
    for k, v in extra.items():
        if isinstance(v, str):
            fields[k] = np.str_(v)
        elif isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v):
            fields[k] = np.array(list(v), dtype=np.str_)
        else:
            fields[k] = np.asarray(v)
    save_npz_atomic(target, fields)
    return target


def compare_directions(req: DirectionsRequest) -> DirectionsResult:
    """Normalise each direction; N x N cosine matrix; orthogonal (|cos| < threshold) and aligned pairs."""
    if len(req.files) < 2:
        raise InputError("directions needs at least 2 .npz files")
    if not 0 <= req.threshold < 1:
        raise InputError("--threshold must be in [0, 1)")
    files = [load_direction(f) for f in req.files]
    dims = {f.direction.size for f in files}
    if len(dims) > 1:
        sizes = ", ".join(f"{f.name}: {f.direction.size}" for f in files)
        raise InputError(f"directions have different sizes ({sizes}); they come from different models")
    units = np.stack([f.unit for f in files])
    cos = np.clip(units @ units.T, -1.0, 1.0)
    cos = 0.5 * (cos + cos.T)
    np.fill_diagonal(cos, 1.0)
    names = [f.name for f in files]
    if len(set(names)) < len(names):
        names = [f.path for f in files]
    pairs, offdiag = [], []
    for i in range(len(files)):
        for j in range(i + 1, len(files)):
            c = float(cos[i, j])
            offdiag.append(abs(c))
            rel = "orthogonal" if abs(c) < req.threshold else ("aligned" if abs(c) > req.aligned_above else "partial")
            pairs.append(DirectionPair(a=names[i], b=names[j], cosine=c, relation=rel))
    warnings = []
    layers = {f.layer for f in files if f.layer is not None}
    if len(layers) > 1:
        warnings.append(f"directions come from different layers {sorted(layers)}: cosines compare different spaces")
    models = {f.model_id for f in files if f.model_id}
    if len(models) > 1:
        warnings.append(f"directions come from different models {sorted(models)}")
    infos = [DirectionFileInfo(path=f.path, name=n, dim=int(f.direction.size), layer=f.layer, model_id=f.model_id,
                           method=f.method, norm=float(np.linalg.norm(f.direction))) for f, n in zip(files, names)]
    return DirectionsResult(request=req, directions=infos, cosine=cos.tolist(), pairs=pairs,
                            mean_abs_cosine=float(np.mean(offdiag)), warnings=warnings)
