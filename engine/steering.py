"""Activation steering: direction extraction from contrastive prompts, and generation with the
direction added to one layer's output.

Extraction (one batched forward over all positive and negative prompts, every layer captured at
the last prompt position):

- ``mean``: direction = mean over pairs of (h_pos - h_neg) at layer L output (resid_post).
- ``pca``: the first principal axis of the pair differences, sign fixed so that positives
  project higher; scaled by the mean projection of the differences on it (so ``norm`` is the
  mean pair separation along it). The axis is that of the uncentred differences (SVD of the
  [pairs, hidden] difference matrix): centring would remove the shared offset, which is the
  signal, and is undefined for a single pair.

Application: ``coef * unit(direction) * s`` is added to layer L's output (every position, or one
prompt position) for the prompt and for every generated token, through the KV cache. ``s`` is
the mean per-token L2 norm of layer L's output on the (formatted) prompt, **excluding position
0**: the first token is an attention sink whose norm is ~100x the others (SmolLM2, layer 15:
25 054 vs 145-208), so including it would make ``s`` depend on the prompt's length (36 tokens:
~870 instead of ~175). Coefficient 1 therefore adds one typical token's norm. A one-token prompt
uses its only token.

Sweeps: every (prompt, layer, coefficient) setting is one row of ONE batch, its add-vector
intervention bound to its row (``Intervention.row``); coefficient 0 rows get no intervention, so
they are exactly the unsteered generation. ``batched=False`` runs the settings one at a time
(the same outputs, slower; kept for the comparison benchmark).

Scores per output: an optional text criterion, and the projection on the unit direction of the
layer-L output at the last generated token when the *unsteered* model reads prompt + output (so
the score measures where the generated text sits, not the vector we added), plus its mean over
the generated positions.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from engine.criteria import NEGATIVE_WORDS, POSITIVE_WORDS, polarity_passes, sentiment_hits, word_hits
from engine.direction_files import load_direction, save_direction
from engine.errors import InputError
from engine.fileio import read_text
from engine.generate import generate_ids
from engine.hooks import Batch, CaptureSpec, HookedModel, Intervention, Site, SiteKind
from engine.models import LoadedModel
from engine.results.steering import (
    CriterionScore,
    DirectionInfo,
    ExtractRequest,
    ExtractResult,
    LayerSeparation,
    SteeredOutput,
    SteerRequest,
    SteerResult,
)

__all__ = [
    "NEGATIVE_WORDS",
    "POSITIVE_WORDS",
    "SteeringDirection",
    "prompt_scale",
    "run_extract",
    "run_steer",
    "score_criterion",
    "steer_generate",
]


# -- prompts and captures ---------------------------------------------------------------------
def _use_chat(lm: LoadedModel, chat: bool) -> bool:
    return bool(chat) and lm.tokenizer.chat_template is not None


def _rows(lm: LoadedModel, prompts: Sequence[str], chat: bool) -> list[list[int]]:
    if not prompts or any(p == "" for p in prompts):
        raise InputError("empty prompt")
    return [lm.tokenizer.prepare(p, chat) for p in prompts]


def _last_hidden(hm: HookedModel, rows: Sequence[Sequence[int]], layers: Sequence[int],
                 cancel: Callable[[], bool] | None = None) -> np.ndarray:
    """Layer outputs at each row's last token, in one forward: [len(layers), rows, hidden] (float64)."""
    pad_id = hm.lm.tokenizer.batch_pad_id
    out = hm.forward(Batch.from_lists(rows, pad_id), capture=CaptureSpec(layers=list(layers), positions="last"),
                     logits="none", stop_layer=max(layers) + 1, cancel=cancel)
    return np.stack([np.array(out.captures[f"blocks.{layer}.resid_post"].astype(mx.float32))[:, -1, :]
                     for layer in layers]).astype(np.float64)


