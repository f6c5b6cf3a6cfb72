"""``tuned-lens eval``: how close each layer's logit lens and tuned lens come to the final distribution.

Per layer, averaged over the text's positions (all but the first of each sequence: its residual is
the attention sink and it predicts from no context): KL(final || logit lens) and KL(final || tuned
lens) in bits, and how often each lens's top-1 equals the final top-1 (Belrose et al. 2023, fig. 1).
Both lenses are read through ``engine.lens.fast_lens_logits`` (the one reader) and measured with
``engine.distributions`` (float64 accumulation; KL as a sum of non-negative terms).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from engine.errors import InputError
from engine.results.tuned_lens import LensEvalLayer, LensEvalRequest, LensEvalResult

if TYPE_CHECKING:
    from engine.models import LoadedModel

LN2 = 0.6931471805599453


def _eval_sequences(lm: LoadedModel, req: LensEvalRequest) -> tuple[str, list[list[int]]]:
    from engine.tuned_lens_corpus import load_corpus, sequences

    tok = lm.tokenizer
    if req.text is not None:
        if req.text == "":
            raise InputError("empty eval text")
        ids = tok.encode(req.text)
        if len(ids) < 2:
            raise InputError("eval text is a single token: nothing to predict")
        seqs = [ids[i:i + req.seq_len] for i in range(0, len(ids), req.seq_len)]
        return f"given text ({len(ids)} tokens)", [x for x in seqs if len(x) >= 2]
    n_seq = -(-req.tokens // (req.seq_len - 1))
    corpus = load_corpus(None, "eval", min_chars=n_seq * req.seq_len * 5)
    seqs = sequences(tok.encode, corpus, req.seq_len, max_sequences=n_seq)
    if not seqs:
        raise InputError("the held-out corpus is empty")
    return corpus.description, seqs


def evaluate(lm: LoadedModel, req: LensEvalRequest, cancel: Callable[[], bool] | None = None,
             on_step: Callable[[int, int], None] | None = None) -> LensEvalResult:
    import mlx.core as mx
    import numpy as np

    from engine.distributions import lens_stats
    from engine.hooks import Batch, CaptureSpec, HookedModel, SiteKind
    from engine.lens import fast_lens_logits
    from engine.tuned_lens import resolve_lens

    spec = req.lens if req.lens.startswith("tuned") else f"tuned:{req.lens}"
    lens = resolve_lens(lm, spec)
    assert lens is not None
    hm = HookedModel(lm)
    L = hm.n_layers
    desc, seqs = _eval_sequences(lm, req)
    budget = req.tokens if req.text is None else None
    kl = np.zeros((2, L))  # summed KL (nats): logit, tuned
    agree = np.zeros((2, L))
    count = 0
    for si, ids in enumerate(seqs):
        n = len(ids) - 1 if budget is None else min(len(ids) - 1, budget - count)
        if n <= 0:
            break
        positions = list(range(1, n + 1))
        cap = CaptureSpec(kinds=(SiteKind.resid_post,), layers=None, positions=positions)
        out = hm.forward(Batch.from_lists([ids[:n + 1]]), capture=cap, logits="none", cancel=cancel)
        resid = [out.captures[f"blocks.{layer}.resid_post"][0] for layer in range(L)]  # [n, hidden] each
        for a in range(0, n, req.batch_positions):
            sl = slice(a, min(n, a + req.batch_positions))
            final = np.array(fast_lens_logits(hm, resid[L - 1][sl]))
            m = final.shape[0]
            for layer in range(L):
                if cancel is not None and cancel():
                    from engine.errors import Cancelled

                    raise Cancelled("cancelled")
                r = resid[layer][sl]
                rows = np.concatenate([final, np.array(fast_lens_logits(hm, r)),
                                       np.array(fast_lens_logits(hm, r, [layer] * m, lens))])
                pairs = [(i, m + i) for i in range(m)] + [(i, 2 * m + i) for i in range(m)]
                st = lens_stats(rows, 1, [], pairs)
                kls = np.array(st.kl).reshape(2, m)  # non-negative by construction (engine.distributions)
                top = np.array(st.top_ids)[:, 0]
                kl[:, layer] += kls.sum(axis=1)
                agree[:, layer] += (top[m:].reshape(2, m) == top[:m][None]).sum(axis=1)
            mx.clear_cache()
        count += n
        if on_step is not None:
            on_step(si + 1, len(seqs))
    if count == 0:
        raise InputError("no positions to evaluate")
    kl_bits = kl / count / LN2
    acc = agree / count
    layers = [LensEvalLayer(layer=i, logit_kl=float(kl_bits[0, i]), tuned_kl=float(kl_bits[1, i]),
                            logit_top1=float(acc[0, i]), tuned_top1=float(acc[1, i])) for i in range(L)]
    return LensEvalResult(model_id=lm.info.model_id, request=req, lens=lens.binding, text=desc, tokens=count,
                          layers=layers, mean_logit_kl=float(kl_bits[0].mean()), mean_tuned_kl=float(kl_bits[1].mean()))
