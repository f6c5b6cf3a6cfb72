"""Linear probes: can a layer's last-position output tell two classes of prompts apart?

One batched forward captures every probed layer for all prompts (classes and test prompts
together). Per layer: standardised logistic regression (scikit-learn) under stratified
k-fold CV, k = min(5, smallest class); accuracy mean/std over folds, and F1/AUC from the
out-of-fold predictions (each prompt scored by a probe that never saw it).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from engine.direction_files import save_direction
from engine.distributed import World
from engine.errors import InputError
from engine.layer_lists import resolve_layer_list
from engine.models import LoadedModel
from engine.representations import encode_prompts, last_hidden
from engine.results.probe import ProbeLayer, ProbeRequest, ProbeResult, ProbeTestPrediction


def _classifier(seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0, random_state=seed))


def _cv(x: np.ndarray, y: np.ndarray, k: int, seed: int) -> tuple[float, float, float, float]:
    """(accuracy mean, accuracy std, out-of-fold F1, out-of-fold AUC)."""
    from sklearn.metrics import f1_score, roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    accs, oof = [], np.zeros(len(y))
    for train, test in StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(x, y):
        clf = _classifier(seed).fit(x[train], y[train])
        p = clf.predict_proba(x[test])[:, 1]
        oof[test] = p
        accs.append(float(np.mean((p >= 0.5) == y[test])))
    return (float(np.mean(accs)), float(np.std(accs)), float(f1_score(y, oof >= 0.5)),
            float(roc_auc_score(y, oof)))


def _separation(proj: np.ndarray, y: np.ndarray) -> float:
    a, b = proj[y == 1], proj[y == 0]
    pooled = np.sqrt(0.5 * (a.var() + b.var()))
    return float((a.mean() - b.mean()) / max(pooled, 1e-12))


def run_probe(lm: LoadedModel, req: ProbeRequest, cancel: Callable[[], bool] | None = None,
              on_layer: Callable[[int, int], None] | None = None, world: World | None = None) -> ProbeResult | None:
    """Probe every requested layer; the direction and test scores come from ``req.layer`` or the best.
    ``world``: the forward batches are shared among the ranks; rank 0 fits the probes and returns the
    result, the other ranks None."""
    from threadpoolctl import threadpool_limits

    # tiny fits: BLAS/OpenMP threads only add contention (10x slower on 2 busy cores)
    with threadpool_limits(1):
        return _run_probe(lm, req, cancel, on_layer, world)


def _run_probe(lm: LoadedModel, req: ProbeRequest, cancel: Callable[[], bool] | None,
               on_layer: Callable[[int, int], None] | None, world: World | None) -> ProbeResult | None:
    na, nb = len(req.class_a), len(req.class_b)
    if na < 2 or nb < 2:
        raise InputError(f"each class needs at least 2 prompts (got {na} in class A, {nb} in class B)")
    n_layers = lm.num_layers
    layers = resolve_layer_list(req.layers, n_layers) if req.layers else list(range(n_layers))
    if req.layer is not None:
        layers = sorted(set(layers) | set(resolve_layer_list([req.layer], n_layers)))
    prompts = list(req.class_a) + list(req.class_b) + list(req.test)
    rows = encode_prompts(lm, prompts, req.chat)
    acts = last_hidden(lm, prompts, layers, rows=rows, cancel=cancel, world=world)
    if acts is None:
        return None
    acts = acts.astype(np.float64)  # [L, N, d]
    n = na + nb
    y = np.array([1] * na + [0] * nb)
    k = min(5, na, nb)
    results = []
    for li, layer in enumerate(layers):
        if cancel is not None and cancel():
            from engine.errors import Cancelled

            raise Cancelled("cancelled")
        acc, std, f1, auc = _cv(acts[li, :n], y, k, req.seed)
        results.append(ProbeLayer(layer=layer, cv_accuracy=acc, cv_std=std, heldout_f1=f1, heldout_auc=auc, folds=k))
        if on_layer is not None:
            on_layer(li, len(layers))
    best = max(results, key=lambda r: (r.cv_accuracy, r.heldout_auc, -r.layer)).layer
    dlayer = best if req.layer is None else req.layer % n_layers
    li = layers.index(dlayer)
    x = acts[li, :n]
    clf = _classifier(req.seed).fit(x, y)
    if req.method == "difference":
        raw = x[y == 1].mean(0) - x[y == 0].mean(0)
    else:
        scaler, lr = clf[0], clf[-1]
        raw = lr.coef_[0] / scaler.scale_  # the decision function's gradient in residual space
    norm = float(np.linalg.norm(raw))
    if norm == 0.0:
        raise InputError(f"the classes give a zero direction at layer {dlayer}")
    unit = raw / norm
    sep = _separation(x @ unit, y)
    tests = []
    if req.test:
        xt = acts[li, n:]
        pa = clf.predict_proba(xt)[:, 1]
        for prompt, p, proj in zip(req.test, pa, xt @ unit):
            tests.append(ProbeTestPrediction(prompt=prompt, label=req.label_a if p >= 0.5 else req.label_b,
                                             probability_a=float(p), projection=float(proj)))
    acc_at = next(r.cv_accuracy for r in results if r.layer == dlayer)
    return ProbeResult(model_id=lm.info.model_id, request=req, layers=results, best_layer=best,
                       direction_layer=dlayer, method=req.method, direction=unit.tolist(), direction_norm=norm,
                       accuracy=acc_at, separation=sep, test_predictions=tests)


def save_probe_direction(result: ProbeResult, path: str | Path) -> ProbeResult:
    """Write the probe's direction as ``.npz`` (readable by ``directions`` and ``steer``)."""
    req = result.request
    target = save_direction(path, np.array(result.direction) * result.direction_norm, layer=result.direction_layer,
                            model_id=result.model_id, method=f"probe_{result.method}",
                            label_positive=req.label_a, label_negative=req.label_b, accuracy=result.accuracy,
                            separation=result.separation, norm=result.direction_norm,
                            positive_prompts=list(req.class_a), negative_prompts=list(req.class_b),
                            name=f"probe {req.label_a} vs {req.label_b}")
    return result.model_copy(update={"saved_to": str(target)})