def prompt_scale(hm: HookedModel, rows: Sequence[Sequence[int]], layers: Sequence[int]) -> np.ndarray:
    """``s`` per (layer, row): mean per-token L2 norm of the layer's output over the row's real
    tokens, excluding position 0 (the attention sink; see the module docstring). [layers, rows]."""
    pad_id = hm.lm.tokenizer.batch_pad_id
    batch = Batch.from_lists(rows, pad_id)
    out = hm.forward(batch, capture=CaptureSpec(layers=list(layers)), logits="none", stop_layer=max(layers) + 1)
    scales = np.zeros((len(layers), len(rows)))
    for i, layer in enumerate(layers):
        norms = np.linalg.norm(np.array(out.captures[f"blocks.{layer}.resid_post"].astype(mx.float32)), axis=-1)
        for r, (pad, n) in enumerate(zip(batch.pad, batch.lengths)):
            real = norms[r, pad:pad + n]
            scales[i, r] = float(real[1:].mean() if n > 1 else real.mean())
    return scales


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    if n == 0.0 or not np.isfinite(n):
        raise InputError("the steering direction is zero (the positive and negative prompts give the same state)")
    return v / n


def _direction_from_diffs(diffs: np.ndarray, method: str) -> np.ndarray:
    """diffs [pairs, hidden] -> direction [hidden] (``mean`` or ``pca``)."""
    mean = diffs.mean(axis=0)
    if method == "mean":
        return mean
    if method == "pca":
        _, _, vt = np.linalg.svd(diffs, full_matrices=False)
        axis = vt[0]
        proj = diffs @ axis
        if proj.mean() < 0:
            axis, proj = -axis, -proj
        return axis * proj.mean()
    raise InputError(f"unknown method {method!r} (mean or pca)")


def _separation(diffs: np.ndarray, h_all: np.ndarray, layer: int, method: str) -> LayerSeparation:
    mean = diffs.mean(axis=0)
    typical = float(np.linalg.norm(h_all, axis=-1).mean())
    sep = float(np.linalg.norm(mean) / typical) if typical > 0 else 0.0
    n = diffs.shape[0]
    if n < 2:
        return LayerSeparation(layer=layer, separation=sep)
    coss, hits = [], []
    for i in range(n):
        rest = _direction_from_diffs(np.delete(diffs, i, axis=0), method)
        rn, dn = np.linalg.norm(rest), np.linalg.norm(diffs[i])
        coss.append(float(rest @ diffs[i] / (rn * dn)) if rn > 0 and dn > 0 else 0.0)
        hits.append(float(rest @ diffs[i] > 0))
    return LayerSeparation(layer=layer, separation=sep, consistency=float(np.mean(coss)),
                           pair_accuracy=float(np.mean(hits)))


