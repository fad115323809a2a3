"""``probe_outputs``: a zoo model's softmax outputs on its dataset's probes; a file outside the zoo's manifest gets
the same from its graph's output responses, where it was probed on a zoo dataset's rows."""

from __future__ import annotations

import copy

import numpy as np

from raywse.core.artifacts import read_zoo_manifest
from raywse.data.graphify import load_graphs
from raywse.eval.probe_outputs import ProbeOutputsEmbedder


def test_a_file_outside_the_manifest_embeds_as_its_zoo_run_does(tiny_zoo, tiny_graphs):
    rows = read_zoo_manifest(tiny_zoo)
    embedder = ProbeOutputsEmbedder(tiny_zoo, rows)
    graphs = load_graphs(tiny_graphs)[:6]
    foreign = []
    for g in graphs:
        stranger = copy.copy(g)
        stranger.model_id = f"elsewhere/{g.model_id}"  # not in the manifest: read from its graph
        foreign.append(stranger)
    zoo, outside = embedder.embed(graphs), embedder.embed(foreign)
    assert (np.abs(zoo).sum(1) > 0).all()
    np.testing.assert_allclose(outside, zoo, rtol=1e-4, atol=1e-5)
    gaussian = copy.copy(foreign[0])
    gaussian.probe_source = "gaussian:64"  # probes no zoo model saw: nothing to compare with
    assert not embedder.embed([gaussian]).any()
