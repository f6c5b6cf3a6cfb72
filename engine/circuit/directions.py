"""Direction extraction from collected activations at one layer.

Methods (each a vector in residual space; positive class projects higher):
- ``diff_means``: mean(positive) - mean(negative) (its norm is kept in the file);
- ``lda``: Fisher LDA with Ledoit-Wolf shrinkage (scikit-learn, lsqr solver), the coefficient vector;
- ``probe_weights``: standardised logistic regression, coefficients mapped back to residual space
  (``coef / scale``: the gradient of the decision function);
- ``pca``: the first principal component of the training activations (unsupervised), sign fixed.

Binary: the dataset's label 1 vs label 0. ``per_category`` (``--per-tool``): one direction per
category (tool), that category vs every other prompt (one-vs-rest).
Every direction is fitted on a stratified 75% split; the other 25% gives the held-out accuracy
(projection thresholded at the cut that best classifies the training prompts) and separation
(difference of test class means over their pooled std). Files are ``.npz`` in the format of
``probe --save-direction`` (``direction, layer, model_id, method, label_positive, label_negative,
accuracy, separation, norm``), so ``steer -d`` and ``directions`` read them.
"""

from __future__ import annotations

import re

import numpy as np

from engine.circuit.activations import Activations
from engine.circuit.geometry import binary_labels, classifier, pair_groups, split
from engine.errors import InputError
from engine.fileio import check_output, make_dir
from engine.results.circuit import ExtractedDirection, ExtractedDirectionsResult

METHODS = ("diff_means", "lda", "probe_weights", "pca")


def fit_direction(x: np.ndarray, y: np.ndarray, method: str, seed: int = 0) -> np.ndarray:
    """The raw direction for ``y == 1`` vs ``y == 0`` (not normalised, except where noted)."""
    pos, neg = x[y == 1], x[y == 0]
    if method == "diff_means":
        d = pos.mean(0) - neg.mean(0)
    elif method == "lda":
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

        d = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit(x, y).coef_[0]
    elif method == "probe_weights":
        clf = classifier(seed).fit(x, y)
        d = clf[-1].coef_[0] / clf[0].scale_
    elif method == "pca":
        xc = x - x.mean(0, keepdims=True)
        _, _, vt = np.linalg.svd(xc, full_matrices=False)
        d = vt[0]
    else:
        raise InputError(f"unknown method {method!r} (methods: {', '.join(METHODS)})")
    if float(pos.mean(0) @ d) < float(neg.mean(0) @ d):
        d = -d
    return np.asarray(d, dtype=np.float64)


def threshold(proj: np.ndarray, y: np.ndarray) -> float:
    """The cut on training projections that classifies the training prompts best (positives above);
    ties go to the cut nearest the midpoint of the class means. Robust to a heavy-tailed class,
    where the midpoint of the means alone can land on the wrong side of most prompts."""
    order = np.sort(np.unique(proj))
    cuts = np.concatenate([[order[0] - 1.0], 0.5 * (order[1:] + order[:-1]), [order[-1] + 1.0]])
    acc = np.array([np.mean((proj > c) == (y == 1)) for c in cuts])
    mid = 0.5 * (proj[y == 1].mean() + proj[y == 0].mean())
    best = np.flatnonzero(acc == acc.max())
    return float(cuts[best[np.argmin(np.abs(cuts[best] - mid))]])


def _sep(proj: np.ndarray, y: np.ndarray) -> float:
    a, b = proj[y == 1], proj[y == 0]
    pooled = np.sqrt(0.5 * (a.var() + b.var()))
    return float((a.mean() - b.mean()) / max(pooled, 1e-12))


def evaluate(x: np.ndarray, y: np.ndarray, method: str, seed: int = 0, groups: np.ndarray | None = None
             ) -> tuple[np.ndarray, dict]:
    tr, te = split(y, seed, groups=groups)
    d = fit_direction(x[tr], y[tr], method, seed)
    norm = float(np.linalg.norm(d))
    if norm == 0.0:
        raise InputError("the classes give a zero direction (identical activations?)")
    unit = d / norm
    ptr, pte = x[tr] @ unit, x[te] @ unit
    cut = threshold(ptr, y[tr])
    acc = float(np.mean((pte > cut) == (y[te] == 1)))
    return d, {"n_train": len(tr), "n_test": len(te), "heldout_accuracy": acc,
               "heldout_separation": _sep(pte, y[te]), "train_separation": _sep(ptr, y[tr]), "norm": norm}


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "direction"


def extract(acts: Activations, layer: int, method: str = "diff_means", per_category: bool = False,
            output_dir: str | None = None, seed: int = 0) -> ExtractedDirectionsResult:
    from threadpoolctl import threadpool_limits

    from engine.direction_files import save_direction

    if method not in METHODS:
        raise InputError(f"unknown method {method!r} (methods: {', '.join(METHODS)})")
    acts.check_layer(layer)
    out_dir = check_output(output_dir, directory=True) if output_dir else None
    x = acts.get(layer)
    jobs: list[tuple[str, str, str, np.ndarray]] = []  # (name, positive, negative, y)
    if per_category:
        cats = np.array(acts.categories)
        names = sorted(set(cats.tolist()))
        if len(names) < 2:
            raise InputError(f"--per-tool needs at least two categories; {acts.path} has {names}")
        for c in names:
            y = (cats == c).astype(int)
            if y.sum() < 2:
                raise InputError(f"category {c!r} has only {int(y.sum())} prompt; one-vs-rest needs 2+")
            jobs.append((f"{c}_vs_rest", c, "rest", y))
    else:
        y = binary_labels(acts)
        ln = acts.label_names
        jobs.append((f"{ln[1]}_vs_{ln[0]}", ln[1], ln[0], y))
    groups = pair_groups(acts.meta.get("pairs") or [None] * acts.n)
    found: list[ExtractedDirection] = []
    units = []
    with threadpool_limits(1):
        for name, pos, neg, y in jobs:
            d, m = evaluate(x, y, method, seed, groups)
            units.append(d / m["norm"])
            file = None
            if out_dir is not None:
                make_dir(out_dir)
                target = save_direction(out_dir / f"{_safe(name)}_L{layer}_{method}.npz", d, layer=layer,
                                        model_id=acts.model_id, method=f"circuit_{method}", label_positive=pos,
                                        label_negative=neg, accuracy=m["heldout_accuracy"],
                                        separation=m["heldout_separation"], norm=m["norm"],
                                        name=name, activations_file=acts.path)
                file = str(target)
            found.append(ExtractedDirection(name=name, positive=pos, negative=neg, layer=layer, method=method,
                                            file=file, **m))
    u = np.stack(units)
    cos = np.clip(u @ u.T, -1, 1).tolist() if len(units) > 1 else []
    return ExtractedDirectionsResult(model_id=acts.model_id, activations_file=acts.path, layer=layer, method=method,
                            directions=found, cosine=cos, output_dir=str(out_dir) if out_dir else None)
