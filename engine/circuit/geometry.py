"""Activation geometry per layer: PCA, binary and category probes, k-means, UMAP.

Probes are standardised logistic regressions (scikit-learn). Held-out accuracy: a stratified
split, 25% test (at least one prompt per class), the probe trained on the rest only.
CV accuracy: stratified k-fold, k = min(5, smallest class). The majority-class share is the
baseline a probe must beat. Contrastive datasets (``pair`` ids) split whole pairs. k-means runs
on the first (up to) 50 principal components with k = number of categories; silhouette is over
those clusters, ARI compares them to categories.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

from engine.circuit.activations import Activations, resolve_layers
from engine.errors import Cancelled, InputError
from engine.results.circuit import AnalyzeResult, LayerGeometry, ProbeScore

MAX_COMPONENTS = 50


def classifier(seed: int = 0, n_classes: int = 2):
    """Standardise, then L2 logistic regression (C=1, liblinear: several times faster than lbfgs on
    these small, wide problems); more than two classes: one-vs-rest."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    lr = LogisticRegression(max_iter=2000, C=1.0, solver="liblinear", random_state=seed)
    return make_pipeline(StandardScaler(), lr if n_classes == 2 else OneVsRestClassifier(lr))


def pca_curve(x: np.ndarray) -> tuple[list[float], list[float], int, int]:
    """(variance ratio per component (first 50), cumulative (first 50), dims for 90%, dims for 95%)."""
    xc = x - x.mean(axis=0, keepdims=True)
    s = np.linalg.svd(xc, compute_uv=False)
    var = s ** 2
    total = var.sum()
    if total <= 0:
        return [0.0], [0.0], 0, 0
    ratio = var / total
    cum = np.cumsum(ratio)
    d90 = int(np.searchsorted(cum, 0.90 - 1e-12) + 1)
    d95 = int(np.searchsorted(cum, 0.95 - 1e-12) + 1)
    k = min(MAX_COMPONENTS, len(ratio))
    return ratio[:k].tolist(), cum[:k].tolist(), min(d90, len(ratio)), min(d95, len(ratio))


def pair_groups(pairs: Sequence[int | None]) -> np.ndarray | None:
    """Group ids for CV from contrastive ``pair`` ids (unpaired prompts get their own group); None if none."""
    if all(p is None for p in pairs):
        return None
    return np.array([f"p{p}" if p is not None else f"u{i}" for i, p in enumerate(pairs)])


