"""Ablation studies: interventions in the hooked forward (never weight edits), batched and prefix-reusing.

A study is a list of *sweep points* (``AblationSpec``: some layers, a component or some heads),
each run on one or more prompts with greedy generation and the KV cache.

How a sweep runs (``strategy="batched"``):

1. The prompts of equal token length form one group (no padding, so batched rows compute what a
   lone run computes). For each group, one un-ablated forward pass over the prompt fills a KV
   cache and keeps the residual entering every layer at which some sweep point starts.
2. Every sweep point becomes one row of ONE batch (plus a baseline row per prompt); each row
   carries its own ablation as ``Intervention(row=r)``. Below a row's first ablated layer its
   prompt activations equal the baseline's, so they are not recomputed: the prompt is pushed
   through the stack one layer at a time, and a row joins the batch at its first ablated layer,
   starting from the stored baseline residual; below that layer its KV cache is the baseline's.
3. All rows then generate together, one batched forward per token, with the ablations on.

``strategy="sequential"`` runs every sweep point alone (one full generation each, no reuse); it is
the reference that the batched path must reproduce token for token, and the benchmark baseline.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.ablation_batched import run_group_batched
from engine.ablation_specs import (
    SiteKey,
    check_spec,
    expand_specs,
    mean_activations,
    spec_interventions,
    spec_sites,
)
from engine.criteria import make_criterion
from engine.errors import InputError
from engine.generate import RowOutput, generate_ids
from engine.hooks import HookedModel, Intervention
from engine.models import LoadedModel
from engine.results.ablation import AblationOutput, AblationPoint, AblationRequest, AblationResult, AblationSpec

__all__ = ["SiteKey", "check_spec", "expand_specs", "mean_activations", "run_ablation", "run_group_batched",
           "spec_interventions", "spec_sites"]

Progress = Callable[[str, int, int, str, Any], None]
Judge = Callable[[str], bool] | None


def _diverged_at(base: list[int], ids: list[int]) -> int | None:
    for i, (a, b) in enumerate(zip(base, ids)):
        if a != b:
            return i
    return None if len(base) == len(ids) else min(len(base), len(ids))


def _output(lm: LoadedModel, prompt: str, o: RowOutput, base: RowOutput | None, judge: Judge) -> AblationOutput:
    tok = lm.tokenizer
    ids = o.ids[:-1] if o.stopped == "eos" and o.ids and o.ids[-1] in tok.eos_ids else list(o.ids)
    text = tok.decode(ids)
    return AblationOutput(prompt=prompt, text=text, token_ids=list(o.ids), stopped=o.stopped,
                          passed=judge(text) if judge is not None else None,
                          diverged_at=_diverged_at(base.ids, o.ids) if base is not None else None)


def _contains(expected: str) -> Callable[[str], bool]:
    return lambda text: expected in text


def _cases(req: AblationRequest, criterion_fn: Judge) -> tuple[list[str], list[Judge], str]:
    """(prompts, a judge per prompt, the criterion's description)."""
    if req.prompts:
        cases = [(c.prompt, c.expected) for c in req.prompts]
        for p, e in cases:
            if p == "" or e == "":
                raise InputError("each --prompts entry needs a prompt and an expected answer (prompt:expected)")
        judges: list[Judge] = [_contains(e) for _, e in cases]
        return [p for p, _ in cases], judges, "expected substring per prompt"
    if not req.prompt:
        raise InputError("empty prompt")
    if criterion_fn is not None:
        return [req.prompt], [criterion_fn], "custom criterion"
    if req.criterion:
        fn, description = make_criterion(req.criterion)
        return [req.prompt], [fn], description
    return [req.prompt], [None], "none"


def _means(hm: HookedModel, req: AblationRequest, specs: Sequence[AblationSpec], use_chat: bool,
           cancel: Callable[[], bool] | None) -> dict[SiteKey, list[float]] | None:
    """The reference means ``--method mean`` writes in (None for zero ablation)."""
    if req.method != "mean":
        return None
    if not req.reference:
        raise InputError("mean ablation needs reference prompts (--reference \"p1|p2\" or @file)")
    if any(r == "" for r in req.reference):
        raise InputError("empty reference prompt")
    sites = {s for spec in specs for s in spec_sites(spec)}
    tok = hm.lm.tokenizer
    return mean_activations(hm, [tok.prepare(r, chat=use_chat) for r in req.reference], sites, cancel)


@dataclass
class _Sweep:
    """A study's sweep points and prompts, and the outputs as they arrive."""

    hm: HookedModel
    specs: list[AblationSpec]
    spec_ivs: list[list[Intervention]]
    prompts: list[str]
    ids: list[list[int]]
    judges: list[Judge]
    max_tokens: int
    cancel: Callable[[], bool] | None
    progress: Progress | None
    base_out: list[RowOutput | None] = field(default_factory=list)
    outs: list[list[RowOutput | None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.base_out = [None] * len(self.prompts)
        self.outs = [[None] * len(self.prompts) for _ in self.specs]

    def report(self, kind: str, i: int, total: int, msg: str, payload: Any = None) -> None:
        if self.progress:
            self.progress(kind, i, total, msg, payload)

    def _done(self, o: RowOutput | None) -> RowOutput:
        assert o is not None, "a sweep point was never generated"
        return o

    def baseline(self) -> list[AblationOutput]:
        lm = self.hm.lm
        return [_output(lm, p, self._done(self.base_out[pi]), None, self.judges[pi]) for pi, p in enumerate(self.prompts)]

    def points(self, upto: int) -> list[AblationPoint]:
        lm = self.hm.lm
        return [AblationPoint(spec=self.specs[si], outputs=[
            _output(lm, p, self._done(self.outs[si][pi]), self.base_out[pi], self.judges[pi])
            for pi, p in enumerate(self.prompts)]) for si in range(upto)]

    def run_sequential(self) -> None:
        """Every sweep point alone: one full generation each (the reference)."""
        stop_ids, total, done = self.hm.lm.tokenizer.eos_ids, len(self.prompts) * (1 + len(self.specs)), 0
        for pi, row in enumerate(self.ids):
            self.base_out[pi] = generate_ids(self.hm, [row], self.max_tokens, stop_ids=stop_ids, cancel=self.cancel)[0]
            done += 1
            for si, ivs in enumerate(self.spec_ivs):
                self.outs[si][pi] = generate_ids(self.hm, [row], self.max_tokens, interventions=ivs, stop_ids=stop_ids,
                                                 cancel=self.cancel)[0]
                done += 1
                self.report("sweep", done, total, "ablate: sequential runs")

    def run_batched(self, chunk_size: int | None) -> None:
        """Each chunk of sweep points as one batch per prompt length (engine.ablation_batched)."""
        groups: dict[int, list[int]] = {}
        for pi, row in enumerate(self.ids):
            groups.setdefault(len(row), []).append(pi)
        n = len(self.specs)
        size = chunk_size or max(1, n)
        chunks = [list(range(i, min(i + size, n))) for i in range(0, n, size)] or [[]]
        done = 0
        for ci, chunk in enumerate(chunks):
            for members in groups.values():
                rows = [(local, self.spec_ivs[si]) for local in range(len(members)) for si in chunk]
                keys = [(si, pi) for pi in members for si in chunk]
                base_res, res = run_group_batched(
                    self.hm, [self.ids[pi] for pi in members], rows, self.max_tokens,
                    stop_ids=self.hm.lm.tokenizer.eos_ids, cancel=self.cancel,
                    on_layer=lambda i, t: self.report("layer", i, t, "ablate: prompt through the stack"),
                    on_step=lambda i, t: self.report("token", i, t, "ablate: generating"))
                if ci == 0:
                    for pi, o in zip(members, base_res):
                        self.base_out[pi] = o
                for (si, pi), o in zip(keys, res):
                    self.outs[si][pi] = o
            done += len(chunk)
            if self.progress:
                self.report("sweep", done, n, "ablate: sweep points", self.points(done))


def run_ablation(lm: LoadedModel, req: AblationRequest, cancel: Callable[[], bool] | None = None,
                 progress: Progress | None = None, *, strategy: str = "batched",
                 criterion_fn: Callable[[str], bool] | None = None, chunk_size: int | None = None
                 ) -> AblationResult:
    """Run the study ``req`` asks for. ``criterion_fn`` (Python API) overrides ``req.criterion``.

    ``chunk_size`` splits the sweep into batches of that many points (the TUI fills its grid as
    each finishes; ``progress("sweep", done, total, msg, partial_points)``)."""
    t0 = time.perf_counter()
    tok = lm.tokenizer
    hm = HookedModel(lm)
    info = lm.info
    specs = expand_specs(req, hm.n_layers, info.num_heads)
    notes: list[str] = []
    use_chat = req.chat and tok.chat_template is not None
    if req.chat and tok.chat_template is None:
        notes.append("model has no chat template: raw prompts used")
    prompts, judges, description = _cases(req, criterion_fn)
    ids = [tok.prepare(p, chat=use_chat) for p in prompts]
    means = _means(hm, req, specs, use_chat, cancel)
    sweep = _Sweep(hm, specs, [spec_interventions(s, req.method, means) for s in specs], prompts, ids, judges,
                   req.max_tokens, cancel, progress)
    if strategy == "batched" and hm.state_layers:
        strategy = "sequential"  # the batched sweep reuses per-layer keys/values, which state-space layers lack
        notes.append(f"{info.model_type}: state-space layers keep no per-layer keys/values to share, "
                     "so sweep points run one by one")
    if strategy == "sequential":
        sweep.run_sequential()
    elif strategy == "batched":
        sweep.run_batched(chunk_size)
    else:
        raise InputError(f"unknown strategy {strategy!r} (batched or sequential)")
    return AblationResult(model_id=info.model_id, num_layers=hm.n_layers, request=req, chat_template_used=use_chat,
                          notes=notes, criterion_description=description, baseline=sweep.baseline(),
                          points=sweep.points(len(specs)), strategy=strategy, elapsed_s=time.perf_counter() - t0)
