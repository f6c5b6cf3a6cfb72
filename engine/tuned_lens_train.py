"""Training a tuned lens with MLX autodiff through the one hooked forward.

Each step: a few corpus sequences run through ``HookedModel.forward`` once, capturing every
layer's ``resid_post`` at a random subset of positions (neighbouring positions say much the same,
and the forward costs about two layers' worth of lens training per token). The final distribution
is computed once per step from the last layer; then, a chunk of layers at a time, the translated
residuals go through the model's own final norm and unembedding and the loss is
``sum over layers of mean over positions KL(final || lens)`` (full vocabulary, exact). The
gradients of all chunks are gathered, then one Adam step updates every translator.

The cost is the unembedding, forward and backward, per position per layer (SmolLM2: 49152 x 576,
~57M multiply-adds twice, plus a softmax over the vocabulary); the defaults (``TrainSettings``)
fit SmolLM2 in under 15 minutes on two CPU cores (docs/lens.md).

Progress: ``on_step(step, steps, kl_bits_per_layer)`` after every step. Cancellation is checked
between chunks; a cancelled run saves a checkpoint (atomically) before re-raising, as do
periodic checkpoints; ``resume=True`` continues from it bit for bit (the data of step s depends
only on the seed and s).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.errors import Cancelled, InputError
from engine.results.tuned_lens import TrainReport, TrainSettings

if TYPE_CHECKING:
    from engine.models import LoadedModel

LN2 = math.log(2.0)
# A layer whose KL on a batch is below this (nats) already reads the final distribution to float32
# precision (the last layer: its logit lens IS the model's output): its gradient is rounding noise,
# which Adam's scale-free steps would turn into full-size updates, so it is not updated on that batch.
EXACT_BELOW = 1e-4


def checkpoint_path(out: str | Path) -> Path:
    p = Path(out)
    return p.with_name(p.name.removesuffix(".safetensors") + ".ckpt.safetensors")


def _optimizer(s: TrainSettings, hidden: int) -> Any:
    """Adam for Â and for β, each with warm-up then cosine decay. Adam moves every element by about
    its rate per step, whatever the gradient's scale; for a hidden x hidden matrix whose gradient is
    close to rank one that is a change of spectral norm ~rate x hidden, hence the per-element rate
    ``matrix_lr / hidden`` for Â."""
    import mlx.optimizers as optim

    steps = s.n_steps
    warm = min(s.warmup, max(0, steps - 1))

    def schedule(lr: float) -> Any:
        decay = optim.cosine_decay(lr, max(1, steps - warm), lr * 0.05)
        return decay if warm == 0 else optim.join_schedules([optim.linear_schedule(lr / warm, lr, warm), decay], [warm])

    return optim.MultiOptimizer([optim.Adam(learning_rate=schedule(s.matrix_lr / hidden), eps=s.adam_eps),
                                 optim.Adam(learning_rate=schedule(s.lr), eps=s.adam_eps)],
                                [lambda path, _: path.endswith(".matrix")])


def _sequences(lm: LoadedModel, s: TrainSettings) -> tuple[str, list[list[int]]]:
    from engine.tuned_lens_corpus import load_corpus, sequences

    tok = lm.tokenizer
    need = s.n_steps * s.sequences_per_step
    corpus = load_corpus(s.corpus, "train", min_chars=need * s.seq_len * 5)

    def tokenize(text: str) -> list[int]:
        return tok.encode(text)

    bos = [tok.bos_id] if tok.bos_id is not None and tok.encode("a")[:1] == [tok.bos_id] else []
    body = sequences(lambda t: tokenize(t)[len(bos):], corpus, s.seq_len - len(bos), max_sequences=need)
    if not body:
        raise InputError(f"corpus has no document of {s.seq_len} tokens (use --seq-len to shorten)")
    order = np.random.default_rng(s.seed).permutation(len(body))
    return corpus.description, [bos + body[i] for i in order]


def _step_batch(seqs: list[list[int]], s: TrainSettings, step: int) -> tuple[list[list[int]], list[int]]:
    """The sequences and positions of ``step`` (a function of the seed and step only)."""
    k = s.sequences_per_step
    rows = [seqs[(step * k + j) % len(seqs)] for j in range(k)]
    rng = np.random.default_rng([s.seed, step])
    n_pos = min(s.positions_per_sequence, s.seq_len - 1)
    positions = sorted(int(x) for x in rng.choice(np.arange(1, s.seq_len), n_pos, replace=False))
    return rows, positions


def _kl_chunk(lm: LoadedModel, weight: Any, bias: Any, resid: Any, p_final: Any, neg_entropy: Any) -> Any:
    """Per-layer mean KL(final || tuned lens) in nats: ``resid`` [C, T, hidden] of C layers,
    ``weight``/``bias`` their translators, ``p_final`` [T, vocab], ``neg_entropy`` [T] = sum p log p."""
    import mlx.core as mx

    from engine.tuned_lens import translate

    logits = lm.adapter.lens_logits(lm.model, translate(resid, weight, bias)).astype(mx.float32)  # [C, T, V]
    log_q = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    return (neg_entropy - (p_final * log_q).sum(axis=-1)).mean(axis=-1)  # [C]


def _real(ahat: Any, beta: Any, scale: Any) -> tuple[Any, Any]:
    """The translator (A, b) of standardized parameters: A = Â ⊙ (σ_i / σ_j), b = β ⊙ σ (σ [..., d])."""
    return ahat * (scale[..., :, None] / scale[..., None, :]), beta * scale


def _load_checkpoint(lm: LoadedModel, ckpt: Path) -> tuple[TrainSettings, list[dict[str, Any]], Any, int, float,
                                                           dict[str, np.ndarray]]:
    """The settings, parameters (Â, β), scale, step, seconds and raw tensors of the checkpoint ``ckpt``."""
    import mlx.core as mx

    from engine.tuned_lens import check_binding, read_lens_file

    if not ckpt.is_file():
        raise InputError(f"no checkpoint to resume: {ckpt}")
    tensors, meta, saved = read_lens_file(ckpt)
    check_binding(lm, saved)
    state = json.loads(meta["state"])
    s = TrainSettings(**state["settings"])
    params = [{"matrix": mx.array(a), "bias": mx.array(b)} for a, b in zip(tensors["ahat"], tensors["beta"])]
    return s, params, mx.array(tensors["scale"]), int(state["step"]), float(state["seconds"]), tensors


def _save(path: Path, binding: dict[str, Any], s: TrainSettings, params: list[dict[str, Any]], scale: Any, opt: Any,
          step: int, seconds: float, final: bool) -> None:
    """Write the raw translators (A, b) to ``path``; unless ``final``, with the state to resume from."""
    import mlx.core as mx

    from engine.mx_values import tree_leaves
    from engine.tuned_lens import save_lens

    assert scale is not None
    w, b = _real(mx.stack([p["matrix"] for p in params]), mx.stack([p["bias"] for p in params]), scale)
    meta = {**binding, "tokens": step * s.batch_tokens, "steps": step}
    extra: dict[str, Any] = {}
    if not final:
        extra = {"state": json.dumps({"settings": s.model_dump(), "step": step, "seconds": seconds}),
                 "scale": np.array(scale),
                 "ahat": np.stack([np.array(p["matrix"]) for p in params]),
                 "beta": np.stack([np.array(p["bias"]) for p in params]),
                 **{f"opt.{k}": np.array(v) for k, v in tree_leaves(opt.state)}}
    save_lens(path, np.array(w), np.array(b), meta, extra)


def _step_targets(lm: LoadedModel, hm: Any, seqs: list[list[int]], s: TrainSettings, step: int, scale: Any,
                  cancel: Callable[[], bool] | None) -> tuple[Any, Any, Any, Any]:
    """One forward on ``step``'s batch: every layer's residual [L, T, hidden], the final distribution
    p [T, vocab], sum p log p [T], and the scale (measured here when ``scale`` is None)."""
    import mlx.core as mx

    from engine.hooks import Batch, CaptureSpec, SiteKind

    L, d = hm.n_layers, lm.info.hidden_size
    rows, positions = _step_batch(seqs, s, step)
    cap = CaptureSpec(kinds=(SiteKind.resid_post,), layers=None, positions=positions)
    fwd = hm.forward(Batch.from_lists(rows), capture=cap, logits="none", cancel=cancel)
    resid = mx.stack([fwd.captures[f"blocks.{layer}.resid_post"].reshape(-1, d) for layer in range(L)])
    if scale is None:
        rms = mx.sqrt((resid.astype(mx.float32) ** 2).mean(axis=1))  # [L, d]
        scale = mx.maximum(rms, 1e-3 * rms.mean(axis=-1, keepdims=True) + 1e-12)
    final = lm.adapter.lens_logits(lm.model, resid[L - 1]).astype(mx.float32)  # [T, V], once per step
    log_p = final - mx.logsumexp(final, axis=-1, keepdims=True)
    p_final = mx.exp(log_p)
    neg_ent = (p_final * log_p).sum(axis=-1)
    mx.eval(resid, p_final, neg_ent, scale)
    return resid, p_final, neg_ent, scale


def _gradients(grad_fn: Any, chunks: list[list[int]], params: list[dict[str, Any]], scale: Any, resid: Any,
               p_final: Any, neg_ent: Any,
               cancel: Callable[[], bool] | None) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Every layer's gradient (zero for a layer already exact, see ``EXACT_BELOW``) and KL in nats,
    a chunk of layers at a time; cancellation is checked between chunks."""
    import mlx.core as mx

    L = len(params)
    grads: list[dict[str, Any]] = [{}] * L
    kl_step = np.zeros(L)
    for layers in chunks:
        if cancel is not None and cancel():
            raise Cancelled("cancelled")
        a, z = layers[0], layers[-1] + 1
        (_, kl), g = grad_fn(params[a:z], scale[a:z], resid[a:z], p_final, neg_ent)
        mx.eval(kl, g)
        kl_np = np.array(kl)
        grads[a:z] = [gi if k >= EXACT_BELOW else {n: mx.zeros_like(v) for n, v in gi.items()}
                      for gi, k in zip(g, kl_np)]
        kl_step[a:z] = kl_np
    return grads, kl_step


