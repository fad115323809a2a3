"""Function-preserving weight-space symmetries, in tensor form (checkpoints) and graph form (neural graphs).

Hidden neurons / filters (every linear/conv layer but the last) can be permuted; where everything between the
neuron's last affine step and the next layer is positively homogeneous they can be rescaled by ``s > 0`` (incoming
weights and bias × s, outgoing weights ÷ s), and where it is odd (``tanh``, none) with no max pooling, flipped
(``s = -1``). A batch norm or PReLU after a layer is permuted with it (a PReLU is positively homogeneous, never odd);
when rescaling or flipping, the last batch norm before the next layer is the affine step that changes. A neuron's
probe responses (``probe_act``) move with it: permuted, multiplied by ``s``. :func:`canonicalize_sign` and
:func:`canonicalize_scale` remove the flip and rescaling symmetries exactly (the encoder's first steps). Inputs are
never mutated.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from itertools import pairwise

import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.utils import scatter

from raywse.core.spec import (
    AFFINE_KINDS,
    EMBEDDING_TABLES,
    NORM_KINDS,
    ODD,
    POSITIVELY_HOMOGENEOUS,
    RECURRENT_GATES,
    RECURRENT_PARAMS,
    REVERSE,
    ArchSpec,
    Layer,
    SpecError,
)
from raywse.graph.block_perms import block_perm, grouped_perm, head_perms
from raywse.graph.chain import Chain, NodeLayer, split_layers, walk
from raywse.graph.schema import AFFINE_NODE_TYPES, HOMOGENEOUS_ACT_IDS, NODE_FIELDS, ODD_ACT_IDS, NodeKind, NodeType

_BN_PARAMS = ("weight", "bias", "running_mean", "running_var")


def _scaled_step(layer: Layer, followers: tuple[Layer, ...]) -> tuple[Layer, tuple[Layer, ...]]:
    """The last per-neuron affine step after ``layer`` (itself or its last batch norm) and the layers after it."""
    steps = (layer, *followers)
    last = max(i for i, ly in enumerate(steps) if i == 0 or ly.kind == "batchnorm")
    return steps[last], steps[last:]


def _per_neuron_layers(spec: ArchSpec) -> list[tuple[Layer, tuple[Layer, ...]]]:
    """``(layer, followers)`` of the hidden linear/conv layers whose neurons can be scaled one by one: not joined by a
    residual connection (those are kept as they are) and not paired by a magnitude layer after them."""
    groups, residual = split_layers(spec), residual_layers(spec)
    return [
        (layer, followers)
        for (layer, followers), (nxt, _) in pairwise(groups)
        if layer.kind in AFFINE_KINDS and nxt.kind not in ("magnitude", *NORM_KINDS) and layer.name not in residual
    ]


def rescalable_layers(spec: ArchSpec) -> list[str]:
    """Names of hidden linear/conv layers whose neurons :func:`rescale_hidden` rescales (homogeneous tail)."""
    return [
        layer.name
        for layer, followers in _per_neuron_layers(spec)
        if all(ly.activation in POSITIVELY_HOMOGENEOUS for ly in _scaled_step(layer, followers)[1])
    ]


def flippable_layers(spec: ArchSpec) -> list[str]:
    """Names of hidden linear/conv layers whose neurons :func:`flip_hidden` may flip (odd tail, no max pooling)."""
    return [
        layer.name
        for layer, followers in _per_neuron_layers(spec)
        if all(
            ly.activation in ODD and ly.kind not in ("max_pool2d", "prelu") for ly in _scaled_step(layer, followers)[1]
        )
    ]


def _next_inputs(out: dict[str, torch.Tensor], nxt: NodeLayer, fn) -> None:
    """Apply ``fn`` to the ``[out, in_nodes, block]`` view of each of the next layer's input weights (their
    per-input-neuron blocks; nothing for a parameter-free layer or a layer or group norm, tied to its input)."""
    for name in nxt.input_weights:
        w = out[name]
        out[name] = fn(w.reshape(w.shape[0], nxt.in_nodes, -1)).reshape(w.shape)


def _identity_ties(chain: Chain) -> list[int]:
    """Each node layer's tie group (the smallest index in it): layers joined by an identity residual, and a layer or
    group norm and its input, share their neuron order, so they can only be permuted together."""
    root = list(range(len(chain.node_layers)))

    def find(i: int) -> int:
        while root[i] != i:
            i = root[i]
        return i

    for target, nl in enumerate(chain.node_layers):
        tied = [source for source, add in nl.skips if not add.name]
        for source in tied + ([target - 1] if nl.layer.kind in NORM_KINDS and target else []):
            a, b = sorted((find(source), find(target)))
            root[b] = a
    return [find(i) for i in range(len(root))]


def permute_hidden(
    tensors: Mapping[str, torch.Tensor], spec: ArchSpec, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """Randomly permute the neurons / filters / LSTM and GRU units of every hidden layer (function preserved exactly);
        layers joined by an identity residual (or a layer or group norm) get one permutation — a group norm's channels
        within their groups, and its groups as wholes — those tied to the output layer keep their
    order, the layer before a magnitude layer is permuted in the pairs it feeds, an attention layer permutes its
        heads, then the query/key dimensions (together) and the value dimensions within each head, and a
        bidirectional LSTM or GRU its units within each direction."""
    chain = walk(spec, tensors)
    layers = chain.node_layers
    ties = _identity_ties(chain)
    drawn: dict[int, Tensor] = {}
    for i, nl in enumerate(layers[:-1]):
        if ties[i] == ties[-1] or ties[i] in drawn:
            continue
        groups = {other.layer.groups for j, other in enumerate(layers) if ties[j] == ties[i] and other.layer.groups}
        drawn[ties[i]] = grouped_perm(sorted(groups), nl.out_nodes, generator)
    perms = {i: drawn.get(ties[i]) for i in range(len(layers))}

    def keep_order(i: int) -> None:  # layer i and every layer tied to it
        perms.update({j: None for j in range(len(layers)) if ties[j] == ties[i]})

    qk_perms: dict[int, Tensor] = {}
    for i, nl in enumerate(layers[:-1]):
        if nl.layer.kind == "attention" and perms[i] is not None and ties.count(ties[i]) == 1:
            qk_perms[i], perms[i] = head_perms(nl.layer.heads, nl.qk_nodes, nl.out_nodes, generator)
        elif nl.layer.kind == "attention":  # its values are tied to other layers: not permuted
            keep_order(i)
        elif nl.layer.bidirectional and perms[i] is not None and ties.count(ties[i]) == 1:  # within each direction
            perms[i] = block_perm([0, 1], nl.out_nodes, generator)
        elif nl.layer.bidirectional:
            keep_order(i)

    if layers[0].layer.kind in NORM_KINDS:  # normalises the inputs, which never move
        keep_order(0)
    for i in reversed(range(len(layers))):  # a magnitude's order is that of the pairs it reads
        nl = layers[i]
        if nl.layer.kind != "magnitude":
            continue
        free = (*AFFINE_KINDS, *RECURRENT_GATES)
        pairs_free = i > 0 and layers[i - 1].layer.kind in free and ties.count(ties[i - 1]) == 1
        if perms[i] is not None and pairs_free:
            perms[i - 1] = torch.cat([perms[i], perms[i] + nl.out_nodes])
        else:
            keep_order(i)
            if i > 0:
                keep_order(i - 1)
    out = {k: v.clone() for k, v in tensors.items()}
    for i, nl in enumerate(layers[:-1]):
        perm = perms[i]
        if perm is None:
            continue
        _permute_rows(out, nl, perm, qk_perms.get(i))
        _next_inputs(out, layers[i + 1], lambda w, perm=perm: w[:, perm])
        for target in layers[i + 1 :]:  # projections reading this layer
            for source, add in target.skips:
                if source == i and add.name:
                    out[f"{add.name}.weight"] = out[f"{add.name}.weight"][:, perm]
    return out


def _permute_rows(out: dict[str, torch.Tensor], nl: NodeLayer, perm: Tensor, qk_perm: Tensor | None = None) -> None:
    """Reorder the neurons of one node layer in its own tensors (an LSTM or GRU: every gate's rows and the recurrent
    weights' columns; an attention: query and key rows by ``qk_perm``, value rows by ``perm``; an embedding: its
    tables' columns; a patch embedding: its projection's rows, class token and position columns), and in the batch
    norms and PReLUs that follow it."""
    name = nl.layer.name
    followers = [f"{ly.name}.{p}" for ly in nl.followers if ly.kind == "batchnorm" for p in _BN_PARAMS]
    followers += [
        f"{ly.name}.weight" for ly in nl.followers if ly.kind == "prelu" and out[f"{ly.name}.weight"].numel() > 1
    ]
    for key in followers:
        out[key] = out[key][perm]
    if nl.layer.kind == "attention":
        for p, order in (("query", qk_perm), ("key", qk_perm), ("value", perm)):
            for w in ("weight", "bias"):
                out[f"{name}.{p}.{w}"] = out[f"{name}.{p}.{w}"][order]
    elif nl.layer.kind == "embedding":
        for table in EMBEDDING_TABLES:
            out[f"{name}.{table}.weight"] = out[f"{name}.{table}.weight"][:, perm]
    elif nl.layer.kind == "patch_embedding":
        for key in ("projection.weight", "projection.bias", "cls_token"):
            out[f"{name}.{key}"] = out[f"{name}.{key}"][perm]
        out[f"{name}.position_embeddings"] = out[f"{name}.position_embeddings"][:, perm]
    elif nl.layer.kind in RECURRENT_GATES:  # a bidirectional layer's perm keeps each direction's units in its half
        gates, n = RECURRENT_GATES[nl.layer.kind], nl.out_nodes // nl.directions
        for direction, suffix in enumerate(("", REVERSE)[: nl.directions]):
            own = perm[direction * n : (direction + 1) * n] - direction * n
            for param in RECURRENT_PARAMS:
                t = out[f"{name}.{param}{suffix}"]
                out[f"{name}.{param}{suffix}"] = t.reshape(gates, n, *t.shape[1:])[:, own].reshape(t.shape)
            out[f"{name}.weight_hh{suffix}"] = out[f"{name}.weight_hh{suffix}"][:, own]
    elif nl.layer.kind != "magnitude":
        names = [f"{name}.weight", f"{name}.bias"]
        names += [f"{add.name}.{p}" for _, add in nl.skips if add.name for p in ("weight", "bias")]  # projections in
        for key in names:
            out[key] = out[key][perm]


def residual_layers(spec: ArchSpec) -> set[str]:
    """Names of the linear/conv layers a residual connection reads from or adds into."""
    names = set()
    for layer, followers in split_layers(spec):
        adds = [ly for ly in followers if ly.kind == "add"]
        names |= {layer.name} if adds else set()
        names |= {ly.source for ly in adds}
    return names


def log_uniform(n: int, generator: torch.Generator, low: float, high: float, dtype=torch.float64) -> Tensor:
    """``n`` factors of ``dtype`` drawn log-uniformly from ``[low, high]``."""
    u = torch.rand(n, generator=generator, dtype=dtype)
    return torch.exp(math.log(low) + u * (math.log(high) - math.log(low)))


def _scale_neurons(tensors: Mapping[str, torch.Tensor], spec: ArchSpec, layers: set[str], draw) -> dict:
    """Multiply each neuron of ``layers`` by ``draw(n)`` (float64 factors): its last affine step × s, its outgoing
    weights ÷ s."""
    chain = walk(spec, tensors)
    out = {k: v.clone() for k, v in tensors.items()}
    for nl, nxt in pairwise(chain.node_layers):
        if nl.layer.name not in layers:
            continue
        s = draw(nl.out_nodes)
        step, _ = _scaled_step(nl.layer, nl.followers)
        for name in (f"{step.name}.weight", f"{step.name}.bias"):
            t = out[name]
            out[name] = (t.double() * s.view(-1, *[1] * (t.dim() - 1))).to(t.dtype)
        _next_inputs(out, nxt, lambda w, s=s: (w.double() / s.view(1, -1, 1)).to(w.dtype))
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
    return _scale_neurons(tensors, spec, set(rescalable_layers(spec)), lambda n: log_uniform(n, generator, low, high))


def random_signs(n: int, generator: torch.Generator, dtype=torch.float64) -> Tensor:
    """``n`` independent fair ±1 draws."""
    return torch.randint(0, 2, (n,), generator=generator).to(dtype) * 2 - 1


def flip_hidden(tensors: Mapping[str, torch.Tensor], spec: ArchSpec, generator: torch.Generator) -> dict:
    """Flip the sign of each neuron of the :func:`flippable_layers` with probability 1/2 (function preserved)."""
    return _scale_neurons(tensors, spec, set(flippable_layers(spec)), lambda n: random_signs(n, generator))


def _per_neuron(data: Data) -> Tensor:
    """Hidden linear/conv neurons that are neurons on their own: none of their edges leads into a magnitude, layer
    norm or group norm node, which reads them together with their neighbours (rescaling or flipping one alone
    changes the function)."""
    joint = data.node_type.new_tensor((NodeType.MAGNITUDE, NodeType.LAYERNORM, NodeType.GROUPNORM))
    joint = torch.isin(data.node_type, joint)
    src, dst = data.edge_index
    feeds_joint = torch.zeros_like(joint).index_fill_(0, src[joint[dst]], True)
    affine = torch.isin(data.node_type, data.node_type.new_tensor(AFFINE_NODE_TYPES))
    return (data.node_kind == NodeKind.HIDDEN) & affine & ~feeds_joint


def scalable_nodes(data: Data) -> Tensor:
    """Mask of the neurons of a neural graph (or ``Batch``) that can be rescaled: hidden linear/conv neurons on their
    own whose activation commutes with positive scaling."""
    return _per_neuron(data) & torch.isin(data.node_act, data.node_act.new_tensor(HOMOGENEOUS_ACT_IDS))


def odd_nodes(data: Data) -> Tensor:
    """Mask of the hidden linear/conv neurons on their own followed by an odd activation (those whose sign may be
    flippable)."""
    return _per_neuron(data) & torch.isin(data.node_act, data.node_act.new_tensor(ODD_ACT_IDS))


def graph_of_nodes(data: Data) -> Tensor:
    """Each node's graph: ``data.batch`` for a collated ``Batch``, zeros for one graph."""
    batch = getattr(data, "batch", None)
    return batch if batch is not None else torch.zeros(data.num_nodes, dtype=torch.long)


