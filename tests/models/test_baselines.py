"""Every embedder returns finite float32 (n, d); the non-equivariant GNN baseline is not permutation invariant; the
reference rows: the architecture oracle sees structure only, the random-init GNN is seeded and never trained."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from raywse.graph.structure import architecture_key
from raywse.graph.symmetry import permute_graph_nodes
from raywse.models.baselines import (
    BASELINES,
    ArchOracleEmbedder,
    BaselineSettings,
    FlatMLPEmbedder,
    InputSaliencyEmbedder,
    MetadataTextEmbedder,
    NonEquivariantEncoder,
    NonEquivariantGNNEmbedder,
    RandomInitGNNEmbedder,
    WeightPCAEmbedder,
    WeightStatsEmbedder,
    make_baseline,
)
from raywse.models.embedder import BASELINE_CONTRASTIVE, Embedder, GNNEmbedder
from raywse.models.encoder import EncoderConfig, NeuralGraphEncoder

SMALL = EncoderConfig(depth=2, hidden=32, edge_hidden=16, embed_dim=16)
FOUR = replace(BASELINE_CONTRASTIVE, batch_tasks=2, models_per_task=2)


def make_embedders() -> list[Embedder]:
    return [
        WeightStatsEmbedder(),
        WeightPCAEmbedder(dim=8),
        FlatMLPEmbedder(dim=8, length=512, hidden=32, steps=5),
        InputSaliencyEmbedder(max_inputs=64),
        MetadataTextEmbedder(dim=4),
        GNNEmbedder(NeuralGraphEncoder(SMALL), train_steps=3, contrastive=FOUR),
        NonEquivariantGNNEmbedder(NonEquivariantEncoder(SMALL), train_steps=3, contrastive=FOUR),
        ArchOracleEmbedder(),
        RandomInitGNNEmbedder(SMALL),
    ]


@pytest.mark.parametrize("embedder", make_embedders(), ids=lambda e: e.name)
def test_embedder_shapes(graphs, embedder):
    assert isinstance(embedder, Embedder)
    labels = np.array([i // 2 for i in range(len(graphs))])
    for g, kind in zip(graphs, labels, strict=True):
        g.description = f"task digits family {['mlp', 'cnn', 'flat'][kind]} seed {int(kind)}"
    z = embedder.fit(graphs, labels).embed(graphs)
    assert z.dtype == np.float32 and z.ndim == 2 and z.shape[0] == len(graphs) and z.shape[1] > 0
    assert np.isfinite(z).all()


def test_gnn_embedder_from_state_roundtrip(graphs):
    encoder = NeuralGraphEncoder(SMALL)
    a = GNNEmbedder(encoder).embed(graphs)
    b = GNNEmbedder.from_state(encoder.state_dict(), SMALL).embed(graphs)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_nonequivariant_baseline_fails_permutation(graphs):
    gen = torch.Generator().manual_seed(0)
    for cls in (NonEquivariantEncoder, NeuralGraphEncoder):
        torch.manual_seed(0)
        embedder = GNNEmbedder(cls(SMALL))
        z = embedder.embed(graphs)
        zp = embedder.embed([permute_graph_nodes(g, gen, shuffle_edges=True) for g in graphs])
        residual = float(np.linalg.norm(z - zp) / np.linalg.norm(z))
        print(f"{cls.__name__}: permuted-graph residual {residual:.2e}")
        if cls is NonEquivariantEncoder:
            assert residual > 1e-3
        else:
            assert residual <= 1e-5


def test_a_nonequivariant_export_loads_as_one_and_a_trainer_replaces_the_in_process_fit(graphs, tmp_path):
    """Its config says it reads node order, so build_encoder / load_encoder rebuild the same class and embeddings;
    an embedder given a trainer takes the trainer's weights for the encoder's config (the evaluation's Ray Train
    run) and trains nothing in process."""
    from raywse.models.checkpoint import build_encoder, export_encoder, load_encoder

    torch.manual_seed(0)
    trained = NonEquivariantEncoder(SMALL).eval()
    assert trained.config.reads_node_order and not SMALL.reads_node_order
    assert type(build_encoder(trained.config)) is NonEquivariantEncoder
    assert type(build_encoder(SMALL)) is NeuralGraphEncoder
    export_encoder(trained.state_dict(), trained.config, tmp_path / "enc")
    loaded, _ = load_encoder(tmp_path / "enc")
    assert type(loaded) is NonEquivariantEncoder
    expected = GNNEmbedder(trained).embed(graphs)
    np.testing.assert_allclose(GNNEmbedder(loaded).embed(graphs), expected, rtol=1e-5, atol=1e-6)

    asked = []

    def trainer(config: EncoderConfig) -> tuple[dict, list[dict]]:
        asked.append(config)
        return trained.state_dict(), [{"loss": 2.0, "rank_steps": 4}, {"loss": 1.5, "rank_steps": 8}]

    embedder = make_baseline("gnn_nonequivariant", BaselineSettings(encoder=SMALL, gnn_steps=50, gnn_trainer=trainer))
    np.testing.assert_allclose(embedder.fit(graphs).embed(graphs), expected, rtol=1e-5, atol=1e-6)
    assert asked == [trained.config] and embedder.history == [2.0, 1.5]  # the trainer's epochs, none in process
    assert embedder.training == {"epochs": 2, "rank_steps": 8}


def test_reference_rows_are_registered():
    assert BASELINES[:3] == ("arch_oracle", "random_init_gnn", "first_layer_sketch")
    settings = BaselineSettings(encoder=SMALL, seed=3)
    oracle, gnn = make_baseline("arch_oracle", settings), make_baseline("random_init_gnn", settings)
    assert oracle.name == "arch_oracle" and gnn.name == "random_init_gnn"
    assert gnn.encoder.config == SMALL  # the evaluated encoder's architecture


def test_arch_oracle_sees_architecture_only(graphs):
    """Graphs come in pairs of one architecture (mlp, cnn, flat_cnn): cosine 1 within a pair, 0 across, whatever the
    weights or the neuron order; an architecture unseen in fit gets a coordinate of its own."""
    keys = [architecture_key(g) for g in graphs]
    assert keys[0] == "64 input | 12 linear relu | 8 linear relu | 10 linear none | kernel 1x1"
    assert keys[2] == "1 input | 4 conv relu | 6 conv relu | 10 linear none | kernel 3x3"
    assert len(set(keys)) == 3
    oracle = ArchOracleEmbedder(dim=8).fit(graphs[:4])  # mlp and cnn seen, flat_cnn not
    z = oracle.embed(graphs)
    same = np.array([[keys[i] == keys[j] for j in range(len(keys))] for i in range(len(keys))])
    np.testing.assert_array_equal(z @ z.T, same.astype(np.float32))
    assert z.shape == (len(graphs), 8)
    gen = torch.Generator().manual_seed(0)
    permuted = [permute_graph_nodes(g, gen, shuffle_edges=True) for g in graphs]
    np.testing.assert_array_equal(oracle.embed(permuted), z)
    assert ArchOracleEmbedder(dim=1).fit(graphs).embed(graphs).shape == (len(graphs), 3)  # widens as needed


def test_random_init_gnn_is_seeded_and_untrained(graphs):
    a = RandomInitGNNEmbedder(SMALL, seed=0)
    before = a.embed(graphs)
    labels = np.array([i // 2 for i in range(len(graphs))])
    np.testing.assert_array_equal(a.fit(graphs, labels).embed(graphs), before)  # fit trains nothing
    np.testing.assert_array_equal(RandomInitGNNEmbedder(SMALL, seed=0).embed(graphs), before)
    assert not np.allclose(RandomInitGNNEmbedder(SMALL, seed=1).embed(graphs), before)
    assert before.shape == (len(graphs), a.encoder.output_dim)


def test_flat_weights_of_a_viewed_batch_are_each_graphs_own(graphs):
    """The flat-weights baseline flattens views batch by batch: row i is graph i's weights in edge order, then its
    non-input biases, whichever edges a view dropped — the same as flattening the graph alone."""
    from torch_geometric.data import Batch

    from raywse.graph.schema import NodeKind
    from raywse.graph.transforms import DropEdges
    from raywse.models.baselines.weights import _flatten_all, _flatten_batch

    same = [g for g in graphs if tuple(g.kernel_shape) == tuple(graphs[0].kernel_shape)][:4]
    batch = Batch.from_data_list(same)
    singles = np.concatenate([_flatten_all([g], 4096) for g in same])
    np.testing.assert_array_equal(_flatten_batch(batch, 4096), singles)
    np.testing.assert_array_equal(_flatten_all(list(reversed(graphs)), 4096)[::-1], _flatten_all(graphs, 4096))
    dropped = DropEdges(0.3)(batch, torch.Generator().manual_seed(0))
    assert dropped.edge_index.shape[1] < batch.edge_index.shape[1]
    rows = _flatten_batch(dropped, 4096)
    for i in range(len(same)):
        weights = dropped.edge_attr[dropped.batch[dropped.edge_index[1]] == i].flatten()
        biases = dropped.x.view(-1)[(dropped.batch == i) & (dropped.node_kind != NodeKind.INPUT)]
        expected = torch.cat([weights, biases])[:4096].numpy()
        np.testing.assert_array_equal(rows[i, : len(expected)], expected)
        assert not rows[i, len(expected) :].any()