def split(y: np.ndarray, seed: int = 0, test_size: float = 0.25, groups: np.ndarray | None = None
          ) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train/test indices; every class keeps at least one prompt on each side.
    With ``groups`` (contrast pairs) whole groups go to one side."""
    rng = np.random.default_rng(seed)
    if groups is not None:
        for _attempt in range(50):
            uniq = np.unique(groups)
            rng.shuffle(uniq)
            n_test = max(1, int(round(test_size * len(uniq))))
            test_mask = np.isin(groups, uniq[:n_test])
            if len(np.unique(y[test_mask])) == len(np.unique(y)) == len(np.unique(y[~test_mask])):
                return np.flatnonzero(~test_mask), np.flatnonzero(test_mask)
    train, test = [], []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        n_test = min(len(idx) - 1, max(1, int(round(test_size * len(idx)))))
        test.extend(idx[:n_test])
        train.extend(idx[n_test:])
    return np.array(sorted(train)), np.array(sorted(test))


def folds(y: np.ndarray, seed: int = 0, groups: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified k-fold, k = min(5, smallest class); with ``groups``, stratified group k-fold
    (k also at most the number of groups)."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    k = min(5, min(Counter(y.tolist()).values()))
    if groups is not None:
        k = min(k, len(np.unique(groups)))
        return list(StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(y, y, groups))
    return list(StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(y, y))


def probe_score(x: np.ndarray, y: np.ndarray, seed: int = 0, groups: np.ndarray | None = None) -> ProbeScore:
    """Held-out and CV accuracy of a standardised logistic probe. Needs >= 2 classes of >= 2 prompts.
    ``groups`` (contrast pairs) keep both members of a pair on the same side of every split."""
    counts = Counter(y.tolist())
    if len(counts) < 2 or min(counts.values()) < 2:
        raise InputError("a probe needs at least two classes with at least 2 prompts each")
    accs = []
    splits = folds(y, seed, groups)
    for tr, te in splits:
        clf = classifier(seed, len(counts)).fit(x[tr], y[tr])
        accs.append(float(np.mean(clf.predict(x[te]) == y[te])))
    k = len(splits)
    tr, te = split(y, seed, groups=groups)
    clf = classifier(seed, len(counts)).fit(x[tr], y[tr])
    held = float(np.mean(clf.predict(x[te]) == y[te]))
    return ProbeScore(heldout_accuracy=held, cv_accuracy=float(np.mean(accs)), cv_std=float(np.std(accs)),
                      folds=k, baseline=max(counts.values()) / len(y), classes=len(counts))


def kmeans_scores(x: np.ndarray, categories: Sequence[str], seed: int = 0) -> tuple[int, float | None, float | None]:
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.metrics import adjusted_rand_score, silhouette_score

    k = max(2, len(set(categories)))
    if k >= len(x):
        return k, None, None
    z = PCA(n_components=min(MAX_COMPONENTS, len(x) - 1, x.shape[1]), random_state=seed).fit_transform(x)
    clusters = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(z)
    if len(set(clusters.tolist())) < 2:
        return k, None, None
    return k, float(silhouette_score(z, clusters)), float(adjusted_rand_score(list(categories), clusters))


def umap_embed(x: np.ndarray, seed: int = 0) -> np.ndarray:
    import warnings

    import umap

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        n_neighbors = max(2, min(15, len(x) - 1))
        return umap.UMAP(n_components=2, n_neighbors=n_neighbors, random_state=seed).fit_transform(x)


def binary_labels(acts: Activations) -> np.ndarray:
    """The binary labels, refusing a dataset with a single label (one line, exit 2)."""
    y = acts.labels
    present = sorted(set(y.tolist()))
    if len(present) < 2:
        names = acts.label_names
        only = names[present[0]] if present and present[0] < len(names) else str(present[0] if present else "")
        raise InputError(f"a binary probe needs two labels, but every prompt in {acts.path} has label "
                         f"{only!r}")
    if len(present) > 2:
        raise InputError(f"binary labels must be 0/1; {acts.path} has labels {present}")
    counts = Counter(y.tolist())
    if min(counts.values()) < 2:
        raise InputError(f"each label needs at least 2 prompts (counts: {dict(counts)})")
    return y


def label_counts(acts: Activations) -> dict[str, int]:
    """Prompts per label name, in label order (``AnalyzeResult.label_counts``)."""
    names = acts.label_names
    return {(names[k] if k < len(names) else str(k)): v for k, v in sorted(Counter(acts.labels.tolist()).items())}


def analyze(acts: Activations, layer: int | None = None, layers: list[int] | None = None, umap: bool = False,
            kmeans: bool = False, probes: bool = True, seed: int = 0, cancel: Callable[[], bool] | None = None,
            on_rows: Callable[[list[LayerGeometry], int], None] | None = None) -> AnalyzeResult:
    """Per chosen layer: PCA curve, binary and category probes (and k-means). ``on_rows(rows, total)``
    receives every finished layer so far after each layer (progress and a live table)."""
    from threadpoolctl import threadpool_limits

    chosen = resolve_layers(acts, layer, layers)
    y = binary_labels(acts) if probes else acts.labels
    groups = pair_groups(acts.meta.get("pairs") or [None] * acts.n)
    cats = acts.categories
    cat_counts = Counter(cats)
    notes = []
    usable = {c for c, n in cat_counts.items() if n >= 2}
    cat_idx = np.array([i for i, c in enumerate(cats) if c in usable])
    if not probes:
        usable = set()
    elif len(usable) < 2:
        notes.append("category probe skipped: fewer than two categories with 2+ prompts")
    elif len(usable) == 2 and set(usable) == {acts.label_names[i] for i in set(y.tolist())}:
        notes.append("categories equal the binary labels")
    elif len(usable) < len(cat_counts):
        notes.append(f"category probe leaves out categories with a single prompt: "
                     f"{sorted(set(cat_counts) - usable)}")
    cat_y = np.array([sorted(usable).index(cats[i]) for i in cat_idx]) if len(usable) >= 2 else None
    out = []
    with threadpool_limits(1):
        for li in chosen:
            if cancel is not None and cancel():
                raise Cancelled("cancelled")
            x = acts.get(li)
            ratio, cum, d90, d95 = pca_curve(x)
            bp = probe_score(x, y, seed, groups) if probes else None
            cp = probe_score(x[cat_idx], cat_y, seed) if cat_y is not None and len(usable) > 2 else None
            k = sil = ari = None
            if kmeans:
                k, sil, ari = kmeans_scores(x, cats, seed)
            out.append(LayerGeometry(layer=li, variance_explained=ratio, cumulative_variance=cum, dims_90=d90,
                                     dims_95=d95, binary_probe=bp, category_probe=cp, kmeans_k=k,
                                     kmeans_silhouette=sil, kmeans_ari=ari))
            if on_rows is not None:
                on_rows(list(out), len(chosen))
    best = max(out, key=lambda g: (g.binary_probe.heldout_accuracy, g.binary_probe.cv_accuracy,
                                   -g.layer)).layer if probes else None
    if umap:  # one embedding (UMAP is slow): the only layer, else the best layer, else the middle one
        at = chosen[0] if len(chosen) == 1 else best if best is not None else chosen[len(chosen) // 2]
        i = chosen.index(at)
        out[i] = out[i].model_copy(update={"umap": umap_embed(acts.get(at), seed).tolist()})
    with_cat = [g for g in out if g.category_probe is not None]
    best_cat = max(with_cat, key=lambda g: (g.category_probe.heldout_accuracy, g.category_probe.cv_accuracy,
                                            -g.layer)).layer if with_cat else None
    names = acts.label_names
    return AnalyzeResult(model_id=acts.model_id, activations_file=acts.path, num_prompts=acts.n, labels=names,
                         label_counts=label_counts(acts),
                         category_counts=dict(sorted(cat_counts.items())), layers=out, best_layer=best,
                         best_category_layer=best_cat, notes=notes, activations_fingerprint=acts.fingerprint)
