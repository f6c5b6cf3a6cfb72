"""GGUF files → an mlx-lm model directory (config.json, float32 safetensors, tokenizer).

Reading a GGUF with the ``gguf`` package and dequantizing every tensor takes
seconds (Gemma 3's 262k-token vocabulary alone takes ~15 s to parse), so the
result is converted once into ``~/.cache/lazarus/models/converted/<key>/`` and
later loads read the safetensors directly.

What the conversion undoes (llama.cpp's convert_hf_to_gguf.py):
- llama-family Q and K rows are permuted for llama.cpp's interleaved RoPE; we
  permute them back to Hugging Face order, which mlx-lm's ``nn.RoPE(traditional=False)`` expects.
- Gemma's RMSNorm weights are stored with +1 folded in; mlx-lm's Gemma norms add
  1 themselves, so we subtract it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import ModelLoadError, UnsupportedArchitecture
from engine.models.tokenizer import from_gguf_metadata

SUPPORTED_ARCHITECTURES = ("llama", "gemma3")
CONVERSION_VERSION = 1
GGUF_MAGIC = b"GGUF"

Progress = Callable[[str, int, int], None]

_COMMON = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_BLOCK_NAMES = {
    "llama": {**_COMMON, "ffn_norm": "post_attention_layernorm"},
    "gemma3": {
        **_COMMON,
        "ffn_norm": "pre_feedforward_layernorm",
        "post_attention_norm": "post_attention_layernorm",
        "post_ffw_norm": "post_feedforward_layernorm",
    },
}
_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_BLK = re.compile(r"^blk\.(\d+)\.(.+)\.(weight|bias)$")


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


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of llama.cpp's ``permute`` for Q/K: interleaved RoPE pairs back to rotate-half order."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _config(arch: str, meta: dict[str, Any], tensor_names: set[str], vocab: int) -> dict[str, Any]:
    g = lambda key, default=None: meta.get(f"{arch}.{key}", default)  # noqa: E731
    n_head = int(g("attention.head_count"))
    n_kv = int(g("attention.head_count_kv", n_head))
    hidden = int(g("embedding_length"))
    head_dim = int(g("attention.key_length", g("rope.dimension_count", hidden // n_head)))
    cfg: dict[str, Any] = {
        "hidden_size": hidden,
        "num_hidden_layers": int(g("block_count")),
        "intermediate_size": int(g("feed_forward_length")),
        "num_attention_heads": n_head,
        "num_key_value_heads": n_kv,
        "head_dim": head_dim,
        "rms_norm_eps": float(g("attention.layer_norm_rms_epsilon")),
        "vocab_size": vocab,
        "max_position_embeddings": int(g("context_length", 4096)),
        "tie_word_embeddings": "output.weight" not in tensor_names,
    }
    scaling = g("rope.scaling.type")
    if arch == "llama":
        cfg.update(model_type="llama", rope_theta=float(g("rope.freq_base", 10000.0)))
        if scaling not in (None, "none"):
            if scaling != "linear":
                raise UnsupportedArchitecture(f"unsupported RoPE scaling {scaling!r} in this GGUF")
            cfg["rope_scaling"] = {"type": "linear", "factor": float(g("rope.scaling.factor"))}
    elif arch == "gemma3":
        cfg.update(
            model_type="gemma3_text",
            rope_theta=float(g("rope.freq_base", 1_000_000.0)),
            rope_local_base_freq=10_000.0,
            # llama.cpp: 1/sqrt(head_dim), except Gemma 3 27B which scales by hidden/heads
            query_pre_attn_scalar=float(hidden // n_head if hidden == 5376 else head_dim),
            sliding_window=int(g("attention.sliding_window", 512)),
            sliding_window_pattern=6,
        )
        if scaling == "linear":
            cfg["rope_scaling"] = {"rope_type": "linear", "factor": float(g("rope.scaling.factor"))}
    return cfg


def convert(path: Path, out_dir: Path, progress: Progress | None = None) -> Path:
    """Dequantize a GGUF into ``out_dir`` (config.json, model.safetensors, tokenizer files)."""
    import mlx.core as mx
    from gguf import GGUFReader, quants

    check_header(path)
    if progress:
        progress(f"reading {path.name}", 0, 1)
    try:
        reader = GGUFReader(str(path), "r")
    except Exception as exc:  # the gguf reader raises bare ValueError/struct errors on damage
        raise ModelLoadError(f"{path} is not a readable GGUF file ({type(exc).__name__}: {exc})") from exc
    meta = read_metadata(reader)
    arch = meta.get("general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise UnsupportedArchitecture(
            f"unsupported architecture {arch!r} (supported: {', '.join(SUPPORTED_ARCHITECTURES)})"
        )
    names = {t.name for t in reader.tensors}
    block_names = _BLOCK_NAMES[arch]
    n_head = int(meta[f"{arch}.attention.head_count"])
    n_kv = int(meta.get(f"{arch}.attention.head_count_kv", n_head))

    weights: dict[str, mx.array] = {}
    total = len(reader.tensors)
    vocab = None
    for i, t in enumerate(reader.tensors):
        try:
            arr = quants.dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)
        except Exception as exc:
            raise ModelLoadError(f"{path}: cannot read tensor {t.name} ({exc}); the file may be truncated") from exc
        m = _BLK.match(t.name)
        if m:
            layer, part, kind = m.groups()
            if part not in block_names:
                raise UnsupportedArchitecture(f"{path}: unexpected tensor {t.name} for architecture {arch}")
            name = f"model.layers.{layer}.{block_names[part]}.{kind}"
            if arch == "llama" and part == "attn_q":
                arr = _unpermute(arr, n_head)
            elif arch == "llama" and part == "attn_k":
                arr = _unpermute(arr, n_kv)
        else:
            stem, _, kind = t.name.rpartition(".")
            if stem == "rope_freqs":
                continue
            if stem not in _TOP_NAMES:
                raise UnsupportedArchitecture(f"{path}: unexpected tensor {t.name} for architecture {arch}")
            name = f"{_TOP_NAMES[stem]}.{kind}"
            if stem == "token_embd":
                vocab = arr.shape[0]
        if arch == "gemma3" and name.endswith("norm.weight"):
            arr = arr - 1.0
        weights[name] = mx.array(arr)
        if progress and (i % 16 == 0 or i == total - 1):
            progress(f"dequantizing {path.name}", i + 1, total)
    if vocab is None:
        raise ModelLoadError(f"{path}: no token_embd.weight tensor")
    config = _config(arch, meta, names, vocab)
    config["lazarus"] = {"source": str(path), "gguf_file_type": meta.get("general.file_type"),
                         "name": meta.get("general.name"), "quantization": sorted({t.tensor_type.name for t in reader.tensors})}
    tok = from_gguf_metadata(meta)

    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    mx.save_safetensors(str(tmp / "model.safetensors"), weights)
    (tmp / "config.json").write_text(json.dumps(config, indent=1))
    tok.save(tmp)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    return out_dir
