"""GGUF files → an mlx-lm model directory (config.json, float32 safetensors, tokenizer).

Reading a GGUF with the ``gguf`` package and dequantizing every tensor takes
seconds (Gemma 3's 262k-token vocabulary alone takes ~15 s to parse), so the
result is converted once into ``<cache>/models/converted/<key>/`` and later
loads read the safetensors directly. The conversion is written to a temporary
directory and renamed into place; its config.json records the size of every
file, so a damaged cache (truncated weights, a deleted or garbled file) is
noticed on load and rebuilt from the GGUF once.

How a file becomes an mlx-lm model: ``gguf_families`` turns the metadata into the
family's config; the mlx-lm model of that config lists the parameters it needs,
and gguf-py's ``TensorNameMap`` (the table llama.cpp's converters use) names the
GGUF tensor of each. Every tensor of the file must find its place and every
parameter its tensor: anything else is refused, never dropped or left at random.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import LazarusError, ModelLoadError, UnsupportedArchitecture
from engine.models.gguf_families import FAMILIES
from engine.models.gguf_meta import Family, Meta, Tensors
from engine.models.gguf_transforms import interleave_qkv, llama3_scaling, unpermute
from engine.models.tokenizer import Tokenizer, from_gguf_metadata

SUPPORTED_ARCHITECTURES = tuple(FAMILIES)
CONVERSION_VERSION = 2
GGUF_MAGIC = b"GGUF"
_FILES = ("model.safetensors", "tokenizer.json", "lazarus_tokenizer.json")

Progress = Callable[[str, int, int], None]


def check_header(path: Path) -> None:
    """A one-line error for paths that are not GGUF files, before the slow reader runs."""
    if not path.exists():
        raise ModelLoadError(f"model file not found: {path}")
    if path.is_dir():
        raise ModelLoadError(f"{path} is a directory, not a GGUF file")
    with path.open("rb") as fh:
        head = fh.read(4)
    if head != GGUF_MAGIC:
        raise ModelLoadError(f"{path} is not a GGUF file (bad magic {head!r})")


def cache_key(path: Path) -> str:
    """Identifies a GGUF file's content cheaply: path, size, mtime, and its first and last MiB."""
    st = path.stat()
    h = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|v{CONVERSION_VERSION}".encode())
    with path.open("rb") as fh:
        h.update(fh.read(1 << 20))
        fh.seek(max(0, st.st_size - (1 << 20)))
        h.update(fh.read(1 << 20))
    return f"{path.stem[:40]}-{h.hexdigest()[:12]}"


def _field_value(field: Any) -> Any:
    from gguf import GGUFValueType

    if field.types and field.types[0] == GGUFValueType.ARRAY:
        sub = field.types[-1]
        if sub == GGUFValueType.STRING:
            return [bytes(field.parts[i]).decode("utf-8", errors="replace") for i in field.data]
        return [field.parts[i].tolist()[0] for i in field.data]
    return field.contents()


def read_metadata(reader: Any) -> dict[str, Any]:
    return {k: _field_value(f) for k, f in reader.fields.items() if not k.startswith("GGUF.")}


# -- loading through the cache --------------------------------------------------------------

def load(path: Path, progress: Progress | None = None) -> tuple[dict[str, Any], dict[str, Any], Tokenizer]:
    """(config, weights, tokenizer) of a GGUF, from its converted cache, converting or repairing it first."""
    from engine.models import registry

    check_header(path)
    conv = registry.models_dir() / "converted" / cache_key(path)
    if conv.exists():
        try:
            return _read_converted(conv)
        except _Damaged as exc:
            print(f"lazarus: the converted cache {conv.name} is damaged ({exc}); rebuilding it from {path.name}",
                  file=sys.stderr)
    convert(path, conv, progress)
    try:
        return _read_converted(conv)
    except _Damaged as exc:
        raise ModelLoadError(f"the converted cache {conv} cannot be read even after rebuilding it ({exc})") from exc


class _Damaged(Exception):
    pass


def _read_converted(conv: Path) -> tuple[dict[str, Any], dict[str, Any], Tokenizer]:
    import mlx.core as mx

    missing = [name for name in ("config.json", *_FILES) if not (conv / name).is_file()]
    if missing:
        raise _Damaged(f"{missing[0]} is missing")
    try:
        config = json.loads((conv / "config.json").read_text())
        info = config.get("lazarus") or {}
        if info.get("conversion_version") != CONVERSION_VERSION:
            raise _Damaged("written by another lazarus version")
        sizes = info.get("files") or {}
        for name in _FILES:
            actual = (conv / name).stat().st_size
            if actual != sizes.get(name):
                raise _Damaged(f"{name} is {actual} bytes, {sizes.get(name)} were written")
        weights = mx.load(str(conv / "model.safetensors"))
        if not isinstance(weights, dict):
            raise _Damaged("model.safetensors holds no named tensors")
        tokenizer = Tokenizer.load_saved(conv)
    except _Damaged:
        raise
    except Exception as exc:  # a missing, truncated or garbled file, whatever library reads it
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise _Damaged(f"unreadable: {reason}"[:200]) from exc
    return config, weights, tokenizer


