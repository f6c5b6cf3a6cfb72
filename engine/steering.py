"""Activation steering: generation with a direction added to one layer's output, scored.

The direction (``SteeringDirection``: extraction from contrastive prompts, neuron directions,
files) is engine.steering_direction. Application: ``coef * unit(direction) * s`` is added to layer
L's output (every position, or one prompt position) for the prompt and for every generated token,
through the KV cache; ``s`` is the typical token norm of layer L's output on the prompt (position 0,
the attention sink, left out; engine.steering_prefix).

Sweeps: every (prompt, layer, coefficient) setting is one row of ONE batch, its add-vector
intervention bound to its row (``Intervention.row``); coefficient 0 rows get no intervention, so
they are exactly the unsteered generation. ``batched=False`` runs the settings one at a time
(the same outputs, slower; kept for the comparison benchmark).

Scores per output (engine.steering_scores): an optional text criterion, and the projection on the
unit direction of the layer-L output at the last generated token when the *unsteered* model reads
prompt + output (so the score measures where the generated text sits, not the vector we added),
plus its mean over the generated positions.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.criteria import NEGATIVE_WORDS, POSITIVE_WORDS
from engine.errors import InputError
from engine.generate import generate_ids
from engine.hooks import HookedModel, Intervention, Site, SiteKind
from engine.models import LoadedModel
from engine.results.steering import ExtractRequest, ExtractResult, SteeredOutput, SteerRequest, SteerResult
from engine.steering_direction import SteeringDirection, _rows, _use_chat
from engine.steering_prefix import CleanPrefix, clean_projections, prompt_scale
from engine.steering_scores import score_criterion, strip_eos, with_divergence

__all__ = [
    "NEGATIVE_WORDS",
    "POSITIVE_WORDS",
    "SteeringDirection",
    "prompt_scale",
    "run_extract",
    "run_steer",
    "score_criterion",
    "steer_generate",
    "with_divergence",
]

Setting = tuple[int, int, float, float]  # (prompt index, layer, coefficient, s)


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


def _check(req: SteerRequest) -> None:
    if not req.prompts or any(p == "" for p in req.prompts):
        raise InputError("empty prompt")
    if not req.coefficients:
        raise InputError("no coefficients given")
    if any(not np.isfinite(c) for c in req.coefficients):
        raise InputError("coefficients must be finite numbers")


@dataclass
class _Run:
    """What every setting of one steering run shares."""

    hm: HookedModel
    req: SteerRequest
    prompt_rows: list[list[int]]
    units: dict[int, np.ndarray]  # layer -> unit direction
    cancel: Callable[[], bool] | None
    on_step: Callable[[int, int], None] | None

    def __post_init__(self) -> None:
        self.vectors = {lay: u.astype(np.float32).tolist() for lay, u in self.units.items()}

    def intervention(self, lay: int, c: float, s: float, row: int | None) -> Intervention:
        return Intervention(site=Site(layer=lay, kind=SiteKind.resid_post), op="add", vector=self.vectors[lay],
                            factor=c * s, position=self.req.position, row=row)

    def batched(self, prefix: CleanPrefix, settings: list[Setting], sample_rows: tuple[int, int] | None,
                generated: Sequence[tuple[list[int], str]] | None, part: bool
                ) -> tuple[list[list[int]], list[str], list[tuple[float, float]]]:
        """All settings as rows of one batch from the shared clean prefix: (generated ids without
        EOS, why each stopped, projections). ``generated`` skips generation; ``part`` (one rank's
        share) leaves the projections at 0."""
        req, eos = self.req, self.hm.lm.tokenizer.eos_ids
        src = [pi for pi, _, _, _ in settings]
        if generated is None:
            ivs = [self.intervention(lay, c, s, i) for i, (_, lay, c, s) in enumerate(settings) if c != 0.0]
            kv, first = prefix.steered_prompt(src, ivs)
            outs = generate_ids(self.hm, [self.prompt_rows[pi] for pi in src], req.max_tokens, interventions=ivs,
                                temperature=req.temperature, seed=req.seed, stop_ids=eos, cancel=self.cancel,
                                on_step=self.on_step, kv=kv, first_logits=first, sample_rows=sample_rows)
            gens, stopped = [strip_eos(o.ids, o.stopped, eos) for o in outs], [o.stopped for o in outs]
        else:
            gens, stopped = [list(ids) for ids, _ in generated], [st for _, st in generated]
        # the clean projections read every row in one batch (its shape changes the last bits), so a
        # part of a split run leaves them to the merge, which passes ``generated``
        if part:
            return gens, stopped, [(0.0, 0.0)] * len(settings)
        lays = [lay for _, lay, _, _ in settings]
        return gens, stopped, prefix.projections(src, gens, lays, [self.units[lay] for lay in lays])

    def one_at_a_time(self, settings: list[Setting]) -> tuple[list[list[int]], list[str], list[tuple[float, float]]]:
        """Each setting alone (the reference the batched path reproduces)."""
        req, eos = self.req, self.hm.lm.tokenizer.eos_ids
        gens, stopped, projs = [], [], []
        total = len(settings) * req.max_tokens
        for i, (pi, lay, c, s) in enumerate(settings):
            step_cb = None if self.on_step is None else _offset_steps(self.on_step, i * req.max_tokens, total)
            ivs = [self.intervention(lay, c, s, None)] if c != 0.0 else []
            row = self.prompt_rows[pi]
            o = generate_ids(self.hm, [row], req.max_tokens, interventions=ivs, temperature=req.temperature,
                             seed=req.seed, stop_ids=eos, cancel=self.cancel, on_step=step_cb)[0]
            gens.append(strip_eos(o.ids, o.stopped, eos))
            stopped.append(o.stopped)
            projs += clean_projections(self.hm, [row], [gens[-1]], [lay], [self.units[lay]])
        return gens, stopped, projs


def _offset_steps(on_step: Callable[[int, int], None], done: int, total: int) -> Callable[[int, int], None]:
    """One setting's step callback reporting on the whole run's scale."""
    return lambda k, n: on_step(done + k, total)


def _part(settings: list[Setting], only: Sequence[int] | None) -> tuple[list[Setting], tuple[int, int] | None]:
    """The settings a part of a split run generates, and its rows in the whole batch (for sampling)."""
    if only is None:
        return settings, None
    only = list(only)
    if only and only != list(range(only[0], only[0] + len(only))):
        raise ValueError("a part of a steering run is a run of consecutive settings")
    return [settings[i] for i in only], ((only[0], len(settings)) if only else None)


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
    _check(req)
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
    run = _Run(hm, req, prompt_rows, {lay: d.unit(lay) for lay in layers}, cancel, on_step)

    t0 = time.perf_counter()
    need = sorted(set(layers))
    # the batched sweep shares per-layer keys/values between rows: state-space layers have none
    prefix = CleanPrefix(hm, prompt_rows, need, cancel) if req.batched and not hm.state_layers else None
    scales = prefix.scales if prefix is not None else prompt_scale(hm, prompt_rows, need)  # [need, prompts]
    settings, sample_rows = _part([(pi, lay, float(c), float(scales[need.index(lay), pi]))
                                   for pi in range(len(req.prompts)) for lay in layers for c in req.coefficients], only)
    if prefix is not None:
        gens, stopped, projs = run.batched(prefix, settings, sample_rows, generated, only is not None)
    else:
        gens, stopped, projs = run.one_at_a_time(settings)
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
