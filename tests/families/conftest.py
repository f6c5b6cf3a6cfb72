"""The per-family fixtures: one pair of twins per family for the whole session (each is tiny)."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import pytest
from mlx.utils import tree_flatten

from tests.families.factory import FAMILIES, WINDOW, build_tiny, save_tiny_dir, tiny_tokenizer
from tests.families.oracle import PROMPT, SHORT, Family, logits_of


@pytest.fixture(scope="session", params=FAMILIES)
def fam(request) -> Family:
    name = request.param
    tok = tiny_tokenizer()
    ref, _ = build_tiny(name)
    model, _ = build_tiny(name)
    for (ka, va), (kb, vb) in zip(tree_flatten(ref.parameters()), tree_flatten(model.parameters())):
        assert ka == kb and mx.array_equal(va, vb), f"the twin of {name} differs at {ka}"
    ids, short = tok.encode(PROMPT), tok.encode(SHORT)
    assert len(ids) > 3 * WINDOW and len(short) < len(ids)
    return Family(name, ref, model, tok, ids, short, logits_of(ref, [ids]), logits_of(ref, [short]))


@pytest.fixture(scope="session")
def saved_dir(fam, tmp_path_factory) -> Path:
    return save_tiny_dir(fam.name, tmp_path_factory.mktemp(f"tiny-{fam.name}"))
