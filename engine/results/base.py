"""The conventions every request and result model shares: ``Frozen``, ``SCHEMA_VERSION``, the lens
spec, the tuned-lens binding and a token prediction.

Results are frozen pydantic models of plain numbers and strings (never mx arrays), carrying a
``schema_version``, the model id and the request that made them. The package has one module per
area (``engine.results.analyze``, ``.ablation``, ``.steering``, ...); it never imports MLX, so the
TUI's UI thread can build requests and read results.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, model_validator

SCHEMA_VERSION = 1


class Frozen(BaseModel):
    """Immutable; unknown fields are errors, except computed ones (present in dumped JSON).

    A computed field is ``@computed_field  # type: ignore[prop-decorator]`` over ``@property``:
    pydantic's documented form, which mypy refuses (a decorator over a property)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _drop_computed(cls, data: Any) -> Any:
        computed = cls.__pydantic_computed_fields__  # the class's dict (``model_computed_fields`` is a slower property)
        if computed and isinstance(data, dict):
            return {k: v for k, v in data.items() if k not in computed}
        return data


def check_lens_spec(spec: str) -> str:
    """A lens spec's form: ``logit``, ``tuned`` or ``tuned:FILE`` (ValueError otherwise)."""
    if spec in ("logit", "tuned") or (spec.startswith("tuned:") and len(spec) > len("tuned:")):
        return spec
    raise ValueError(f"bad lens {spec!r}: expected logit, tuned (the model's default file) or tuned:FILE")


LensSpec = Annotated[str, AfterValidator(check_lens_spec)]
"""A request's lens field: ``logit``, ``tuned`` or ``tuned:FILE``, checked by ``check_lens_spec``."""


def _lower(v: Any) -> Any:
    return v.lower() if isinstance(v, str) else v


AnyCase = BeforeValidator(_lower)
"""``Annotated[SomeEnum, AnyCase]``: an enum field that takes its values in any letter case."""


class LensBinding(Frozen):
    """What a tuned lens file says about the model it was trained for (engine.tuned_lens)."""

    path: str
    model_id: str
    weights_hash: str  # engine.tuned_lens.weights_hash: final norm and unembedding, a sample of the rest
    hidden_size: int
    num_layers: int
    dtype: str
    corpus: str
    tokens: int  # training tokens (positions whose KL was minimised)
    steps: int


class TokenPrediction(Frozen):
    token: str
    token_id: int
    probability: float
    rank: int | None = None
