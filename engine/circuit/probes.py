"""Probe batteries ("stratigraphy"): at which layer does each property become linearly readable?

All prompts of all selected probes are sorted by length and run in left-padded batches; each
batch is ONE hooked forward capturing every requested layer at the last position. Per probe and
layer: stratified k-fold CV accuracy (k = min(5, smallest class)) of a standardised logistic
probe, against the majority-class baseline. Emergence layer: the first captured layer whose CV
accuracy reaches ``threshold`` and beats the baseline (None if none does).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import mlx.core as mx
import numpy as np

from engine.circuit.dataset import load_dataset, save_dataset
from engine.circuit.geometry import pair_groups
from engine.circuit.probe_data import BUILTIN
from engine.distributed import World
from engine.errors import Cancelled, InputError
from engine.fileio import make_dir
from engine.hooks import Batch, CaptureSpec, HookedModel, SiteKind
from engine.layer_lists import resolve_layer_list
from engine.models import LoadedModel
from engine.results.circuit import CircuitDataset, DatasetPrompt, ProbeBatteryEntry, ProbeBatteryResult, ProbeLayerScore

CATEGORIES = ("syntactic", "semantic", "decision")
BATCH = 16


def builtin_datasets() -> list[CircuitDataset]:
    out = []
    for spec in BUILTIN:
        paired = spec.get("paired", False)
        prompts = [DatasetPrompt(text=t, label=1, pair=i if paired else None) for i, t in enumerate(spec["positive"])]
        prompts += [DatasetPrompt(text=t, label=0, pair=i if paired else None) for i, t in enumerate(spec["negative"])]
        out.append(CircuitDataset(name=spec["name"], kind="probe", labels=spec["labels"],
                                  description=spec["description"], probe_category=spec["probe_category"],
                                  prompts=prompts))
    return out


def init_datasets(directory: str) -> list[Path]:
    d = make_dir(directory)
    return [save_dataset(ds, d / f"{ds.name}.json") for ds in builtin_datasets()]


def load_battery(directory: str | None, category: str | None) -> list[CircuitDataset]:
    if directory is None:
        sets = builtin_datasets()
    else:
        d = Path(directory)
        if not d.is_dir():
            raise InputError(f"probe dataset directory not found: {d}")
        files = sorted([*d.glob("*.json"), *d.glob("*.jsonl")])
        if not files:
            raise InputError(f"no .json/.jsonl probe datasets in {d} (circuit probes init -o {d} writes them)")
        sets = [load_dataset(f) for f in files]
    if category is not None:
        if category not in CATEGORIES and not any(s.probe_category == category for s in sets):
            raise InputError(f"unknown probe category {category!r} (categories: {', '.join(CATEGORIES)})")
        sets = [s for s in sets if s.probe_category == category]
    for s in sets:
        counts = Counter(p.label for p in s.prompts)
        if len(counts) < 2 or min(counts.values()) < 2:
            raise InputError(f"probe {s.name!r} needs two labels with 2+ prompts each (counts: {dict(counts)})")
    if not sets:
        raise InputError("no probes selected")
    return sets


def capture_all(lm: LoadedModel, rows: list[list[int]], layers: list[int], batch: int = BATCH,
                cancel: Callable[[], bool] | None = None,
                on_batch: Callable[[int, int], None] | None = None,
                world: World | None = None) -> tuple[np.ndarray, int]:
    """Last-position layer outputs float32 [L, N, hidden], one forward per batch (sorted by length).
    Under a distributed launcher the batches are shared among the ranks; rank 0 gets the whole array."""
    hm = HookedModel(lm)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    hidden = lm.info.hidden_size
    out = np.zeros((len(layers), len(rows), hidden), dtype=np.float32)
    n_batches = (len(rows) + batch - 1) // batch

    def compute(b: int) -> bytes:
        idx = order[b * batch:(b + 1) * batch]
        res = hm.forward(Batch.from_lists([rows[i] for i in idx], lm.tokenizer.batch_pad_id),
                         capture=CaptureSpec(kinds=(SiteKind.resid_post,), layers=layers, positions="last"),
                         logits="none", stop_layer=max(layers) + 1, cancel=cancel)
        stacked = mx.stack([res.captures[f"blocks.{x}.resid_post"][:, 0, :] for x in layers]).astype(mx.float32)
        return np.ascontiguousarray(np.array(stacked), dtype="<f4").tobytes()

    def store(b: int, payload: bytes) -> None:
        idx = order[b * batch:(b + 1) * batch]
        out[:, idx, :] = np.frombuffer(payload, dtype="<f4").reshape(len(layers), len(idx), hidden)

    (world or World()).map_items(n_batches, compute, store, cancel, on_batch)
    return out, n_batches


def cv_accuracy(x: np.ndarray, y: np.ndarray, seed: int = 0, groups: np.ndarray | None = None
                ) -> tuple[float, float, int]:
    from engine.circuit.geometry import classifier, folds

    accs = []
    splits = folds(y, seed, groups)
    for tr, te in splits:
        accs.append(float(np.mean(classifier(seed).fit(x[tr], y[tr]).predict(x[te]) == y[te])))
    return float(np.mean(accs)), float(np.std(accs)), len(splits)


def run_battery(lm: LoadedModel, layers: Sequence[int] | None = None, directory: str | None = None,
                category: str | None = None, threshold: float = 0.75, chat: bool = False, seed: int = 0,
                cancel: Callable[[], bool] | None = None,
                on_progress: Callable[[str, int, int], None] | None = None,
                world: World | None = None) -> ProbeBatteryResult | None:
    """The probe battery. Under a distributed launcher (``world``) the forwards are shared among the
    ranks and rank 0 fits the probes; the other ranks return ``None``."""
    from threadpoolctl import threadpool_limits

    if not 0.0 < threshold <= 1.0:
        raise InputError("--threshold must be in (0, 1]")
    n = lm.num_layers
    if layers is None:
        layers = list(range(n))
    chosen = resolve_layer_list(layers, n)
    sets = load_battery(directory, category)
    texts = [p.text for s in sets for p in s.prompts]
    rows = [lm.tokenizer.prepare(t, chat=chat) for t in texts]
    acts, forwards = capture_all(lm, rows, chosen, cancel=cancel,
                                 on_batch=(lambda d, t: on_progress("forward", d, t)) if on_progress else None,
                                 world=world)
    if world is not None and not world.root:
        return None
    entries = []
    start = 0
    with threadpool_limits(1):
        for si, s in enumerate(sets):
            y = np.array([p.label for p in s.prompts])
            groups = pair_groups([p.pair for p in s.prompts])
            sl = slice(start, start + len(y))
            start += len(y)
            baseline = max(Counter(y.tolist()).values()) / len(y)
            scores = []
            folds = 0
            for li, layer in enumerate(chosen):
                if cancel is not None and cancel():
                    raise Cancelled("cancelled")
                acc, std, folds = cv_accuracy(acts[li, sl].astype(np.float64), y, seed, groups)
                scores.append(ProbeLayerScore(layer=layer, cv_accuracy=acc, cv_std=std))
            emergence = next((sc.layer for sc in scores if sc.cv_accuracy >= threshold and sc.cv_accuracy > baseline),
                             None)
            peak = max(scores, key=lambda sc: (sc.cv_accuracy, -sc.layer))
            entries.append(ProbeBatteryEntry(name=s.name, category=s.probe_category or "custom",
                                             description=s.description, labels=s.labels, n_prompts=len(y),
                                             baseline=baseline, folds=folds, layers=scores, emergence_layer=emergence,
                                             peak_layer=peak.layer, peak_accuracy=peak.cv_accuracy))
            if on_progress is not None:
                on_progress("probes", si + 1, len(sets))
    return ProbeBatteryResult(model_id=lm.info.model_id, threshold=threshold, captured_layers=chosen,
                              forwards=forwards, probes=entries)
