"""What a prompt may ask of the model and the machine, checked before a forward pass runs.

Two limits: the model's context length (``max_position_embeddings`` in its config), and the
memory the attention scores take on this machine. MLX's CPU attention materialises the scores
and their softmax, ``batch x heads x new tokens x all tokens`` floats each, per layer (and
once more per layer whose pattern is captured). A prompt past either limit is an InputError
(exit 2) with the numbers and what to do, instead of a long run that ends in a crash.
"""

from __future__ import annotations

import math
import os
from typing import Any

from engine.errors import InputError

BYTES_PER_SCORE = 4  # attention scores are float32 on the CPU path
SHARE_OF_FREE_MEMORY = 0.8


def available_memory() -> int | None:
    """Bytes of memory available now (Linux MemAvailable; else physical memory); None if unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def process_memory(field: str = "VmRSS") -> int | None:
    """Bytes of this process's memory: ``VmRSS`` resident now, ``VmHWM`` its peak (Linux
    /proc/self/status; None elsewhere). The one reader of it: the benchmarks and tests use this."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length")


def context_length(config: dict[str, Any]) -> int | None:
    """The model's context length from its config (HF names; a nested ``text_config`` too)."""
    for cfg in (config, config.get("text_config")):
        if isinstance(cfg, dict):
            for key in _CONTEXT_KEYS:
                if cfg.get(key):
                    return int(cfg[key])
    return None


def attention_bytes(batch: int, heads: int, new: int, total: int, kept_layers: int = 0) -> int:
    """Peak bytes of attention scores in one layer, plus the patterns kept for ``kept_layers``."""
    return batch * heads * new * total * BYTES_PER_SCORE * (2 + kept_layers)


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB"


def check_prompt(lm: Any, batch: int, new: int, total: int, kept_layers: int = 0,
                 free: int | None = None) -> None:
    """Refuse a forward of ``new`` tokens (``total`` with the cache) over ``batch`` rows that the
    model cannot take (context length) or the machine cannot hold (attention memory)."""
    name = lm.info.model_id
    limit = context_length(lm.config)
    if limit is not None and total > limit:
        raise InputError(f"the prompt is {total:,} tokens but {name} takes at most {limit:,} "
                         f"(max_position_embeddings); shorten the prompt")
    free = available_memory() if free is None else free
    if free is None:
        return
    need = attention_bytes(batch, lm.info.num_heads, new, total, kept_layers)
    budget = free * SHARE_OF_FREE_MEMORY
    if need <= budget:
        return
    fits = math.isqrt(int(budget / (batch * lm.info.num_heads * BYTES_PER_SCORE * (2 + kept_layers))))
    rows = f"{batch} prompts of up to " if batch > 1 else ""
    patterns = f", {kept_layers} captured patterns" if kept_layers else ""
    raise InputError(f"{rows}{total:,} tokens need about {_gb(need)} for attention ({lm.info.num_heads} heads"
                     f"{patterns}) but about {_gb(free)} of memory is free; use at most about {fits:,} tokens"
                     + (" or fewer prompts at once" if batch > 1 else ""))