def layer_groups(data: Data) -> Tensor:
    """Each node's (graph, layer) group: layers of different graphs in a ``Batch`` are different groups."""
    return graph_of_nodes(data) * (int(data.node_layer.max()) + 1) + data.node_layer


def permute_graph_nodes(data: Data, generator: torch.Generator, shuffle_edges: bool = False) -> Data:
    """A copy of a neural graph (or a ``Batch`` of them) with its hidden nodes shuffled within each layer of each
    graph (edges relabelled).

    Input and output nodes keep their places, so the layer-by-layer node order of the schema still holds; only a model
    reading hidden node order can tell the two graphs apart. ``shuffle_edges`` also shuffles the edge order.
    """
    hidden = data.node_kind == NodeKind.HIDDEN
    idx = torch.nonzero(hidden).flatten()
    key = layer_groups(data)[idx]
    by_key = idx[torch.argsort(key, stable=True)]  # the slots of each (graph, layer), in order
    shuffled = idx[torch.randperm(len(idx), generator=generator)]
    shuffled = shuffled[torch.argsort(key[torch.searchsorted(idx, shuffled)], stable=True)]  # random within each group
    order = torch.arange(data.num_nodes)
    order[by_key] = shuffled
    new_of_old = torch.empty_like(order)
    new_of_old[order] = torch.arange(len(order))
    out = copy.copy(data)  # a new graph object sharing tensors: every changed field gets a new tensor
    for field in NODE_FIELDS:
        out[field] = data[field][order]
    edges = torch.randperm(data.edge_index.shape[1], generator=generator) if shuffle_edges else slice(None)
    out.edge_index = new_of_old[data.edge_index[:, edges]]
    out.edge_attr = data.edge_attr[edges]
    return out


