"""GGUF round trips per family: tiny HF weights → a GGUF written as llama.cpp's converter would → lazarus
→ the same logits as the mlx-lm model built from the original weights (float32 and Q8_0)."""

from __future__ import annotations

import math

import gguf
import mlx.core as mx
import numpy as np
import pytest

from engine.errors import ModelLoadError, UnsupportedArchitecture
from engine.models import load
from engine.models.gguf_transforms import llama3_factors, llama3_scaling, unpermute
from tests.engine.gguf_fixtures import (
    FAMILIES,
    SPM_VOCAB,
    VOCAB,
    permute,
    reference_from_stored,
    tiny_family,
    write_gguf,
)

IDS = [[262, 200, 258, 77, 261, 68, 69, 70, 71, 72, 73, 74, 75, 76, 3, 9]]  # past Gemma 3's tiny window of 4


@pytest.fixture(autouse=True)
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LAZARUS_CACHE", str(tmp_path / "cache"))


def open_gguf(path):
    """The converted config, mlx-lm model and tokenizer of a GGUF (the GGUF path of ``load``, before the adapter)."""
    from engine.models import _build, gguf_loader

    config, weights, tokenizer = gguf_loader.load(path)
    return config, _build(config, weights), tokenizer


def _logits(model) -> np.ndarray:
    return np.array(model(mx.array(IDS)).astype(mx.float32))


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_round_trip_float32_and_q8_0(model_type, tmp_path):
    t = tiny_family(model_type)
    want = _logits(t.model)
    assert np.abs(want).max() > 0.1  # the random model really computes something
    path = tmp_path / f"{model_type}.gguf"
    write_gguf(t, path)
    config, model, tokenizer = open_gguf(path)
    assert config["model_type"] == model_type and config.get("vocab_size") == VOCAB
    np.testing.assert_allclose(_logits(model), want, rtol=0, atol=1e-5)
    assert tokenizer.encode(" the cat") == [258, 261] and tokenizer.decode([258, 261]) == " the cat"

    qpath = tmp_path / f"{model_type}-q8.gguf"
    stored = write_gguf(t, qpath, qtype=gguf.GGMLQuantizationType.Q8_0)
    qconfig, qmodel, _ = open_gguf(qpath)
    assert "Q8_0" in qconfig["lazarus"]["quantization"]
    got = _logits(qmodel)
    np.testing.assert_allclose(got, _logits(reference_from_stored(t, stored)), rtol=0, atol=1e-5)
    assert np.abs(got - want).max() > 1e-6  # quantization really changed the weights


def test_unpermute_inverts_llama_cpp_permute():
    w = np.arange(12 * 16 * 3, dtype=np.float32).reshape(12 * 16, 3)
    for n_head in (1, 3, 12):
        assert np.array_equal(unpermute(permute(w, n_head), n_head), w)
        assert not np.array_equal(permute(w, n_head), w)


