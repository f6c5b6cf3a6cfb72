"""Neurons: single residual dimensions (default) or MLP hidden units (``mlp=True``), per prompt.

Which neurons: explicit indices, the top-k |weights| of a direction file, or (with labels)
auto-discovered as the dimensions whose label means differ most: max over label pairs of
|mu_i - mu_j| / pooled std. All prompts and layers come from one batched forward.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import combinations

import numpy as np

from engine.direction_files import DirectionFile, load_direction
from engine.distributed import World
from engine.errors import InputError
from engine.hooks import Batch, CaptureSpec, HookedModel, Intervention, Site, SiteKind
from engine.models import LoadedModel
from engine.representations import Progress, encode_prompts, last_hidden, resolve_layers
from engine.results.neurons import NeuronsRequest, NeuronsResult, NeuronStats


def separation_scores(x: np.ndarray, labels: list[str]) -> np.ndarray:
    """x [N, W] → per column, max over label pairs of |mu_i - mu_j| / sqrt((var_i + var_j) / 2)."""
    groups = {lab: x[[i for i, v in enumerate(labels) if v == lab]] for lab in dict.fromkeys(labels)}
    best = np.zeros(x.shape[1])
    for a, b in combinations(groups, 2):
        ga, gb = groups[a], groups[b]
        pooled = np.sqrt(0.5 * (ga.var(axis=0) + gb.var(axis=0)))
        score = np.abs(ga.mean(0) - gb.mean(0)) / np.maximum(pooled, 1e-6)
        best = np.maximum(best, score)
    return best


def parse_steer(spec: str) -> tuple[str, float | None]:
    """``f.npz`` or ``f.npz:coef``."""
    if ":" in spec and not spec.endswith(".npz"):
        path, _, coef = spec.rpartition(":")
        try:
            return path, float(coef)
        except ValueError as exc:
            raise InputError(f"bad --steer {spec!r}: expected FILE.npz or FILE.npz:COEF") from exc
    return spec, None


def _mean_token_norm(lm: LoadedModel, rows: list[list[int]], layer: int) -> float:
    """Mean per-token L2 norm of layer ``layer``'s output over the prompts' real tokens after the first (the steering scale)."""
    hm = HookedModel(lm)
    out = hm.forward(Batch.from_lists(rows, lm.tokenizer.batch_pad_id),
                     capture=CaptureSpec(kinds=(SiteKind.resid_post,), layers=[layer], positions="all"),
                     logits="none", stop_layer=layer + 1)
    import mlx.core as mx

    h = np.array(out.captures[f"blocks.{layer}.resid_post"].astype(mx.float32)).astype(np.float64)  # [B, S, d]
    width = h.shape[1]
    # position 0 (the attention sink, far larger norm) is left out, as engine.steering does
    norms = [np.linalg.norm(h[b, width - len(r):][1 if len(r) > 1 else 0:], axis=-1) for b, r in enumerate(rows)]
    return float(np.concatenate(norms).mean())


def _check_request(lm: LoadedModel, req: NeuronsRequest, width: int, direction: DirectionFile | None) -> list[int]:
    """The request's layers, resolved, after every check that needs no forward (one line each)."""
    layers = list(req.layers)
    if not layers and direction is not None and direction.layer is not None:
        layers = [direction.layer]
    if not layers:
        raise InputError("give -l/--layer or --layers (or a direction file that stores its layer)")
    layers = resolve_layers(layers, lm.num_layers)
    modes = sum([bool(req.neurons), direction is not None, req.auto_discover])
    if modes != 1:
        raise InputError("choose exactly one of -n/--neurons, --from-direction, --auto-discover")
    for n in req.neurons:
        if not 0 <= n < width:
            raise InputError(f"neuron {n} out of range ({'MLP width' if req.mlp else 'hidden size'} {width}: "
                             f"0-{width - 1})")
    if req.neuron_names and len(req.neuron_names) != len(req.neurons):
        raise InputError(f"{len(req.neuron_names)} neuron names for {len(req.neurons)} neurons")
    if req.labels is not None and len(req.labels) != len(req.prompts):
        raise InputError(f"{len(req.labels)} labels for {len(req.prompts)} prompts: give one label per prompt")
    if req.auto_discover and (req.labels is None or len(set(req.labels)) < 2):
        raise InputError("--auto-discover needs --labels with at least two different labels")
    if direction is not None:
        if req.mlp:
            raise InputError("--from-direction selects residual dimensions; it cannot be combined with --mlp")
        if direction.direction.size != width:
            raise InputError(f"direction in {direction.path} has {direction.direction.size} values but the "
                             f"model's hidden size is {width}")
    return layers


