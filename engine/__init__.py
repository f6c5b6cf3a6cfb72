"""lazarus engine: models, the hooked forward, analyses, result models.

Importing this package first loads an optimized BLAS (Linux), so it must be
imported before ``mlx.core`` anywhere in the process. The engine never imports
Textual or Rich.
"""

from engine import blas as _blas
from engine._imports import install_light_mlx_lm as _light_mlx_lm

_blas.preload()
_light_mlx_lm()

_LAZY = {
    # models
    "load": "engine.models",
    "LoadedModel": "engine.models",
    "ModelInfo": "engine.models",
    # the analyzer and hooks API
    "ModelAnalyzer": "engine.api",
    "ModelHooks": "engine.api",
    "CaptureConfig": "engine.api",
    "PositionSelection": "engine.api",
    "LogitLens": "engine.api",
    "AnalysisConfig": "engine.results.analyze",
    "LayerStrategy": "engine.results.analyze",
    "AnalysisResult": "engine.results.analyze",
    "AnalyzeRequest": "engine.results.analyze",
    "EngineSession": "engine.session",
    "SteeringDirection": "engine.steering",
    "steer_generate": "engine.steering",
    "SteerRequest": "engine.results.steering",
    "SteerResult": "engine.results.steering",
    "AblationStudy": "engine.ablation_api",
    "AblationConfig": "engine.results.ablation",
    "ComponentType": "engine.results.ablation",
    "AblationRequest": "engine.results.ablation",
    "AblationResult": "engine.results.ablation",
    "attribute": "engine.attribution",
    "AttributeRequest": "engine.results.attribution",
    "AttributeResult": "engine.results.attribution",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = sorted(_LAZY)