@pytest.mark.parametrize("rope", [
    {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192, "theta": 500000.0},
    {"factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 8.0, "original_max_position_embeddings": 2048, "theta": 10000.0},
    {"factor": 4.0, "low_freq_factor": 2.0, "high_freq_factor": 3.0, "original_max_position_embeddings": 300, "theta": 10000.0},
])
def test_llama3_rope_freqs_become_rope_scaling(rope, tmp_path):
    theta = rope.pop("theta")
    scaling = {"rope_type": "llama3", **rope}
    t = tiny_family("llama", rope_theta=theta, rope_scaling=scaling)
    dim = 16
    # LlamaModel.generate_extra_tensors, in float32 as the converter computes it
    freqs = 1.0 / (np.float32(theta) ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    factors = []
    for f in freqs:
        wl = 2 * math.pi / f
        if wl < rope["original_max_position_embeddings"] / rope["high_freq_factor"]:
            factors.append(1.0)
        elif wl > rope["original_max_position_embeddings"] / rope["low_freq_factor"]:
            factors.append(rope["factor"])
        else:
            s = (rope["original_max_position_embeddings"] / wl - rope["low_freq_factor"]) / (
                rope["high_freq_factor"] - rope["low_freq_factor"])
            factors.append(1 / ((1 - s) / rope["factor"] + s))
    rope_freqs = np.array(factors, dtype=np.float32)
    assert (rope_freqs != 1).any()
    path = tmp_path / "llama3.gguf"
    write_gguf(t, path, extra_tensors={"rope_freqs.weight": rope_freqs})
    config, model, _ = open_gguf(path)
    got = config["rope_scaling"]
    assert got["rope_type"] == "llama3" and got["factor"] == pytest.approx(rope["factor"])
    np.testing.assert_allclose(llama3_factors(theta, dim, got["factor"], got["low_freq_factor"], got["high_freq_factor"],
                                              got["original_max_position_embeddings"]), rope_freqs, rtol=1e-5)
    # long positions make the RoPE matter: logits equal the model built with the original rope_scaling
    ids = mx.array([list(range(1, 250))])
    want = np.array(t.model(ids))
    np.testing.assert_allclose(np.array(model(ids)), want, rtol=0, atol=1e-4 * max(1.0, np.abs(want).max()))
    no_scaling = tiny_family("llama", rope_theta=theta)
    assert np.abs(np.array(no_scaling.model(ids)) - want).max() > 1e-3  # the scaling is not a no-op here


def test_rope_freqs_that_are_not_llama3_are_refused(tmp_path):
    rf = np.array([1.0, 3.0, 1.0, 2.0, 5.0, 1.0, 7.0, 8.0], dtype=np.float32)
    with pytest.raises(UnsupportedArchitecture, match="rope_freqs"):
        llama3_scaling(rf, 10000.0, 16, "x.gguf")
    t = tiny_family("qwen2")  # a family whose converter never writes rope_freqs
    path = tmp_path / "qwen-rope.gguf"
    write_gguf(t, path, extra_tensors={"rope_freqs.weight": np.ones(8, dtype=np.float32)})
    with pytest.raises(UnsupportedArchitecture, match="rope_freqs.weight has no place"):
        open_gguf(path)


@pytest.mark.parametrize("change, message", [
    ({"skip_keys": ("llama.attention.layer_norm_rms_epsilon",)}, "lacks llama.attention.layer_norm_rms_epsilon"),
    ({"skip_keys": ("llama.attention.head_count",)}, "lacks llama.attention.head_count"),
    ({"skip_keys": ("llama.block_count",)}, "lacks llama.block_count"),
    ({"extra_keys": {"llama.expert_count": 4}}, "lacks llama.expert_used_count"),
    ({"extra_keys": {"llama.expert_count": 4, "llama.expert_used_count": 2}}, "lacks tensor blk.0.ffn_gate_inp.weight"),
    ({"extra_keys": {"llama.expert_shared_count": 2}}, "metadata llama.expert_shared_count is not understood"),
    ({"extra_keys": {"llama.attention.sliding_window": 16}}, "metadata llama.attention.sliding_window is not understood"),
    ({"extra_keys": {"llama.rope.scaling.type": "yarn", "llama.rope.scaling.factor": 4.0}}, "only linear RoPE scaling"),
    ({"extra_tensors": {"blk.0.attn_q_norm.weight": np.ones(16, np.float32)}}, "blk.0.attn_q_norm.weight has no place"),
])
def test_incomplete_or_unknown_llama_files_are_refused(change, message, tmp_path):
    path = tmp_path / "bad.gguf"
    write_gguf(tiny_family("llama"), path, **change)
    with pytest.raises(ModelLoadError, match=message):
        load(str(path))


def test_missing_tensor_is_named(tmp_path):
    import gguf as g

    path = tmp_path / "embd-only.gguf"
    w = g.GGUFWriter(str(path), "llama")
    for key, value in [("block_count", 1), ("embedding_length", 8), ("feed_forward_length", 16),
                       ("attention.head_count", 2)]:
        w.add_uint32(f"llama.{key}", value)
    w.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ModelLoadError, match="GGUF lacks tensor blk.0.attn_q.weight"):
        load(str(path))


def test_gemma3_hyper_parameters_come_from_metadata(tmp_path):
    t = tiny_family("gemma3_text")
    path = tmp_path / "g3.gguf"
    write_gguf(t, path, extra_keys={"gemma3.rope.freq_base_swa": 5000.0, "gemma3.attention.scale": 0.125},
               skip_keys=())
    # the writer already wrote freq_base_swa=10000 via add_rope_freq_base_swa; the extra key overrides it
    cfg = open_gguf(path)[0]
    assert cfg["rope_local_base_freq"] == 5000.0 and cfg["query_pre_attn_scalar"] == pytest.approx(64.0)
    assert cfg["sliding_window"] == 4 and cfg["sliding_window_pattern"] == 6


@pytest.mark.parametrize("model_type", ["llama", "gemma3_text"])
def test_load_opens_a_converted_gguf(model_type, tmp_path):
    t = tiny_family(model_type)
    path = tmp_path / f"{model_type}.gguf"
    write_gguf(t, path)
    lm = load(str(path))
    assert lm.info.source_format == "gguf" and lm.info.num_layers == t.config["num_hidden_layers"]
    np.testing.assert_allclose(_logits(lm.model), _logits(t.model), rtol=0, atol=1e-5)


@pytest.mark.parametrize("model_type", ["phi3", "gemma"])
def test_sentencepiece_vocabulary(model_type, tmp_path):
    t = tiny_family(model_type, vocab_size=SPM_VOCAB)
    path = tmp_path / "spm.gguf"
    write_gguf(t, path, tokenizer="spm")
    _, model, tok = open_gguf(path)
    ids = tok.encode("the cat")
    assert ids == [1, SPM_VOCAB - 4, SPM_VOCAB - 1]  # <s> ▁the ▁cat: llama.cpp prefixes a space by default
    assert tok.decode(ids[1:]) == "the cat" and tok.decode(tok.encode("héllo", add_bos=False)) == "héllo"
    np.testing.assert_allclose(_logits(model), _logits(t.model), rtol=0, atol=1e-5)


def test_every_gguf_family_has_a_round_trip():
    from engine.models.gguf_families import FAMILIES as LOADER_FAMILIES

    assert {arch for arch, _ in FAMILIES.values()} == set(LOADER_FAMILIES)
    assert {LOADER_FAMILIES[arch].model_type for _, (arch, _) in FAMILIES.items()} <= set(FAMILIES)


@pytest.mark.parametrize("arch, layers, scalar", [
    ("gemma2", 42, 256.0), ("gemma2", 46, 4608 / 32), ("gemma3", 34, 256.0), ("gemma3", 62, 5376 / 32),
])
def test_gemma_query_scale_follows_llama_cpp(arch, layers, scalar):
    """Without attention.scale llama.cpp scales queries by 1/sqrt(head_dim), except the 27B (hidden/heads)."""
    from engine.models.gguf_families import FAMILIES as LOADER_FAMILIES
    from engine.models.gguf_meta import Meta, Tensors

    hidden = 4608 if arch == "gemma2" else 5376
    meta = {f"{arch}.{k}": v for k, v in {
        "block_count": layers, "embedding_length": hidden, "feed_forward_length": 4 * hidden,
        "attention.head_count": 32, "attention.head_count_kv": 16, "attention.key_length": 256,
        "attention.value_length": 256, "attention.layer_norm_rms_epsilon": 1e-6,
        "attention.sliding_window": 4096, "context_length": 8192}.items()}
    cfg = LOADER_FAMILIES[arch].config(Meta(meta, arch, "x.gguf"), Tensors({"token_embd.weight": (256, hidden)}))
    assert cfg["query_pre_attn_scalar"] == pytest.approx(scalar)


def test_split_gguf_is_refused(tmp_path):
    path = tmp_path / "model-00001-of-00002.gguf"
    write_gguf(tiny_family("llama"), path, extra_keys={"split.count": 2, "split.no": 0})
    with pytest.raises(ModelLoadError, match="part 1 of a 2-part split GGUF"):
        open_gguf(path)


def test_stablelm_parallel_residual_follows_the_tensors(tmp_path):
    t = tiny_family("stablelm", use_parallel_residual=True)
    path = tmp_path / "stablelm-parallel.gguf"
    write_gguf(t, path)
    config, model, _ = open_gguf(path)
    assert config["use_parallel_residual"] is True
    np.testing.assert_allclose(_logits(model), _logits(t.model), rtol=0, atol=1e-5)


def test_linear_rope_scaling_is_kept_or_refused(tmp_path):
    t = tiny_family("llama", rope_scaling={"type": "linear", "factor": 4.0})
    path = tmp_path / "linear.gguf"
    write_gguf(t, path)
    config, model, _ = open_gguf(path)
    assert config["rope_scaling"]["factor"] == 4.0
    ids = mx.array([list(range(1, 60))])
    np.testing.assert_allclose(np.array(model(ids)), np.array(t.model(ids)), rtol=0, atol=1e-5)
    g2 = tmp_path / "gemma2-linear.gguf"
    write_gguf(tiny_family("gemma2"), g2, extra_keys={"gemma2.rope.scaling.type": "linear",
                                                      "gemma2.rope.scaling.factor": 4.0})
    with pytest.raises(UnsupportedArchitecture, match="no RoPE scaling"):
        open_gguf(g2)
