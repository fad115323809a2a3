"""``probe_outputs``: each network's softmax outputs on its probe set, read from its graph — for a zoo model, what
running its checkpoint on its dataset's train probes gives."""

from __future__ import annotations

import copy

import numpy as np
import torch

from raywse.core.artifacts import read_zoo_manifest
from raywse.core.forward import forward
from raywse.core.io import load_checkpoint
from raywse.core.spec import ArchSpec
from raywse.data.graphify import load_graphs
from raywse.eval.probe_outputs import ProbeOutputsEmbedder
from raywse.zoo.datasets import probe_inputs


def test_a_zoo_model_embeds_as_its_checkpoint_answers_its_probes(tiny_zoo, tiny_graphs):
    rows = {r["model_id"]: r for r in read_zoo_manifest(tiny_zoo)}
    graphs = load_graphs(tiny_graphs)[:6]
    embedder = ProbeOutputsEmbedder()
    z = embedder.embed(graphs)
    assert (np.abs(z).sum(1) > 0).all()
    width = embedder.num_probes * embedder.max_classes
    for g, vector in zip(graphs, z, strict=True):
        row = rows[g.model_id]
        tensors, _ = load_checkpoint(tiny_zoo / row["path"])
        spec = ArchSpec.from_json(row["layer_spec"])
        x = probe_inputs(row["dataset"], row.get("input_norm") or "unit", embedder.num_probes)
        probs = torch.softmax(forward(spec, tensors, x.view(-1, *spec.input_shape)), -1).numpy()
        block = embedder.blocks[row["dataset"]] * width
        mine = vector[block : block + width].reshape(embedder.num_probes, embedder.max_classes)
        np.testing.assert_allclose(mine[:, : probs.shape[1]], probs, rtol=1e-4, atol=1e-6)
        assert not np.delete(vector, np.arange(block, block + width)).any()  # other datasets' blocks stay zero


def test_probes_no_zoo_model_saw_embed_as_zeros(tiny_graphs):
    gaussian = copy.copy(load_graphs(tiny_graphs)[0])
    gaussian.probe_source = "gaussian:64"
    assert not ProbeOutputsEmbedder().embed([gaussian]).any()