def rescale_graph_hidden(data: Data, generator: torch.Generator, low: float = 0.5, high: float = 2.0) -> Data:
    """Graph form of :func:`rescale_hidden`: every :func:`scalable_nodes` neuron gets a log-uniform ``s`` in
    ``[low, high]`` (incoming weights and bias × s, outgoing weights ÷ s); other neurons keep ``s = 1``."""
    scalable = scalable_nodes(data)
    s = torch.where(
        scalable, log_uniform(data.num_nodes, generator, low, high, torch.float32), torch.ones(data.num_nodes)
    )
    return _scale_graph_nodes(data, s)


def flip_graph_hidden(data: Data, generator: torch.Generator) -> Data:
    """Graph form of :func:`flip_hidden` for every :func:`odd_nodes` neuron (valid where no max pooling follows)."""
    odd = odd_nodes(data)
    s = torch.where(odd, random_signs(data.num_nodes, generator, torch.float32), torch.ones(data.num_nodes))
    return _scale_graph_nodes(data, s)


def _scale_graph_nodes(data: Data, s: Tensor) -> Data:
    """Neuron ``i`` × ``s[i]``: incoming weights, bias and probe responses × s, outgoing weights ÷ s."""
    src, dst = data.edge_index
    out = copy.copy(data)  # a new graph object sharing tensors: every changed field gets a new tensor
    out.edge_attr = data.edge_attr * (s[dst] / s[src]).unsqueeze(-1)
    out.x = data.x * s.unsqueeze(-1)
    out.probe_act = data.probe_act * s.unsqueeze(-1)
    return out


