"""Invariance and shape tests of the neural-graph encoder."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from netgraphs import SPECS
from torch_geometric.data import Batch

from raywse.core.spec import SpecError
from raywse.graph.kernels import pad_edge_features
from raywse.graph.neural_graph import to_neural_graph
from raywse.graph.symmetry import permute_graph_nodes, permute_hidden, rescale_graph_hidden, rescale_hidden
from raywse.graph.transforms import HideProbes
from raywse.models.encoder import EncoderConfig, NeuralGraphEncoder

SMALL = EncoderConfig(depth=2, hidden=32, edge_hidden=16, embed_dim=16, accuracy_head=True)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def unprobed(graph):
    """``graph`` as if its network had never been run on probes (the training views' :class:`HideProbes`)."""
    return HideProbes(1.0)(graph, torch.Generator())


def embed(encoder: NeuralGraphEncoder, graphs) -> torch.Tensor:
    with torch.no_grad():
        return encoder(Batch.from_data_list([encoder.prepare(g) for g in graphs]))


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_hidden_permutation_invariance(trained, kind):
    torch.manual_seed(0)
    encoder = NeuralGraphEncoder(SMALL).eval()
    gen = torch.Generator().manual_seed(1)
    tensors, spec = trained[kind][0], SPECS[kind]
    graph = to_neural_graph(tensors, spec, "a")
    twin = to_neural_graph(permute_hidden(tensors, spec, gen), spec, "b")
    shuffled = [permute_graph_nodes(graph, gen, shuffle_edges=True), permute_graph_nodes(graph, gen)]
    assert not any(torch.equal(graph.edge_index, s.edge_index) for s in shuffled)
    z = embed(encoder, [graph, twin, *shuffled])
    residuals = [rel(z[i], z[0]) for i in (1, 2, 3)]
    print(f"{kind}: residuals permuted weights / graph nodes+edges / graph nodes: {residuals}")
    assert max(residuals) <= 1e-5


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_rescale_invariance_with_canonicalisation(trained, kind):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(2)
    tensors, spec = trained[kind][0], SPECS[kind]
    graph = to_neural_graph(tensors, spec, "a")
    twins = [to_neural_graph(rescale_hidden(tensors, spec, gen), spec, "b"), rescale_graph_hidden(graph, gen)]
    for canon in (True, False):
        encoder = NeuralGraphEncoder(replace(SMALL, canonicalize_scale=canon)).eval()
        z = embed(encoder, [graph, *twins])
        residuals = [rel(z[1], z[0]), rel(z[2], z[0])]
        print(f"{kind} canonicalise={canon}: rescaled twins (tensors, graph) {residuals[0]:.2e} {residuals[1]:.2e}")
        if canon:
            assert max(residuals) <= 1e-5
        else:
            assert min(residuals) > 1e-3


def test_mixed_batch_and_accuracy_head(graphs):
    encoder = NeuralGraphEncoder(SMALL).eval()
    batch = Batch.from_data_list([encoder.prepare(g) for g in graphs])
    with torch.no_grad():
        z, acc = encoder.embed_and_predict(batch)
    assert z.shape == (len(graphs), encoder.output_dim)
    assert torch.isfinite(z).all()
    assert torch.allclose(z.norm(dim=1), torch.ones(len(graphs)), atol=1e-5)
    assert acc.shape == (len(graphs),) and ((acc >= 0) & (acc <= 1)).all()
    # batched embedding equals one-by-one embedding (no cross-graph leakage)
    single = torch.cat([embed(encoder, [g]) for g in graphs])
    assert rel(z, single) <= 1e-5


def test_the_parts_of_an_embedding_tile_it_in_order():
    widths = {"learned": 16, "responses": SMALL.fingerprint_dim, "sketch": SMALL.sketch_dim, "confidence": 6,
              "kinship": SMALL.kinship_dim + SMALL.structure_dim}  # fmt: skip
    parts = NeuralGraphEncoder(SMALL).parts
    assert list(parts) == list(widths) and [p.stop - p.start for p in parts.values()] == list(widths.values())
    ends = [p.stop for p in parts.values()]
    assert [p.start for p in parts.values()] == [0, *ends[:-1]]
    bare = NeuralGraphEncoder(replace(SMALL, fingerprint_dim=0, confidence_weight=0.0, kinship_dim=0))
    assert bare.output_dim == 16 and bare.parts["sketch"] == slice(16, 16)
    with pytest.raises(ValueError, match="confidence_weight"):
        EncoderConfig(confidence_weight=1.0)


def test_the_confidence_part_is_the_responses_statistics_and_the_head_reads_them(graphs):
    """The last part of a probed network's embedding is :func:`confidence_statistics` of its class-order responses,
    scaled to ``sqrt(confidence_weight / 6)`` before the final normalisation; the accuracy head's prediction moves
    when only the statistics it is handed change."""
    from raywse.models.pooling import CONFIDENCE_STATS, confidence_statistics

    encoder = NeuralGraphEncoder(SMALL).eval()
    batch = Batch.from_data_list([encoder.prepare(g) for g in graphs[:4]])
    c = SMALL.confidence_weight
    with torch.no_grad():
        z, head_input = encoder._embed(batch)
        stats = confidence_statistics(encoder.representation(batch)[1], SMALL.readout_classes)
        before = encoder.accuracy(head_input)
        head_input[:, -CONFIDENCE_STATS:] += 0.5
        after = encoder.accuracy(head_input)
    assert ((stats >= 0) & (stats <= 1)).all() and stats[:, 0].gt(0).all()
    norm = (1 - c + c / 6 * stats.square().sum(1, keepdim=True)).sqrt()  # the rest was unit before it was joined
    torch.testing.assert_close(z[:, encoder.parts["confidence"]] * norm, (c / 6) ** 0.5 * stats)
    torch.testing.assert_close(head_input[:, :-CONFIDENCE_STATS], encoder.representation(batch)[0])
    assert not torch.allclose(before, after)


def test_prepare_rejects_large_kernels(graphs):
    with pytest.raises(SpecError, match="at most 1x1"):
        NeuralGraphEncoder(replace(SMALL, edge_dim=1)).prepare(
            next(g for g in graphs if tuple(g.kernel_shape) == (3, 3))
        )
    mlp = next(g for g in graphs if tuple(g.kernel_shape) == (1, 1))
    padded = pad_edge_features(mlp, (3, 3))
    assert padded.edge_attr.shape[1] == 9 and torch.equal(padded.edge_attr[:, 4], mlp.edge_attr[:, 0])


def test_fingerprints_compare_only_responses_to_the_same_probe_rows(graphs):
    """Same probe rows under another normalisation share a projection; other probe rows are near orthogonal; a graph
    without probes has no response part but its first-layer moments, in dimensions a probed graph leaves at zero."""
    from raywse.graph.lineage import first_layer_moments

    encoder = NeuralGraphEncoder(SMALL).eval()
    g = next(g for g in graphs if tuple(g.kernel_shape) == (1, 1))
    responses = torch.rand(1, SMALL.readout_classes * SMALL.num_probes)
    a = encoder.fingerprint(responses, ["train:digits|unit"])
    b = encoder.fingerprint(responses, ["train:digits|standard"])
    c = encoder.fingerprint(responses, ["train:mnist14|unit"])
    assert torch.allclose(a, b) and abs(float(a @ c.T)) < 0.3
    hidden = unprobed(g)
    z_hidden, z_probed = embed(encoder, [hidden]), embed(encoder, [g])
    responses_part, sketch_part = encoder.parts["responses"], encoder.parts["sketch"]
    assert z_hidden.shape[1] == encoder.output_dim
    assert torch.allclose(z_hidden.norm(), torch.tensor(1.0)) and not z_hidden[0, responses_part].any()
    assert not z_hidden[0, encoder.parts["confidence"]].any()  # no responses, no confidence either
    sketch = first_layer_moments(Batch.from_data_list([hidden]), SMALL.sketch_dim, SMALL.seed)
    torch.testing.assert_close(z_hidden[0, sketch_part], sketch[0] * SMALL.fingerprint_weight**0.5)
    assert z_probed[0, responses_part].any() and not z_probed[0, sketch_part].any()


def test_the_database_form_adds_probed_sketches_and_keeps_probed_scores(graphs):
    """An index stores probed networks with their first-layer moments as well: a probed query's scores of them are
    unchanged, an unprobed query now meets them on its sketch too, and an unprobed network is stored as it queries."""
    from raywse.graph.lineage import first_layer_moments

    encoder = NeuralGraphEncoder(SMALL).eval()
    probed = [encoder.prepare(g) for g in graphs if tuple(g.kernel_shape) == (1, 1)]
    batch = Batch.from_data_list(probed + [unprobed(g) for g in probed[:2]])
    with torch.no_grad():
        z = encoder(batch)
        stored = encoder.database_form(batch, z)
    n, w, sketch_part = len(probed), SMALL.fingerprint_weight, encoder.parts["sketch"]
    torch.testing.assert_close(stored[:n].norm(dim=1), torch.full((n,), (2 + w) ** 0.5))
    lineage = encoder.parts["kinship"]
    torch.testing.assert_close(stored[:, lineage], encoder.kinship_form(batch)[:, lineage])
    torch.testing.assert_close(stored[n:, : lineage.start], z[n:, : lineage.start])
    assert not z[:, lineage].any()
    sketches = first_layer_moments(Batch.from_data_list(probed), SMALL.sketch_dim, SMALL.seed)
    torch.testing.assert_close(stored[:n, sketch_part], sketches * w**0.5)
    assert not z[:n, sketch_part].any()
    torch.testing.assert_close(z[:n] @ stored[:n].T, z[:n] @ z[:n].T)
    # an unprobed query's score of a probed network now includes their sketches' similarity (weighted)
    gain = z[n:] @ stored[:n].T - z[n:] @ z[:n].T
    torch.testing.assert_close(gain, w * (z[n:, sketch_part] / w**0.5) @ sketches.T)


def test_a_lineage_query_is_the_sketch_and_structure_alone_and_scores_what_the_index_stores(graphs):
    """The kinship form: probed or not, a network's first-layer sketch joined with its structure's code in the
    lineage part and nothing else, so against the database form it scores an indexed network by how alike their
    sketches are, plus the structure's share when they have one structure."""
    from raywse.graph.lineage import first_layer_sketch
    from raywse.graph.structure import structure_codes

    encoder = NeuralGraphEncoder(SMALL).eval()
    probed = [encoder.prepare(g) for g in graphs if tuple(g.kernel_shape) == (1, 1)]
    batch = Batch.from_data_list(probed + [unprobed(g) for g in probed[:2]])
    with torch.no_grad():
        stored = encoder.database_form(batch, encoder(batch))
        kin = encoder.kinship_form(batch)
    a, lineage = SMALL.kinship_structure_weight, encoder.parts["kinship"]
    sketches = first_layer_sketch(batch, SMALL.kinship_dim, SMALL.seed)
    codes = structure_codes(batch, SMALL.structure_dim, SMALL.seed)
    torch.testing.assert_close(kin[:, lineage], torch.cat([(1 - a) ** 0.5 * sketches, a**0.5 * codes], dim=1))
    assert kin.shape == stored.shape and not kin[:, : lineage.start].any()
    torch.testing.assert_close(kin @ stored.T, kin @ kin.T)
    with pytest.raises(ValueError, match="no lineage part"):
        NeuralGraphEncoder(replace(SMALL, kinship_dim=0)).kinship_form(batch)


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_an_unprobed_graph_embeds_invariantly_too(trained, kind):
    """Its sketch is invariant as the rest: permuted and rescaled twins of a network never run on probes embed alike."""
    torch.manual_seed(0)
    encoder = NeuralGraphEncoder(SMALL).eval()
    gen = torch.Generator().manual_seed(4)
    tensors, spec = trained[kind][0], SPECS[kind]
    nets = [tensors, permute_hidden(tensors, spec, gen), rescale_hidden(tensors, spec, gen)]
    z = embed(encoder, [unprobed(to_neural_graph(t, spec, str(i))) for i, t in enumerate(nets)])
    assert z[0, encoder.parts["sketch"]].any()
    assert max(rel(z[i], z[0]) for i in (1, 2)) <= 1e-5


def test_an_encoder_exported_by_another_architecture_is_a_one_line_config_error(tmp_path):
    import json

    from raywse.core.config import ConfigError
    from raywse.models.checkpoint import export_encoder, load_encoder

    config = EncoderConfig(depth=1, hidden=16)
    export_encoder(NeuralGraphEncoder(config).state_dict(), config, tmp_path / "enc")
    meta_path = tmp_path / "enc" / "config.json"
    meta = json.loads(meta_path.read_text())
    meta["encoder"]["update_edges"] = False  # a key of the session-4 encoder
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="another version of raywse's encoder") as err:
        load_encoder(tmp_path / "enc")
    assert "\n" not in str(err.value)


def test_an_export_from_before_the_confidence_and_lineage_parts_loads_without_them(tmp_path):
    """A config.json written before ``confidence_weight`` and ``kinship_dim`` existed describes an encoder without
    those parts: it loads with the embedding width its index was built with."""
    import json

    from raywse.models.checkpoint import export_encoder, load_encoder

    config = EncoderConfig(depth=1, hidden=16, accuracy_head=False, confidence_weight=0.0)
    export_encoder(NeuralGraphEncoder(config).state_dict(), config, tmp_path / "enc")
    meta_path = tmp_path / "enc" / "config.json"
    meta = json.loads(meta_path.read_text())
    del meta["encoder"]["confidence_weight"], meta["encoder"]["kinship_dim"]
    meta_path.write_text(json.dumps(meta))
    encoder, _ = load_encoder(tmp_path / "enc")
    assert encoder.config.confidence_weight == 0 and encoder.config.kinship_dim == 0
    assert encoder.output_dim == encoder.parts["sketch"].stop
    assert EncoderConfig().confidence_weight > 0 and EncoderConfig().kinship_dim > 0  # ... while a new export has them
