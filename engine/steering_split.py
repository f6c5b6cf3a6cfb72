"""A steering run's settings (prompt x layer x coefficient) shared among distributed ranks, merged back.

Every rank runs the clean prompt pass over all prompts (the same padded batch one process uses, so
the steered rows see exactly the same prompt context) and generates only its share of the settings;
rank 0 then scores all the generations as one run does (``run_steer(..., generated=...)``: the clean
projections over every row in one batch, criteria, divergence from each prompt and layer's
coefficient-0 output), so the result equals one process's. Sampled runs (``-t > 0``) split too: one
process draws each step's random numbers over the whole batch, and each part draws the same numbers
(same key, whole batch's shape) and keeps its rows (``generate_ids(sample_rows=)``).
``--one-at-a-time`` runs stay on rank 0 (see :func:`splits`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from engine.distributed import World, pack, shares, unpack
from engine.models import LoadedModel
from engine.results.steering import SteerRequest, SteerResult
from engine.steering import SteeringDirection, run_steer


def splits(req: SteerRequest) -> bool:
    """Whether a run can be split exactly (batched; greedy or sampled)."""
    return req.batched


def run_steer_distributed(lm: LoadedModel, req: SteerRequest, world: World,
                          cancel: Callable[[], bool] | None = None,
                          direction: SteeringDirection | None = None,
                          on_parts: Callable[[int, int], None] | None = None) -> SteerResult | None:
    """``run_steer`` with the settings shared among the ranks: the merged result on rank 0, else None."""
    t0 = time.perf_counter()
    n = len(req.prompts) * (len(req.layers) if req.layers else 1) * len(req.coefficients)
    parts = [p for p in shares(n, min(world.size, n)) if p]
    results: list[SteerResult | None] = [None] * len(parts)

    def compute(i: int) -> bytes:
        return pack(run_steer(lm, req, cancel, None, direction=direction, only=parts[i]).model_dump(mode="json"))

    def store(i: int, payload: bytes) -> None:
        results[i] = SteerResult.model_validate(unpack(payload))

    world.map_items(len(parts), compute, store, cancel, on_parts)
    if not world.root:
        return None
    return merge(lm, req, direction, results, time.perf_counter() - t0)  # type: ignore[arg-type]


def merge(lm: LoadedModel, req: SteerRequest, direction: SteeringDirection | None, results: list[SteerResult],
          seconds: float) -> SteerResult:
    """The parts' generations (consecutive settings, in order) scored as one run scores them: the clean
    prompt pass and the projections over every row at once, then scores and divergence."""
    generated = [(o.token_ids, o.stopped) for r in results for o in r.outputs]
    whole = run_steer(lm, req, direction=direction, generated=generated)
    return whole.model_copy(update={"generation_seconds": seconds})