def train_lens(lm: LoadedModel, s: TrainSettings, out: str | Path, *, resume: bool = False,
               cancel: Callable[[], bool] | None = None,
               on_step: Callable[[int, int, list[float]], None] | None = None,
               checkpoint_every: int = 20) -> TrainReport:
    """Train (or, with ``resume``, continue) a tuned lens for ``lm`` and write it to ``out``.

    Adam runs on standardized parameters: with σ the per-dimension RMS of each layer's residual
    (measured on the first step's batch), the translator is A = Â ⊙ (σ_i/σ_j), b = β ⊙ σ. The
    residual stream's scales span three orders of magnitude (SmolLM2: a few dimensions carry a
    nearly constant offset of 50-450 while the median dimension's RMS is 1-20), and Adam's steps
    are scale-free: in raw units a learning rate small enough for the typical dimension would take
    thousands of steps to move the big offsets. The file holds the raw A and b."""
    import mlx.core as mx
    from mlx.utils import tree_unflatten

    from engine.hooks import HookedModel
    from engine.tuned_lens import read_lens_file, weights_hash

    out = Path(out)
    ckpt = checkpoint_path(out)
    if not out.parent.exists():
        raise InputError(f"output directory does not exist: {out.parent}")
    hm = HookedModel(lm)
    L, d = hm.n_layers, lm.info.hidden_size
    params = [{"matrix": mx.zeros((d, d)), "bias": mx.zeros((d,))} for _ in range(L)]  # Â, β
    scale = None  # [L, d], measured on the first step
    start, seconds = 0, 0.0
    tensors: dict[str, np.ndarray] = {}
    if resume:
        s, params, scale, start, seconds, tensors = _load_checkpoint(lm, ckpt)
    elif ckpt.exists():
        raise InputError(f"{ckpt} is left from an interrupted run: pass --resume to continue it, or delete it")
    opt = _optimizer(s, d)
    opt.init({"layers": params})
    if resume:
        opt.state = tree_unflatten([(k.removeprefix("opt."), mx.array(v)) for k, v in tensors.items()
                                    if k.startswith("opt.")])
    desc, seqs = _sequences(lm, s)
    steps = s.n_steps
    chunk = max(1, s.layer_chunk_rows // s.batch_tokens)
    chunks = [list(range(a, min(L, a + chunk))) for a in range(0, L, chunk)]
    binding: dict[str, Any] = {"model_id": lm.info.model_id, "weights_hash": weights_hash(lm), "hidden_size": d,
                               "num_layers": L, "dtype": lm.info.dtype, "corpus": desc, "tokens": 0, "steps": 0}

    def loss(ps: list[dict[str, Any]], sc: Any, resid: Any, p_final: Any, neg_ent: Any) -> tuple[Any, Any]:
        w, b = _real(mx.stack([p["matrix"] for p in ps]), mx.stack([p["bias"] for p in ps]), sc)
        kl = _kl_chunk(lm, w, b, resid, p_final, neg_ent)
        return kl.sum(), kl

    grad_fn = mx.value_and_grad(loss)
    recent: list[np.ndarray] = []
    step = start
    try:
        while step < steps:
            t0 = time.perf_counter()
            resid, p_final, neg_ent, scale = _step_targets(lm, hm, seqs, s, step, scale, cancel)
            grads, kl_step = _gradients(grad_fn, chunks, params, scale, resid, p_final, neg_ent, cancel)
            params = opt.apply_gradients({"layers": grads}, {"layers": params})["layers"]
            mx.eval(params, opt.state)
            step += 1
            seconds += time.perf_counter() - t0
            recent = (recent + [kl_step / LN2])[-10:]
            if on_step is not None:
                on_step(step, steps, list(np.mean(recent, axis=0)))
            if checkpoint_every and step % checkpoint_every == 0 and step < steps:
                _save(ckpt, binding, s, params, scale, opt, step, seconds, final=False)
    except Cancelled:
        if step > start:
            _save(ckpt, binding, s, params, scale, opt, step, seconds, final=False)
        raise
    _save(out, binding, s, params, scale, opt, step, seconds, final=True)
    ckpt.unlink(missing_ok=True)
    _, _, b = read_lens_file(out)
    return TrainReport(path=str(out), binding=b, steps=step, tokens=step * s.batch_tokens, seconds=seconds,
                       kl_bits=[float(x) for x in np.mean(recent, axis=0)] if recent else [])
