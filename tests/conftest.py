"""Shared fixtures. Real-model fixtures load each bundled model once per test session
(``make test`` pulls them first; a missing model is pulled on first use)."""

from __future__ import annotations

import pytest

import engine  # noqa: F401  (BLAS before mlx)


@pytest.fixture(scope="session")
def smollm():
    from engine.models import load

    return load("smollm2-135m")


@pytest.fixture(scope="module")
def gemma():
    """Per module: Gemma 3 (1 GB in float32) is used by a few modules only; loading it again from
    the converted cache takes about a second (the module teardown below gives its memory back)."""
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
    import mlx.core as mx
    from mlx.utils import tree_flatten

    from engine._imports import model_module
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
    mod = model_module(model_type)
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


def _give_memory_back() -> None:
    import gc

    import mlx.core as mx

    from engine.session import trim_malloc

    gc.collect()
    mx.clear_cache()
    trim_malloc()


@pytest.fixture(scope="module", autouse=True)
def _give_memory_back_after_each_module():
    """A module's models (module fixtures, in-process CLI runs) are gone when it ends: collect them and
    return their memory to the system, so that the worker's RSS is that of what is still in use."""
    yield
    _give_memory_back()


def pytest_runtest_teardown(item, nextitem):
    """An in-process CLI run loads its own models; a refusal's traceback can hold them in a reference
    cycle until the collector runs, and the next run would load beside them: collect after each."""
    if item.get_closest_marker("models_in_process"):
        _give_memory_back()


REAL_FIXTURES = {"smollm", "gemma", "real_engine"}


def _models_in_process(item) -> bool:
    return bool(item.get_closest_marker("models_in_process") or REAL_FIXTURES & set(getattr(item, "fixturenames", ())))


@pytest.hookimpl(tryfirst=True)  # before xdist's own, which turns the group marker into the node id's @group
def pytest_collection_modifyitems(config, items):
    """Work units for pytest-xdist (`make test` runs two workers with ``--dist loadgroup``):
    - every module that loads a bundled real model in the test process is in one group, "models", so
      that one worker only ever holds real models (the other's memory stays small);
    - every other module is a unit of its own, so its module fixtures (the fuzz suite's subprocess
      runs, a trained lens) run once. Subprocess-only real-model modules go to either worker, unless
      they name a group themselves (test_core_commands joins "models": its Gemma `verify` needs 2.8 GB,
      better beside the models worker's idle models than on top of its busiest module)."""
    in_process = {item.module.__name__ for item in items if getattr(item, "module", None) and _models_in_process(item)}
    for item in items:
        module = getattr(item, "module", None)
        if module is not None and not item.get_closest_marker("xdist_group"):
            group = "models" if module.__name__ in in_process else module.__name__
            item.add_marker(pytest.mark.xdist_group(group))
