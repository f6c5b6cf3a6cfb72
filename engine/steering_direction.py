"""Steering directions: extraction from contrastive prompts, neuron directions, ``.npz`` files.

Extraction runs one batched forward over all positive and negative prompts, every layer captured at
the last prompt position:

- ``mean``: direction = mean over pairs of (h_pos - h_neg) at layer L output (resid_post).
- ``pca``: the first principal axis of the pair differences, sign fixed so that positives
  project higher; scaled by the mean projection of the differences on it (so ``norm`` is the
  mean pair separation along it). The axis is that of the uncentred differences (SVD of the
  [pairs, hidden] difference matrix): centring would remove the shared offset, which is the
  signal, and is undefined for a single pair.

How a direction is applied and scored: engine.steering.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from engine.direction_files import load_direction, save_direction
from engine.errors import InputError
from engine.hooks import Batch, CaptureSpec, HookedModel
from engine.models import LoadedModel
from engine.results.steering import DirectionInfo, LayerSeparation


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
        return DirectionInfo(name=self.name, source=self.source, path=self.path, layer=self.layer,
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
