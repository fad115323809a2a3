"""Invariant readout: one vector per graph from node and edge states, never reading hidden node order."""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch_geometric.data import Batch
from torch_geometric.utils import scatter

from raywse.graph.schema import NodeKind

#: Width of :func:`confidence_statistics`.
CONFIDENCE_STATS = 6


def invariant_readout(batch: Batch, h: Tensor, edge_mean: Tensor, node_key: Tensor, num_keys: int) -> Tensor:
    """Input-node mean, mean and max over per-layer hidden means, output-node mean, and mean edge state.

    Args:
        batch: the batched neural graphs (``node_kind``, ``batch``).
        h: node states.
        edge_mean: each graph's mean edge state.
        node_key: dense (graph, layer) group of each node, graph-major (``raywse.models.features.layer_keys``).
        num_keys: number of (graph, layer) groups.

    Shapes:
        ``h [N, H]``, ``edge_mean [B, He]``, ``node_key [N]`` → ``[B, 4 H + He]``.
    """
    num_graphs = int(batch.num_graphs)
    kind, g = batch.node_kind, batch.batch
    is_in, is_out, hidden = kind == NodeKind.INPUT, kind == NodeKind.OUTPUT, kind == NodeKind.HIDDEN
    pooled_in = scatter(h[is_in], g[is_in], dim=0, dim_size=num_graphs, reduce="mean")
    pooled_out = scatter(h[is_out], g[is_out], dim=0, dim_size=num_graphs, reduce="mean")
    layer_mean = scatter(h[hidden], node_key[hidden], dim=0, dim_size=num_keys, reduce="mean")
    present = scatter(hidden.to(h.dtype), node_key, dim=0, dim_size=num_keys, reduce="sum") > 0
    key_graph = torch.arange(num_keys, device=h.device) // (num_keys // num_graphs)  # keys are graph-major
    hid_mean = scatter(layer_mean[present], key_graph[present], dim=0, dim_size=num_graphs, reduce="mean")
    hid_max = scatter(layer_mean[present], key_graph[present], dim=0, dim_size=num_graphs, reduce="max")
    return torch.cat([pooled_in, hid_mean, hid_max, pooled_out, edge_mean], dim=-1)


def class_order_readout(batch: Batch, h: Tensor, logits: Tensor, probed: Tensor, classes: int) -> tuple[Tensor, Tensor]:
    """The output neurons in class order: their states and their softmax responses on the probes, padded.

    Output neuron ``c`` (``node_pos``) fills slot ``c`` for ``c < classes``; a graph with fewer outputs leaves zeros
    (and so does a graph whose network was not run on probes, for the responses). The softmax is over the graph's own
    output neurons, per probe.

    Args:
        batch: the batched neural graphs (``node_kind``, ``node_pos``, ``batch``).
        h: node states.
        logits: every node's raw probe responses (only the output nodes' are read).
        probed: per graph, whether its network was run on probes.
        classes: output slots kept.

    Shapes:
        ``h [N, H]``, ``logits [N, P]``, ``probed [B]`` → states ``[B, classes * H]``, responses ``[B, P * classes]``
        (probe-major: the softmax over classes of probe 0 first).
    """
    num_graphs = int(batch.num_graphs)
    out = torch.nonzero((batch.node_kind == NodeKind.OUTPUT) & (batch.node_pos < classes)).flatten()
    g, pos = batch.batch[out], batch.node_pos[out]
    z = logits[out]
    z = z - scatter(z, g, dim=0, dim_size=num_graphs, reduce="max")[g]
    exp = z.exp()
    probs = exp / scatter(exp, g, dim=0, dim_size=num_graphs, reduce="sum")[g]
    probs = probs * probed[g].unsqueeze(-1).to(probs.dtype)
    states = torch.zeros(num_graphs, classes, h.shape[1], dtype=h.dtype, device=h.device)
    states[g, pos] = h[out]
    responses = torch.zeros(num_graphs, classes, logits.shape[1], dtype=h.dtype, device=h.device)
    responses[g, pos] = probs
    return states.flatten(1), responses.transpose(1, 2).flatten(1)


def confidence_statistics(responses: Tensor, classes: int) -> Tensor:
    """How confidently a network answers its probes, from its class-order softmax responses: the mean and standard
    deviation of the top probability, the mean margin between the top two, the mean and standard deviation of the
    entropy (over ``log classes``), and the share of probes answered with probability above 0.9. Label-free and
    invariant to every hidden symmetry; zeros for a network never run on probes (its responses are zeros).

    Args:
        responses: :func:`class_order_readout`'s responses (probe-major, ``classes`` slots per probe).
        classes: output slots per probe.

    Shapes:
        ``responses [B, P * classes]`` → ``[B, CONFIDENCE_STATS]``.
    """
    probs = responses.view(len(responses), -1, classes)
    top = probs.topk(min(2, classes), dim=-1).values
    first = top[..., 0]
    margin = first - top[..., 1] if classes > 1 else first
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum(-1) / math.log(max(classes, 2))
    confident = (first > 0.9).to(probs.dtype)
    return torch.stack(
        [first.mean(1), first.std(1, correction=0), margin.mean(1), entropy.mean(1), entropy.std(1, correction=0),
         confident.mean(1)],
        dim=-1,
    )  # fmt: skip