# -- the direction ----------------------------------------------------------------------------
class SteeringDirection:
    """A steering direction for one model's residual stream (``hidden_size`` values) at ``layer``.

    ``SteeringDirection.extract(lm, positive, negative, layer)`` computes one; ``.save(path)`` /
    ``SteeringDirection.load(path)`` round-trip it through ``.npz`` (no pickles);
    ``SteeringDirection.neuron(lm, i, layer)`` is the one-hot direction of dimension ``i``.
    After an extraction, ``per_layer`` holds the direction of every layer (for layer grids) and
    ``layer_separation`` how well each layer separates the pairs.
    """

    def __init__(self, direction: Any, *, layer: int | None, model_id: str = "unknown", method: str = "mean",
                 name: str = "direction", positive_prompts: Sequence[str] = (), negative_prompts: Sequence[str] = (),
                 positive_label: str = "positive", negative_label: str = "negative", chat: bool | None = None,
                 neuron: int | None = None, source: str = "extract", path: str | None = None,
                 per_layer: dict[int, np.ndarray] | None = None,
                 layer_separation: Sequence[LayerSeparation] = ()) -> None:
        vec = np.asarray(direction, dtype=np.float64).reshape(-1)
        if vec.size == 0 or not np.all(np.isfinite(vec)):
            raise InputError("a steering direction must be a non-empty vector of finite numbers")
        self.direction = vec
        self.layer = layer
        self.model_id = model_id
        self.method = method
        self.name = name
        self.positive_prompts = list(positive_prompts)
        self.negative_prompts = list(negative_prompts)
        self.positive_label = positive_label
        self.negative_label = negative_label
        self.chat = chat
        self.neuron_index = neuron
        self.source = source
        self.path = path
        self.per_layer = dict(per_layer or {})
        self.layer_separation = list(layer_separation)

    # -- facts ---------------------------------------------------------------------------------
    @property
    def hidden_size(self) -> int:
        return int(self.direction.size)

    @property
    def norm(self) -> float:
        return float(np.linalg.norm(self.direction))

    def unit(self, layer: int | None = None) -> np.ndarray:
        """The unit direction; with ``layer``, that layer's own direction when one was extracted."""
        if layer is not None and layer in self.per_layer:
            return _unit(self.per_layer[layer])
        return _unit(self.direction)

    def at_layer(self, layer: int) -> SteeringDirection:
        """This direction re-targeted at ``layer`` (its own extraction there when available)."""
        vec = self.per_layer.get(layer, self.direction)
        return SteeringDirection(vec, layer=layer, model_id=self.model_id, method=self.method, name=self.name,
                                 positive_prompts=self.positive_prompts, negative_prompts=self.negative_prompts,
                                 positive_label=self.positive_label, negative_label=self.negative_label,
                                 chat=self.chat, neuron=self.neuron_index, source=self.source, path=self.path,
                                 per_layer=self.per_layer, layer_separation=self.layer_separation)

    def check(self, lm: LoadedModel, what: str | None = None) -> SteeringDirection:
        """Refuse a direction made for another hidden size (one line, InputError)."""
        hidden = lm.info.hidden_size
        if self.hidden_size != hidden:
            where = what or (self.path and f"direction file {self.path}") or "the direction"
            raise InputError(f"{where} has hidden size {self.hidden_size} (model {self.model_id}) but "
                             f"{lm.info.model_id} has hidden size {hidden}")
        return self

    def info(self) -> DirectionInfo:
        return DirectionInfo(name=self.name, source=self.source, path=self.path, layer=self.layer,  # type: ignore[arg-type]
                             method=self.method, model_id=self.model_id, hidden_size=self.hidden_size, norm=self.norm,
                             positive_label=self.positive_label, negative_label=self.negative_label,
                             positive_prompts=self.positive_prompts, negative_prompts=self.negative_prompts,
                             neuron=self.neuron_index, chat=self.chat, layer_separation=self.layer_separation)

    def __repr__(self) -> str:
        return (f"SteeringDirection(name={self.name!r}, layer={self.layer}, method={self.method!r}, "
                f"hidden_size={self.hidden_size}, norm={self.norm:.3f}, model_id={self.model_id!r})")

    # -- making one ----------------------------------------------------------------------------
    @classmethod
    def extract(cls, lm: LoadedModel, positive: Sequence[str] | str, negative: Sequence[str] | str,
                layer: int | None = None, *, method: str = "mean", chat: bool = False, name: str = "direction",
                positive_label: str = "positive", negative_label: str = "negative",
                cancel: Callable[[], bool] | None = None) -> SteeringDirection:
        """Mean (or PCA) of h_pos - h_neg at ``layer``'s output, last position, over the pairs.

        ``positive[i]`` pairs with ``negative[i]``. One forward runs all prompts and captures every
        layer, so ``per_layer`` and ``layer_separation`` cover the whole model. ``layer`` None =
        the middle layer. ``chat``: format the prompts with the chat template (when the model
        has one); off by default, as everywhere."""
        pos = [positive] if isinstance(positive, str) else list(positive)
        neg = [negative] if isinstance(negative, str) else list(negative)
        if not pos or not neg:
            raise InputError("extraction needs at least one positive and one negative prompt")
        if len(pos) != len(neg):
            raise InputError(f"positive and negative prompts must pair up: {len(pos)} positive, {len(neg)} negative")
        if method not in ("mean", "pca"):
            raise InputError(f"unknown method {method!r} (mean or pca)")
        hm = HookedModel(lm)
        layer = hm.n_layers // 2 if layer is None else hm.check_layer(layer)
        use_chat = _use_chat(lm, chat)
        rows = _rows(lm, pos + neg, use_chat)
        layers = list(range(hm.n_layers))
        h = _last_hidden(hm, rows, layers, cancel)  # [L, 2n, hidden]
        n = len(pos)
        per_layer: dict[int, np.ndarray] = {}
        seps: list[LayerSeparation] = []
        for i, lay in enumerate(layers):
            diffs = h[i, :n] - h[i, n:]
            per_layer[lay] = _direction_from_diffs(diffs, method)
            seps.append(_separation(diffs, h[i], lay, method))
        _unit(per_layer[layer])  # refuse a zero direction at the chosen layer
        return cls(per_layer[layer], layer=layer, model_id=lm.info.model_id, method=method, name=name,
                   positive_prompts=pos, negative_prompts=neg, positive_label=positive_label,
                   negative_label=negative_label, chat=use_chat, source="extract", per_layer=per_layer,
                   layer_separation=seps)

    @classmethod
    def neuron(cls, lm: LoadedModel | int, index: int, layer: int | None = None) -> SteeringDirection:
        """The one-hot direction of residual dimension ``index`` (``lm`` or a hidden size)."""
        hidden = lm if isinstance(lm, int) else lm.info.hidden_size
        if not 0 <= index < hidden:
            raise InputError(f"neuron {index} out of range (hidden size {hidden}: 0-{hidden - 1})")
        vec = np.zeros(hidden)
        vec[index] = 1.0
        model_id = "any" if isinstance(lm, int) else lm.info.model_id
        return cls(vec, layer=layer, model_id=model_id, method="neuron", name=f"neuron {index}", neuron=index,
                   source="neuron")

    # -- files ---------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write ``.npz`` (``engine.direction_files.save_direction``: atomic, no pickles)."""
        extra: dict[str, Any] = {
            "norm": np.float64(self.norm), "positive_prompts": list(self.positive_prompts),
            "negative_prompts": list(self.negative_prompts), "labels": [self.positive_label, self.negative_label],
            "label_positive": self.positive_label, "label_negative": self.negative_label,  # the probe spelling
            "name": self.name, "chat": np.int64(-1 if self.chat is None else int(self.chat)),
        }
        if self.neuron_index is not None:
            extra["neuron"] = np.int64(self.neuron_index)
        if self.layer_separation:
            extra["layer_separation"] = np.array([s.separation for s in self.layer_separation], dtype=np.float64)
        target = save_direction(path, self.direction, layer=-1 if self.layer is None else self.layer,
                                model_id=self.model_id, method=self.method, **extra)
        self.path = str(target)
        return target

    @classmethod
    def load(cls, path: str | Path, lm: LoadedModel | None = None) -> SteeringDirection:
        """Read a ``.npz`` direction (ours, or a probe's ``label_positive``/``label_negative`` file) with
        ``engine.direction_files.load_direction``. With ``lm``, a file made for another hidden size is
        refused (InputError, one line)."""
        f = load_direction(path)
        data = f.extra

        def scalar(key: str, default: Any) -> Any:
            v = data.get(key)
            return default if v is None or isinstance(v, np.ndarray) else v

        def strings(key: str) -> list[str]:
            return [str(x) for x in np.asarray(data[key]).reshape(-1)] if key in data else []

        labels = strings("labels")
        pos_label = labels[0] if len(labels) == 2 else str(scalar("label_positive", "positive"))
        neg_label = labels[1] if len(labels) == 2 else str(scalar("label_negative", "negative"))
        chat = scalar("chat", -1)
        neuron = scalar("neuron", None)
        seps = [LayerSeparation(layer=i, separation=float(s))
                for i, s in enumerate(np.asarray(data["layer_separation"]).reshape(-1))] if "layer_separation" in data else []
        d = cls(f.direction.astype(np.float32), layer=f.layer, model_id=f.model_id or "unknown",
                method=f.method or "mean", name=str(scalar("name", Path(f.path).stem)),
                positive_prompts=strings("positive_prompts"), negative_prompts=strings("negative_prompts"),
                positive_label=pos_label, negative_label=neg_label,
                chat=None if int(chat) < 0 else bool(chat), neuron=None if neuron is None else int(neuron),
                source="file", path=f.path, layer_separation=seps)
        if "hidden_size" in data and int(data["hidden_size"]) != d.hidden_size:
            raise InputError(f"direction file {f.path} is inconsistent: hidden_size {int(data['hidden_size'])} "
                             f"but the direction has {d.hidden_size} values")
        if lm is not None:
            d.check(lm)
        return d


