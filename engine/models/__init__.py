"""``engine.models.load``: one function for every model source.

Sources: a bundled alias (``smollm2-135m``, the default; ``gemma3-270m``), a
``.gguf`` file, a local HF/MLX directory, or a hub id (through mlx-lm; needs
network). On the CPU backend weights are dequantized to float32 unless
``dtype`` says otherwise.
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx
from pydantic import BaseModel, ConfigDict

import engine  # noqa: F401  (loads the BLAS before mlx)
from engine._imports import model_module
from engine.errors import InputError, ModelLoadError
from engine.models import registry
from engine.models.adapter import Adapter, adapter_for
from engine.models.tokenizer import Tokenizer, from_hf_directory

Progress = Callable[[str, int, int], None]
DTYPES = ("auto", "float32", "float16", "bfloat16", "native", "q4", "q8")
_MX_DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}


class ModelInfo(BaseModel):
    """What every command prints in its header."""

    model_config = ConfigDict(frozen=True)
    model_id: str
    family: str
    model_type: str
    num_layers: int
    hidden_size: int
    vocab_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    tied_embeddings: bool
    dtype: str
    source: str
    source_format: str
    device: str
    embedding_scale: float | None = None
    final_logit_softcap: float | None = None
    sliding_window: int | None = None
    sliding_layers: list[int] = []
    load_seconds: float = 0.0
    family_check: str | None = None  # a model type the tests do not prove: what was checked at load (engine.family_check)


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Tokenizer
    adapter: Adapter
    config: dict[str, Any]
    info: ModelInfo
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def num_layers(self) -> int:
        return self.info.num_layers


def device_name() -> str:
    dev = mx.default_device()
    return "gpu" if dev.type == mx.DeviceType.gpu else "cpu"


def _resolve(spec: str | None, progress: Progress | None) -> tuple[str, Path | None, str]:
    """(display id, local path or None for a hub id, format)."""
    spec = spec or registry.DEFAULT_MODEL
    if spec in registry.BUNDLED:
        return spec, registry.ensure(spec, progress), "gguf"
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".gguf" or path.is_file():
        if not path.exists():
            raise ModelLoadError(f"model file not found: {path}")
        return spec, path, "gguf"
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelLoadError(f"{path} is a directory without config.json (not an HF/MLX model)")
        return spec, path, "hf"
    looks_like_path = spec.startswith((".", "/", "~")) or spec.count("/") != 1
    if looks_like_path:
        if "/" not in spec:
            raise InputError(f"unknown model {spec!r} (bundled aliases: {', '.join(registry.BUNDLED)}; "
                             "or give a .gguf file, a model directory, or a hub id org/name)")
        raise ModelLoadError(f"model path not found: {spec}")
    return spec, None, "hub"


def _hub_download(repo: str) -> Path:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo, allow_patterns=["*.json", "*.safetensors", "*.jinja", "*.model", "*.txt"]))
    except Exception as exc:  # network, auth, missing repo: all reported on one line
        raise ModelLoadError(f"could not fetch {repo!r} from the hub: {type(exc).__name__}: {str(exc).splitlines()[0]}") from exc


def _build(config: dict[str, Any], weights: dict[str, mx.array]) -> Any:
    model_type = config["model_type"]
    try:
        mod = model_module(model_type)
    except ImportError as exc:
        raise ModelLoadError(f"mlx-lm has no model class for {model_type!r}") from exc
    model = mod.Model(mod.ModelArgs.from_dict(config))
    if hasattr(model, "sanitize"):
        weights = model.sanitize(weights)
    try:
        model.load_weights(list(weights.items()), strict=True)
    except ValueError as exc:
        raise ModelLoadError(f"weights do not fit {model_type}: {str(exc).splitlines()[0]}") from exc
    return model


def _apply_dtype(model: Any, dtype: str, quantized: bool) -> str:
    if dtype == "auto":
        dtype = "float32" if device_name() == "cpu" or not quantized else "native"
    if dtype == "native":
        return "quantized" if quantized else str(next(iter(_leaf_dtypes(model)), "float32"))
    if quantized:  # MLX-quantized layers back to float ones (4-bit matmul is ~10x slower on the CPU backend)
        from mlx_lm.utils import dequantize_model

        dequantize_model(model)
    if dtype in ("q4", "q8"):
        from mlx_lm.utils import quantize_model

        model.set_dtype(mx.float32)
        # mlx-lm's own rule: layers whose input width is not a multiple of the group size stay
        # float, and the family's quant_predicate (e.g. MoE routers) is honoured
        with contextlib.redirect_stdout(io.StringIO()):  # it prints bits per weight
            quantize_model(model, {}, group_size=64, bits=4 if dtype == "q4" else 8)
        return dtype
    model.set_dtype(_MX_DTYPES[dtype])
    return dtype


def _leaf_dtypes(model: Any) -> list[str]:
    from engine.mx_values import tree_leaves

    return sorted({str(v.dtype).replace("mlx.core.", "") for _, v in tree_leaves(model.parameters())})


def load(spec: str | None = None, dtype: str = "auto", progress: Progress | None = None,
         embedding_scale: float | None = None, stage: tuple[int, int] | None = None,
         found: Callable[[], None] | None = None) -> LoadedModel:
    """Load a model from any source; see the module docstring. Every call loads its own copy: the
    caller owns it (an ``EngineSession`` keeps the models it uses; nothing is shared behind its back).

    ``found()`` is called once the source exists (a hub repo: once its files are downloaded),
    before any weights are read: an ``EngineSession`` makes room there, so a mistyped name, a
    missing file or an unreachable repo drops none of the models it keeps.

    ``stage=(rank, size)``: pipeline sharding (engine/pipeline.py): only the blocks of that rank's
    stage get weights (the others' are never read from disk); embedding, final norm and head stay."""
    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r} (choose from {', '.join(DTYPES)})")
    t0 = time.perf_counter()
    model_id, path, fmt = _resolve(spec, progress)
    if path is None:  # a hub id: the files come down first, so a repo that does not exist drops nothing either
        path = _hub_download(model_id)
    if found is not None:
        found()
    quantized = False
    if fmt == "gguf":
        from engine.models import gguf_loader

        config, weights, tokenizer = gguf_loader.load(path, progress)
        model = _build(config, weights)
        source = str(path)
    else:
        from mlx_lm.utils import load_model

        try:
            model, config = load_model(path, lazy=stage is not None)
        except Exception as exc:
            raise ModelLoadError(f"could not load {path}: {type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
        quantized = "quantization" in config
        tokenizer = from_hf_directory(path)
        source = str(path)
    adapter = adapter_for(model, config)
    if stage is not None and quantized:
        raise ModelLoadError("pipeline stages need a float checkpoint (GGUF or float safetensors); "
                             "this one is MLX-quantized")
    if stage is not None:  # before anything evaluates the weights: the other stages' are never read
        from engine.pipeline import keep_stage, stage_layers

        keep_stage(model, adapter, *stage_layers(int(config["num_hidden_layers"]), *stage))
    if embedding_scale is not None:
        from dataclasses import replace

        adapter = replace(adapter, embedding_scale=embedding_scale)
    dtype_name = _apply_dtype(model, dtype, quantized)
    mx.eval(model.parameters())
    info = _info(adapter, model_id=model_id, dtype=dtype_name, source=source, source_format=fmt,
                 load_seconds=round(time.perf_counter() - t0, 3))
    lm = LoadedModel(model, tokenizer, adapter, config, info)
    return lm if stage is not None else _checked(lm, progress)  # a stage holds only its blocks: verify checks those runs


def _checked(lm: LoadedModel, progress: Progress | None = None) -> LoadedModel:
    """``lm`` with ``info.family_check`` set, or ``ModelLoadError`` (engine.family_check)."""
    from engine.family_check import check_family

    note = check_family(lm, progress)
    if note is not None:
        lm.info = lm.info.model_copy(update={"family_check": note})
    return lm


def _info(adapter: Adapter, **fields: Any) -> ModelInfo:
    """ModelInfo from the adapter: its dims come from the config under the family's own names
    (n_embd, n_head, ...) and from the modules the hooks see (head width, MLP width)."""
    return ModelInfo(family=adapter.family, model_type=adapter.model_type, **adapter.dims,
                     tied_embeddings=adapter.tied_embeddings, device=device_name(),
                     embedding_scale=adapter.embedding_scale, final_logit_softcap=adapter.final_logit_softcap,
                     sliding_window=adapter.sliding_window, sliding_layers=list(adapter.sliding_layers), **fields)


def wrap_model(model: Any, tokenizer: Any = None, model_id: str = "in-memory") -> LoadedModel:
    """A ``LoadedModel`` around a bare mlx-lm model (e.g. from ``mlx_lm.load``)."""
    args = getattr(model, "args", None)
    if args is None:
        raise InputError("expected an mlx-lm model (with .args) or a LoadedModel")
    config = {k: v for k, v in vars(args).items() if not k.startswith("_")}
    adapter = adapter_for(model, config)
    info = _info(adapter, model_id=model_id, dtype=(_leaf_dtypes(model) or ["float32"])[0], source="in-memory",
                 source_format="mlx-lm")
    return _checked(LoadedModel(model, tokenizer, adapter, config, info))


__all__ = ["load", "wrap_model", "LoadedModel", "ModelInfo", "DTYPES", "registry"]
