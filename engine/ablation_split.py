"""An ablation study split into independent parts, run across distributed ranks, merged back.

Every generation in a study depends only on its prompt and its sweep point (rows of one batch never
see each other: prompts are grouped by token length, without padding; see engine/ablation.py), so a
study splits exactly:

- by **prompts** (``--prompts @file``: a part is some prompts of one token length, which one process
  would batch together too, with every sweep point; each length group is split in ``size`` parts);
- by **sweep points** when there are fewer prompts than ranks (``--grid``, ``--multi``, a long
  ``--layers`` sweep on one prompt: a part is a run of consecutive points, every prompt; each part
  also generates the baseline, one extra row).

Rank 0 merges the parts into the result one process computes (same prompts, points and outputs, in
the same order; only ``elapsed_s`` differs). ``--method mean`` recomputes the reference means in
each part (one forward over the reference prompts).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from engine.ablation import run_ablation
from engine.ablation_specs import expand_specs
from engine.distributed import World, pack, unpack
from engine.models import LoadedModel
from engine.results.ablation import AblationPoint, AblationRequest, AblationResult


def plan_parts(lm: LoadedModel, req: AblationRequest, size: int) -> tuple[str, list[list[int]]]:
    """("prompts" | "points", index lists): the parts of ``req`` for ``size`` ranks."""
    if req.prompts and len(req.prompts) >= size:
        tok = lm.tokenizer
        use_chat = req.chat and tok.chat_template is not None
        groups: dict[int, list[int]] = {}
        for pi, case in enumerate(req.prompts):
            groups.setdefault(len(tok.prepare(case.prompt, chat=use_chat)), []).append(pi)
        parts: list[list[int]] = []
        for members in sorted(groups.values(), key=len, reverse=True):  # biggest first: the last rounds even out
            step = max(1, math.ceil(len(members) / size))
            parts.extend(members[i:i + step] for i in range(0, len(members), step))
        return "prompts", parts
    specs = expand_specs(req, lm.num_layers, lm.info.num_heads)
    n = min(size, len(specs))
    base, extra = divmod(len(specs), n)
    parts, start = [], 0
    for k in range(n):
        stop = start + base + (1 if k < extra else 0)
        parts.append(list(range(start, stop)))
        start = stop
    return "points", parts


def part_request(lm: LoadedModel, req: AblationRequest, kind: str, part: list[int]) -> AblationRequest:
    if kind == "prompts":
        assert req.prompts is not None
        return req.model_copy(update={"prompts": [req.prompts[i] for i in part]})
    specs = expand_specs(req, lm.num_layers, lm.info.num_heads)
    return req.model_copy(update={"ablations": [specs[i] for i in part]})


def merge(req: AblationRequest, kind: str, parts: list[list[int]], results: list[AblationResult],
          elapsed_s: float) -> AblationResult:
    """The parts' results as the one result of ``req``."""
    first = results[0]
    notes: list[str] = []
    for r in results:
        notes.extend(n for n in r.notes if n not in notes)
    baseline: list[Any]
    if kind == "points":
        baseline = first.baseline
        points = [p for r in results for p in r.points]
    else:
        n = sum(len(p) for p in parts)
        baseline = [None] * n
        outputs: list[list[Any]] = [[None] * n for _ in first.points]
        for part, r in zip(parts, results):
            for j, pi in enumerate(part):
                baseline[pi] = r.baseline[j]
                for si, point in enumerate(r.points):
                    outputs[si][pi] = point.outputs[j]
        points = [AblationPoint(spec=p.spec, outputs=outputs[si]) for si, p in enumerate(first.points)]
    return first.model_copy(update={"request": req, "notes": notes, "baseline": baseline, "points": points,
                                    "elapsed_s": elapsed_s})


def run_ablation_distributed(lm: LoadedModel, req: AblationRequest, world: World,
                             cancel: Callable[[], bool] | None = None,
                             on_parts: Callable[[int, int], None] | None = None) -> AblationResult | None:
    """``run_ablation`` with the study's parts shared among ``world``'s ranks; the merged result on
    rank 0, ``None`` elsewhere."""
    t0 = time.perf_counter()
    kind, parts = plan_parts(lm, req, world.size)
    results: list[AblationResult | None] = [None] * len(parts)

    def compute(i: int) -> bytes:
        r = run_ablation(lm, part_request(lm, req, kind, parts[i]), cancel)
        return pack(r.model_dump(mode="json"))

    def store(i: int, payload: bytes) -> None:
        results[i] = AblationResult.model_validate(unpack(payload))

    world.map_items(len(parts), compute, store, cancel, on_parts)
    if not world.root:
        return None
    done = [r for r in results if r is not None]
    assert len(done) == len(parts), "a part's result never arrived"
    return merge(req, kind, parts, done, time.perf_counter() - t0)
