"""Checkpoint → neural graph (one node per neuron, one edge per weight), per the schema in :mod:`raywse.graph.schema`.

Edges of each layer are emitted target-major (for target ``j``, sources ``i`` ascending), i.e. in the row-major
order of the weight. Kernels are edge features fitted to at most 3×3 (:mod:`raywse.graph.kernels`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping

import torch
from torch_geometric.data import Data

from raywse.core.spec import (
    ACTIVATIONS,
    AFFINE_KINDS,
    ATTENTION_PROJECTIONS,
    EMBEDDING_TABLES,
    LSTM_GATES,
    NEGATIVE_SLOPES,
    NORM_KINDS,
    PATCH_PARAMS,
    REVERSE,
    ArchSpec,
    Layer,
    SpecError,
)
from raywse.graph.chain import Chain, NodeLayer, chain_of, tensor_shapes, walk
from raywse.graph.kernels import center_pad_kernels, fit_kernels
from raywse.graph.probes import ProbeChooser, gaussian_probes, responses_or_none, token_probes
from raywse.graph.schema import NodeKind, NodeType


def fold_bn_params(
    weight: torch.Tensor, bias: torch.Tensor, bn: Mapping[str, torch.Tensor], eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(weight, bias)`` of a linear/conv layer with the batch norm ``bn`` (its ``weight``, ``bias``,
    ``running_mean``, ``running_var``) that follows it folded in; computed in float64, returned in their dtypes."""
    scale = bn["weight"].double() / torch.sqrt(bn["running_var"].double() + eps)
    folded_w = (weight.double() * scale.view(-1, *[1] * (weight.dim() - 1))).to(weight.dtype)
    folded_b = ((bias.double() - bn["running_mean"].double()) * scale + bn["bias"].double()).to(bias.dtype)
    return folded_w, folded_b


def fold_batchnorm(tensors: Mapping[str, torch.Tensor], spec: ArchSpec) -> tuple[dict[str, torch.Tensor], ArchSpec]:
    """Fold every batch norm into the linear/conv layer right before it; the BN's activation becomes that layer's.

    ``tensors`` must match ``spec`` (:meth:`~raywse.core.spec.ArchSpec.validate`). Returns new tensors (the
    batch-norm tensors dropped, folded weights in the original dtype) and the BN-free spec. Raises
    :class:`SpecError` for a batch norm that does not directly follow a linear/conv layer without activation.
    """
    out = dict(tensors)
    layers: list[Layer] = []
    for layer in spec.layers:
        if layer.kind != "batchnorm":
            layers.append(layer)
            continue
        prev = layers[-1] if layers else None
        if prev is None or prev.kind not in AFFINE_KINDS:
            raise SpecError(f"batchnorm {layer.name} does not directly follow a linear/conv layer; cannot fold it")
        if prev.activation != "none":
            raise SpecError(f"batchnorm {layer.name} follows the {prev.activation} of {prev.name}; cannot fold it")
        bn = {k: out.pop(f"{layer.name}.{k}") for k in ("weight", "bias", "running_mean", "running_var")}
        w, b = out[f"{prev.name}.weight"], out[f"{prev.name}.bias"]
        out[f"{prev.name}.weight"], out[f"{prev.name}.bias"] = fold_bn_params(w, b, bn, layer.eps)
        layers[-1] = dataclasses.replace(prev, activation=layer.activation)
    return out, ArchSpec(spec.input_shape, tuple(layers))


def effective_activation(node_layer: NodeLayer) -> str:
    """The single activation applied between a node layer and the next one (``none`` if there is none; ``prelu``
    for a PReLU layer)."""
    steps = (node_layer.layer, *node_layer.followers)
    acts = ["prelu" if ly.kind == "prelu" else ly.activation for ly in steps]
    acts = [a for a in acts if a != "none"]
    if len(acts) > 1:
        raise SpecError(f"layer {node_layer.layer.name} is followed by several activations ({', '.join(acts)})")
    return acts[0] if acts else "none"


