"""The Python API, shaped like the original toolkit's (see docs/python-api.md).

``ModelAnalyzer`` is async: it owns an ``EngineSession``, so every MLX op runs on
the one engine thread while the caller's event loop stays free. ``ModelHooks``
and ``LogitLens`` are the low-level, synchronous door onto the hooked forward.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TextIO

import mlx.core as mx

from engine.distributions import top_k_probs
from engine.hooks import Batch, CaptureSpec, HookedModel, Intervention, SiteKind
from engine.lens import fast_lens_logits
from engine.models import LoadedModel, ModelInfo, wrap_model
from engine.results.analyze import AnalysisConfig, AnalysisResult, AnalyzeRequest, LayerStrategy
from engine.results.attribution import AttributeRequest, AttributeResult
from engine.session import EngineSession, JobContext

__all__ = ["ModelAnalyzer", "AnalysisConfig", "LayerStrategy", "ModelHooks", "CaptureConfig",
           "PositionSelection", "LogitLens", "HookState"]


class ModelAnalyzer:
    """``async with ModelAnalyzer.from_pretrained(model) as a: r = await a.analyze(prompt, config)``."""

    def __init__(self, model: str | None = None, *, dtype: str = "auto", embedding_scale: float | None = None) -> None:
        self.model_id = model
        self.dtype = dtype
        self.embedding_scale = embedding_scale
        self.session = EngineSession(model, dtype)
        self._lm: LoadedModel | None = None

    @classmethod
    def from_pretrained(cls, model: str | None = None, *, dtype: str = "auto",
                        embedding_scale: float | None = None) -> ModelAnalyzer:
        return cls(model, dtype=dtype, embedding_scale=embedding_scale)

    async def __aenter__(self) -> ModelAnalyzer:
        from engine.distributions import prepare

        prepare()  # the lens statistics' loops compile while the model loads
        self._lm = await self.session.load(self.model_id, self.dtype)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.session.close()

    @property
    def model_info(self) -> ModelInfo:
        if self._lm is None:
            raise RuntimeError("use `async with ModelAnalyzer.from_pretrained(...)` first")
        return self._lm.info

    @property
    def config(self) -> dict[str, Any]:
        """The model config, plus the family and the embedding scale in use."""
        info = self.model_info
        scale = self.embedding_scale if self.embedding_scale is not None else info.embedding_scale
        return {**(self._lm.config if self._lm else {}), "family": info.family, "embedding_scale": scale}

    async def analyze(self, prompt: str, config: AnalysisConfig | None = None) -> AnalysisResult:
        from engine.lens import analyze

        cfg = (config or AnalysisConfig()).model_dump()
        if self.embedding_scale is not None and cfg.get("embedding_scale") is None:
            cfg["embedding_scale"] = self.embedding_scale
        req = AnalyzeRequest(prompt=prompt, model=self.model_id, **cfg)

        def job(ctx: JobContext) -> AnalysisResult:
            result = analyze(ctx.model(), req, ctx.cancelled)
            assert result is not None  # None only on a pipeline stage other than rank 0 (no pipeline here)
            return result

        return await self.session.submit(job, name="analyze")

    async def attribute(self, clean: str, corrupt: str, target: str, **options: Any) -> AttributeResult:
        """Attribution patching (``engine.attribution.attribute``): ``options`` are the other fields of
        ``AttributeRequest`` (baseline, metric, sites, layers, top, verify, chat)."""
        from engine.attribution import attribute

        req = AttributeRequest(clean=clean, corrupt=corrupt, target=target, model=self.model_id, **options)
        return await self.session.submit(lambda ctx: attribute(ctx.model(), req, ctx.cancelled), name="attribute")


class PositionSelection(str, Enum):
    ALL = "all"
    LAST = "last"


@dataclass
class CaptureConfig:
    layers: Sequence[int] | None = None  # None = every layer
    capture_hidden_states: bool = True  # resid_post
    capture_attention_weights: bool = False  # attn_pattern
    capture_mlp: bool = False  # mlp_out
    capture_attention_output: bool = False  # attn_out
    positions: PositionSelection | Sequence[int] = PositionSelection.ALL


@dataclass
class HookState:
    hidden_states: dict[int, mx.array] = field(default_factory=dict)  # [B, P, hidden]
    attention_weights: dict[int, mx.array] = field(default_factory=dict)  # [B, heads, P, K]
    mlp_outputs: dict[int, mx.array] = field(default_factory=dict)
    attention_outputs: dict[int, mx.array] = field(default_factory=dict)
    input_ids: mx.array | None = None


class ModelHooks:
    """Capture activations from a model: ``ModelHooks(lm).configure(CaptureConfig(...)); hooks.forward(ids)``.

    ``model`` is a ``LoadedModel`` (from ``engine.load``) or a bare mlx-lm model.
    """

    def __init__(self, model: LoadedModel | Any, tokenizer: Any = None) -> None:
        self.lm = model if isinstance(model, LoadedModel) else wrap_model(model, tokenizer)
        self.hooked = HookedModel(self.lm)
        self.config = CaptureConfig()
        self.state = HookState()
        self.interventions: list[Intervention] = []

    def configure(self, config: CaptureConfig) -> ModelHooks:
        self.config = config
        return self

    def forward(self, input_ids: mx.array | Sequence[int]) -> mx.array:
        """Logits [B, S, vocab] for ``input_ids`` [B, S] (or one list of ids); fills ``self.state``."""
        ids = input_ids if isinstance(input_ids, mx.array) else mx.array([list(input_ids)])
        if ids.ndim == 1:
            ids = ids[None]
        cfg = self.config
        kinds = [k for k, on in ((SiteKind.resid_post, cfg.capture_hidden_states),
                                 (SiteKind.attn_pattern, cfg.capture_attention_weights),
                                 (SiteKind.mlp_out, cfg.capture_mlp),
                                 (SiteKind.attn_out, cfg.capture_attention_output)) if on]
        positions: Any = cfg.positions.value if isinstance(cfg.positions, PositionSelection) else list(cfg.positions)
        batch = Batch(ids, [0] * ids.shape[0], [ids.shape[1]] * ids.shape[0])
        out = self.hooked.forward(batch, capture=CaptureSpec(kinds=kinds, layers=cfg.layers, positions=positions),
                                  interventions=self.interventions, logits="all")
        self.state = HookState(input_ids=ids)
        targets = {SiteKind.resid_post: self.state.hidden_states, SiteKind.attn_pattern: self.state.attention_weights,
                   SiteKind.mlp_out: self.state.mlp_outputs, SiteKind.attn_out: self.state.attention_outputs}
        for name, value in out.captures.items():
            _, layer, kind = name.split(".")
            targets[SiteKind(kind)][int(layer)] = value
        assert out.logits is not None
        return out.logits


class LogitLens:
    """The lens over what ``ModelHooks`` captured (hidden states); ``lens`` as ``AnalysisConfig.lens``
    (``"tuned:FILE"`` reads every layer through a tuned lens)."""

    def __init__(self, hooks: ModelHooks, tokenizer: Any = None, lens: str = "logit") -> None:
        from engine.tuned_lens import resolve_lens

        self.hooks = hooks
        self.tokenizer = tokenizer if tokenizer is not None else hooks.lm.tokenizer
        self.lens = resolve_lens(hooks.lm, lens)

    def _piece(self, token_id: int) -> str:
        tok = self.tokenizer
        return tok.piece(token_id) if hasattr(tok, "piece") else tok.decode([token_id])

    def layer_predictions(self, position: int = -1, top_k: int = 5, batch_index: int = 0
                          ) -> list[tuple[int, list[tuple[str, float]]]]:
        """[(layer, [(token, p), ...]), ...] for every captured layer, at ``position`` of the captured positions."""
        hs = self.hooks.state.hidden_states
        if not hs:
            raise RuntimeError("no hidden states captured: configure capture_hidden_states and run forward")
        layers = sorted(hs)
        resid = mx.stack([hs[layer][batch_index, position] for layer in layers])  # [L, hidden]
        logits = fast_lens_logits(self.hooks.hooked, resid, layers, self.lens)
        top, top_p = top_k_probs(logits, top_k, [f"layer {layer}" for layer in layers])
        return [(layer, [(self._piece(t), p) for t, p in zip(ti, pi)])
                for layer, ti, pi in zip(layers, top.tolist(), top_p.tolist())]

    def print_evolution(self, position: int = -1, top_k: int = 5, file: TextIO | None = None) -> None:
        out = file or sys.stdout
        for layer, preds in self.layer_predictions(position, top_k):
            shown = ", ".join(f"{t!r} {p:.4f}" for t, p in preds)
            print(f"Layer {layer:>3}: {shown}", file=out)
