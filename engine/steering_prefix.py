"""The clean (unsteered) reads a steering run makes: the scale ``s`` of each prompt at each layer,
the batched sweep's shared prompt prefix, and the projections that score the outputs.

``s`` is the mean per-token L2 norm of layer L's output on the (formatted) prompt, **excluding
position 0**: the first token is an attention sink whose norm is ~100x the others (SmolLM2, layer
15: 25 054 vs 145-208), so including it would make ``s`` depend on the prompt's length (36 tokens:
~870 instead of ~175). Coefficient 1 therefore adds one typical token's norm. A one-token prompt
uses its only token.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import mlx.core as mx
import numpy as np

from engine.hooks import Batch, CaptureSpec, HookedModel, Intervention, KVState, SiteKind


def _resid_post(captures: dict[str, mx.array], layer: int) -> np.ndarray:
    return np.array(captures[f"blocks.{layer}.resid_post"].astype(mx.float32))


def _token_scales(resid: np.ndarray, batch: Batch) -> np.ndarray:
    """``s`` of each row of ``batch`` from one layer's output [B, S, hidden] (see the module docstring)."""
    norms = np.linalg.norm(resid, axis=-1)
    scales = np.zeros(len(batch.pad))
    for r, (pad, n) in enumerate(zip(batch.pad, batch.lengths)):
        real = norms[r, pad:pad + n]
        scales[r] = float(real[1:].mean() if n > 1 else real.mean())
    return scales


def prompt_scale(hm: HookedModel, rows: Sequence[Sequence[int]], layers: Sequence[int]) -> np.ndarray:
    """``s`` per (layer, row): mean per-token L2 norm of the layer's output over the row's real
    tokens, excluding position 0 (the attention sink; see the module docstring). [layers, rows]."""
    batch = Batch.from_lists(rows, hm.lm.tokenizer.batch_pad_id)
    out = hm.forward(batch, capture=CaptureSpec(layers=list(layers)), logits="none", stop_layer=max(layers) + 1)
    return np.stack([_token_scales(_resid_post(out.captures, layer), batch) for layer in layers])


def clean_projections(hm: HookedModel, prompt_rows: Sequence[list[int]], gen_rows: Sequence[list[int]],
                      layers: Sequence[int], units: Sequence[np.ndarray]) -> list[tuple[float, float]]:
    """Clean (unsteered) read of prompt + output: projection of layer ``layers[i]``'s output on
    ``units[i]`` at the last token, and its mean over the generated tokens. One forward."""
    full = [list(p) + list(g) for p, g in zip(prompt_rows, gen_rows)]
    need = sorted(set(layers))
    batch = Batch.from_lists(full, hm.lm.tokenizer.batch_pad_id)
    out = hm.forward(batch, capture=CaptureSpec(layers=need), logits="none", stop_layer=max(need) + 1)
    caps = {lay: _resid_post(out.captures, lay) for lay in need}
    res = []
    for r, (lay, u) in enumerate(zip(layers, units)):
        proj = caps[lay][r] @ u  # [S]
        n_gen = len(gen_rows[r])
        gen = proj[-n_gen:] if n_gen else proj[-1:]
        res.append((float(proj[-1]), float(gen.mean())))
    return res


class CleanPrefix:
    """The batched sweep's shared work. One clean (unsteered) pass of the distinct prompts through
    layers 0..max(grid layers), with a KV cache, gives: ``s`` per (layer, prompt); the prompt's
    prefix below the lowest steered layer, which every row of that prompt shares (its KV cache and
    the residual entering that layer are copied to the rows, so the steered prompt pass runs only
    the layers from there up); and the clean context for reading the outputs back (only the
    generated tokens are run for the projections)."""

    def __init__(self, hm: HookedModel, prompt_rows: Sequence[list[int]], layers: Sequence[int],
                 cancel: Callable[[], bool] | None) -> None:
        self.hm, self.layers = hm, list(layers)
        self.lmin, self.lmax = min(layers), max(layers)
        self.pad_id = hm.lm.tokenizer.batch_pad_id
        self.batch = Batch.from_lists(prompt_rows, self.pad_id)
        self.kv = KVState(hm.n_layers, self.batch.pad)
        out = hm.forward(self.batch, capture=CaptureSpec(kinds=(SiteKind.resid_post, SiteKind.resid_pre),
                                                         layers=self.layers), kv=self.kv, logits="none",
                         stop_layer=self.lmax + 1, cancel=cancel)
        self.kv.offset = self.batch.ids.shape[1]  # caches of layers 0..lmax hold the prompt
        self.h_in = out.captures[f"blocks.{self.lmin}.resid_pre"]  # residual entering the lowest layer
        self.post = {lay: _resid_post(out.captures, lay) for lay in self.layers}
        self.scales = np.stack([_token_scales(self.post[lay], self.batch) for lay in self.layers])

    def _rows_batch(self, src: Sequence[int], ids: mx.array) -> Batch:
        return Batch(ids, [self.batch.pad[i] for i in src], [self.batch.lengths[i] for i in src])

    def steered_prompt(self, src: Sequence[int], ivs: Sequence[Intervention]) -> tuple[KVState, mx.array]:
        """Run the prompt rows (row i = prompt ``src[i]``) from the lowest steered layer up, with
        their interventions; returns the rows' KV state and their first next-token logits."""
        idx = mx.array(list(src), dtype=mx.int32)
        kv = self.kv.select_rows(src, layers=range(self.lmin))  # the layers from lmin up start empty
        kv.offset = 0  # the layers about to run start from an empty cache
        out = self.hm.forward(self._rows_batch(src, self.batch.ids[idx]), interventions=ivs, kv=kv, logits="last",
                              start_layer=self.lmin, h=self.h_in[idx])
        assert out.logits is not None  # the pass ran the whole stack
        return kv, out.logits[:, -1, :]

    def projections(self, src: Sequence[int], gens: Sequence[list[int]], layers: Sequence[int],
                    units: Sequence[np.ndarray]) -> list[tuple[float, float]]:
        """Like ``clean_projections``, continuing the clean prompt cache with the generated tokens only
        (right-padded: causal attention keeps the padding out of the real positions)."""
        width = max((len(g) for g in gens), default=0)
        caps: dict[int, np.ndarray] = {}
        if width:
            kv = self.kv.select_rows(src, layers=range(self.lmax + 1))
            ids = mx.array([list(g) + [self.pad_id] * (width - len(g)) for g in gens], dtype=mx.int32)
            out = self.hm.forward(self._rows_batch(src, ids), capture=CaptureSpec(layers=self.layers), kv=kv,
                                  logits="none", stop_layer=self.lmax + 1)
            caps = {lay: _resid_post(out.captures, lay) for lay in self.layers}
        res = []
        for r, (pi, g, lay, u) in enumerate(zip(src, gens, layers, units)):
            if g:
                proj = caps[lay][r, :len(g)] @ u
                res.append((float(proj[-1]), float(proj.mean())))
            else:  # nothing generated: the last prompt token
                last = float(self.post[lay][pi, -1] @ u)
                res.append((last, last))
        return res