# -- criteria (the vocabulary and the positive/negative rule: engine.criteria) ------------------
def _word_hits(text: str, words: Sequence[str] | frozenset[str]) -> list[str]:
    return word_hits(text, {w.lower() for w in words})


def score_criterion(text: str, criterion: str) -> CriterionScore:
    """Score one output: ``positive``/``negative`` (sentiment word lists of ``engine.criteria``:
    score = hits of that polarity, passes by its rule: at least one, and more than of the other),
    ``sentiment`` (positive hits - negative hits; passes when > 0), ``words:a,b,c`` or ``@file``
    (a word list, case-insensitive whole words: hits), else a substring (occurrences)."""
    if criterion in ("positive", "negative"):
        hits = sentiment_hits(text)[0 if criterion == "positive" else 1]
        return CriterionScore(criterion=criterion, score=len(hits), passed=polarity_passes(criterion, text),
                              matches=hits)
    if criterion == "sentiment":
        pos, neg = sentiment_hits(text)
        score = len(pos) - len(neg)
        return CriterionScore(criterion=criterion, score=score, passed=score > 0,
                              matches=[f"+{w}" for w in pos] + [f"-{w}" for w in neg])
    if criterion.startswith(("words:", "@")):
        if criterion.startswith("@"):
            words = [w.strip() for w in read_text(criterion[1:], "word list file").split() if w.strip()]
        else:
            words = [w.strip() for w in criterion[len("words:"):].split(",") if w.strip()]
        if not words:
            raise InputError(f"empty word list in criterion {criterion!r}")
        hits = _word_hits(text, words)
        return CriterionScore(criterion=criterion, score=len(hits), passed=bool(hits), matches=hits)
    if criterion == "":
        raise InputError("empty criterion")
    count = text.count(criterion)
    return CriterionScore(criterion=criterion, score=count, passed=count > 0, matches=[criterion] * count)


