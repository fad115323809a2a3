"""Message passing by weight-tensor blocks computes what the PyG edge-list reference computes, on real zoo graphs."""

from __future__ import annotations

import torch
from torch_geometric.data import Batch

from raywse.data.graphify import load_graphs
from raywse.graph.transforms import contrastive_view
from raywse.models.blocks import block_layout
from raywse.models.encoder import EncoderConfig, NeuralGraphEncoder


def twin_encoders(**overrides) -> tuple[NeuralGraphEncoder, NeuralGraphEncoder]:
    """The block encoder and the reference encoder, with the same (random) weights."""
    blocks = NeuralGraphEncoder(EncoderConfig(depth=3, **overrides))
    reference = NeuralGraphEncoder(EncoderConfig(depth=3, dense_blocks=False, **overrides))
    reference.load_state_dict(blocks.state_dict())
    return blocks, reference


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_blocks_and_reference_give_the_same_embeddings_and_gradients_on_zoo_graphs(tiny_graphs):
    graphs = load_graphs(tiny_graphs)  # every family and activation of the tiny zoo, one mixed batch
    torch.manual_seed(0)
    view, gen = contrastive_view(noise=0.02, edge_drop=0.2, permute=True), torch.Generator().manual_seed(0)
    views = [view(g, gen) for g in graphs]  # permuted, rescaled, flipped, noisy, dropped edges
    blocks, reference = twin_encoders()
    for batch_graphs in (graphs, views):
        batch = Batch.from_data_list([blocks.prepare(g) for g in batch_graphs])
        (rep_b, _), (rep_r, _) = blocks.representation(batch), reference.representation(batch)
        assert relative(rep_b, rep_r) < 1e-5
        assert relative(blocks(batch), reference(batch)) < 1e-5
        rep_b.square().sum().backward()
        rep_r.square().sum().backward()
        for (name, p_b), p_r in zip(blocks.named_parameters(), reference.parameters(), strict=True):
            if p_b.grad is not None:
                assert relative(p_b.grad, p_r.grad) < 3e-4, name  # float32 sums in another order, ~130 graphs
        blocks.zero_grad()
        reference.zero_grad()


def test_block_layout_places_each_weight_in_its_tensors_block():
    # two graphs: 3 -> 2 -> 1 and 3 -> 2 -> 2 neurons; node groups are (graph, layer); graph 1 stored shuffled
    sizes = [(0, 3), (1, 2), (2, 1), (3, 3), (4, 2), (5, 2)]
    node_group = torch.tensor([g for g, n in sizes for _ in range(n)])
    node_group = torch.cat([node_group[:6], node_group[6:].flip(0)])
    members = {g: torch.nonzero(node_group == g).flatten().tolist() for g, _ in sizes}
    edges = [(s, d) for a, b in ((0, 1), (1, 2), (3, 4), (4, 5)) for d in members[b] for s in members[a]]
    groups = block_layout(torch.tensor(edges).t(), node_group, 6)
    (group,) = groups  # every side is padded to 8: the four blocks share one batched product
    assert group.shape == (4, 8, 8) and len(group.edges) == len(edges) == 3 * 2 + 2 * 1 + 3 * 2 + 2 * 2
    real = [[n for n in row if n != len(node_group)] for row in group.src_nodes.tolist()]  # padding: the dummy node
    assert sorted(map(sorted, real)) == sorted(sorted(members[g]) for g in (0, 1, 3, 4))
    # each edge's cell is (block, its target's slot, its source's slot)
    for edge, cell in zip(group.edges.tolist(), group.cells.tolist(), strict=True):
        block, rest = divmod(cell, 64)
        assert group.dst_nodes[block, rest // 8] == edges[edge][1]
        assert group.src_nodes[block, rest % 8] == edges[edge][0]
