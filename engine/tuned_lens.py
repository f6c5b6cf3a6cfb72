"""The tuned lens (Belrose et al. 2023): one affine translator per layer, bound to its model.

A translator maps layer L's residual ``h`` to ``h + h @ A_L.T + b_L`` before the model's own
final norm and unembedding (``A`` and ``b`` start at zero: the identity, i.e. the logit lens).
Every lens reader (``engine.lens``, tracking, compare, tuned-lens eval) applies it at one place,
``engine.lens.lens_input``; training (``engine.tuned_lens_train``) uses the same ``translate``.

A lens file (safetensors) holds ``weight`` [layers, hidden, hidden] and ``bias`` [layers, hidden]
in float32, plus metadata binding it to its model: model id, a SHA-256 of its weights (the final
norm and unembedding whole, a sample of the rest: ``weights_hash``), hidden size, layer count, dtype,
training corpus and token count. A file
whose binding does not match the loaded model is refused (``InputError``, exit 2): a lens
trained for one checkpoint is silently wrong on another.

Lens specs (``--lens``, ``AnalysisConfig.lens``): ``logit`` (the default), ``tuned:FILE``, or
``tuned`` alone for the model's default file, ``$LAZARUS_CACHE/lenses/<model id>.safetensors``.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.errors import InputError
from engine.results.base import LensBinding, check_lens_spec

if TYPE_CHECKING:
    import mlx.core as mx

    from engine.models import LoadedModel

FORMAT = "lazarus-tuned-lens"
FORMAT_VERSION = 1
LOGIT = "logit"


@dataclass
class TunedLens:
    weight: Any  # mx.array [layers, hidden, hidden] float32: A in h + h @ A.T + b
    bias: Any  # mx.array [layers, hidden] float32
    binding: LensBinding
    extra: dict[str, str] = field(default_factory=dict)

    def translate(self, resid: mx.array, layers: list[int]) -> mx.array:
        """Row i of ``resid`` [N, hidden] read as layer ``layers[i]``'s residual, translated."""
        import mlx.core as mx

        if len(layers) != resid.shape[0]:
            raise ValueError(f"{resid.shape[0]} residual rows but {len(layers)} layers")
        order = sorted(range(len(layers)), key=lambda i: layers[i])
        parts, start = [], 0
        while start < len(order):
            layer = layers[order[start]]
            stop = start
            while stop < len(order) and layers[order[stop]] == layer:
                stop += 1
            idx = order[start:stop]
            rows = resid[mx.array(idx)] if idx != list(range(idx[0], idx[0] + len(idx))) else resid[idx[0]:idx[-1] + 1]
            parts.append(translate(rows, self.weight[layer], self.bias[layer]))
            start = stop
        out = parts[0] if len(parts) == 1 else mx.concatenate(parts, axis=0)
        if order != list(range(len(order))):
            out = out[mx.array(np.argsort(order))]
        return out


def translate(h: mx.array, weight: mx.array, bias: mx.array) -> mx.array:
    """The translator: ``h + h @ weight.T + bias``, in float32, back in ``h``'s dtype. Training and
    reading both call this (batched: ``h`` [..., rows, hidden] with ``weight`` [..., hidden, hidden])."""
    import mlx.core as mx

    x = h.astype(mx.float32)
    bias = bias[..., None, :] if weight.ndim == 3 else bias
    return (x + x @ mx.swapaxes(weight, -1, -2) + bias).astype(h.dtype)


# -- binding -----------------------------------------------------------------------------------

SAMPLE = 4096  # elements hashed from each weight tensor other than the final norm and unembedding


