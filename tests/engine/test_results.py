"""engine.results: the request/result models' shared rules (no model, in-process but for one
subprocess): chat off unless asked, one lens-spec check, any-case enums, stable JSON, no MLX."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys

import pytest
from pydantic import BaseModel, ValidationError

import engine.results
from engine.results.ablation import AblationConfig, AblationRequest, AblationSpec, ComponentType
from engine.results.analyze import AnalysisConfig, AnalyzeRequest, LayerStrategy
from engine.results.compare import CompareRequest
from engine.results.diff import ActivationDiffRequest, WeightDiffRequest
from engine.results.tracking import TrackGenerationRequest

MODULES = [importlib.import_module(f"engine.results.{m.name}") for m in pkgutil.iter_modules(engine.results.__path__)]
MODELS = {f"{cls.__module__}.{cls.__name__}": cls for mod in MODULES for cls in vars(mod).values()
          if isinstance(cls, type) and issubclass(cls, BaseModel) and cls.__module__ == mod.__name__}
# every request model (and API config) that sends prompts to a model has a chat switch
# (a result's ``chat: bool | None`` records what was done, not a default)
WITH_CHAT = {name: cls for name, cls in MODELS.items()
             if "chat" in cls.model_fields and cls.model_fields["chat"].annotation is bool}


def test_every_request_defaults_chat_off() -> None:
    """One chat rule: off unless asked, for the Python API's requests as for the CLI and the TUI."""
    short = {name.rsplit(".", 1)[1] for name in WITH_CHAT}
    # the ones that used to default to chat=True are among those checked
    assert {"GenerateRequest", "AblationRequest", "AblationConfig", "SteerRequest", "ExtractRequest",
            "AnalysisConfig", "AnalyzeRequest", "PatchRequest", "AttributeRequest", "CollectRequest"} <= short
    on = [name for name, cls in WITH_CHAT.items() if cls.model_fields["chat"].get_default() is not False]
    assert on == []


def test_api_functions_default_chat_off() -> None:
    from engine.steering import SteeringDirection, steer_generate

    for fn in (steer_generate, SteeringDirection.extract):
        assert inspect.signature(fn).parameters["chat"].default is False, fn.__qualname__


@pytest.mark.parametrize("make", [
    lambda lens: AnalysisConfig(lens=lens),
    lambda lens: AnalyzeRequest(prompt="x", lens=lens),
    lambda lens: CompareRequest(prompt="x", lens1=lens),
    lambda lens: CompareRequest(prompt="x", lens2=lens),
    lambda lens: TrackGenerationRequest(prompt="x", lens=lens),
])
def test_lens_spec_checked_in_every_request(make) -> None:
    for good in ("logit", "tuned", "tuned:/tmp/a.safetensors"):
        make(good)
    for bad in ("tuned:", "Logit", "lens", ""):
        with pytest.raises(ValidationError, match="bad lens"):
            make(bad)


def test_enum_fields_take_any_case() -> None:
    assert AnalysisConfig(layer_strategy="ALL").layer_strategy is LayerStrategy.ALL
    assert AblationConfig(component="Attention").component is ComponentType.ATTENTION
    assert AblationRequest(component="BLOCK").component is ComponentType.BLOCK
    spec = AblationSpec(layers=[3, 5], components=["MLP", "attention"])
    assert spec.components == [ComponentType.MLP, ComponentType.ATTENTION]
    assert spec.label == "L3 mlp+L5 attention"
    with pytest.raises(ValidationError):
        AblationSpec(layers=[1], component="head")


def test_request_json_is_stable() -> None:
    """Field names and order are the JSON contract (``--json``, saved results)."""
    assert WeightDiffRequest().model_dump_json() == (
        '{"kind":"weight-diff","base":null,"finetuned":null,"base_dtype":"auto","finetuned_dtype":"auto",'
        '"flag_above":0.1}')
    assert ActivationDiffRequest(prompts=["a"], finetuned_dtype="q4").model_dump_json() == (
        '{"kind":"activation-diff","base":null,"finetuned":null,"base_dtype":"auto","finetuned_dtype":"q4",'
        '"prompts":["a"],"layers":null,"chat":false}')
    assert AnalyzeRequest(prompt="p").model_dump_json() == (
        '{"layer_strategy":"evenly_spaced","layer_step":4,"custom_layers":null,"top_k":5,"track_tokens":[],'
        '"compute_entropy":true,"compute_transitions":true,"embedding_scale":null,"chat":false,"position":-1,'
        '"lens":"logit","kind":"analyze","model":null,"prompt":"p"}')


def test_results_import_no_mlx() -> None:
    """The TUI's UI thread builds requests and reads results: the package never loads MLX."""
    code = ("import sys, pkgutil, importlib, engine.results as r; "
            "[importlib.import_module(f'engine.results.{m.name}') for m in pkgutil.iter_modules(r.__path__)]; "
            "bad = [m for m in sys.modules if m == 'mlx' or m.startswith('mlx.')]; print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
