"""The PyTorch peers of bench/run_all.py: transformers (forward hooks, ``output_hidden_states``,
``generate``) and nnsight, on the same GGUF file loaded by transformers in float32.

Each job is written the way the peer's documentation and common tutorials write it, with the
obvious fairness fixes applied in the peer's favour (named in each docstring).
"""

from __future__ import annotations

import os
import warnings

os.environ.setdefault("TQDM_DISABLE", "1")  # transformers' GGUF dequantization bar

import torch
import workloads as W

warnings.filterwarnings("ignore")


def gguf_path(model: str) -> tuple[str, str]:
    from pathlib import Path

    base = Path(os.environ.get("LAZARUS_CACHE") or Path.home() / ".cache" / "lazarus") / "models"
    files = {"smollm2-135m": "SmolLM2-135M-Instruct.Q4_1.gguf", "gemma3-270m": "gemma-3-270m-q4_k_m.gguf"}
    return str(base / model), files[model]


def load_hf(model: str, threads: int):
    torch.set_num_threads(threads)
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    d, f = gguf_path(model)
    hf = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
    hf.eval()
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    return hf, tok


class TorchSide:
    name = "torch"

    def __init__(self, model: str, threads: int = 2) -> None:
        self.hf, self.tok = load_hf(model, threads)
        # hidden_states[-1] is the last layer's output itself, not its final-norm image (as hidden_states[i<L])
        self.hf.config.tie_last_hidden_states = False
        self.tok.padding_side = "left"
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        self.cap = getattr(self.hf.config, "final_logit_softcapping", None)
        self._nn = None

    def info(self) -> dict:
        return {"torch": torch.__version__, "threads": torch.get_num_threads()}

    def _head(self, h: torch.Tensor) -> torch.Tensor:
        logits = self.hf.lm_head(self.hf.model.norm(h))
        if self.cap:
            logits = torch.tanh(logits / self.cap) * self.cap
        return logits

    # -- W1 ------------------------------------------------------------------------------
    def lens_hidden_states(self, prompt: str, threads: int | None = None) -> dict:
        """``output_hidden_states`` on the base model (no full-sequence lm_head: in the peer's
        favour), then the last position of every layer through final norm + lm_head, softmax, top-5.
        ``threads``: run this call with that many torch threads (a diagnostic), then restore."""
        before = torch.get_num_threads()
        if threads:
            torch.set_num_threads(threads)
        try:
            return self._lens_hidden_states(prompt)
        finally:
            torch.set_num_threads(before)

    def _lens_hidden_states(self, prompt: str) -> dict:
        with torch.inference_mode():
            ids = self.tok(prompt, return_tensors="pt").input_ids
            out = self.hf.model(ids, output_hidden_states=True)
            hs = torch.stack([h[0, -1] for h in out.hidden_states[1:]])  # [layers, hidden]
            probs = self._head(hs).softmax(-1)
            top = probs.topk(5, dim=-1)
        return {"n_tokens": ids.shape[1], "top5": top.indices.tolist()}

    @property
    def nn(self):
        if self._nn is None:
            from nnsight import LanguageModel

            self._nn = LanguageModel(self.hf, tokenizer=self.tok)
        return self._nn

    def lens_nnsight(self, prompt: str) -> dict:
        """nnsight's logit-lens recipe (trace, every layer's output through model.norm and lm_head,
        softmax, save), at the last position only (the tutorial projects every position)."""
        model = self.nn
        saved = []
        with torch.inference_mode(), model.trace(prompt):
            for layer in model.model.layers:
                out = layer.output
                out = out[0] if isinstance(out, tuple) else out
                logits = model.lm_head(model.model.norm(out[:, -1]))
                if self.cap:
                    logits = torch.tanh(logits / self.cap) * self.cap
                saved.append(logits.softmax(-1).topk(5, dim=-1).indices.save())
        top = [s[0].tolist() for s in saved]
        return {"n_tokens": None, "top5": top}

    # -- W2 ------------------------------------------------------------------------------
    def _generate(self, x: torch.Tensor, n: int, eos: list[int]) -> torch.Tensor:
        return self.hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, do_sample=False,
                                pad_token_id=self.tok.pad_token_id, eos_token_id=eos, top_p=None, top_k=None,
                                temperature=None)[:, x.shape[1]:]

    def ablation(self, ids: list[int], eos: list[int]) -> dict:
        """The sequential loop: baseline, then for every layer a forward hook that zeroes the MLP's
        output and one ``generate`` (greedy, KV cache)."""
        x = torch.tensor([ids])
        outs = []
        layers = self.hf.model.layers
        with torch.inference_mode():
            for layer in [None, *range(len(layers))]:
                handle = None
                if layer is not None:
                    handle = layers[layer].mlp.register_forward_hook(lambda m, i, o: torch.zeros_like(o))
                try:
                    outs.append(_strip(self._generate(x, W.ABLATION_TOKENS, eos)[0].tolist(), eos))
                finally:
                    if handle is not None:
                        handle.remove()
        return {"outputs": outs}

    # -- W3 ------------------------------------------------------------------------------
    def steer(self, setup: dict, eos: list[int], batched: bool) -> dict:
        """A forward hook on decoder layer ``STEER_LAYER`` adds ``factor * unit`` to its output (every
        position, prompt and generated). Loop: one ``generate`` per coefficient. Batched: one
        ``generate`` of 5 identical rows, each with its own vector (no padding needed)."""
        unit = torch.tensor(setup["unit"], dtype=torch.float32)
        factors = setup["factors"]
        block = self.hf.model.layers[W.STEER_LAYER]
        x = torch.tensor([setup["ids"]])
        outs = []
        with torch.inference_mode():
            if batched:
                vecs = torch.stack([unit * f for f in factors])[:, None, :]  # [rows, 1, hidden]
                handle = block.register_forward_hook(lambda m, i, o: _add(o, vecs))
                try:
                    gen = self._generate(x.repeat(len(factors), 1), W.STEER_TOKENS, eos)
                finally:
                    handle.remove()
                outs = [_strip(row.tolist(), eos, pad=self.tok.pad_token_id) for row in gen]
            else:
                for f in factors:
                    handle = block.register_forward_hook(lambda m, i, o, v=unit * f: _add(o, v)) if f else None
                    try:
                        outs.append(_strip(self._generate(x, W.STEER_TOKENS, eos)[0].tolist(), eos))
                    finally:
                        if handle is not None:
                            handle.remove()
        return {"outputs": outs}

    # -- W4 ------------------------------------------------------------------------------
    def collect(self, prompts: list[str], batch: int, return_array: bool = False) -> dict:
        """Batched ``output_hidden_states`` on the base model (left padding, attention mask), the last
        position of every layer into one host array [prompts, layers, hidden]."""
        import numpy as np

        parts = []
        with torch.inference_mode():
            for i in range(0, len(prompts), batch):
                enc = self.tok(prompts[i:i + batch], return_tensors="pt", padding=True)
                out = self.hf.model(**enc, output_hidden_states=True)
                parts.append(torch.stack([h[:, -1] for h in out.hidden_states[1:]], dim=1).numpy())
        arr = np.concatenate(parts)
        return {"shape": list(arr.shape), **({"array": arr} if return_array else {})}

    def collect_ids(self, prompts: list[str]) -> list[list[int]]:
        return [self.tok(p).input_ids for p in prompts]


def _add(o, v):
    if isinstance(o, tuple):
        return (o[0] + v, *o[1:])
    return o + v


def _strip(ids: list[int], eos: list[int], pad: int | None = None) -> list[int]:
    """Generated ids up to and including the first end token (what lazarus reports)."""
    for i, t in enumerate(ids):
        if t in eos:
            return ids[:i + 1]
    return ids
