"""TUI fixtures: a deterministic fake engine (snapshots, UI logic) and a shared real one."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import pytest

from engine.errors import InputError
from engine.results.analyze import (
    AnalysisResult,
    AnalyzeRequest,
    LayerPredictionResult,
    LayerTransition,
    TokenEvolutionResult,
)
from engine.results.base import TokenPrediction
from engine.results.tracking import GeneratedPosition, TrackGenerationRequest, TrackGenerationResult
from engine.session import Job

sys.path.insert(0, str(Path(__file__).parent))  # `import scenarios` (the screens driven to a result)

PROMPT = "The capital of France is"
N_LAYERS = 8
VOCAB = 1000


class FakeInfo:
    model_id = "fake-8l"
    family = "llama"
    num_layers = N_LAYERS
    hidden_size = 64
    vocab_size = VOCAB
    dtype = "float32"
    device = "cpu"
    load_seconds = 0.5
    family_check = None


def _done(value: Any) -> Job[Any]:
    job: Job[Any] = Job("fake")
    job.future.set_result(value)
    return job


def _failed(exc: BaseException) -> Job[Any]:
    job: Job[Any] = Job("fake")
    job.future.set_exception(exc)
    return job


def fake_analysis(req: AnalyzeRequest) -> AnalysisResult:
    """A lens that drifts from ' the' to ' Paris' over 8 layers (deterministic numbers)."""
    tokens = ["The", " capital", " of", " France", " is"]
    pos = req.position % len(tokens)
    layers = list(range(N_LAYERS)) if req.layer_strategy.value == "all" else [0, 4, 7]
    preds = []
    for layer in layers:
        p = round(0.1 + 0.8 * layer / (N_LAYERS - 1), 4)
        top = " Paris" if layer >= 5 else " the"
        other = " the" if top == " Paris" else " Paris"
        cands = [(top, 7 if top == " Paris" else 3, p), (other, 3 if top == " Paris" else 7, round((1 - p) / 2, 4)),
                 (" a", 5, round((1 - p) / 4, 4)), (" London", 9, round((1 - p) / 8, 4)), (",", 11, 0.01)]
        ent = round(3.0 * (1 - p) + 0.2, 4)
        en = ent / math.log(VOCAB)
        preds.append(LayerPredictionResult(
            layer_idx=layer, predictions=[TokenPrediction(token=t, token_id=i, probability=q, rank=r + 1)
                                          for r, (t, i, q) in enumerate(cands[: req.top_k])],
            entropy=ent, entropy_normalized=en, is_confident=en < 0.3))
    trans = [LayerTransition(from_layer=a, to_layer=b, kl_divergence=2.0 if b == 6 else 0.1 * (b - a),
                             js_divergence=0.3 if b == 5 else 0.01, top_token_changed=b == 5)
             for a, b in zip(layers, layers[1:])]
    evs = []
    for t in req.track_tokens:
        if t == "":
            raise InputError("tracked token is empty")
        ranks = {layer: (1 if (layer >= 5) == (t == " Paris") else 2 + layer) for layer in layers}
        probs = {layer: round(0.05 + 0.1 * layer, 4) if t == " Paris" else round(0.5 - 0.05 * layer, 4)
                 for layer in layers}
        evs.append(TokenEvolutionResult(token=t, token_id=7 if t == " Paris" else 3, layer_probabilities=probs,
                                        layer_ranks=ranks,
                                        emergence_layer=next((x for x in layers if ranks[x] == 1), None)))
    decision = next((lp.layer_idx for lp in preds if lp.top_token == " Paris" and lp.is_confident), None)
    final = preds[-1].predictions
    return AnalysisResult(model_id="fake-8l", request=req, prompt=req.prompt, tokens=tokens,
                          token_ids=[1, 2, 3, 4, 5], position=pos, num_layers=N_LAYERS, captured_layers=layers,
                          final_prediction=final, layer_predictions=preds, layer_transitions=trans,
                          token_evolutions=evs, decision_layer=decision, predicted_token=final[0].token,
                          predicted_probability=final[0].probability, final_entropy=preds[-1].entropy,
                          vocab_size=VOCAB,
                          final_token_ranks={lp.layer_idx: (1 if lp.top_token == " Paris" else 40 - 5 * lp.layer_idx)
                                             for lp in preds})


class FakeEngine:
    """The ``EngineClient`` surface with canned, deterministic results and no engine thread."""

    def __init__(self) -> None:
        self.loaded: list[str | None] = []
        self.requests: list[Any] = []

    def blas(self) -> str:
        return "OpenBLAS (fake)"

    def list_models(self) -> Job[list[dict[str, Any]]]:
        return _done([
            {"name": "smollm2-135m", "kind": "bundled", "present": True, "description": "SmolLM2 135M"},
            {"name": "gemma3-270m", "kind": "bundled", "present": True, "description": "Gemma 3 270M"},
        ])

    def load(self, spec: str | None = None, dtype: str | None = None, on_progress: Any = None) -> Job[Any]:
        self.loaded.append(spec)
        info = FakeInfo()
        if spec:
            info.model_id = spec
        return _done(info)

    def analyze(self, req: AnalyzeRequest, on_progress: Any = None) -> Job[Any]:
        self.requests.append(req)
        if not req.prompt:
            return _failed(InputError("empty prompt"))
        return _done(fake_analysis(req))

    def lookup(self, text: str) -> Job[tuple[int, list[str]]]:
        if text == "Paris!":
            return _done((8, ["Paris", "!"]))
        return _done((7 if text == " Paris" else 3, [text]))

    def track_generation(self, req: TrackGenerationRequest, on_progress: Any = None) -> Job[Any]:
        if not req.prompt:
            return _failed(InputError("empty prompt"))
        toks = [" Paris", ".", " It", " is"][: req.max_new_tokens]
        positions = []
        for i, t in enumerate(toks):
            ranks = [max(1, 30 - 6 * layer + 4 * i) if layer < 7 - i else 1 for layer in range(N_LAYERS)]
            em = next((x for x, r in enumerate(ranks) if r == 1), None)
            positions.append(GeneratedPosition(index=i, position=4 + i, token=t, token_id=10 + i, ranks=ranks,
                                               probabilities=[1 / r for r in ranks], top_tokens=[t] * N_LAYERS,
                                               emergence_layer=em, settled_layer=em))
        return _done(TrackGenerationResult(model_id="fake-8l", request=req, prompt_tokens=["The"], num_layers=N_LAYERS,
                                           text="".join(toks), stopped="max_tokens", positions=positions))

    def ablate(self, req: Any, on_progress: Any = None, chunk_size: int | None = None) -> Job[Any]:
        """Canned ablation: ablating an MLP (or both) at layer >= 5 turns ' Paris' into ' London'."""
        from engine.results.ablation import AblationOutput, AblationPoint, AblationResult, AblationSpec

        self.requests.append(req)
        cases = [(c.prompt, c.expected) for c in req.prompts] if req.prompts else [(req.prompt or "", req.criterion)]
        if not cases[0][0]:
            return _failed(InputError("empty prompt"))
        if req.ablations is not None:
            specs = list(req.ablations)
        else:
            layers = list(range(N_LAYERS)) if req.layers is None else list(req.layers)
            specs = [AblationSpec(layers=[x], component=req.component) for x in layers]
        for spec in specs:
            for layer in spec.layers:
                if not 0 <= layer < N_LAYERS:
                    return _failed(InputError(f"layer {layer} out of range (model has {N_LAYERS} layers)"))

        def out(prompt: str, expected: str, broken: bool) -> AblationOutput:
            text = " London. It is" if broken else " Paris. It is"
            return AblationOutput(prompt=prompt, text=text, token_ids=[9 if broken else 7, 1, 2, 3],
                                  stopped="max_tokens", passed=(expected in text) if expected else None,
                                  diverged_at=0 if broken else None)

        def broken(spec: AblationSpec) -> bool:
            comps = spec.components or [spec.component] * len(spec.layers)
            return any(x >= 5 and c.value in ("mlp", "both") for x, c in zip(spec.layers, comps))

        baseline = [AblationOutput(prompt=p, text=" Paris. It is", token_ids=[7, 1, 2, 3], stopped="max_tokens",
                                   passed=(e in " Paris. It is") if e else None) for p, e in cases]
        points = [AblationPoint(spec=s, outputs=[out(p, e, broken(s)) for p, e in cases]) for s in specs]
        return _done(AblationResult(model_id="fake-8l", num_layers=N_LAYERS, request=req, chat_template_used=req.chat,
                                    criterion_description=f"contains {req.criterion!r}" if req.criterion else "",
                                    baseline=baseline, points=points, elapsed_s=0.5))

    def steer_extract(self, req: Any, on_progress: Any = None) -> Job[Any]:
        """Canned direction: separation grows with depth; the layer is the request's (or the middle)."""
        import numpy as np

        from engine.results.steering import LayerSeparation
        from engine.steering import SteeringDirection

        self.requests.append(req)
        if not req.positive or len(req.positive) != len(req.negative):
            return _failed(InputError("positive and negative prompts must pair up"))
        layer = N_LAYERS // 2 if req.layer is None else req.layer
        per_layer = {x: np.eye(64)[x] * (1 + x) for x in range(N_LAYERS)}
        seps = [LayerSeparation(layer=x, separation=round(0.05 + 0.04 * x, 4), consistency=round(0.3 + 0.08 * x, 4))
                for x in range(N_LAYERS)]
        return _done(SteeringDirection(per_layer[layer], layer=layer, model_id="fake-8l", method=req.method,
                                       positive_prompts=req.positive, negative_prompts=req.negative, chat=req.chat,
                                       per_layer=per_layer, layer_separation=seps))

    def steer(self, req: Any, direction: Any, on_progress: Any = None) -> Job[Any]:
        """Canned steering: the continuation turns positive with the coefficient."""
        from engine.results.steering import DirectionInfo, SteeredOutput, SteerResult

        self.requests.append(req)
        layer = (req.layers or [direction.layer])[0]
        words = {-1: " dull and far too long.", 0: " a film about a town.", 1: " wonderful, a joy to watch."}
        outs = [SteeredOutput(prompt=p, layer=layer, coefficient=c, scale=40.0, added_norm=abs(c) * 40.0,
                              text=words[(c > 0) - (c < 0)], token_ids=[1, 2, 3], tokens=["a", "b", "c"],
                              stopped="max_tokens", projection=round(2 * c, 3), mean_projection=round(3 * c, 3))
                for p in req.prompts for c in req.coefficients]
        info = DirectionInfo(name="direction", source="extract", layer=direction.layer, method="mean",
                             model_id="fake-8l", hidden_size=64, norm=1.0)
        return _done(SteerResult(model_id="fake-8l", request=req, direction=info, chat_template_used=req.chat,
                                 outputs=outs, generation_seconds=0.1))

    def analysis(self, req: Any, on_progress: Any = None) -> Job[Any]:
        """Canned workbench analyses (layer, probe, patch) and attribution (fake_attribution.py); numbers are
        simple functions of the input."""
        from engine.results.layers import LayerResult, LayerSimilarity
        from engine.results.patch import PatchLayer, PatchResult
        from engine.results.probe import ProbeLayer, ProbeResult

        self.requests.append(req)
        if req.kind in ("attribute", "attention"):
            import fake_attribution

            try:
                return _done(getattr(fake_attribution, req.kind)(req, N_LAYERS))
            except InputError as exc:
                return _failed(exc)
        layers = list(req.layers) if getattr(req, "layers", None) is not None else [0, 4, 7]
        if any(not 0 <= x < N_LAYERS for x in layers):
            bad = next(x for x in layers if not 0 <= x < N_LAYERS)
            return _failed(InputError(f"layer {bad} out of range (model has {N_LAYERS} layers: 0-{N_LAYERS - 1})"))
        if req.kind == "layer":
            n = len(req.prompts)
            sims = []
            for layer in layers:
                cos = [[1.0 if i == j else round(0.9 - 0.1 * abs(i - j) - 0.02 * layer, 4) for j in range(n)]
                       for i in range(n)]
                sep = round(0.1 + 0.01 * layer, 4) if req.labels else None
                sims.append(LayerSimilarity(layer=layer, cosine=cos, separation=sep,
                                            within_label=0.8 if sep is not None else None,
                                            between_label=round(0.8 - sep, 4) if sep is not None else None))
            return _done(LayerResult(model_id="fake-8l", request=req, prompts=req.prompts,
                                     last_tokens=[p.split()[-1] for p in req.prompts], labels=req.labels,
                                     layers=sims))
        if req.kind == "probe":
            layers = list(req.layers) if req.layers is not None else list(range(N_LAYERS))
            pls = [ProbeLayer(layer=x, cv_accuracy=round(0.5 + 0.5 * x / (N_LAYERS - 1), 3), cv_std=0.05,
                              heldout_f1=round(0.5 + 0.4 * x / (N_LAYERS - 1), 3),
                              heldout_auc=round(0.6 + 0.4 * x / (N_LAYERS - 1), 3), folds=2) for x in layers]
            best = pls[-1].layer
            return _done(ProbeResult(model_id="fake-8l", request=req, layers=pls, best_layer=best,
                                     direction_layer=best, method=req.method, direction=[1.0, 0.0],
                                     direction_norm=2.0, accuracy=pls[-1].cv_accuracy, separation=3.0))
        if req.kind == "patch":
            tops = [TokenPrediction(token=" Berlin", token_id=8, probability=0.8, rank=1)]
            pls = [PatchLayer(layer=x, top=tops, source_answer_prob=round(0.1 * x, 3), source_answer_rank=8 - x,
                              target_answer_prob=round(0.8 - 0.1 * x, 3), target_answer_rank=1 + x // 4,
                              source_answer_top1=x == N_LAYERS - 1) for x in layers]
            return _done(PatchResult(model_id="fake-8l", request=req, source_tokens=["a"], target_tokens=["b"],
                                     source_top=tops, target_top=tops, source_answer=" Paris",
                                     target_answer=" Berlin", layers=pls))
        return _failed(InputError(f"the fake engine has no {req.kind!r}"))

    # -- circuit (canned: a 22-prompt tool-calling set, probes that improve with depth) -----------
    circuit_layers: tuple[int, ...] = tuple(range(N_LAYERS))  # the last collect's layers

    def circuit_dataset(self, source: str, directory: str, path: str | None = None,
                        options: dict[str, int] | None = None) -> Job[Any]:
        from engine.results.circuit import DatasetSummary, LabelCount

        self.requests.append((source, path, options))
        if source == "file" and not path:
            return _failed(InputError("type a dataset file (.json/.jsonl) in the path field"))
        if source == "file" and not path.endswith((".json", ".jsonl")):
            return _failed(InputError(f"dataset not found: {path}"))
        tools = ["calculator", "get_stock_price", "get_weather", "send_email", "set_reminder", "web_search"]
        cats = [LabelCount(name="no_tool", count=10)] + [LabelCount(name=t, count=2) for t in tools]
        return _done(DatasetSummary(path=path or f"{directory}/tool_calling_p2_n10_s42.json", name="tool_calling",
                                    kind="tool_calling", total=22, categories=sorted(cats, key=lambda c: c.name),
                                    labels=[LabelCount(name="no_tool", count=10), LabelCount(name="tool", count=12)],
                                    samples=[]))

    def circuit_collect(self, req: Any, on_progress: Any = None) -> Job[Any]:
        from engine.results.circuit import CollectResult

        self.requests.append(req)
        spec = req.layers
        if spec == "all":
            layers = list(range(N_LAYERS))
        elif spec == "decision":
            layers = [3, 4, 5]
        else:
            try:
                layers = sorted({int(x) for x in spec.split(",")})
            except ValueError:
                return _failed(InputError(f"bad --layers {spec!r}: expected all, decision, or e.g. 8,10 or 20-23"))
        self.circuit_layers = tuple(layers)
        n_batches = -(-22 // req.batch_size)
        return _done(CollectResult(model_id="fake-8l", request=req, activations_file=req.output + ".safetensors",
                                   metadata_file=req.output + ".json", num_prompts=22, hidden_size=64,
                                   num_layers=N_LAYERS, captured_layers=layers, layer_selection=spec,
                                   batches_total=n_batches, batches_computed=n_batches, batches_reused=0,
                                   seconds=1.5, prompts_per_second=14.7, file_bytes=22 * 64 * 4 * len(layers)))

    def circuit_analyze(self, activations: str, on_progress: Any = None) -> Job[Any]:
        from engine.results.circuit import AnalyzeResult, LayerGeometry, ProbeScore

        self.requests.append(activations)
        out = []
        for x in self.circuit_layers:
            ratio = [round(0.5 / (k + 1) ** (1 + x / N_LAYERS), 4) for k in range(21)]
            total = sum(ratio)
            ratio = [round(v / total, 4) for v in ratio]
            cum = [round(sum(ratio[: k + 1]), 4) for k in range(len(ratio))]
            d90 = next(k + 1 for k, c in enumerate(cum) if c >= 0.9 - 1e-9)
            d95 = next(k + 1 for k, c in enumerate(cum) if c >= 0.95 - 1e-9)
            acc = round(min(1.0, 0.6 + 0.08 * x), 3)
            out.append(LayerGeometry(
                layer=x, variance_explained=ratio, cumulative_variance=cum, dims_90=d90, dims_95=d95,
                binary_probe=ProbeScore(heldout_accuracy=acc, cv_accuracy=round(acc - 0.05, 3), cv_std=0.05, folds=5,
                                        baseline=0.545, classes=2),
                category_probe=ProbeScore(heldout_accuracy=round(min(1.0, 0.4 + 0.1 * x), 3),
                                          cv_accuracy=round(min(1.0, 0.35 + 0.1 * x), 3), cv_std=0.1, folds=2,
                                          baseline=0.455, classes=7)))
        best = max(out, key=lambda g: (g.binary_probe.heldout_accuracy, -g.layer)).layer
        best_cat = max(out, key=lambda g: (g.category_probe.heldout_accuracy, -g.layer)).layer
        return _done(AnalyzeResult(model_id="fake-8l", activations_file=activations, num_prompts=22,
                                   labels=["no_tool", "tool"], label_counts={"no_tool": 10, "tool": 12},
                                   category_counts={"no_tool": 10, "web_search": 2}, layers=out, best_layer=best,
                                   best_category_layer=best_cat))

    def close(self) -> None:
        pass


@pytest.fixture
def fake_engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture(scope="session")
def real_engine():
    """One EngineClient (one engine thread, SmolLM2 loaded once) shared by the real-model tests."""
    from lazarus_tui.engine_client import EngineClient

    client = EngineClient()
    client.yield_to_ui()
    client.load().result()
    yield client
    client.close()