# -- generation -------------------------------------------------------------------------------
def _resolve_direction(lm: LoadedModel, req: SteerRequest, direction: SteeringDirection | None,
                       cancel: Callable[[], bool] | None) -> SteeringDirection:
    sources = [x is not None for x in (direction, req.direction_file, req.neuron, req.extract)]
    if sum(sources) != 1:
        raise InputError("give exactly one direction: a direction file, a neuron, or an extraction")
    if direction is not None:
        return direction.check(lm)
    if req.direction_file is not None:
        return SteeringDirection.load(req.direction_file, lm)
    if req.neuron is not None:
        return SteeringDirection.neuron(lm, req.neuron, req.layers[0] if req.layers else None)
    assert req.extract is not None
    e = req.extract
    return SteeringDirection.extract(lm, e.positive, e.negative, e.layer, method=e.method, chat=e.chat, name=e.name,
                                     positive_label=e.positive_label, negative_label=e.negative_label, cancel=cancel)


def _strip_eos(ids: list[int], stopped: str, eos: Sequence[int]) -> list[int]:
    return ids[:-1] if stopped == "eos" and ids and ids[-1] in eos else ids


def _projections(hm: HookedModel, prompt_rows: Sequence[list[int]], gen_rows: Sequence[list[int]],
                 layers: Sequence[int], units: Sequence[np.ndarray]) -> list[tuple[float, float]]:
    """Clean (unsteered) read of prompt + output: projection of layer ``layers[i]``'s output on
    ``units[i]`` at the last token, and its mean over the generated tokens. One forward."""
    full = [list(p) + list(g) for p, g in zip(prompt_rows, gen_rows)]
    need = sorted(set(layers))
    pad_id = hm.lm.tokenizer.batch_pad_id
    batch = Batch.from_lists(full, pad_id)
    out = hm.forward(batch, capture=CaptureSpec(layers=need), logits="none", stop_layer=max(need) + 1)
    caps = {lay: np.array(out.captures[f"blocks.{lay}.resid_post"].astype(mx.float32)) for lay in need}
    res = []
    for r, (lay, u) in enumerate(zip(layers, units)):
        proj = caps[lay][r] @ u  # [S]
        n_gen = len(gen_rows[r])
        gen = proj[-n_gen:] if n_gen else proj[-1:]
        res.append((float(proj[-1]), float(gen.mean())))
    return res


def _select_rows(kv: Any, rows: Sequence[int]) -> Any:
    """A copy of a ``KVState`` holding ``rows`` of the batch (a row may repeat). (Not
    ``KVState.select_rows``: it unpacks ``KVCache.state`` as 2 values; mlx-lm's has 3.)"""
    from engine.hooks import KVState

    idx = mx.array(list(rows), dtype=mx.int32)
    new = KVState(len(kv.caches), [kv.pad[i] for i in rows])
    for nc, c in zip(new.caches, kv.caches):
        if c.keys is not None:
            k, v = c.keys_and_values()
            nc.keys, nc.values, nc.offset = k[idx], v[idx], c.offset
    new.offset = kv.offset
    return new


