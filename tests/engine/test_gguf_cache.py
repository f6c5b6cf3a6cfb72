"""The converted-GGUF cache and the bundled-model pull: damage is repaired once, failures are one line."""

from __future__ import annotations

import os

import mlx.core as mx
import numpy as np
import pytest

from engine.errors import ModelLoadError
from engine.models import _build, gguf_loader, registry
from tests.batch.helpers import assert_one_line_error, lazarus
from tests.engine.gguf_fixtures import tiny_family, write_gguf


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    t = tiny_family("llama")
    path = tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf"
    write_gguf(t, path)
    want = np.array(t.model(mx.array([[1, 2, 3, 258]])))
    return path, want


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("LAZARUS_CACHE", str(root))
    return root


def _logits(path):
    config, weights, _ = gguf_loader.load(path)
    return np.array(_build(config, weights)(mx.array([[1, 2, 3, 258]])))


def _conv_dir(path):
    return registry.models_dir() / "converted" / gguf_loader.cache_key(path)


def _truncate(p):
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


@pytest.mark.parametrize("damage", [
    lambda d: _truncate(d / "model.safetensors"),
    lambda d: (d / "config.json").unlink(),
    lambda d: (d / "config.json").write_text("{not json"),
    lambda d: (d / "tokenizer.json").write_bytes(os.urandom(64)),
    lambda d: (d / "tokenizer.json").write_bytes(b"\0" * (d / "tokenizer.json").stat().st_size),  # same size
    lambda d: (d / "lazarus_tokenizer.json").unlink(),
], ids=["truncated-weights", "no-config", "garbage-config", "garbage-tokenizer", "zeroed-tokenizer", "no-tok-meta"])
def test_damaged_converted_cache_is_rebuilt_once(damage, tiny_gguf, cache, capfd):
    path, want = tiny_gguf
    np.testing.assert_allclose(_logits(path), want, atol=1e-5)
    conv = _conv_dir(path)
    assert capfd.readouterr().err == ""  # a first conversion is not news
    damage(conv)
    np.testing.assert_allclose(_logits(path), want, atol=1e-5)
    err = [x for x in capfd.readouterr().err.splitlines() if x]
    assert len(err) == 1 and "damaged" in err[0] and "rebuilding it from tiny-llama.gguf" in err[0], err
    _logits(path)
    assert capfd.readouterr().err == ""  # repaired: the next load is quiet
    leftovers = [p.name for p in conv.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []  # the atomic write left no temporary directories


def test_a_rebuild_that_fails_is_one_error(tiny_gguf, cache, monkeypatch):
    path, _ = tiny_gguf
    _logits(path)
    conv = _conv_dir(path)
    _truncate(conv / "model.safetensors")
    from engine.models import tokenizer

    def broken_save(self, directory):  # the rebuild writes a tokenizer that cannot be read back
        (directory / "tokenizer.json").write_text("garbage")
        (directory / "lazarus_tokenizer.json").write_text("{}")

    monkeypatch.setattr(tokenizer.Tokenizer, "save", broken_save)
    with pytest.raises(ModelLoadError, match="cannot be read even after rebuilding it"):
        gguf_loader.load(path)


def test_cache_that_is_a_file_is_one_line(tiny_gguf, tmp_path):
    path, _ = tiny_gguf
    not_a_dir = tmp_path / "cache-file"
    not_a_dir.write_text("x")
    proc = lazarus("analyze", "-m", str(path), "-p", "the cat", env={"LAZARUS_CACHE": str(not_a_dir)})
    assert_one_line_error(proc, 3, "cannot write the converted model")
    proc = lazarus("analyze", "-m", "smollm2-135m", "-p", "the cat", env={"LAZARUS_CACHE": str(not_a_dir)})
    assert_one_line_error(proc, 3, "cannot store smollm2-135m")
    assert not_a_dir.read_text() == "x"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through read-only permissions")
def test_read_only_cache_is_one_line(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        proc = lazarus("analyze", "-m", "smollm2-135m", "-p", "x", env={"LAZARUS_CACHE": str(ro)})
        assert_one_line_error(proc, 3, "cannot store smollm2-135m")
    finally:
        ro.chmod(0o755)


def test_offline_pull_is_one_line_and_leaves_nothing(tmp_path):
    """pip pointed at an index that does not answer, as on a machine without network."""
    cache = tmp_path / "cache"
    env = {"LAZARUS_CACHE": str(cache), "PIP_CONFIG_FILE": os.devnull, "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
           "PIP_RETRIES": "0", "PIP_TIMEOUT": "1", "PIP_NO_CACHE_DIR": "1", "PIP_FIND_LINKS": ""}
    proc = lazarus("analyze", "-m", "smollm2-135m", "-p", "x", env=env, timeout=120)
    assert_one_line_error(proc, 3, "could not fetch the model 'smollm2-135m' (offline?)")
    left = [p.name for p in (cache / "models" / "smollm2-135m").iterdir()]
    assert left == []  # no .partial, no temporary download directory
