"""Probe features: responses are the network's real activations, move with their neurons, never read test inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from graph_nets import forward_spec, trained

from raywse.core.spec import ArchSpec, Layer
from raywse.graph.neural_graph import to_neural_graph
from raywse.graph.probes import NO_PROBES, NUM_PROBES, ProbeFile, ProbeSet, gaussian_probes, probe_rows
from raywse.graph.schema import NodeKind
from raywse.graph.symmetry import flip_hidden, permute_hidden, rescale_hidden
from raywse.zoo.datasets import load_task, probe_inputs, zoo_probes


@pytest.mark.parametrize("arch", ["mlp", "cnn_gap", "cnn_flat", "cnn_bn"])
def test_output_responses_are_the_logits_and_inputs_the_probe_values(arch):
    spec, tensors = trained(arch, "relu")
    probes = zoo_probes("digits", "unit")
    g = to_neural_graph(tensors, spec, "m", probes)
    x = probes(tuple(spec.input_shape)).inputs
    logits = forward_spec(spec, tensors, x)
    out = g.node_kind == NodeKind.OUTPUT
    torch.testing.assert_close(g.probe_act[out], logits.T, rtol=1e-4, atol=1e-5)
    inputs = g.probe_act[g.node_kind == NodeKind.INPUT]
    expected = x.flatten(1).T if arch == "mlp" else x.mean(dim=(2, 3)).T
    torch.testing.assert_close(inputs, expected)
    assert g.probe_act.shape == (g.num_nodes, NUM_PROBES) and g.probe_source == "train:digits|unit"


@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_hidden_responses_move_with_their_neurons_under_every_symmetry(act):
    """Permuting, rescaling and flipping the checkpoint permutes / scales / flips the hidden responses only."""
    spec, tensors = trained("mlp", act)
    g = to_neural_graph(tensors, spec, "m")
    gen = torch.Generator().manual_seed(0)
    moved = flip_hidden(rescale_hidden(permute_hidden(tensors, spec, gen), spec, gen), spec, gen)
    h = to_neural_graph(moved, spec, "m")
    hidden = g.node_kind == NodeKind.HIDDEN
    torch.testing.assert_close(h.probe_act[~hidden], g.probe_act[~hidden], rtol=1e-4, atol=1e-5)
    for layer in (1, 2):
        nodes = hidden & (g.node_layer == layer)
        a, b = g.probe_act[nodes], h.probe_act[nodes]
        # each neuron's responses up to a positive (relu) or sign (tanh) factor: match them by normalised profile
        unit = lambda t: t / t.norm(dim=1, keepdim=True).clamp(min=1e-12)  # noqa: E731
        sim = unit(a) @ unit(b).T
        best = sim.abs().max(dim=1).values if act == "tanh" else sim.max(dim=1).values
        assert bool((best > 1 - 1e-5).all())
        assert not torch.allclose(a, b)


def test_zoo_probes_come_from_the_train_split_only():
    task = load_task("digits/all10", "unit")
    probes = probe_inputs("digits", "unit")
    train = {tuple(row) for row in task.x_train.numpy().round(6)}
    test = {tuple(row) for row in task.x_test.numpy().round(6)}
    rows = {tuple(row) for row in probes.numpy().round(6)}
    assert rows <= train and not rows & (test - train)


def test_unknown_activations_give_no_probes_and_say_so():
    spec = ArchSpec((4,), (Layer("linear", "a", "unknown"), Layer("linear", "b")))
    tensors = {"a.weight": torch.randn(3, 4), "a.bias": torch.zeros(3), "b.weight": torch.randn(2, 3),
               "b.bias": torch.zeros(2)}  # fmt: skip
    g = to_neural_graph(tensors, spec, "m")
    assert g.probe_source == NO_PROBES and not g.probe_act.any() and g.probe_act.shape == (9, NUM_PROBES)


def test_probe_file_matches_by_input_size_and_falls_back_to_gaussian(tmp_path):
    path = tmp_path / "probes.npz"
    np.savez(path, digits=np.random.default_rng(0).random((80, 64), dtype=np.float32))
    chooser = ProbeFile(path)
    chosen = chooser((1, 8, 8))
    assert chosen.inputs.shape == (NUM_PROBES, 1, 8, 8) and chosen.source == "file:probes.npz:digits"
    other = chooser((13,))
    assert other.source == "gaussian:13|no input of size 13 in probes.npz" and other.inputs.shape == (NUM_PROBES, 13)
    assert torch.equal(gaussian_probes((13,)).inputs, other.inputs)
    assert probe_rows(other.source) == probe_rows(gaussian_probes((13,)).source) != probe_rows(chosen.source)
    assert probe_rows(gaussian_probes((1, 8, 8)).source) != probe_rows(other.source)  # shapes are other probe sets
    with pytest.raises(FileNotFoundError, match="probe file not found"):
        ProbeFile(tmp_path / "missing.npz")
    short = tmp_path / "short.npy"
    np.save(short, np.zeros((NUM_PROBES - 1, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="at least 64 are needed"):
        ProbeFile(short)
    bad = tmp_path / "bad.npy"
    np.save(bad, np.full((4, 3), np.nan, dtype=np.float32))
    with pytest.raises(ValueError, match="finite floats"):
        ProbeFile(bad)


def test_graphs_accept_any_probe_chooser():
    spec, tensors = trained("mlp", "relu")
    fixed = ProbeSet(torch.ones(5, 64), "custom")
    g = to_neural_graph(tensors, spec, "m", lambda shape: fixed)
    assert g.probe_act.shape == (g.num_nodes, 5) and g.probe_source == "custom"


def test_a_flatten_before_the_first_layer_keeps_one_row_per_input_channel():
    spec = ArchSpec((2, 3, 3), (Layer("flatten"), Layer("linear", "a", "relu"), Layer("linear", "b")))
    gen = torch.Generator().manual_seed(0)
    tensors = {"a.weight": torch.randn(5, 18, generator=gen), "a.bias": torch.zeros(5),
               "b.weight": torch.randn(3, 5, generator=gen), "b.bias": torch.zeros(3)}  # fmt: skip
    g = to_neural_graph(tensors, spec, "m")
    assert g.probe_act.shape == (g.num_nodes, NUM_PROBES) == (2 + 5 + 3, NUM_PROBES)
    x = gaussian_probes((2, 3, 3)).inputs
    torch.testing.assert_close(g.probe_act[:2], x.mean(dim=(2, 3)).T)