def weights_hash(lm: LoadedModel) -> str:
    """SHA-256 (first 16 hex digits) binding a lens to its model: the architecture, the final norm
    and unembedding weights whole, and an evenly strided sample of every other weight tensor (a
    fine-tune that leaves the head alone, LoRA included, still changes it). Floating weights are cast
    to bfloat16 first, so the same checkpoint loaded as float32 or bfloat16 hashes alike. Cached on
    the loaded model."""
    cached = lm.extras.get("tuned_lens_hash")
    if cached is not None:
        return cached
    import mlx.core as mx
    from mlx.utils import tree_flatten

    model = lm.model
    head = model.model.embed_tokens if lm.adapter.tied_embeddings else model.lm_head
    whole = {id(v) for _, v in tree_flatten(head.parameters())}
    whole |= {id(v) for _, v in tree_flatten(lm.adapter.final_norm(model).parameters())}
    h = hashlib.sha256(f"{lm.adapter.model_type};".encode())
    for name, value in sorted(tree_flatten(model.parameters()), key=lambda kv: kv[0]):
        arr = value if id(value) in whole else value.reshape(-1)[::max(1, value.size // SAMPLE)]
        if mx.issubdtype(arr.dtype, mx.floating):
            arr = arr.astype(mx.bfloat16).view(mx.uint16)
        h.update(f"{name}:{tuple(value.shape)};".encode())
        h.update(memoryview(mx.contiguous(arr)))
    digest = h.hexdigest()[:16]
    lm.extras["tuned_lens_hash"] = digest
    return digest


def check_binding(lm: LoadedModel, b: LensBinding) -> None:
    """Refuse a lens trained for another model (one line, ``InputError``)."""
    info = lm.info
    name = Path(b.path).name
    if b.hidden_size != info.hidden_size or b.num_layers != info.num_layers:
        raise InputError(f"tuned lens {name} is for {b.model_id} ({b.num_layers} layers, hidden {b.hidden_size}), "
                         f"not {info.model_id} ({info.num_layers} layers, hidden {info.hidden_size})")
    own = weights_hash(lm)
    if b.weights_hash != own:
        raise InputError(f"tuned lens {name} was trained for {b.model_id} (weights {b.weights_hash}); "
                         f"{info.model_id} has weights {own}: train a lens for this model")


# -- files ---------------------------------------------------------------------------------------

def default_lens_path(model_id: str) -> Path:
    """Where ``tuned-lens train`` writes by default and where ``--lens tuned`` looks."""
    from engine.models.registry import cache_root

    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", model_id).strip("_") or "model"
    return cache_root() / "lenses" / f"{safe}.safetensors"


def save_lens(path: str | Path, weight: Any, bias: Any, binding: dict[str, Any],
              extra: dict[str, Any] | None = None) -> Path:
    """Write a lens (or checkpoint: ``extra`` arrays) atomically. ``binding`` is LensBinding's fields
    without ``path``; ``extra`` arrays are stored as more tensors, strings in the metadata."""
    from safetensors.numpy import save

    from engine.fileio import write_atomic

    tensors = {"weight": np.asarray(weight, np.float32), "bias": np.asarray(bias, np.float32)}
    meta = {"format": FORMAT, "version": str(FORMAT_VERSION), "binding": json.dumps(binding)}
    for k, v in (extra or {}).items():
        if isinstance(v, str):
            meta[k] = v
        else:
            tensors[k] = np.ascontiguousarray(v)
    target = Path(path)
    if not target.parent.exists():
        raise InputError(f"output directory does not exist: {target.parent}")
    blob = save(tensors, metadata=meta)
    return write_atomic(target, lambda fh: fh.write(blob), binary=True)


def read_lens_file(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, str], LensBinding]:
    """Tensors, metadata and binding of a lens or checkpoint file; a bad file is an ``InputError``."""
    from safetensors import safe_open

    p = Path(path)
    if not p.is_file():
        raise InputError(f"tuned lens file not found: {p}")
    try:
        with safe_open(str(p), framework="numpy") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118  (safe_open is not iterable)
        if meta.get("format") != FORMAT:
            raise InputError(f"{p.name} is not a lazarus tuned lens file")
        binding = LensBinding(path=str(p), **json.loads(meta["binding"]))
    except InputError:
        raise
    except Exception as exc:
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"cannot read tuned lens {p.name}: {why}") from exc
    w, b = tensors.get("weight"), tensors.get("bias")
    L, d = binding.num_layers, binding.hidden_size
    if w is None or b is None or w.shape != (L, d, d) or b.shape != (L, d):
        raise InputError(f"tuned lens {p.name}: translator shapes do not match its own header")
    return tensors, meta, binding


def load_lens(lm: LoadedModel, path: str | Path) -> TunedLens:
    """The lens in ``path``, checked against ``lm``; cached per (path, mtime) on the loaded model."""
    import mlx.core as mx

    p = Path(path).expanduser()
    key = (str(p.resolve()) if p.exists() else str(p), p.stat().st_mtime_ns if p.exists() else 0)
    cache = lm.extras.setdefault("tuned_lenses", {})
    if key in cache:
        lens = cache[key]
    else:
        tensors, meta, binding = read_lens_file(p)
        lens = TunedLens(mx.array(tensors["weight"]), mx.array(tensors["bias"]), binding,
                         {k: v for k, v in meta.items() if k not in ("format", "version", "binding")})
        mx.eval(lens.weight, lens.bias)
        cache.clear()  # one lens file per model held at a time
        cache[key] = lens
    check_binding(lm, lens.binding)
    return lens


def parse_lens_spec(spec: str) -> str:
    """Validate a lens spec's form (``logit``, ``tuned``, ``tuned:FILE``) as user input."""
    try:
        return check_lens_spec(spec)
    except ValueError as exc:
        raise InputError(str(exc)) from exc


def resolve_lens(lm: LoadedModel, spec: str) -> TunedLens | None:
    """None for the logit lens, else the tuned lens the spec names, checked against ``lm``."""
    parse_lens_spec(spec)
    if spec == LOGIT:
        return None
    if spec == "tuned":
        path = default_lens_path(lm.info.model_id)
        if not path.is_file():
            raise InputError(f"no tuned lens for {lm.info.model_id} at {path}: "
                             f"train one with `lazarus --batch tuned-lens train -m {lm.info.model_id}`")
        return load_lens(lm, path)
    return load_lens(lm, spec.removeprefix("tuned:"))