# -- conversion -----------------------------------------------------------------------------

def _open(path: Path) -> Any:
    from gguf import GGUFReader

    check_header(path)
    try:
        return GGUFReader(str(path), "r")
    except Exception as exc:  # the gguf reader raises bare ValueError/struct errors on damage
        raise ModelLoadError(f"{path} is not a readable GGUF file ({type(exc).__name__}: {exc})") from exc


def _dequantize(path: Path, t: Any) -> np.ndarray:
    from gguf import quants

    try:
        return quants.dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)
    except Exception as exc:
        raise ModelLoadError(f"{path}: cannot read tensor {t.name} ({exc}); the file may be truncated") from exc


def _candidate_names(name: str) -> list[str]:
    """The Hugging Face names an mlx-lm parameter may go by in gguf-py's table."""
    bare = name.removeprefix("model.")
    neox = "gpt_neox." + (f"layers.{bare[2:]}" if bare.startswith("h.") else bare)  # mlx-lm's gpt_neox renames
    merged = name.replace(".switch_mlp.", ".experts.")  # mlx-lm's stacked experts = llama.cpp's merged ones
    for mlx_name, mixtral_name in ((".gate_proj", ".w1"), (".down_proj", ".w2"), (".up_proj", ".w3")):
        if ".block_sparse_moe.experts." in merged:
            merged = merged.replace(mlx_name, mixtral_name)
    return [name, bare, f"transformer.{bare}", merged, neox]


def _plan(family: Family, config: dict[str, Any], names: set[str],
          source: str) -> tuple[dict[str, str], dict[str, tuple[int, ...]]]:
    """{mlx-lm parameter: GGUF tensor} and the parameters' shapes, from the family's own model."""
    import gguf

    from engine._imports import model_module
    from engine.mx_values import tree_leaves

    model_type = config["model_type"]
    mod = model_module(model_type)
    try:
        model = mod.Model(mod.ModelArgs.from_dict(config))  # parameters stay lazy: nothing is computed
    except Exception as exc:
        raise ModelLoadError(f"{source}: mlx-lm's {model_type} cannot be built from this file's metadata ({exc})") from exc
    shapes = {k: tuple(v.shape) for k, v in tree_leaves(model.parameters())}
    arch = next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == family.arch)
    n_layers = int(config.get("num_hidden_layers") or config["n_layer"])
    table = gguf.get_tensor_name_map(arch, n_layers)
    plan: dict[str, str] = {}
    tied = config.get("tie_word_embeddings", True)
    for param in shapes:
        gname = next((g for c in _candidate_names(param) if (g := table.get_name(c, try_suffixes=(".weight", ".bias")))), None)
        if gname is None:
            raise UnsupportedArchitecture(f"{source}: mlx-lm's {model_type} parameter {param} has no llama.cpp tensor name")
        if gname not in names:
            if gname == "output.weight" and tied:
                continue  # the tied head: mlx-lm unembeds with token_embd
            raise ModelLoadError(f"{source}: GGUF lacks tensor {gname} (needed for {family.arch})")
        plan[param] = gname
    if len(set(plan.values())) != len(plan):
        twice = sorted(g for g in set(plan.values()) if list(plan.values()).count(g) > 1)
        raise UnsupportedArchitecture(f"{source}: tensor {twice[0]} would fill two parameters of mlx-lm's {model_type}")
    return plan, shapes