class _CleanPrefix:
    """The batched sweep's shared work. One clean (unsteered) pass of the distinct prompts through
    layers 0..max(grid layers), with a KV cache, gives: ``s`` per (layer, prompt); the prompt's
    prefix below the lowest steered layer, which every row of that prompt shares (its KV cache and
    the residual entering that layer are copied to the rows, so the steered prompt pass runs only
    the layers from there up); and the clean context for reading the outputs back (only the
    generated tokens are run for the projections)."""

    def __init__(self, hm: HookedModel, prompt_rows: Sequence[list[int]], layers: Sequence[int],
                 cancel: Callable[[], bool] | None) -> None:
        from engine.hooks import KVState

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
        self.post = {lay: np.array(out.captures[f"blocks.{lay}.resid_post"].astype(mx.float32)) for lay in self.layers}
        self.scales = np.zeros((len(self.layers), len(prompt_rows)))
        for i, lay in enumerate(self.layers):
            norms = np.linalg.norm(self.post[lay], axis=-1)
            for r, (pad, n) in enumerate(zip(self.batch.pad, self.batch.lengths)):
                real = norms[r, pad:pad + n]
                self.scales[i, r] = float(real[1:].mean() if n > 1 else real.mean())

    def _rows_batch(self, src: Sequence[int], ids: mx.array) -> Batch:
        return Batch(ids, [self.batch.pad[i] for i in src], [self.batch.lengths[i] for i in src])

    def steered_prompt(self, src: Sequence[int], ivs: Sequence[Intervention]) -> tuple[Any, mx.array]:
        """Run the prompt rows (row i = prompt ``src[i]``) from the lowest steered layer up, with
        their interventions; returns the rows' KV state and their first next-token logits."""
        from mlx_lm.models.cache import KVCache

        idx = mx.array(list(src), dtype=mx.int32)
        kv = _select_rows(self.kv, src)
        for layer in range(self.lmin, self.hm.n_layers):
            kv.caches[layer] = KVCache()
        kv.offset = 0  # the layers about to run start from an empty cache
        out = self.hm.forward(self._rows_batch(src, self.batch.ids[idx]), interventions=ivs, kv=kv, logits="last",
                              start_layer=self.lmin, h=self.h_in[idx])
        return kv, out.logits[:, -1, :]

    def projections(self, src: Sequence[int], gens: Sequence[list[int]], layers: Sequence[int],
                    units: Sequence[np.ndarray]) -> list[tuple[float, float]]:
        """Like ``_projections``, continuing the clean prompt cache with the generated tokens only
        (right-padded: causal attention keeps the padding out of the real positions)."""
        width = max((len(g) for g in gens), default=0)
        caps: dict[int, np.ndarray] = {}
        if width:
            kv = _select_rows(self.kv, src)
            ids = mx.array([list(g) + [self.pad_id] * (width - len(g)) for g in gens], dtype=mx.int32)
            out = self.hm.forward(self._rows_batch(src, ids), capture=CaptureSpec(layers=self.layers), kv=kv,
                                  logits="none", stop_layer=self.lmax + 1)
            caps = {lay: np.array(out.captures[f"blocks.{lay}.resid_post"].astype(mx.float32)) for lay in self.layers}
        res = []
        for r, (pi, g, lay, u) in enumerate(zip(src, gens, layers, units)):
            if g:
                proj = caps[lay][r, :len(g)] @ u
                res.append((float(proj[-1]), float(proj.mean())))
            else:  # nothing generated: the last prompt token
                last = float(self.post[lay][pi, -1] @ u)
                res.append((last, last))
        return res


