"""The session owns its models: it keeps the current one and the last other one used (an LRU of
``KEEP_MODELS``), ``engine.models.load`` keeps nothing, and a model the session drops is freed, so
switching models back and forth does not grow memory (bench/model_switch_rss.py measures it on the
bundled models)."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import pytest

import engine.models
import engine.session
from engine.errors import InputError, ModelLoadError
from engine.limits import process_memory
from engine.mx_values import tree_leaves
from engine.session import KEEP_MODELS, EngineSession


def _rss_mib() -> float:
    b = process_memory("VmRSS")
    assert b is not None, "no VmRSS in /proc/self/status"
    return b / 2**20


def _random_llama(spec: str, hidden: int, layers: int, vocab: int):
    """A random float32 llama wrapped as a LoadedModel (a stand-in for loading ``spec``)."""
    import mlx.core as mx
    from mlx_lm.models import llama

    from tests.families.factory import tiny_tokenizer

    args = llama.ModelArgs(model_type="llama", hidden_size=hidden, num_hidden_layers=layers,
                           intermediate_size=2 * hidden, num_attention_heads=4, num_key_value_heads=2,
                           rms_norm_eps=1e-6, vocab_size=vocab, tie_word_embeddings=True)
    model = llama.Model(args)
    mx.eval(model.parameters())
    return engine.models.wrap_model(model, tiny_tokenizer(), model_id=spec)


def test_the_session_keeps_the_current_model_and_the_last_other_one(monkeypatch):
    """An LRU of KEEP_MODELS: switching between three models never holds more than two, and never
    drops the current one (the models are stand-ins: what is tested is the session's bookkeeping)."""
    loads: list[str] = []

    def fake_load(spec, dtype="auto", progress=None, found=None):
        found()
        loads.append(spec)
        return object()

    monkeypatch.setattr(engine.models, "load", fake_load)
    s = EngineSession("a")
    try:
        for spec in ["a", "b", "a", "c", "a", "b"]:
            lm = s.load(spec).result(timeout=30)
            assert s.current is lm and lm in s._models.values()
            assert len(s._models) <= KEEP_MODELS
        # a stayed in use (never reloaded), b was dropped for c and loaded again, then c dropped
        assert loads == ["a", "b", "c", "b"]
        assert [k[0] for k in s._models] == ["a", "b"]
    finally:
        s.close(cancel=True, timeout=10)


def test_a_model_that_cannot_be_found_drops_none_of_the_kept_ones(monkeypatch, tmp_path):
    """Room for a new model is made only once its source exists (``load(found=...)``): a mistyped
    name, a missing file or a hub repo that cannot be fetched is an error, and both models the
    session keeps stay loaded."""
    real_load = engine.models.load

    def no_hub(repo):  # what the hub download raises offline or for a repo that does not exist
        raise ModelLoadError(f"could not fetch {repo!r} from the hub")

    monkeypatch.setattr(engine.models, "_hub_download", no_hub)
    made: dict[str, object] = {}

    def load(spec, dtype="auto", progress=None, found=None):
        if spec in ("a", "b"):  # stand-ins for two good models
            found()
            made[spec] = object()
            return made[spec]
        return real_load(spec, dtype=dtype, progress=progress, found=found)  # the real lookup

    monkeypatch.setattr(engine.models, "load", load)
    s = EngineSession("a")
    try:
        s.load("a").result(timeout=30)
        s.load("b").result(timeout=30)
        for bad in [str(tmp_path / "missing.gguf"), "no-such-model", str(tmp_path), "no-such-org/no-such-model"]:
            with pytest.raises((ModelLoadError, InputError)):
                s.load(bad).result(timeout=30)
            assert list(s._models.values()) == [made["a"], made["b"]] and s.current is made["b"]
    finally:
        s.close(cancel=True, timeout=10)


def test_a_dropped_model_is_freed_and_loading_again_makes_a_new_one(monkeypatch):
    """Tiny real models: the model the LRU drops is gone at once (no module-level cache, no cycle
    left for the collector), and the current one survives a job that loads two others."""
    made: list[weakref.ref] = []

    def tiny_load(spec, dtype="auto", progress=None, found=None):
        found()
        lm = _random_llama(spec, hidden=64, layers=2, vocab=512)
        made.append(weakref.ref(lm))
        return lm

    monkeypatch.setattr(engine.models, "load", tiny_load)
    s = EngineSession("a")
    gc.disable()  # what frees a dropped model must be its last reference going, not the collector
    try:
        a = s.load("a").result(timeout=60)
        assert s.run(lambda ctx: ctx.model("b").info.model_id) == "b"  # loads b beside a (not current)
        assert s.run(lambda ctx: ctx.model("c").info.model_id) == "c"  # drops b, keeps the current a
        assert made[1]() is None and made[0]() is a and made[2]() is not None
        assert s.load("a").result(timeout=60) is a  # held: not loaded again
        b2 = s.load("b").result(timeout=60)  # b comes back as a new load and becomes current
        assert len(made) == 4 and made[3]() is b2 and s.current is b2
        assert made[2]() is None and made[0]() is a  # c was the least recently used one, a the other kept
    finally:
        gc.enable()
        s.close(cancel=True, timeout=10)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RSS from /proc")
def test_switching_models_ten_times_does_not_grow_rss(monkeypatch):
    """Every switch loads anew (KEEP_MODELS=1) a ~106 MiB model: a kept reference would add that
    much per switch; RSS after the last switch stays within half a model of the early readings."""
    monkeypatch.setattr(engine.session, "KEEP_MODELS", 1)
    monkeypatch.setattr(engine.models, "load",
                        lambda spec, dtype="auto", progress=None, found=None: (found(), _random_llama(spec, 512, 10, 8192))[1])
    s = EngineSession("a")
    try:
        rss = []
        for i in range(11):
            lm = s.load("a" if i % 2 == 0 else "b").result(timeout=60)
            size_mib = sum(v.nbytes for _, v in tree_leaves(lm.model.parameters())) / 2**20
            del lm
            rss.append(_rss_mib())
        assert size_mib > 100
        print(f"model {size_mib:.0f} MiB; RSS after each switch (MiB):", [round(r) for r in rss])
        assert max(rss[2:]) - rss[2] < size_mib / 2, (rss, size_mib)
    finally:
        s.close(cancel=True, timeout=10)