def canonicalize_sign(edge_index: Tensor, edge_attr: Tensor, bias: Tensor, probe_act: Tensor, odd: Tensor):
    """Remove the sign-flip symmetry of odd activations, exactly where a neuron's mean probe response is non-zero.

    Every ``odd`` neuron whose responses sum to a negative number is flipped (incoming and outgoing weights, bias and
    responses × -1), so the result is the same for every flipped twin. Returns new ``(edge_attr, bias, probe_act)``.
    """
    s = torch.where(odd & (probe_act.sum(-1) < 0), -1.0, 1.0).to(edge_attr.dtype)
    src, dst = edge_index
    return edge_attr * (s[src] * s[dst]).unsqueeze(-1), bias * s, probe_act * s.unsqueeze(-1)


def canonicalize_scale(edge_index: Tensor, edge_attr: Tensor, bias: Tensor, node_layer: Tensor, scalable: Tensor):
    """Remove the positive per-neuron scale symmetry of homogeneous activations, exactly.

    Layer by layer from the input side, every ``scalable`` neuron is rescaled so that its incoming weights and bias
    have unit L2 norm, and the inverse factor is pushed into its outgoing weights. The network function is unchanged
    and the result is the same for every rescaled twin. Returns new ``(edge_attr, bias, factor)``: divide a neuron's
    probe responses by its ``factor`` to canonicalise them too.
    """
    # Each edge joins an earlier layer to a later one, so when a layer is reached its incoming weights carry exactly
    # their sources' factors; the factors are found layer by layer on squared edge norms, and applied once at the end.
    total = torch.ones_like(bias)
    src, dst = edge_index
    squared = edge_attr.pow(2).sum(-1)
    for layer in range(1, int(node_layer.max()) + 1):
        nodes = scalable & (node_layer == layer)
        if not bool(nodes.any()):
            continue
        incoming = nodes[dst]
        weighted = squared[incoming] * total[src[incoming]].pow(2)
        sq = scatter(weighted, dst[incoming], dim=0, dim_size=bias.numel(), reduce="sum")
        norm = (sq + bias.pow(2)).sqrt()
        total = torch.where(nodes & (norm > 0), norm, total)
    edge_attr = edge_attr * (total[src] / total[dst]).unsqueeze(-1)
    bias = bias / total
    return edge_attr, bias, total
