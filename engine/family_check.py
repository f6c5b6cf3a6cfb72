"""The load-time check for model types the test suite does not prove.

``lazarus --batch models families`` lists ~90 mlx-lm model types as "untested": they load through
the generic adapter, but no test has shown that the hooked forward computes what the family's own
code computes. Before such a model is analysed, ``check_family`` runs a short probe three ways —
the model's own forward, the hooked forward, and the hooked forward capturing every site (which
opens the attention) — and refuses the model when the logits differ by more than rounding. A
wrong adapter entry (an embedding scale, a norm, a head the table got wrong) is then an error at
load, not silently wrong numbers in every analysis. Verified and partial types skip it (the
suite proves them); ``lazarus --batch verify`` is the longer check for any model.
"""

from __future__ import annotations

from collections.abc import Callable

import mlx.core as mx
import numpy as np

from engine.errors import ModelLoadError
from engine.models import LoadedModel, families
from engine.mx_values import item_float

PROBE_TOKENS = 6


def tolerance(dtype: mx.Dtype, scale: float) -> float:
    """Largest |Δlogit| that rounding explains: ``verify``'s 1e-4 in float32, 4 units in the last
    place of the logits' scale in half precision."""
    eps = float(np.finfo(np.float16).eps) if dtype == mx.float16 else 2.0 ** -7 if dtype == mx.bfloat16 else 0.0
    return max(1e-4, 4 * eps * scale)


def check_family(lm: LoadedModel, progress: Callable[[str, int, int], None] | None = None) -> str | None:
    """``None`` for a model type the suite proves. Otherwise the line saying what was checked;
    raises ``ModelLoadError`` when the hooked forward differs from the model's own. ``progress``
    (description, done, total) hears each of the three probe passes."""
    model_type = lm.adapter.model_type
    if model_type in families.VERIFIED:
        return None
    from engine.hooks import HookedModel
    from engine.verify import hooked_vs_own

    vocab = lm.info.vocab_size
    ids = [(7919 * i + 11) % vocab for i in range(PROBE_TOKENS)]  # spread over the vocabulary; no tokenizer needed
    try:
        diff, native, dtype = hooked_vs_own(HookedModel(lm), ids, on_pass=None if progress is None else (
            lambda k: progress(f"probing untested model type {model_type}", k, 3)))
        scale = item_float(mx.abs(native).max())
    except Exception as exc:
        raise ModelLoadError(f"model type {model_type!r} is not proven by lazarus's tests, and its hooked forward "
                             f"failed on a {PROBE_TOKENS}-token probe: {type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
    tol = tolerance(dtype, scale)  # the dtype the model computes in
    if not diff <= tol:  # NaN fails too
        raise ModelLoadError(f"model type {model_type!r} is not proven by lazarus's tests, and its hooked forward "
                             f"differs from its own by {diff:.3g} in the logits (rounding allows {tol:.1g}): "
                             "analyses of it would be wrong, so it is refused (docs/models.md, 'Families')")
    return (f"model type {model_type!r} is not in lazarus's test suite; checked at load: the hooked forward equals "
            f"the model's own (max |Δlogit| {diff:.1g} ≤ {tol:.1g}); `lazarus --batch verify` checks longer prompts")

