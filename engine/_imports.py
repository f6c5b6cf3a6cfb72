"""Import mlx-lm's model classes without importing transformers (and torch).

``mlx_lm/__init__.py`` imports its converter and generator, which import
transformers, which imports torch when it is installed: seconds of start-up for
every command, although lazarus only needs ``mlx_lm.models.*`` to run a GGUF
(bundled) model. So when the engine first needs a family's model code
(:func:`model_module`) and the process has not imported ``mlx_lm`` itself, it
registers a light ``mlx_lm`` package object whose submodules import normally and
whose public names (``load``, ``generate``, ...) are imported on first use, so
code that does ``import mlx_lm; mlx_lm.load(...)`` afterwards still works.
``import engine`` alone leaves ``sys.modules`` alone: a script that imports
``mlx_lm`` before loading a model through lazarus gets the real package.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types

_PUBLIC = {
    "load": "mlx_lm.utils",
    "convert": "mlx_lm.convert",
    "generate": "mlx_lm.generate",
    "stream_generate": "mlx_lm.generate",
    "batch_generate": "mlx_lm.generate",
    "__version__": "mlx_lm._version",
}


def install_light_mlx_lm() -> None:
    """Register the light ``mlx_lm`` package unless ``mlx_lm`` is imported already (then: nothing)."""
    if "mlx_lm" in sys.modules:
        return
    spec = importlib.util.find_spec("mlx_lm")
    if spec is None or not spec.submodule_search_locations:
        return
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    mod = types.ModuleType("mlx_lm")
    mod.__path__ = list(spec.submodule_search_locations)
    mod.__spec__ = spec
    mod.__file__ = spec.origin
    mod.__package__ = "mlx_lm"
    mod.__all__ = list(_PUBLIC)  # type: ignore[attr-defined]  # ModuleType declares no __all__; the real package has this one

    def __getattr__(name: str) -> object:  # noqa: N807 - module-level getattr
        if name not in _PUBLIC:
            raise AttributeError(f"module 'mlx_lm' has no attribute {name!r}")
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        setattr(mod, name, value)
        return value

    mod.__getattr__ = __getattr__  # type: ignore[method-assign]  # a module-level __getattr__ (PEP 562)
    sys.modules["mlx_lm"] = mod


def model_module(model_type: str) -> types.ModuleType:
    """``mlx_lm.models.<model_type>``: a family's model code (``ImportError`` when mlx-lm has none)."""
    install_light_mlx_lm()
    return importlib.import_module(f"mlx_lm.models.{model_type}")