def convert(path: Path, out_dir: Path, progress: Progress | None = None) -> Path:
    """Dequantize a GGUF into ``out_dir`` (config.json, model.safetensors, tokenizer files), atomically."""
    import mlx.core as mx

    if progress:
        progress(f"reading {path.name}", 0, 1)
    reader = _open(path)
    meta = read_metadata(reader)
    arch = meta.get("general.architecture")
    if not isinstance(arch, str) or arch not in FAMILIES:
        raise UnsupportedArchitecture(
            f"unsupported architecture {arch!r} (supported: {', '.join(SUPPORTED_ARCHITECTURES)})"
        )
    family = FAMILIES[arch]
    if int(meta.get("split.count", 1)) > 1:
        raise ModelLoadError(f"{path.name} is part {int(meta.get('split.no', 0)) + 1} of a {meta['split.count']}-part "
                             "split GGUF; merge it first (llama-gguf-split --merge)")
    tensors = {t.name: t for t in reader.tensors}
    if "token_embd.weight" not in tensors:
        raise ModelLoadError(f"{path}: GGUF lacks tensor token_embd.weight")
    shapes = Tensors({n: tuple(int(x) for x in reversed(t.shape.tolist())) for n, t in tensors.items()})
    m = Meta(meta, arch, path.name)
    config = family.config(m, shapes)
    handled = set()
    if family.rope_freqs and "rope_freqs.weight" in tensors:
        handled.add("rope_freqs.weight")
        scaling = llama3_scaling(_dequantize(path, tensors["rope_freqs.weight"]), config["rope_theta"],
                                 config["head_dim"], path.name)
        if scaling is not None:
            if "rope_scaling" in config:
                raise UnsupportedArchitecture(f"{path.name}: both a rope_freqs tensor and {arch}.rope.scaling.type")
            config["rope_scaling"] = scaling
    unread = m.unread()
    if unread:
        more = f" (and {len(unread) - 1} more)" if len(unread) > 1 else ""
        raise UnsupportedArchitecture(f"{path.name}: metadata {unread[0]}{more} is not understood for {arch}; "
                                      "refusing rather than ignoring it")
    plan, param_shapes = _plan(family, config, set(tensors), path.name)
    if family.output_tied_copy and "output.weight" in tensors and "output.weight" not in plan.values():
        handled.add("output.weight")
        if not np.array_equal(_dequantize(path, tensors["output.weight"]), _dequantize(path, tensors["token_embd.weight"])):
            raise UnsupportedArchitecture(f"{path.name}: output.weight differs from token_embd.weight, "
                                          f"but mlx-lm's {config['model_type']} ties them")
    stray = sorted(set(tensors) - set(plan.values()) - handled)
    if stray:
        raise UnsupportedArchitecture(f"{path.name}: tensor {stray[0]} has no place in mlx-lm's {config['model_type']} model; "
                                      "refusing rather than dropping it")

    n_head = int(config.get("num_attention_heads") or 0)  # read only by families that permute or interleave
    n_kv = int(config.get("num_key_value_heads") or n_head)
    weights: dict[str, mx.array] = {}
    for i, (param, gname) in enumerate(plan.items()):
        arr = _dequantize(path, tensors[gname])
        if family.permute_qk and re.fullmatch(r"blk\.\d+\.attn_q\.(weight|bias)", gname):
            arr = unpermute(arr, n_head)
        elif family.permute_qk and re.fullmatch(r"blk\.\d+\.attn_k\.(weight|bias)", gname):
            arr = unpermute(arr, n_kv)
        elif family.interleave_qkv and re.fullmatch(r"blk\.\d+\.attn_qkv\.(weight|bias)", gname):
            arr = interleave_qkv(arr, n_head)
        if family.norm_shift and param.endswith("norm.weight"):
            arr = arr - np.float32(family.norm_shift)
        if arr.shape != param_shapes[param]:
            raise ModelLoadError(f"{path.name}: tensor {gname} has shape {arr.shape}, "
                                 f"mlx-lm's {config['model_type']} expects {param_shapes[param]} for {param}")
        weights[param] = mx.array(arr)
        if progress and (i % 16 == 0 or i == len(plan) - 1):
            progress(f"dequantizing {path.name}", i + 1, len(plan))
    config["lazarus"] = {"source": str(path), "gguf_architecture": arch, "gguf_file_type": meta.get("general.file_type"),
                         "name": meta.get("general.name"), "conversion_version": CONVERSION_VERSION,
                         "quantization": sorted({t.tensor_type.name for t in reader.tensors})}
    tok = from_gguf_metadata(meta)
    _write(out_dir, config, weights, tok)
    return out_dir


def _write(out_dir: Path, config: dict[str, Any], weights: dict[str, Any], tok: Tokenizer) -> None:
    """Write into a temporary sibling, record the file sizes in config.json (last), rename into place."""
    import mlx.core as mx

    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    except OSError as exc:
        raise ModelLoadError(f"cannot write the converted model under {out_dir.parent}: {exc.strerror or exc} "
                             "(point LAZARUS_CACHE at a writable directory)") from exc
    try:
        mx.save_safetensors(str(tmp / "model.safetensors"), weights)
        tok.save(tmp)
        config["lazarus"]["files"] = {name: (tmp / name).stat().st_size for name in _FILES}
        (tmp / "config.json").write_text(json.dumps(config, indent=1))
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old.", dir=out_dir.parent))
            os.replace(out_dir, old / "x")
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, out_dir)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError | RuntimeError) and not isinstance(exc, LazarusError):
            raise ModelLoadError(f"cannot write the converted model to {out_dir}: {exc}") from exc
        raise
