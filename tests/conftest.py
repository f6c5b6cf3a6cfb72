"""Shared fixtures. Real-model fixtures load each bundled model once per test session
(``make test`` pulls them first; a missing model is pulled on first use)."""

from __future__ import annotations

import pytest

import engine  # noqa: F401  (BLAS before mlx)


@pytest.fixture(scope="session")
def smollm():
    from engine.models import load

    return load("smollm2-135m")


@pytest.fixture(scope="session")
def gemma():
    from engine.models import load

    return load("gemma3-270m")


@pytest.fixture(scope="session")
def tiny_llama():
    """A tiny random llama (4 layers) for fast invariant tests, with the tiny test tokenizer."""
    return _tiny("llama")


@pytest.fixture(scope="session")
def tiny_gemma():
    return _tiny("gemma3_text")


def _tiny(model_type: str):
    import importlib

    import mlx.core as mx
    from mlx.utils import tree_flatten

    from engine.models import LoadedModel, ModelInfo
    from engine.models.adapter import adapter_for
    from tests.families.factory import tiny_tokenizer

    tok = tiny_tokenizer()  # made in the test: no download
    config = {
        "model_type": model_type, "hidden_size": 64, "num_hidden_layers": 4, "intermediate_size": 128,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "rms_norm_eps": 1e-6,
        "vocab_size": tok.vocab_size, "tie_word_embeddings": True, "sliding_window": 4,
        "sliding_window_pattern": 2, "query_pre_attn_scalar": 16,
    }
    mod = importlib.import_module(f"mlx_lm.models.{model_type}")
    mx.random.seed(0)
    model = mod.Model(mod.ModelArgs.from_dict(config))
    model.sanitize({})
    mx.eval(model.parameters())
    adapter = adapter_for(model, config)
    n_params = sum(v.size for _, v in tree_flatten(model.parameters()))
    info = ModelInfo(model_id=f"tiny-{model_type}", family=adapter.family, model_type=model_type, num_layers=4,
                     hidden_size=64, vocab_size=tok.vocab_size, num_heads=4, num_kv_heads=2, head_dim=16,
                     intermediate_size=128, tied_embeddings=True, dtype="float32", source=f"random ({n_params} params)",
                     source_format="random", device="cpu", embedding_scale=adapter.embedding_scale,
                     sliding_window=adapter.sliding_window, sliding_layers=list(adapter.sliding_layers))
    return LoadedModel(model, tok, adapter, config, info)



REAL_FIXTURES = {"smollm", "gemma", "real_engine"}


def _is_real(item) -> bool:
    return bool(item.get_closest_marker("real_model") or REAL_FIXTURES & set(getattr(item, "fixturenames", ())))


@pytest.hookimpl(tryfirst=True)  # before xdist's own, which turns the group marker into the node id's @group
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (`make test` runs two workers with ``--dist loadgroup``) every test module
    that touches a bundled real model runs whole on one worker: the real models are loaded in one
    process only, and a module's shared fixtures (the fuzz suite's subprocess runs) run once. The
    tiny-model, fake-engine and pure tests share the other worker and whatever is left."""
    real_modules = {item.module.__name__ for item in items if getattr(item, "module", None) and _is_real(item)}
    for item in items:
        if getattr(item, "module", None) and item.module.__name__ in real_modules:
            item.add_marker(pytest.mark.xdist_group("real"))
