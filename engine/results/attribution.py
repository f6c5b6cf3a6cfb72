"""Request and result models of attribution patching (``engine.attribution``) and of one head's
attention pattern.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from engine.results.base import SCHEMA_VERSION, Frozen

SITE_GROUPS = ("resid_pre", "resid_post", "attn_out", "mlp_out", "heads", "neurons")


DEFAULT_SITES = ["resid_post", "attn_out", "mlp_out"]


Metric = Literal["logprob", "logit-diff", "prob"]


TOP_MAX = 10_000_000  # sites kept (a 30-layer model's neurons at 10 positions are 1.7M)


VERIFY_MAX = 10_000  # sites patched for real: one forward pass each


class AttributeRequest(Frozen):
    kind: str = "attribute"
    model: str | None = None
    clean: str
    corrupt: str
    target: str
    baseline: str | None = None  # logit-diff: logit(target) - logit(baseline)
    metric: Metric = "logprob"
    sites: list[str] = Field(default_factory=lambda: list(DEFAULT_SITES))
    layers: list[int] | None = None  # None = every layer
    top: int | None = Field(None, ge=1, le=TOP_MAX)  # keep the N largest |estimate| (None = every site; neurons: see max_neurons)
    max_neurons: int = Field(1000, ge=1, le=TOP_MAX)  # neuron sites kept (largest |estimate|) when top is None
    verify: int = Field(0, ge=0, le=VERIFY_MAX)  # real patching of the K largest verifiable sites
    chat: bool = False


class SiteEstimate(Frozen):
    site: str  # blocks.{L}.{kind}
    position: int
    head: int | None = None
    neuron: int | None = None
    estimate: float  # ~ metric(corrupt run, this site from the clean run) - metric(corrupt run)


class VerifiedSite(Frozen):
    site: str
    position: int
    head: int | None = None
    neuron: int | None = None
    estimate: float
    real: float  # metric(patched corrupt run) - metric(corrupt run), by real activation patching
    patched_metric: float


class AttributeResult(Frozen):
    schema_version: int = SCHEMA_VERSION
    model_id: str
    request: AttributeRequest
    clean_tokens: list[str]
    corrupt_tokens: list[str]
    target_token: str
    baseline_token: str | None = None
    clean_metric: float
    corrupt_metric: float
    n_layers: int
    n_heads: int
    sites: list[SiteEstimate]  # largest |estimate| first
    n_estimates: int  # estimates computed (before top / max_neurons)
    verified: list[VerifiedSite] = Field(default_factory=list)
    verify_pearson: float | None = None
    verify_spearman: float | None = None
    seconds: float = 0.0  # forward + backward passes (verification excluded)
    notes: list[str] = Field(default_factory=list)


class AttentionRequest(Frozen):
    """One head's attention pattern on one prompt (the Attribution screen's pattern view)."""

    kind: str = "attention"
    model: str | None = None
    prompt: str
    layer: int
    head: int = Field(0, ge=0)
    chat: bool = False


class AttentionPattern(Frozen):
    schema_version: int = SCHEMA_VERSION
    model_id: str
    request: AttentionRequest
    tokens: list[str]
    weights: list[list[float]]  # [query position][key position], rows sum to 1 (less any attention sink)
