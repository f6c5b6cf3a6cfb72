"""The Python API of ablation studies (the seed's ``AblationStudy``), on the engine session.

    from engine import AblationStudy, AblationConfig, ComponentType

    study = AblationStudy.from_pretrained("smollm2-135m")
    result = study.run_layer_sweep(prompt="The capital of France is", criterion=lambda s: "Paris" in s,
                                   component=ComponentType.MLP, layers=range(0, 30), config=AblationConfig(chat=False))
    study.print_sweep_summary(result)
    text = study.ablate_and_generate("45 * 45 = ", layers=[22, 23], config=AblationConfig(max_new_tokens=15))
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Self

from engine.results.ablation import AblationConfig, AblationRequest, AblationResult, AblationSpec, ComponentType


class AblationStudy:
    """Runs ablations on one model through an ``EngineSession`` (all MLX work on the engine thread)."""

    def __init__(self, session: Any, model: Any) -> None:
        self.session = session
        self.model = model

    @classmethod
    def from_pretrained(cls, model_id: str | None = None, dtype: str = "auto") -> AblationStudy:
        from engine.session import EngineSession

        session = EngineSession(model_id, dtype)
        lm = session.load(model_id, dtype).result()
        return cls(session, lm)

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- running -----------------------------------------------------------------------------
    def run(self, request: AblationRequest, criterion: Callable[[str], bool] | None = None) -> AblationResult:
        from engine.ablation import run_ablation

        lm = self.model
        return self.session.run(lambda ctx: run_ablation(lm, request, ctx.cancelled, criterion_fn=criterion),
                                name="ablate")

    def run_layer_sweep(self, prompt: str, criterion: Callable[[str], bool] | str,
                        component: ComponentType | str = ComponentType.MLP, layers: Iterable[int] | None = None,
                        config: AblationConfig | None = None) -> AblationResult:
        """Ablate each layer alone; ``criterion`` is a predicate on the output or a criterion string."""
        cfg = config or AblationConfig()
        req = AblationRequest(model=self.model.info.model_id, prompt=prompt,
                              criterion=criterion if isinstance(criterion, str) else "",
                              component=component, heads=cfg.heads, layers=None if layers is None else list(layers),
                              mode="sweep", method=cfg.method, reference=cfg.reference, chat=cfg.chat,
                              max_tokens=cfg.max_new_tokens)
        return self.run(req, None if isinstance(criterion, str) else criterion)

    def ablate_and_generate(self, prompt: str, layers: Iterable[int] = (), config: AblationConfig | None = None,
                            component: ComponentType | str | None = None) -> str:
        """The greedy output with ``layers`` ablated together (``[]``: no ablation)."""
        cfg = config or AblationConfig()
        layers = list(layers)
        comp = ComponentType(component) if component is not None else cfg.component
        specs = [AblationSpec(layers=layers, component=comp, heads=cfg.heads)] if layers else []
        req = AblationRequest(model=self.model.info.model_id, prompt=prompt, ablations=specs, component=comp,
                              method=cfg.method, reference=cfg.reference, chat=cfg.chat,
                              max_tokens=cfg.max_new_tokens)
        result = self.run(req)
        return result.points[0].outputs[0].text if layers else result.baseline[0].text

    # -- printing ----------------------------------------------------------------------------
    @staticmethod
    def format_sweep_summary(result: AblationResult) -> str:
        base = result.baseline[0]
        mark = {True: "PASS", False: "FAIL", None: "-"}
        lines = [f"Ablation sweep on {result.model_id}: {base.prompt!r}",
                 f"  baseline [{mark[base.passed]}]: {base.text!r}"]
        for p in result.points:
            o = p.outputs[0]
            div = "identical" if o.diverged_at is None else f"diverged at token {o.diverged_at}"
            lines.append(f"  {p.label:<16} [{mark[o.passed]}] {div:<22} {o.text[:60]!r}")
        flips = result.causal_layers
        lines.append(f"  criterion flipped by: {', '.join(flips) if flips else 'none'}")
        return "\n".join(lines)

    def print_sweep_summary(self, result: AblationResult) -> None:
        print(self.format_sweep_summary(result))
