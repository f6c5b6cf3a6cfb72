"""The one layer rule (engine.layer_lists): -n <= layer < n, negatives from the end."""

from __future__ import annotations

import pytest

from engine.errors import InputError
from engine.layer_lists import check_layer, evenly_spaced, parse_layers, resolve_layer_list


def test_check_layer_accepts_minus_one_and_rejects_out_of_range():
    assert [check_layer(x, 4) for x in (0, 3, -1, -4)] == [0, 3, 3, 0]
    for bad in (4, -5, 100):
        with pytest.raises(InputError, match=f"layer {bad} out of range \\(model has 4 layers: 0-3\\)"):
            check_layer(bad, 4)


def test_lists_and_spacing_follow_the_rule():
    assert resolve_layer_list([3, -1, 0, 1], 4) == [0, 1, 3]
    assert parse_layers("0,-1,2-3", 30) == [0, 2, 3, 29]
    assert evenly_spaced(30, 4) == [0, 4, 8, 12, 16, 20, 24, 28, 29]
    assert evenly_spaced(4, 10) == [0, 3]
    with pytest.raises(InputError):
        evenly_spaced(30, 0)


def test_ablation_specs_follow_the_same_rule():
    from engine.ablation import check_spec
    from engine.results.ablation import AblationSpec

    assert check_spec(AblationSpec(layers=[0, -1]), 4, 2).layers == [0, 3]
    with pytest.raises(InputError, match="layer 4 out of range"):
        check_spec(AblationSpec(layers=[4]), 4, 2)
