"""A spec file's fields of the wrong type are refused with a one-line SpecError, not a TypeError from deep inside."""

from __future__ import annotations

import json

import pytest
import torch

from raywse.core.spec import ArchSpec, SpecError
from raywse.graph.checkpoint import GraphifyError, graphify_tensors


def _spec_json(**fields) -> str:
    return json.dumps({"input_shape": [4], "layers": [{"kind": "linear", "name": "a", **fields}]})


@pytest.mark.parametrize(
    "fields",
    [
        {"eps": [1e-5]},
        {"eps": True},
        {"eps": float("nan")},
        {"eps": -1.0},
        {"name": ["a"]},
        {"activation": ["relu"]},
        {"kind": "add", "source": {"a": 1}},
    ],  # fmt: skip
)
def test_fields_of_the_wrong_type_are_a_spec_error(fields):
    with pytest.raises(SpecError, match="strings|eps is a finite number"):
        ArchSpec.from_json(_spec_json(**fields))
    tensors = {"a.weight": torch.randn(3, 4), "a.bias": torch.randn(3)}
    with pytest.raises(GraphifyError) as info:
        graphify_tensors(tensors, {}, "m", _spec_json(**fields))
    assert info.value.stage == "spec" and "\n" not in info.value.reason


def test_a_well_formed_spec_round_trips():
    spec = ArchSpec.from_json(_spec_json(eps=1e-3, activation="relu"))
    assert ArchSpec.from_json(spec.to_json()) == spec and spec.layers[0].eps == 1e-3