def _steered(lm: LoadedModel, req: NeuronsRequest, rows: list[list[int]], layers: list[int], kind: SiteKind,
             cancel: Callable[[], bool] | None, progress: Progress | None,
             world: World | None) -> tuple[np.ndarray | None, str]:
    """The activations under ``req.steer`` ([L, N, W] float64; None on ranks other than 0) and its description."""
    assert req.steer is not None
    path, coef = parse_steer(req.steer)
    sd = load_direction(path)
    coef = req.strength if req.strength is not None else (coef if coef is not None else 1.0)
    if sd.direction.size != lm.info.hidden_size:
        raise InputError(f"steering direction in {path} has {sd.direction.size} values, hidden size is "
                         f"{lm.info.hidden_size}")
    if sd.layer is None:
        raise InputError(f"steering file {path} stores no layer")
    slayer = resolve_layers([sd.layer], lm.num_layers)[0]
    if world is not None and world.active:
        s = float(world.broadcast(lambda: _mean_token_norm(lm, rows, slayer)))
    else:
        s = _mean_token_norm(lm, rows, slayer)
    iv = Intervention(site=Site(layer=slayer, kind=SiteKind.resid_post), op="add",
                      vector=sd.unit * coef * s)
    steered = last_hidden(lm, req.prompts, layers, rows=rows, kind=kind, interventions=[iv],
                          cancel=cancel, progress=progress, world=world)
    if steered is not None:
        steered = steered.astype(np.float64)
    desc = (f"added {coef:g} x unit({sd.name}) x {s:.2f} (mean per-token norm) at layer {slayer} "
            "output, every position; layers before it are unchanged")
    return steered, desc


def _layer_stats(req: NeuronsRequest, direction: DirectionFile | None, layer: int, x: np.ndarray,
                 steered: np.ndarray | None) -> list[NeuronStats]:
    """The chosen neurons of one layer: ``x`` [N, W] its activations, ``steered`` [N, W] under steering."""
    weights: dict[int, float] = {}
    scores = None
    if req.neurons:
        chosen = list(req.neurons)
    elif direction is not None:
        chosen = [int(i) for i in np.argsort(-np.abs(direction.direction))[:req.top_k]]
        weights = {i: float(direction.direction[i]) for i in chosen}
    else:
        scores = separation_scores(x, list(req.labels or []))
        chosen = [int(i) for i in np.argsort(-scores)[:req.top_k]]
    out: list[NeuronStats] = []
    for j, n in enumerate(chosen):
        v = x[:, n]
        out.append(NeuronStats(layer=layer, neuron=n,
                               name=req.neuron_names[j] if req.neuron_names else None,
                               values=v.tolist(), min=float(v.min()), max=float(v.max()), mean=float(v.mean()),
                               std=float(v.std()), separation=float(scores[n]) if scores is not None else None,
                               weight=weights.get(n),
                               steered_values=steered[:, n].tolist() if steered is not None else None))
    return out


def run_neurons(lm: LoadedModel, req: NeuronsRequest, cancel: Callable[[], bool] | None = None,
                progress: Progress | None = None, world: World | None = None) -> NeuronsResult | None:
    """Per layer: the chosen neurons' (or dimensions') activations on the prompts, with label
    separation; optionally again under a steering direction (``progress`` then runs twice).
    ``world``: the forward batches are shared among the ranks (rank 0 alone measures the steering
    scale and sends it to the others); rank 0 returns the result, the other ranks None."""
    if not req.prompts:
        raise InputError("no prompts given")
    kind = SiteKind.mlp_hidden if req.mlp else SiteKind.resid_post
    width = lm.info.intermediate_size if req.mlp else lm.info.hidden_size
    direction = load_direction(req.from_direction) if req.from_direction else None
    layers = _check_request(lm, req, width, direction)
    rows = encode_prompts(lm, req.prompts, req.chat)
    acts = last_hidden(lm, req.prompts, layers, rows=rows, kind=kind, cancel=cancel, progress=progress,
                       world=world)  # [L, N, W]; None on ranks other than 0
    steered, steer_desc = None, None
    if req.steer:
        steered, steer_desc = _steered(lm, req, rows, layers, kind, cancel, progress, world)
    if acts is None:
        return None
    acts = acts.astype(np.float64)
    out = [st for li, layer in enumerate(layers)
           for st in _layer_stats(req, direction, layer, acts[li], steered[li] if steered is not None else None)]
    return NeuronsResult(model_id=lm.info.model_id, request=req, site=kind.value, prompts=list(req.prompts),
                         labels=req.labels, neurons=out, steering=steer_desc)