def negative_slopes(node_layer: NodeLayer, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``[out_nodes]`` slope below zero of each neuron's activation: a PReLU layer's learned slopes, the fixed slope
    of ``none`` / ``relu`` / ``leaky_relu``, and 0 for activations that are not piecewise linear."""
    act = effective_activation(node_layer)
    if act == "prelu":
        prelu = next(ly for ly in node_layer.followers if ly.kind == "prelu")
        return tensors[f"{prelu.name}.weight"].detach().float().reshape(-1).expand(node_layer.out_nodes).clone()
    return torch.full((node_layer.out_nodes,), NEGATIVE_SLOPES.get(act, 0.0))


def handed_on_starts(chain: Chain, starts: list[int]) -> list[int]:
    """Index of the first node each node layer hands on (an LSTM's or GRU's hidden state comes after its other node
    sets)."""
    return [start + nl.handed_offset for nl, start in zip(chain.node_layers, starts, strict=True)]


def _diagonal(src_start: int, dst_start: int, n: int, weights: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
    """The ``n`` edges ``src_start + i → dst_start + i``, of weight 1 or ``weights [n]``."""
    diagonal = torch.arange(n)
    weights = torch.ones(n) if weights is None else weights.detach().float()
    return src_start + diagonal, dst_start + diagonal, weights.reshape(n, 1, 1)


def _same_head(src_start: int, dst_start: int, src_width: int, dst_width: int, heads: int) -> tuple[torch.Tensor, ...]:
    """Edges of weight 1 from each of ``src_width`` query (or key) neurons to each of ``dst_width`` value neurons of
    its head (target-major): an attended value depends on every query and key of its head."""
    ds, dd = src_width // heads, dst_width // heads
    head = torch.arange(heads).view(-1, 1, 1)
    sources = (src_start + head * ds + torch.arange(ds).view(1, 1, -1)).expand(heads, dd, ds)
    targets = (dst_start + head * dd + torch.arange(dd).view(1, -1, 1)).expand(heads, dd, ds)
    return sources.reshape(-1), targets.reshape(-1), torch.ones(sources.numel(), 1, 1)


def _weight_blocks(
    chain: Chain, tensors: Mapping[str, torch.Tensor], starts: list[int]
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``(sources [E], targets [E], kernels [E, h, w])`` of every weight tensor, kernels fitted
    (:func:`fit_kernels`): each layer's weights (target-major), then its residual connections — a projection's
    weights, or the identity as the ``n`` edges ``i → i`` of weight 1 (``validate`` checked the widths match). An LSTM
    has input and recurrent edges into each gate and gate → hidden-state edges of weight 1; a GRU input edges into its
    reset and update gates and its candidate, recurrent edges into the gates and the recurrent candidate term, and
    edges of weight 1 from that term and the reset gate to the candidate, and from the candidate and the update gate
    to the hidden state; a magnitude layer edges of weight 1 from both channels of each pair."""
    blocks = []
    handed = handed_on_starts(chain, starts)
    in_start = 0
    for index, (nl, start) in enumerate(zip(chain.node_layers, starts, strict=True)):
        n = nl.out_nodes
        if nl.layer.kind in ("lstm", "gru"):
            blocks += _recurrent_blocks(nl, tensors, start, in_start, handed[index])
        elif nl.layer.kind == "magnitude":
            blocks += [_diagonal(in_start, start, n), _diagonal(in_start + n, start, n)]
        elif nl.layer.kind == "embedding":  # the inputs are the tables' rows, one table after another
            row = 0
            for table in EMBEDDING_TABLES:
                t = tensors[f"{nl.layer.name}.{table}.weight"].detach().float()
                blocks.append(_dense_block(t.T[:, :, None, None], row, start))
                row += len(t)
        elif nl.layer.kind == "patch_embedding":  # channels (kernels), then the class-token and position rows
            w, _, cls, table = (tensors[f"{nl.layer.name}.{p}"].detach().float() for p in PATCH_PARAMS)
            channels = w.shape[1]
            blocks.append(_dense_block(fit_kernels(w), 0, start))
            blocks.append(_dense_block(cls[:, None, None, None], channels, start))
            blocks.append(_dense_block(table.T[:, :, None, None], channels + 1, start))
        elif nl.layer.kind == "attention":
            name, qk, heads = nl.layer.name, nl.qk_nodes, nl.layer.heads
            for offset, p in zip((0, qk, 2 * qk), ATTENTION_PROJECTIONS, strict=True):
                w = tensors[f"{name}.{p}.weight"].detach().float()
                blocks.append(_dense_block(w[:, :, None, None], in_start, start + offset))
            blocks += [_same_head(start + offset, start + 2 * qk, qk, n, heads) for offset in (0, qk)]
        elif nl.layer.kind in NORM_KINDS:  # normalised inputs, scaled by its weight: a diagonal of weights
            blocks.append(_diagonal(in_start, start, n, tensors[f"{nl.layer.name}.weight"]))
        else:
            w = tensors[f"{nl.layer.name}.weight"].detach().float().reshape(n, nl.in_nodes, *nl.in_block)
            blocks.append(_dense_block(fit_kernels(w), in_start, start))
        for source, add in nl.skips:
            if add.name:  # a 1×1 conv (or linear) projection
                p = tensors[f"{add.name}.weight"].detach().float()
                p = p.reshape(*p.shape[:2], *(1, 1, *p.shape[2:])[-2:])
                blocks.append(_dense_block(fit_kernels(p), handed[source], start))
            else:
                blocks.append(_diagonal(handed[source], start, n))
        in_start = handed[index]
    return blocks


def _recurrent_blocks(
    nl: NodeLayer, tensors: Mapping[str, torch.Tensor], start: int, in_start: int, hidden_start: int
) -> list[tuple[torch.Tensor, ...]]:
    """The edges of an LSTM or GRU layer, per direction (see :func:`_weight_blocks`)."""
    blocks, n = [], nl.out_nodes // nl.directions
    for direction, suffix in enumerate(("", REVERSE)[: nl.directions]):
        w_ih, w_hh = (tensors[f"{nl.layer.name}.{p}{suffix}"].detach().float() for p in ("weight_ih", "weight_hh"))
        first, h = start + direction * (nl.handed_offset // nl.directions), hidden_start + direction * n
        if nl.layer.kind == "lstm":
            for gate in range(LSTM_GATES):
                rows = slice(gate * n, (gate + 1) * n)
                blocks.append(_dense_block(w_ih[rows, :, None, None], in_start, first + gate * n))
                blocks.append(_dense_block(w_hh[rows, :, None, None], h, first + gate * n))
            blocks += [_diagonal(first + gate * n, h, n) for gate in range(LSTM_GATES)]
            continue
        r, z, m, new = (first + i * n for i in range(4))  # node sets r, z, m, n, then h (see NodeType)
        for gate, target in enumerate((r, z, new)):  # input edges into r, z and n
            blocks.append(_dense_block(w_ih[gate * n : (gate + 1) * n, :, None, None], in_start, target))
        for gate, target in enumerate((r, z, m)):  # recurrent edges into r, z and m
            blocks.append(_dense_block(w_hh[gate * n : (gate + 1) * n, :, None, None], h, target))
        blocks += [_diagonal(m, new, n), _diagonal(r, new, n), _diagonal(new, h, n), _diagonal(z, h, n)]
    return blocks


_GATES = (
    ("sigmoid", NodeType.LSTM_INPUT_GATE),
    ("sigmoid", NodeType.LSTM_FORGET_GATE),
    ("tanh", NodeType.LSTM_CELL_GATE),
    ("sigmoid", NodeType.LSTM_OUTPUT_GATE),
)


def _node_sets(nl: NodeLayer, tensors: Mapping[str, torch.Tensor]) -> list[tuple]:
    """``(bias [n], activation, slopes [n], node type)`` of each node set of a node layer, in node order."""
    n, act = nl.out_nodes, effective_activation(nl)
    if nl.layer.kind in ("lstm", "gru"):
        return _recurrent_sets(nl, tensors, act)
    if nl.layer.kind == "magnitude":
        return [(torch.zeros(n), act, negative_slopes(nl, tensors), NodeType.MAGNITUDE)]
    if nl.layer.kind == "embedding":
        return [(torch.zeros(n), act, negative_slopes(nl, tensors), NodeType.EMBEDDING)]
    if nl.layer.kind == "patch_embedding":
        bias = tensors[f"{nl.layer.name}.projection.bias"].detach().float()
        return [(bias, act, negative_slopes(nl, tensors), NodeType.EMBEDDING)]
    if nl.layer.kind == "attention":
        q, k, v = (tensors[f"{nl.layer.name}.{p}.bias"].detach().float() for p in ATTENTION_PROJECTIONS)
        value_type = NodeType.ATTENTION_CAUSAL_VALUE if nl.layer.causal else NodeType.ATTENTION_VALUE
        return [
            (q, "none", torch.ones(nl.qk_nodes), NodeType.ATTENTION_QUERY),
            (k, "none", torch.ones(nl.qk_nodes), NodeType.ATTENTION_KEY),
            (v, act, negative_slopes(nl, tensors), value_type),
        ]
    bias = tensors[f"{nl.layer.name}.bias"].detach().float().reshape(-1)
    for _, add in nl.skips:  # a projection's bias adds to the neuron's
        bias = bias + (tensors[f"{add.name}.bias"].detach().float() if add.name else 0)
    types = {"linear": NodeType.LINEAR, "layernorm": NodeType.LAYERNORM, "groupnorm": NodeType.GROUPNORM}
    return [(bias, act, negative_slopes(nl, tensors), types.get(nl.layer.kind, NodeType.CONV))]


def _recurrent_sets(nl: NodeLayer, tensors: Mapping[str, torch.Tensor], act: str) -> list[tuple]:
    """An LSTM's or GRU's node sets: each direction's gates (a GRU's also its recurrent candidate term and its
    candidate), then each direction's hidden state (the reverse direction's of its own type)."""
    n = nl.out_nodes // nl.directions
    slopes = negative_slopes(nl, tensors).reshape(nl.directions, n)
    sets, hidden = [], []
    for direction, suffix in enumerate(("", REVERSE)[: nl.directions]):
        b_ih, b_hh = (tensors[f"{nl.layer.name}.{p}{suffix}"].detach().float() for p in ("bias_ih", "bias_hh"))
        if nl.layer.kind == "lstm":
            sets += [(b, name, torch.zeros(n), ntype) for b, (name, ntype) in zip((b_ih + b_hh).chunk(LSTM_GATES),
                                                                                   _GATES, strict=True)]  # fmt: skip
            types = (NodeType.LSTM_HIDDEN, NodeType.LSTM_REVERSE_HIDDEN)
        else:
            (ir, iz, i_n), (hr, hz, hn) = b_ih.chunk(3), b_hh.chunk(3)
            sets += [
                (ir + hr, "sigmoid", torch.zeros(n), NodeType.GRU_RESET_GATE),
                (iz + hz, "sigmoid", torch.zeros(n), NodeType.GRU_UPDATE_GATE),
                (hn, "none", torch.ones(n), NodeType.GRU_RECURRENT_CANDIDATE),
                (i_n, "tanh", torch.zeros(n), NodeType.GRU_CANDIDATE),
            ]
            types = (NodeType.GRU_HIDDEN, NodeType.GRU_REVERSE_HIDDEN)
        hidden.append((torch.zeros(n), act, slopes[direction], types[direction]))
    return sets + hidden


def _dense_block(kernels: torch.Tensor, src_start: int, dst_start: int) -> tuple[torch.Tensor, ...]:
    n_out, n_src = kernels.shape[:2]
    grid = _cached_grid if n_out * n_src <= CACHED_SIZE else _grid
    sources, targets = grid(n_out, n_src, src_start, dst_start)
    return sources, targets, kernels.reshape(n_out * n_src, *kernels.shape[2:])


#: The largest dense block (edges) and graph (nodes) whose index structure is cached and reused across checkpoints of
#: one architecture: zoo-sized layers; a large model's (MiniLM's 12M-edge embedding) is rebuilt, not held.
CACHED_SIZE = 1 << 14


def _grid(n_out: int, n_src: int, src_start: int, dst_start: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sources, targets)`` of the dense ``n_src → n_out`` edges, target-major."""
    return src_start + torch.arange(n_src).repeat(n_out), dst_start + torch.arange(n_out).repeat_interleave(n_src)


_cached_grid = functools.lru_cache(maxsize=1024)(_grid)  # shared: never written to (at most 256 MiB)


def _node_layout(n_in: int, sets: tuple[tuple[int, str, int], ...], outputs: int) -> torch.Tensor:
    """``[5, N]`` node_layer, node_kind, node_pos, node_act and node_type of a graph whose ``n_in`` inputs are
    followed by node ``sets`` of ``(size, activation, node type)``, the last ``outputs`` of them its outputs."""

    def node_set(n: int, layer: int, kind: int, pos: torch.Tensor, act: str, ntype: int) -> torch.Tensor:
        values = (layer, kind, None, ACTIVATIONS.index(act), ntype)
        return torch.stack([pos if v is None else torch.full((n,), int(v)) for v in values])

    columns, out_pos = [node_set(n_in, 0, NodeKind.INPUT, torch.arange(n_in), "none", NodeType.INPUT)], 0
    for index, (n_out, act, ntype) in enumerate(sets, start=1):
        if index > len(sets) - outputs:
            columns.append(node_set(n_out, index, NodeKind.OUTPUT, out_pos + torch.arange(n_out), act, ntype))
            out_pos += n_out
        else:
            columns.append(node_set(n_out, index, NodeKind.HIDDEN, torch.full((n_out,), -1), act, ntype))
    return torch.cat(columns, dim=1)


_cached_node_layout = functools.lru_cache(maxsize=256)(_node_layout)  # shared: callers copy it (at most 160 MiB)


def to_neural_graph(
    tensors: Mapping[str, torch.Tensor],
    spec: ArchSpec,
    model_id: str = "",
    probes: ProbeChooser = gaussian_probes,
    validated: bool = False,
) -> Data:
    """Build the neural graph of a checkpoint (batch norm folded first); :class:`SpecError` if unsupported.

    ``probes`` picks the probe inputs from the input shape (:mod:`raywse.graph.probes`; seeded Gaussian by default).
    ``validated``: the caller has already checked ``tensors`` against ``spec``
    (:meth:`~raywse.core.spec.ArchSpec.validate`), so they are not checked again.
    """
    if not validated:
        spec.validate(tensors)
    folded, folded_spec = fold_batchnorm(tensors, spec)
    if folded_spec != spec:  # folding can overflow float32: check the folded weights too
        folded_spec.validate(folded)
    chain = chain_of(folded_spec, tensor_shapes(folded))
    first = chain.node_layers[0].layer
    if first.kind == "embedding":  # token ids: random token sequences, whatever the chooser
        probe_set = token_probes(len(folded[f"{first.name}.word_embeddings.weight"]), spec.input_shape[0])
    else:
        probe_set = probes(tuple(spec.input_shape))
    probe_act, probe_source = responses_or_none(chain, folded_spec, folded, probe_set)
    for layer in chain.leading:
        if layer.activation != "none":
            raise SpecError(f"activation {layer.activation} applied to the input ({layer.kind}) is not supported")
    n_in = chain.input_nodes
    starts = [n_in]  # index of each node layer's first node
    for nl in chain.node_layers[:-1]:
        starts.append(starts[-1] + nl.num_nodes)
    blocks = _weight_blocks(chain, folded, starts)
    kh = max(k.shape[1] for _, _, k in blocks)
    kw = max(k.shape[2] for _, _, k in blocks)
    sets = [node_set for nl in chain.node_layers for node_set in _node_sets(nl, folded)]
    outputs = chain.node_layers[-1].directions  # a bidirectional last layer hands on two hidden sets
    sizes = tuple((b.shape[0], act, int(t)) for b, act, _, t in sets)
    layout = (_cached_node_layout if n_in + sum(n for n, _, _ in sizes) <= CACHED_SIZE else _node_layout)(
        n_in, sizes, outputs
    )
    node_layer, node_kind, node_pos, node_act, node_type = (column.clone() for column in layout)
    attrs = [(k if k.shape[1:] == (kh, kw) else center_pad_kernels(k, (kh, kw))).reshape(k.shape[0], kh * kw)
             for _, _, k in blocks]  # fmt: skip
    return Data(
        x=torch.cat([torch.zeros(n_in), *(bias for bias, _, _, _ in sets)]).float().unsqueeze(1),
        node_layer=node_layer,
        node_kind=node_kind,
        node_pos=node_pos,
        node_act=node_act,
        node_type=node_type,
        act_slope=torch.cat([torch.ones(n_in), *(slope for _, _, slope, _ in sets)]).float(),
        edge_index=torch.stack([torch.cat([b[0] for b in blocks]), torch.cat([b[1] for b in blocks])]).long(),
        edge_attr=torch.cat(attrs).contiguous(),
        probe_act=probe_act.float(),
        kernel_shape=(kh, kw),
        model_id=model_id,
        probe_source=probe_source,
    )


def graph_size(spec: ArchSpec, tensors: Mapping[str, torch.Tensor]) -> tuple[int, int]:
    """``(num_nodes, num_edges)`` from the architecture alone: inputs + neurons (an LSTM or GRU: 5 per unit; an
    attention: queries, keys, values), and per layer: out × in weights (an LSTM: 4H × in + 4H × H, plus 4H gate →
    state edges; a GRU: 3H × in + 3H × H, plus 4H of weight 1;
    an attention: (2 Cq + Cv) × in, plus Cq × Cv / heads from queries and from keys; a magnitude layer 2 per neuron,
    a layer or group norm 1), plus per residual connection the width it adds into (identity) or its projection's
    out × in."""
    chain = walk(spec, tensors)
    nodes, edges = chain.input_nodes, 0
    for nl in chain.node_layers:
        out, fan_in, kind = nl.out_nodes, nl.in_nodes, nl.layer.kind
        nodes += nl.num_nodes
        hidden = out // nl.directions  # per direction: its cell's weights read the inputs and its own states
        if kind == "lstm":
            edges += LSTM_GATES * out * (fan_in + hidden + 1)
        elif kind == "gru":  # 3H × in + 3H × H weights, and 4H edges of weight 1
            edges += 3 * out * (fan_in + hidden) + 4 * out
        elif kind == "attention":  # q, k, v from the inputs; q and k to the values of their head
            edges += (2 * nl.qk_nodes + out) * fan_in + 2 * nl.qk_nodes * out // nl.layer.heads
        else:
            edges += {"magnitude": 2 * out, "layernorm": out, "groupnorm": out}.get(kind, out * fan_in)
        for _, add in nl.skips:
            edges += math.prod(tensors[f"{add.name}.weight"].shape[:2]) if add.name else out
    return nodes, edges
