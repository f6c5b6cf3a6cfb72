"""Checkpoints on disk, per family: the saved mlx-lm directory loads (float32 and ``--dtype q4``), and a
sample goes through ``lazarus --batch verify``, ``analyze --all-layers`` and ``ablate`` in a subprocess.
"""

from __future__ import annotations

import json

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from engine.hooks import Batch, HookedModel
from tests.batch.helpers import lazarus
from tests.families.factory import (
    FAMILIES,
    N_LAYERS,
    WINDOW,
    build_tiny,
    save_tiny_dir,
    tiny_tokenizer,
)
from tests.families.oracle import (
    PROMPT,
    TOL,
    edited,
    greedy,
    layers_of,
    logits_of,
    maxdiff,
    refusal_is_xfail,
)

CLI_SAMPLE = ("gemma3", "deepseek_v3")  # a subprocess `verify` costs ~5 s of CPU each


# ---------------------------------------------------------------------------------------------
# checkpoints on disk


def test_saved_directory_loads_and_matches(fam, saved_dir):
    from engine.models import load

    assert json.loads((saved_dir / "config.json").read_text())["model_type"] == fam.name
    with refusal_is_xfail(fam.name):
        lm = load(str(saved_dir), dtype="float32")
        out = HookedModel(lm).forward(Batch.from_lists([fam.ids]), logits="all").logits
    assert lm.info.model_type == fam.name and lm.info.num_layers == N_LAYERS
    assert lm.tokenizer.encode(PROMPT) == fam.ids
    assert lm.tokenizer.bos_id == fam.tok.bos_id and lm.tokenizer.eos_ids[:1] == fam.tok.eos_ids[:1]
    assert maxdiff(out, fam.native) < TOL


def test_q4_loads(fam, saved_dir):
    from engine.models import load

    with refusal_is_xfail(fam.name):
        lm = load(str(saved_dir), dtype="q4")
        own = logits_of(lm.model, [fam.ids])
        out = HookedModel(lm).forward(Batch.from_lists([fam.ids]), logits="all").logits
    assert lm.info.dtype == "q4"
    assert any(isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding)) for _, m in lm.model.named_modules())
    assert maxdiff(out, own) < TOL
    # 4-bit weights move the logits, but it stays the same function up to quantization error
    corr = np.corrcoef(np.array(own).ravel(), np.array(fam.native).ravel())[0, 1]
    assert corr > 0.5


@pytest.mark.slow
@pytest.mark.parametrize("name", CLI_SAMPLE)
def test_cli_verify_on_saved_directory(name, tmp_path):
    path = save_tiny_dir(name, tmp_path / name)
    proc = lazarus("verify", "-m", str(path), "--json", timeout=300)
    if proc.returncode == 3 and "unsupported" in proc.stderr.lower():
        pytest.xfail(f"engine refuses {name}: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(proc.stdout)
    assert data["passed"] is True
    assert all(p["max_abs_diff"] < TOL for p in data["prompts"])
    assert max(p["num_tokens"] for p in data["prompts"]) > 3 * WINDOW



def test_every_family_the_matrix_calls_verified_is_built_here():
    """`lazarus --batch models families` may call a family verified only if this suite proves it."""
    table = pytest.importorskip("engine.models.families")
    verified = set(getattr(table, "VERIFIED", ()))
    assert verified <= set(FAMILIES), f"verified without a tiny instance: {sorted(verified - set(FAMILIES))}"


@pytest.mark.slow
def test_cli_analyze_and_ablate_on_saved_directory(tmp_path):
    """`analyze --all-layers` (last layer = final prediction = the model's) and `ablate` (= the model
    with that layer's attention and MLP zeroed, decoded greedily) on a multimodal-checkpoint dir."""
    name = "gemma3"
    path = save_tiny_dir(name, tmp_path / name)
    ref, _ = build_tiny(name)
    ids = tiny_tokenizer().encode("The capital of France is")
    proc = lazarus("analyze", "-m", str(path), "-p", "The capital of France is", "--all-layers", "--json")
    if proc.returncode == 3 and "unsupported" in proc.stderr.lower():
        pytest.xfail(f"engine refuses {name}: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(proc.stdout)
    assert data["token_ids"] == ids and data["captured_layers"] == list(range(N_LAYERS))
    final = [(p["token_id"], p["probability"]) for p in data["final_prediction"]]
    last = [(p["token_id"], p["probability"]) for p in data["layer_predictions"][-1]["predictions"]]
    probs = np.array(mx.softmax(logits_of(ref, [ids])[0, -1]))
    assert [t for t, _ in final] == [t for t, _ in last] == list(np.argsort(-probs)[:len(final)])
    np.testing.assert_allclose([p for _, p in last], [p for _, p in final], atol=1e-6)
    np.testing.assert_allclose([p for _, p in final], probs[[t for t, _ in final]], atol=1e-6)

    proc = lazarus("ablate", "-m", str(path), "-p", "The capital of France is", "--layers", "1",
                   "--component", "both", "-n", "6", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(proc.stdout)
    base = greedy(ref, ids, 6)
    block = layers_of(ref)[1]
    with edited(block, "self_attn", mx.zeros_like), edited(block, "mlp", mx.zeros_like):
        want = greedy(ref, ids, 6)
    assert want != base
    assert data["baseline"][0]["token_ids"] == base
    assert data["points"][0]["outputs"][0]["token_ids"] == want
