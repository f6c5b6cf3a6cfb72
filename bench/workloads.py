"""The workloads of bench/run_all.py, as data shared by both sides (no engine, no torch here).

Every workload is defined once: the prompts, the sizes and the FLOP count the physical-limit
column divides by the measured GEMM rate.
"""

from __future__ import annotations

SHORT = "The capital of France is"
# ~256 tokens of plain text (SmolLM2's tokenizer: 256 exactly; the script prints the count)
LONG = " ".join(f"Fact {i}: the river flows past the old mill toward the sea." for i in range(17))
LONG_TOKENS = 256  # the long prompt is cut to this many tokens (same ids on both sides)

ABLATION_PROMPT = "The capital of France is"
ABLATION_TOKENS = 12

STEER_PROMPT = "Tell me about your weekend."  # through the chat template, as bench/steering_compare.py
STEER_LAYER = 10
STEER_COEFS = (-0.5, -0.25, 0.0, 0.25, 0.5)
STEER_TOKENS = 20

COLLECT_N = 256
COLLECT_BATCH = 64

_SUBJECTS = ["The cat", "My neighbour", "The old train", "A small river", "The teacher", "Our company",
             "The red car", "This recipe", "The museum", "A young bird", "The weather", "His brother",
             "The new phone", "That song", "The garden", "Her laptop"]
_VERBS = ["is", "was", "seems", "looks", "became", "feels", "sounds", "stays", "grew", "remains",
          "turned", "appears", "gets", "stood", "ran", "went"]


def collect_prompts(n: int = COLLECT_N) -> list[str]:
    """``n`` short distinct prompts (4-6 tokens), deterministic."""
    out = []
    for i in range(n):
        s, v = _SUBJECTS[i % len(_SUBJECTS)], _VERBS[(i // len(_SUBJECTS)) % len(_VERBS)]
        out.append(f"{s} {v}")
    return out


# -- FLOPs ---------------------------------------------------------------------------------
def block_params(cfg: dict) -> int:
    """Weights of the matmuls in the transformer blocks (per token: 2 FLOPs each)."""
    d, f = cfg["hidden_size"], cfg["intermediate_size"]
    h, kv, hd = cfg["num_heads"], cfg["num_kv_heads"], cfg["head_dim"]
    per_layer = d * h * hd * 2 + d * kv * hd * 2 + 3 * d * f
    return per_layer * cfg["num_layers"]


def attn_flops(cfg: dict, q: int, k_total: int) -> float:
    """Score and value matmuls for ``q`` new queries against a causal context ending at ``k_total``."""
    # sum over the q queries of their context length, times 2 matmuls x 2 FLOPs x heads x head_dim
    ctx = sum(k_total - q + i + 1 for i in range(q))
    return 4.0 * ctx * cfg["num_heads"] * cfg["head_dim"] * cfg["num_layers"]


def unembed_flops(cfg: dict, rows: int) -> float:
    return 2.0 * cfg["vocab_size"] * cfg["hidden_size"] * rows


def forward_flops(cfg: dict, tokens: int, prefix: int = 0) -> float:
    """One sequence: ``tokens`` new tokens after ``prefix`` cached ones."""
    return 2.0 * block_params(cfg) * tokens + attn_flops(cfg, tokens, prefix + tokens)


def generation_flops(cfg: dict, prompt: int, new: int) -> float:
    """Greedy generation of ``new`` tokens: the prompt pass, ``new - 1`` decode steps, ``new`` unembeddings."""
    f = forward_flops(cfg, prompt)
    for i in range(new - 1):
        f += forward_flops(cfg, 1, prompt + i)
    return f + unembed_flops(cfg, new)