def run_steer(lm: LoadedModel, req: SteerRequest, cancel: Callable[[], bool] | None = None,
              on_step: Callable[[int, int], None] | None = None,
              direction: SteeringDirection | None = None, only: Sequence[int] | None = None,
              generated: Sequence[tuple[list[int], str]] | None = None) -> SteerResult:
    """Generate once per (prompt, layer, coefficient), as one batch (``req.batched``), and score.

    A run split across ranks (engine/steering_split.py): ``only`` generates just these settings
    (consecutive indices in prompt, layer, coefficient order; sampled with the whole batch's random
    numbers for their rows, so ``-t > 0`` splits too) and leaves their projections at 0; ``generated``
    (every setting's token ids without EOS, and why it stopped) skips generation and computes the rest
    (projections, scores, divergence) exactly as one run does."""
    if generated is not None and not req.batched:
        raise ValueError("generated outputs are scored on the batched path only")
    if not req.prompts or any(p == "" for p in req.prompts):
        raise InputError("empty prompt")
    if not req.coefficients:
        raise InputError("no coefficients given")
    if any(not np.isfinite(c) for c in req.coefficients):
        raise InputError("coefficients must be finite numbers")
    d = _resolve_direction(lm, req, direction, cancel)
    hm = HookedModel(lm)
    layers = list(req.layers) if req.layers else ([d.layer] if d.layer is not None else [])
    if not layers:
        raise InputError("no layer: the direction has none stored; give -l/--layer")
    layers = [hm.check_layer(x) for x in layers]
    if len(layers) == 1:
        d = d.at_layer(layers[0])
    tok = lm.tokenizer
    use_chat = _use_chat(lm, req.chat)
    prompt_rows = _rows(lm, req.prompts, use_chat)
    if req.position is not None:
        for p, row in zip(req.prompts, prompt_rows):
            if not -len(row) <= req.position < len(row):
                raise InputError(f"position {req.position} out of range for prompt {p!r} ({len(row)} tokens)")
    units = {lay: d.unit(lay) for lay in layers}
    unit_lists = {lay: units[lay].astype(np.float32).tolist() for lay in layers}

    t0 = time.perf_counter()
    need = sorted(set(layers))
    # the batched sweep shares per-layer keys/values between rows: state-space layers have none
    batched = req.batched and not hm.state_layers
    prefix = _CleanPrefix(hm, prompt_rows, need, cancel) if batched else None
    scales = prefix.scales if prefix is not None else prompt_scale(hm, prompt_rows, need)  # [need, prompts]
    settings: list[tuple[int, int, float, float]] = []  # (prompt index, layer, coef, s)
    for pi in range(len(req.prompts)):
        for lay in layers:
            for c in req.coefficients:
                settings.append((pi, lay, float(c), float(scales[need.index(lay), pi])))
    sample_rows = None
    if only is not None:
        only = list(only)
        if only and only != list(range(only[0], only[0] + len(only))):
            raise ValueError("a part of a steering run is a run of consecutive settings")
        sample_rows = (only[0], len(settings)) if only else None
        settings = [settings[i] for i in only]

    def intervention(lay: int, c: float, s: float, row: int | None) -> Intervention:
        return Intervention(site=Site(layer=lay, kind=SiteKind.resid_post), op="add", vector=unit_lists[lay],
                            factor=c * s, position=req.position, row=row)

    rows = [prompt_rows[pi] for pi, _, _, _ in settings]
    # Every Intervention object stays alive for the whole run: HookedModel caches each one's
    # mx vector by id(), so a collected object's id reused by a new one would get a stale vector.
    keep_alive: list[Intervention] = []
    if prefix is not None:
        src = [pi for pi, _, _, _ in settings]
        if generated is None:
            ivs = [intervention(lay, c, s, i) for i, (_, lay, c, s) in enumerate(settings) if c != 0.0]
            keep_alive += ivs
            kv, first = prefix.steered_prompt(src, ivs)
            outs = generate_ids(hm, rows, req.max_tokens, interventions=ivs, temperature=req.temperature,
                                seed=req.seed, stop_ids=tok.eos_ids, cancel=cancel, on_step=on_step,
                                kv=kv, first_logits=first, sample_rows=sample_rows)
            gens = [_strip_eos(o.ids, o.stopped, tok.eos_ids) for o in outs]
            stopped = [o.stopped for o in outs]
        else:
            gens, stopped = [list(ids) for ids, _ in generated], [st for _, st in generated]
        # the clean projections read every row in one batch (its shape changes the last bits), so a
        # part of a split run leaves them to the merge, which passes ``generated``
        projs = [(0.0, 0.0)] * len(settings) if only is not None else prefix.projections(
            src, gens, [lay for _, lay, _, _ in settings], [units[lay] for _, lay, _, _ in settings])
    else:
        outs, projs = [], []
        total = len(settings) * req.max_tokens
        for i, (_, lay, c, s) in enumerate(settings):
            step_cb = None if on_step is None else (lambda k, n, i=i: on_step(i * req.max_tokens + k, total))
            ivs = [intervention(lay, c, s, None)] if c != 0.0 else []
            keep_alive += ivs
            o = generate_ids(hm, [rows[i]], req.max_tokens, interventions=ivs, temperature=req.temperature,
                             seed=req.seed, stop_ids=tok.eos_ids, cancel=cancel, on_step=step_cb)[0]
            outs.append(o)
            projs += _projections(hm, [rows[i]], [_strip_eos(o.ids, o.stopped, tok.eos_ids)], [lay], [units[lay]])
        gens = [_strip_eos(o.ids, o.stopped, tok.eos_ids) for o in outs]
        stopped = [o.stopped for o in outs]
    seconds = time.perf_counter() - t0

    results = []
    for (pi, lay, c, s), st, ids, (proj, mproj) in zip(settings, stopped, gens, projs):
        text = tok.decode(ids)
        results.append(SteeredOutput(
            prompt=req.prompts[pi], layer=lay, coefficient=c, scale=s, added_norm=abs(c) * s, text=text,
            token_ids=ids, tokens=tok.pieces(ids), stopped=st,
            criterion=score_criterion(text, req.criterion) if req.criterion else None,
            projection=proj, mean_projection=mproj))
    results = with_divergence(results, [pi for pi, _, _, _ in settings])
    return SteerResult(model_id=lm.info.model_id, request=req, direction=d.info(), chat_template_used=use_chat,
                       outputs=results, generation_seconds=seconds)


