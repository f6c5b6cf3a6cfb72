"""Charts of an activation file: PNG files (matplotlib, Agg) and the same charts as terminal text
(plotext). Charts: PCA variance (cumulative curve at the layer, dims for 90/95% per layer), UMAP
scatter at the layer coloured by label and by category, probe accuracy per layer (binary held-out
and CV, category held-out, majority baseline)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.circuit.activations import Activations
from engine.circuit.geometry import analyze, label_counts, umap_embed
from engine.errors import InputError
from engine.fileio import check_output, make_dir, save_figure
from engine.results.circuit import AnalyzeResult, VisualizeResult

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf"]
TERM_COLORS = ["blue", "red", "green", "orange", "magenta", "cyan", "yellow", "white", "gray", "violet"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _term(build) -> str:
    import plotext as tp

    tp.clf()
    tp.theme("clear")
    tp.plotsize(90, 22)
    build(tp)
    text = tp.build()
    tp.clf()
    return text


def pca_charts(res: AnalyzeResult, layer: int, out_dir: Path, model: str) -> tuple[Path, str]:
    g = next(x for x in res.layers if x.layer == layer)
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    comps = np.arange(1, len(g.cumulative_variance) + 1)
    a1.plot(comps, g.cumulative_variance, marker="o", ms=3, color=PALETTE[0], label="cumulative")
    a1.bar(comps, g.variance_explained, color=PALETTE[2], alpha=0.6, label="per component")
    for lvl, c in ((0.9, "gray"), (0.95, "black")):
        a1.axhline(lvl, ls="--", lw=0.8, color=c)
    a1.set(title=f"PCA variance, layer {layer} (90%: {g.dims_90} dims, 95%: {g.dims_95})",
           xlabel="component", ylabel="variance explained", ylim=(0, 1.02))
    a1.legend(loc="center right")
    layers = [x.layer for x in res.layers]
    a2.plot(layers, [x.dims_90 for x in res.layers], marker="o", ms=3, label="dims for 90%")
    a2.plot(layers, [x.dims_95 for x in res.layers], marker="s", ms=3, label="dims for 95%")
    a2.set(title="PCA dimensionality per layer", xlabel="layer", ylabel="components")
    a2.legend()
    fig.suptitle(f"{model} - {res.num_prompts} prompts")
    fig.tight_layout()
    path = out_dir / f"pca_variance_L{layer}.png"
    save_figure(fig, path, dpi=110)
    plt.close(fig)

    def term(tp) -> None:
        tp.plot(comps.tolist(), g.cumulative_variance, label="cumulative variance", marker="braille")
        tp.hline(0.9, "gray")
        tp.title(f"PCA cumulative variance, layer {layer} (90%: {g.dims_90} dims, 95%: {g.dims_95})")
        tp.xlabel("component")
        tp.ylim(0, 1)

    return path, _term(term)


def umap_charts(acts: Activations, layer: int, out_dir: Path, emb: np.ndarray | None = None
                ) -> list[tuple[Path, str]]:
    emb = emb if emb is not None else umap_embed(acts.get(layer))
    names = acts.label_names
    groups = {"label": [names[i] if i < len(names) else str(i) for i in acts.labels.tolist()],
              "category": acts.categories}
    plt = _plt()
    out = []
    for what, values in groups.items():
        keys = sorted(set(values))
        fig, ax = plt.subplots(figsize=(7, 5.6))
        for i, k in enumerate(keys):
            sel = np.array([v == k for v in values])
            ax.scatter(emb[sel, 0], emb[sel, 1], s=18, color=PALETTE[i % len(PALETTE)], label=f"{k} ({sel.sum()})")
        ax.set(title=f"UMAP of layer {layer} by {what} ({acts.model_id})", xlabel="UMAP 1", ylabel="UMAP 2")
        ax.legend(fontsize=8, loc="best")
        fig.tight_layout()
        path = out_dir / f"umap_{what}_L{layer}.png"
        save_figure(fig, path, dpi=110)
        plt.close(fig)

        def term(tp, keys=keys, values=values, what=what) -> None:
            for i, k in enumerate(keys):
                sel = np.array([v == k for v in values])
                tp.scatter(emb[sel, 0].tolist(), emb[sel, 1].tolist(), label=k, color=TERM_COLORS[i % len(TERM_COLORS)],
                           marker="dot")
            tp.title(f"UMAP of layer {layer} by {what}")

        out.append((path, _term(term)))
    return out


def probe_charts(res: AnalyzeResult, out_dir: Path, model: str) -> tuple[Path, str]:
    layers = [g.layer for g in res.layers]
    held = [g.binary_probe.heldout_accuracy for g in res.layers]
    cv = [g.binary_probe.cv_accuracy for g in res.layers]
    base = res.layers[0].binary_probe.baseline
    cats = [g.category_probe.heldout_accuracy if g.category_probe else None for g in res.layers]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.plot(layers, held, marker="o", ms=4, label=f"binary probe, held-out ({'/'.join(res.labels)})")
    ax.plot(layers, cv, marker="s", ms=3, ls="--", label="binary probe, CV mean")
    if any(c is not None for c in cats):
        ax.plot(layers, [np.nan if c is None else c for c in cats], marker="^", ms=4, label="category probe, held-out")
        cbase = next(g.category_probe.baseline for g in res.layers if g.category_probe)
        ax.axhline(cbase, ls=":", color="gray", label=f"category majority baseline ({cbase:.2f})")
    ax.axhline(base, ls="--", color="black", lw=0.8, label=f"binary majority baseline ({base:.2f})")
    ax.set(title=f"Probe accuracy per layer ({model}, {res.num_prompts} prompts)", xlabel="layer",
           ylabel="accuracy", ylim=(0, 1.03))
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path = out_dir / "probe_accuracy.png"
    save_figure(fig, path, dpi=110)
    plt.close(fig)

    def term(tp) -> None:
        tp.plot(layers, held, label="binary held-out", marker="braille")
        tp.plot(layers, cv, label="binary CV", marker="braille")
        if any(c is not None for c in cats):
            tp.plot(layers, [0.0 if c is None else c for c in cats], label="category held-out", marker="braille")
        tp.hline(base, "gray")
        tp.ylim(0, 1)
        tp.title(f"Probe accuracy per layer (baseline {base:.2f})")
        tp.xlabel("layer")

    return path, _term(term)


def check_analysis_matches(analysis: AnalyzeResult, acts: Activations) -> None:
    """Refuse (one line) a saved analysis made from another activation file than ``acts``."""
    def refuse(why: str) -> None:
        raise InputError(f"the analysis was made from another activation file ({analysis.activations_file}: "
                         f"{why}); run 'circuit analyze -a {acts.path} -o FILE.json' for this one")

    if None not in (analysis.activations_fingerprint, acts.fingerprint) and \
            analysis.activations_fingerprint != acts.fingerprint:
        refuse("other model, prompts, layers or options")
    if analysis.model_id != acts.model_id:
        refuse(f"model {analysis.model_id}, not {acts.model_id}")
    if analysis.num_prompts != acts.n:
        refuse(f"{analysis.num_prompts} prompts, not {acts.n}")
    if analysis.labels != acts.label_names or analysis.label_counts != label_counts(acts):
        refuse("other labels")
    missing = [g.layer for g in analysis.layers if g.layer not in acts.layers]
    if missing:
        refuse(f"layers {missing} are not in {acts.path}")


def visualize(acts: Activations, out_dir: str, layer: int | None = None, pca: bool = True, umap: bool = True,
              probes: bool = True, seed: int = 0, analysis: AnalyzeResult | None = None) -> VisualizeResult:
    """Draw the charts. ``analysis`` (a saved ``circuit analyze`` result for this file) skips recomputing
    PCA and probes."""
    if not (pca or umap or probes):
        raise InputError("nothing to draw: choose --pca, --umap, --probes or --all")
    d = check_output(out_dir, directory=True)
    if layer is not None:
        acts.check_layer(layer)
    res = None
    if analysis is not None and (pca or probes):
        check_analysis_matches(analysis, acts)
        if probes and any(g.binary_probe is None for g in analysis.layers):
            raise InputError("the analysis has no probe results")
        if layer is not None and pca and layer not in [g.layer for g in analysis.layers]:
            raise InputError(f"layer {layer} is not in the analysis (layers: {[g.layer for g in analysis.layers]})")
        res = analysis
    elif pca or probes:
        res = analyze(acts, probes=probes, seed=seed)
    if layer is None:
        layer = res.best_layer if res is not None and res.best_layer is not None else acts.layers[len(acts.layers) // 2]
    make_dir(d)
    files, charts = [], []
    if pca:
        p, t = pca_charts(res, layer, d, acts.model_id)
        files.append(str(p))
        charts.append(t)
    if umap:
        for p, t in umap_charts(acts, layer, d):
            files.append(str(p))
            charts.append(t)
    if probes:
        p, t = probe_charts(res, d, acts.model_id)
        files.append(str(p))
        charts.append(t)
    return VisualizeResult(activations_file=acts.path, layer=layer, files=files, terminal_charts=charts)
