"""Probe inference: a network nobody described is probed on the known inputs it answers most informatively."""

from __future__ import annotations

import math

import pytest
import torch
from graph_nets import trained

from raywse.core.spec import ArchSpec
from raywse.graph.checkpoint import graphify_tensors
from raywse.graph.infer import with_hidden_activation
from raywse.graph.probe_inference import infer_probes, prediction_information
from raywse.graph.probes import INFERRED, NO_PROBES, ProbeSet, gaussian_probes, probe_rows
from raywse.zoo.datasets import probe_inputs


def test_prediction_information_is_zero_for_one_answer_and_log_c_for_decisive_distinct_answers():
    assert prediction_information(torch.zeros(8, 4)) == pytest.approx(0.0, abs=1e-12)
    same = torch.tensor([[9.0, 0, 0]]).repeat(6, 1)  # decisive, but every probe the same class
    assert prediction_information(same) == pytest.approx(0.0, abs=1e-3)
    distinct = 50 * torch.eye(4).repeat(2, 1)  # decisive, each class as often
    assert prediction_information(distinct) == pytest.approx(math.log(4), abs=1e-6)
    one_logit = torch.tensor([[30.0], [-30.0]])  # a binary classifier's single logit
    assert prediction_information(one_logit) == pytest.approx(math.log(2), abs=1e-6)


def _catalogue(size: int) -> list[ProbeSet]:
    """The digits rows as the network read them, the same rows scrambled across pixels, and Gaussian noise."""
    if size != 64:
        return []
    rows = probe_inputs("digits", "unit").reshape(-1, 64)
    scrambled = rows[:, torch.randperm(64, generator=torch.Generator().manual_seed(0))]
    return [ProbeSet(gaussian_probes((64,)).inputs, "noise"), ProbeSet(scrambled, "scrambled"),
            ProbeSet(rows, "train:digits|unit")]  # fmt: skip


@pytest.mark.parametrize("arch", ["mlp", "cnn_gap"])
def test_a_trained_network_is_probed_on_its_own_domain(arch):
    spec, tensors = trained(arch, "relu", steps=150)
    found = infer_probes(lambda a: spec, tensors, tuple(spec.input_shape), _catalogue)
    assert found is not None and found.probes.source == "train:digits|unit" + INFERRED
    assert found.probes.inputs.shape[1:] == tuple(spec.input_shape) and found.activation == ""
    assert infer_probes(lambda a: spec, tensors, tuple(spec.input_shape), lambda size: []) is None


def _unknown(spec: ArchSpec) -> ArchSpec:
    """``spec`` as inference leaves it: hidden activations unknown."""
    layers = tuple(ly if ly.activation == "none" else ly.__class__(**{**ly.__dict__, "activation": "unknown"})
                   for ly in spec.layers)  # fmt: skip
    return ArchSpec(spec.input_shape, layers)


def test_an_unknown_activation_is_chosen_with_the_probes_and_recorded():
    spec, tensors = trained("mlp", "tanh", steps=150)
    found = infer_probes(
        lambda a: with_hidden_activation(_unknown(spec), a), tensors, (64,), _catalogue, ("relu", "tanh", "sigmoid")
    )
    assert found is not None and probe_rows(found.probes.source) == "train:digits"
    assert found.probes.source.endswith(f"{INFERRED} {found.activation}") and found.activation in ("relu", "tanh")


def test_graphify_infers_probes_only_where_nothing_is_known():
    spec, tensors = trained("mlp", "relu", steps=150)
    unknown = _unknown(spec).to_json()
    assert graphify_tensors(tensors, {}, "m", layer_spec=unknown).probe_source == NO_PROBES  # no catalogue: as before
    inferred = graphify_tensors(tensors, {}, "m", layer_spec=unknown, catalogue=_catalogue)
    assert inferred.probe_source.startswith("train:digits|unit" + INFERRED) and inferred.probe_act.abs().sum() > 0
    gaussian = graphify_tensors(tensors, {}, "m", layer_spec=spec.to_json(), catalogue=_catalogue)
    assert gaussian.probe_source == "train:digits|unit" + INFERRED  # known activation, unknown domain
    known = graphify_tensors(
        tensors, {}, "m", layer_spec=spec.to_json(), catalogue=_catalogue,
        probes=lambda shape: ProbeSet(probe_inputs("digits", "standard").reshape(-1, *shape), "mine"),
    )  # fmt: skip
    assert known.probe_source == "mine"  # the caller's probes stand
    mine = graphify_tensors(
        tensors, {}, "m", layer_spec=unknown, catalogue=_catalogue,
        probes=lambda shape: ProbeSet(probe_inputs("digits", "unit").reshape(-1, *shape), "mine"),
    )  # fmt: skip
    assert mine.probe_source.startswith("mine" + INFERRED + " ")  # their probes stand, the activation is inferred
    assert probe_rows(mine.probe_source) == "mine"
