"""engine.family_check: a model type the suite does not prove is checked at load, and refused when
its hooked forward differs from its own."""

from __future__ import annotations

import pytest

import engine.models as models
from engine.errors import ModelLoadError
from engine.family_check import tolerance
from engine.models import families
from tests.families.factory import save_tiny_dir


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return save_tiny_dir("llama", tmp_path_factory.mktemp("tiny") / "llama")


def test_a_verified_type_is_not_probed(llama_dir):
    assert models.load(str(llama_dir)).info.family_check is None


@pytest.mark.parametrize("model_type", ["llama", "gemma3_text", "gpt2", "mixtral"])
def test_an_untested_type_is_checked_and_says_so(model_type, tmp_path, monkeypatch):
    """llama-, gemma-, gpt2-like and MoE models, as if their types were untested: each passes the probe."""
    path = save_tiny_dir(model_type, tmp_path / model_type)
    monkeypatch.setattr(families, "VERIFIED", frozenset())
    heard = []
    lm = models.load(str(path), progress=lambda what, done, total: heard.append((what, done, total)))
    assert [h for h in heard if "probing" in h[0]] == [(f"probing untested model type {model_type}", i, 3)
                                                      for i in range(4)]
    note = lm.info.family_check
    assert note is not None and f"'{model_type}'" in note and "checked at load" in note
    worst = float(note.split("max |Δlogit| ")[1].split(" ")[0])
    assert worst <= 1e-4


def test_an_open_attention_that_differs_is_refused_at_load(llama_dir, monkeypatch):
    """Attention computed in the open (every-site capture) that misreads the family's mask, as a
    family with its own masking or biases would be misread: the hooked forward differs from the
    model's own, so an untested type with that fault never loads; a proven type is not probed."""
    from engine import hook_points

    real = hook_points.attention_in_the_open
    monkeypatch.setattr(hook_points, "attention_in_the_open",
                        lambda q, k, v, scale, mask, sinks, delta=None: real(q, k, v, scale, None, sinks, delta))
    monkeypatch.setattr(families, "VERIFIED", frozenset())
    with pytest.raises(ModelLoadError, match="hooked forward differs from its own"):
        models.load(str(llama_dir))
    monkeypatch.setattr(families, "VERIFIED", frozenset({"llama"}))
    assert models.load(str(llama_dir)).info.family_check is None


def test_a_hooked_forward_that_fails_is_refused_with_its_reason(llama_dir, monkeypatch):
    monkeypatch.setattr(families, "VERIFIED", frozenset())
    from engine.hooks import HookedModel

    def broken(self, *a, **k):
        raise KeyError("no such module: blocks.0.self_attn")

    monkeypatch.setattr(HookedModel, "forward", broken)
    with pytest.raises(ModelLoadError, match="hooked forward failed .*KeyError"):
        models.load(str(llama_dir))


def test_tolerance_comes_from_the_dtype_and_scale():
    import mlx.core as mx

    assert tolerance(mx.float32, 30.0) == 1e-4
    assert tolerance(mx.bfloat16, 30.0) == pytest.approx(4 * 2 ** -7 * 30)
    assert tolerance(mx.float16, 0.001) == 1e-4


def test_the_check_is_shown_where_the_model_is_described(llama_dir, monkeypatch, capsys):
    from lazarus_tui.batch.common import model_header
    from lazarus_tui.widgets.model_bar import describe_model

    monkeypatch.setattr(families, "VERIFIED", frozenset())
    info = models.load(str(llama_dir)).info
    model_header(info)
    assert f"Family check: {info.family_check}" in capsys.readouterr().out.replace("\n", " ")
    assert "untested family, checked at load" in describe_model(info, "OpenBLAS")
    monkeypatch.setattr(families, "VERIFIED", frozenset({"llama"}))
    plain = models.load(str(llama_dir)).info
    model_header(plain)
    assert "Family check" not in capsys.readouterr().out
    assert "untested" not in describe_model(plain, "OpenBLAS")
