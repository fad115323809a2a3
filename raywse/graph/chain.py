"""Walk an :class:`~raywse.core.spec.ArchSpec` as a chain of node-producing layers (linear, convs, LSTM, magnitude).

Shared by graph conversion and the weight-space symmetries: every node layer becomes a :class:`NodeLayer` that knows
how many neurons feed it, the spatial block each incoming edge carries (conv kernel — ``1×k`` for a 1-D conv — or the
block of a linear layer after ``flatten``), the parameter-free / batch-norm layers that follow it up to the next node
layer, and the residual connections (``add`` followers) that feed its neurons from an earlier node layer. An LSTM
layer is five node sets of its hidden size: its four gates, then the hidden state it hands on (a bidirectional one:
each direction's gates, then both hidden states); an attention layer
three: its queries, keys, then the attended values it hands on. A first ``embedding`` layer's inputs are the rows of
its tables: tokens, positions, token types; a first ``patch_embedding`` layer's inputs are the image channels, then
the class token's row and the position table's rows.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from raywse.core.spec import (
    AFFINE_KINDS,
    ATTENTION_PROJECTIONS,
    EMBEDDING_TABLES,
    FIRST_ONLY_KINDS,
    LSTM_GATES,
    NODE_LAYER_KINDS,
    NORM_KINDS,
    RECURRENT_GATES,
    REVERSE,
    ArchSpec,
    Layer,
    SpecError,
    layer_shapes,
)


@dataclass(frozen=True)
class NodeLayer:
    """A node layer (linear, conv, LSTM, attention, layer norm, embedding, magnitude) seen as graph nodes."""

    layer: Layer
    in_nodes: int  # neurons / channels of the previous node layer (or of the input)
    out_nodes: int
    in_block: tuple[int, int]  # (H, W) of the incoming weights per edge: conv kernel, flatten block, else (1, 1)
    followers: tuple[Layer, ...]  # layers after this one, up to the next linear/conv
    skips: tuple[tuple[int, Layer], ...] = ()  # (index of the source node layer, its add follower) per residual

    qk_nodes: int = 0  # an attention layer's query (and key) width

    @property
    def num_nodes(self) -> int:
        """Nodes the layer makes: an LSTM's four gates and its hidden state, a GRU's reset and update gates, its
        recurrent candidate term, its candidate and its hidden state, an attention's queries, keys and values."""
        extra = {"lstm": LSTM_GATES * self.out_nodes, "gru": 4 * self.out_nodes, "attention": 2 * self.qk_nodes}
        return self.out_nodes + extra.get(self.layer.kind, 0)

    @property
    def directions(self) -> int:
        """2 for a bidirectional LSTM or GRU (its node sets: the forward cell's, the reverse cell's, then both hidden
        states, forward first), else 1."""
        return 2 if self.layer.bidirectional else 1

    @property
    def handed_offset(self) -> int:
        """Index of the first handed-on node within the layer's nodes."""
        return self.num_nodes - self.out_nodes

    @property
    def input_weights(self) -> tuple[str, ...]:
        """Names of the tensors whose columns read the previous layer's neurons one by one (none for parameter-free
        layers, a layer norm, or an embedding: its inputs are table rows)."""
        name, kind = self.layer.name, self.layer.kind
        if kind in RECURRENT_GATES:
            return (f"{name}.weight_ih",) + ((f"{name}.weight_ih{REVERSE}",) if self.layer.bidirectional else ())
        if kind == "attention":
            return tuple(f"{name}.{p}.weight" for p in ATTENTION_PROJECTIONS)
        return (f"{name}.weight",) if kind in AFFINE_KINDS else ()


@dataclass(frozen=True)
class Chain:
    """``input_nodes`` input neurons, ``leading`` layers applied to the input, then the node layers."""

    input_nodes: int
    leading: tuple[Layer, ...]
    node_layers: tuple[NodeLayer, ...]


def walk(spec: ArchSpec, tensors: Mapping[str, torch.Tensor]) -> Chain:
    """Validate ``tensors`` against ``spec`` and split the spec into node layers; :class:`SpecError` if unsupported."""
    spec.validate(tensors)
    return chain_of(spec, tensor_shapes(tensors))


def tensor_shapes(tensors: Mapping[str, torch.Tensor]) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """``((name, shape), ...)`` of ``tensors``, sorted by name: what :func:`chain_of` reads of them."""
    return tuple(sorted((name, tuple(t.shape)) for name, t in tensors.items()))