def with_divergence(outputs: list[SteeredOutput], prompt_index: Sequence[int]) -> list[SteeredOutput]:
    """``diverged_at`` of each steered output: the first generated token that differs from the output
    of the same prompt (``prompt_index``: its index in the request) and layer at coefficient 0 (None
    when identical or when there is no such row)."""
    baseline = {(pi, o.layer): o.token_ids for pi, o in zip(prompt_index, outputs) if o.coefficient == 0.0}
    done = []
    for pi, o in zip(prompt_index, outputs):
        base, ids, diverged = baseline.get((pi, o.layer)), o.token_ids, None
        if base is not None and o.coefficient != 0.0 and base != ids:
            diverged = next((k for k, (a, b) in enumerate(zip(base, ids)) if a != b), min(len(base), len(ids)))
        done.append(o.model_copy(update={"diverged_at": diverged}))
    return done


def run_extract(lm: LoadedModel, req: ExtractRequest, cancel: Callable[[], bool] | None = None,
                save_to: str | None = None) -> tuple[ExtractResult, SteeringDirection]:
    d = SteeringDirection.extract(lm, req.positive, req.negative, req.layer, method=req.method, chat=req.chat,
                                  name=req.name, positive_label=req.positive_label,
                                  negative_label=req.negative_label, cancel=cancel)
    saved = str(d.save(save_to)) if save_to else None
    return ExtractResult(model_id=lm.info.model_id, request=req, direction=d.info(), saved_to=saved), d


def steer_generate(lm: LoadedModel, prompt: str | Sequence[str], direction: SteeringDirection | str | Path,
                   coefficients: Sequence[float] = (1.0,), *, layer: int | None = None,
                   layers: Sequence[int] | None = None, max_tokens: int = 50, temperature: float = 0.0,
                   seed: int = 0, chat: bool = False, position: int | None = None, criterion: str | None = None,
                   batched: bool = True, cancel: Callable[[], bool] | None = None) -> SteerResult:
    """Generate from ``prompt`` once per coefficient (one batch) with ``direction`` added at its
    layer (or ``layer``; ``layers`` for a layer x coefficient grid). ``direction`` may be a
    ``SteeringDirection`` or a path to its ``.npz``."""
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    if layer is not None and layers is not None:
        raise InputError("give layer or layers, not both")
    chosen = [layer] if layer is not None else (list(layers) if layers is not None else None)
    req = SteerRequest(model=lm.info.model_id, prompts=prompts, coefficients=[float(c) for c in coefficients],
                       layers=chosen, position=position, max_tokens=max_tokens, temperature=temperature, seed=seed,
                       chat=chat, criterion=criterion, batched=batched,
                       direction_file=str(direction) if isinstance(direction, (str, Path)) else None)
    return run_steer(lm, req, cancel, direction=direction if isinstance(direction, SteeringDirection) else None)
