"""Function-preserving weight-space symmetries, for augmentation and invariance tests.

Hidden neurons / filters (every linear/conv layer but the last) can be permuted, and, where everything between the
neuron's last affine step and the next layer is positively homogeneous, rescaled by ``s > 0`` (incoming weights and
bias × s, outgoing weights ÷ s). A batch norm after a layer is permuted with it; when rescaling, the last batch norm
before the next layer is the affine step that gets scaled. Inputs are never mutated.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from itertools import pairwise

import torch
from torch_geometric.data import Data

from raywse.graph.chain import NodeLayer, split_layers, walk
from raywse.graph.neural_graph import NODE_KIND_HIDDEN
from raywse.spec import POSITIVELY_HOMOGENEOUS, ArchSpec, Layer, SpecError

_BN_PARAMS = ("weight", "bias", "running_mean", "running_var")


def _scaled_step(layer: Layer, followers: tuple[Layer, ...]) -> tuple[Layer, tuple[Layer, ...]]:
    """The last per-neuron affine step after ``layer`` (itself or its last batch norm) and the layers after it."""
    steps = (layer, *followers)
    last = max(i for i, ly in enumerate(steps) if i == 0 or ly.kind == "batchnorm")
    return steps[last], steps[last:]


def rescalable_layers(spec: ArchSpec) -> list[str]:
    """Names of hidden linear/conv layers whose neurons :func:`rescale_hidden` rescales."""
    names = []
    for layer, followers in split_layers(spec)[:-1]:
        _, tail = _scaled_step(layer, followers)
        if all(ly.activation in POSITIVELY_HOMOGENEOUS for ly in tail):
            names.append(layer.name)
    return names


def _next_inputs(out: dict[str, torch.Tensor], nxt: NodeLayer, fn) -> None:
    """Apply ``fn`` to the ``[out, in_nodes, block]`` view of the next layer's weight (its per-input-neuron blocks)."""
    name = f"{nxt.layer.name}.weight"
    w = out[name]
    out[name] = fn(w.reshape(w.shape[0], nxt.in_nodes, -1)).reshape(w.shape)


def permute_hidden(
    tensors: Mapping[str, torch.Tensor], spec: ArchSpec, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """Randomly permute the neurons / filters of every hidden layer (function preserved exactly)."""
    chain = walk(spec, tensors)
    out = {k: v.clone() for k, v in tensors.items()}
    for nl, nxt in pairwise(chain.node_layers):
        perm = torch.randperm(nl.out_nodes, generator=generator)
        names = [f"{nl.layer.name}.weight", f"{nl.layer.name}.bias"]
        names += [f"{ly.name}.{p}" for ly in nl.followers if ly.kind == "batchnorm" for p in _BN_PARAMS]
        for name in names:
            out[name] = out[name][perm]
        _next_inputs(out, nxt, lambda w, perm=perm: w[:, perm])
    return out


def rescale_hidden(
    tensors: Mapping[str, torch.Tensor],
    spec: ArchSpec,
    generator: torch.Generator,
    low: float = 0.5,
    high: float = 2.0,
) -> dict[str, torch.Tensor]:
    """Rescale each neuron of the :func:`rescalable_layers` by a log-uniform factor in ``[low, high]``."""
    if not 0 < low <= high:
        raise SpecError(f"rescale factors need 0 < low <= high, got low={low}, high={high}")
    chain = walk(spec, tensors)
    rescalable = set(rescalable_layers(spec))
    out = {k: v.clone() for k, v in tensors.items()}
    for nl, nxt in pairwise(chain.node_layers):
        if nl.layer.name not in rescalable:
            continue
        u = torch.rand(nl.out_nodes, generator=generator, dtype=torch.float64)
        s = torch.exp(math.log(low) + u * (math.log(high) - math.log(low)))
        step, _ = _scaled_step(nl.layer, nl.followers)
        for name in (f"{step.name}.weight", f"{step.name}.bias"):
            t = out[name]
            out[name] = (t.double() * s.view(-1, *[1] * (t.dim() - 1))).to(t.dtype)
        _next_inputs(out, nxt, lambda w, s=s: (w.double() / s.view(1, -1, 1)).to(w.dtype))
    return out


def permute_graph_nodes(data: Data, generator: torch.Generator) -> Data:
    """A copy of a neural graph with the order of hidden nodes shuffled within each layer (edges relabelled)."""
    order = torch.arange(data.num_nodes)
    hidden = data.node_kind == NODE_KIND_HIDDEN
    for layer in torch.unique(data.node_layer[hidden]).tolist():
        idx = torch.nonzero(hidden & (data.node_layer == layer)).flatten()
        order[idx] = idx[torch.randperm(len(idx), generator=generator)]
    new_of_old = torch.empty_like(order)
    new_of_old[order] = torch.arange(len(order))
    out = data.clone()
    for key in ("x", "node_layer", "node_kind", "node_pos", "node_act", "node_type"):
        out[key] = data[key][order]
    out.edge_index = new_of_old[data.edge_index]
    out.kernel_shape = tuple(data.kernel_shape)  # Data.clone turns tuples into lists
    return out