@functools.lru_cache(maxsize=256)  # a zoo holds a few hundred architectures, each walked for every checkpoint
def chain_of(spec: ArchSpec, shapes: tuple[tuple[str, tuple[int, ...]], ...]) -> Chain:
    """The chain of ``spec`` for tensors of ``shapes`` (:func:`tensor_shapes`), from the shapes alone: the tensors'
    values are not checked (:func:`walk` checks them); :class:`SpecError` if unsupported or the shapes do not
    chain."""
    by_name = dict(shapes)
    outputs = layer_shapes(spec, by_name)
    if len(spec.input_shape) not in (1, 2, 3):  # [L] token ids are one-dimensional too
        raise SpecError(f"input shape {list(spec.input_shape)} is none of [features], [C, L], [C, H, W]")
    x = tuple(spec.input_shape)  # the shape (no batch dim) each layer reads
    input_nodes = x[0]
    firsts = [i for i, ly in enumerate(spec.layers) if ly.kind in FIRST_ONLY_KINDS]
    if firsts and firsts != [0]:
        raise SpecError(f"{spec.layers[firsts[-1]].kind} layer {spec.layers[firsts[-1]].name!r} reads the network's "
                        "input: only the first layer can be one")  # fmt: skip
    input_nodes = first_layer_inputs(spec, by_name) if firsts else input_nodes
    leading: list[Layer] = []
    pending: list[dict] = []  # node layers still collecting followers
    block = (1, 1)  # spatial block carried by each channel after a flatten of a C×L or C×H×W map
    for layer, shape in zip(spec.layers, outputs, strict=True):
        if layer.kind in NODE_LAYER_KINDS:
            if block != (1, 1) and layer.kind != "linear":
                raise SpecError(f"{layer.kind} layer {layer.name!r} after a flatten is not supported")
            if layer.kind in AFFINE_KINDS:
                w = by_name[f"{layer.name}.weight"]
                if layer.kind == "linear":
                    in_block, in_nodes = block, int(w[1]) // (block[0] * block[1])
                else:  # a conv's kernel: 1×k for a 1-D conv
                    in_block, in_nodes = tuple(int(d) for d in (1, 1, *w[2:])[-2:]), int(w[1])
            else:
                in_block, in_nodes = (1, 1), (input_nodes if layer.kind in FIRST_ONLY_KINDS else x[0])
            qk = int(by_name[f"{layer.name}.query.weight"][0]) if layer.kind == "attention" else 0
            pending.append({"layer": layer, "in_nodes": in_nodes, "out": shape[0], "block": in_block, "f": [],
                            "skips": [], "qk": qk})  # fmt: skip
            block = (1, 1)
        else:
            if layer.kind == "flatten" and len(x) > 1:
                block = (1, *x[1:])[-2:]
            elif block != (1, 1):
                raise SpecError(f"{layer.kind} layer {layer.name!r} between flatten and linear is not supported")
            (pending[-1]["f"] if pending else leading).append(layer)
            if layer.kind == "add":  # layer_shapes checked that the source is an earlier node layer
                target = pending[-1]["layer"]
                if target.kind not in (*AFFINE_KINDS, *NORM_KINDS):
                    raise SpecError(f"a residual add into {target.kind} layer {target.name!r} is not supported "
                                    "(only into linear/conv layers and norms)")  # fmt: skip
                before = (target, *pending[-1]["f"][:-1])
                nonlinear = [ly for ly in before if ly.activation != "none" or ly.kind in ("prelu", "max_pool2d")]
                if nonlinear:  # skip edges add into a neuron's pre-activation, like its own weights
                    raise SpecError(f"a residual add after the nonlinearity of {nonlinear[-1].kind} "
                                    f"{nonlinear[-1].name!r} is not supported (only before it)")  # fmt: skip
                source = next(i for i, p in enumerate(pending) if p["layer"].name == layer.source)
                if source == len(pending) - 2:  # its edges would be the very pairs of the layer's own weights
                    raise SpecError(f"a residual add into {target.name!r} from {layer.source!r}, the layer it reads "
                                    "anyway, is not supported (fold the identity into its weights)")  # fmt: skip
                pending[-1]["skips"].append((source, layer))
        x = shape
    if not pending:
        raise SpecError("spec has no node layer (linear, conv, lstm)")
    nodes = tuple(
        NodeLayer(p["layer"], p["in_nodes"], p["out"], p["block"], tuple(p["f"]), tuple(p["skips"]), p["qk"])
        for p in pending
    )
    return Chain(input_nodes, tuple(leading), nodes)


def first_layer_inputs(spec: ArchSpec, shapes: Mapping[str, tuple[int, ...]]) -> int:
    """Input nodes of a first ``embedding`` (its tables' rows) or ``patch_embedding`` (the image channels, the class
    token's row and the position table's rows), from the tensors' ``shapes``."""
    first = spec.layers[0]
    if first.kind == "embedding":
        return sum(int(shapes[f"{first.name}.{t}.weight"][0]) for t in EMBEDDING_TABLES)
    return int(spec.input_shape[0]) + 1 + int(shapes[f"{first.name}.position_embeddings"][0])


def split_layers(spec: ArchSpec) -> list[tuple[Layer, tuple[Layer, ...]]]:
    """Each linear/conv layer of ``spec`` with the layers that follow it up to the next one (spec only, no shapes)."""
    groups: list[tuple[Layer, list[Layer]]] = []
    for layer in spec.layers:
        if layer.kind in NODE_LAYER_KINDS:
            groups.append((layer, []))
        elif groups:
            groups[-1][1].append(layer)
    return [(layer, tuple(followers)) for layer, followers in groups]
