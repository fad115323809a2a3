"""Walk an :class:`~raywse.core.spec.ArchSpec` as a chain of node-producing layers (linear / conv2d).

Shared by graph conversion and the weight-space symmetries: every linear/conv layer becomes a :class:`NodeLayer` that
knows how many neurons feed it, the spatial block each incoming edge carries (conv kernel or the ``H×W`` block of a
linear layer after ``flatten``), and the parameter-free / batch-norm layers that follow it up to the next node layer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from raywse.core.spec import ArchSpec, Layer, SpecError, forward

#: Layer kinds whose outputs are neurons (graph nodes).
NODE_LAYER_KINDS = ("linear", "conv2d")


@dataclass(frozen=True)
class NodeLayer:
    """A linear/conv layer seen as a layer of graph nodes."""

    layer: Layer
    in_nodes: int  # neurons / channels of the previous node layer (or of the input)
    out_nodes: int
    in_block: tuple[int, int]  # (H, W) of the incoming weights per edge: conv kernel, flatten block, else (1, 1)
    followers: tuple[Layer, ...]  # layers after this one, up to the next linear/conv


@dataclass(frozen=True)
class Chain:
    """``input_nodes`` input neurons, ``leading`` layers applied to the input, then the node layers."""

    input_nodes: int
    leading: tuple[Layer, ...]
    node_layers: tuple[NodeLayer, ...]


def _shape_after(layer: Layer, tensors: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Apply one layer to a meta tensor (activation dropped: only shapes matter)."""
    probe = {k: torch.empty(tensors[k].shape, device="meta") for k in ArchSpec((), (layer,)).tensor_names()}
    return forward(ArchSpec((), (dataclasses.replace(layer, activation="none"),)), probe, x)


def walk(spec: ArchSpec, tensors: Mapping[str, torch.Tensor]) -> Chain:
    """Validate ``tensors`` against ``spec`` and split the spec into node layers; :class:`SpecError` if unsupported."""
    spec.validate(tensors)
    if len(spec.input_shape) not in (1, 3):
        raise SpecError(f"input shape {list(spec.input_shape)} is neither [features] nor [C, H, W]")
    x = torch.empty((1, *spec.input_shape), device="meta")
    input_nodes = int(x.shape[1])
    leading: list[Layer] = []
    pending: list[dict] = []  # node layers still collecting followers
    block = (1, 1)  # spatial block carried by each channel after a flatten of a C×H×W map
    for layer in spec.layers:
        if layer.kind in NODE_LAYER_KINDS:
            w = tensors[f"{layer.name}.weight"]
            if layer.kind == "conv2d":
                if x.dim() != 4:
                    raise SpecError(f"conv2d layer {layer.name} needs a [C, H, W] input, got {list(x.shape[1:])}")
                in_block = (int(w.shape[2]), int(w.shape[3]))
                in_nodes = int(w.shape[1])
            else:
                in_block = block
                in_nodes = int(w.shape[1]) // (block[0] * block[1])
            pending.append({"layer": layer, "in_nodes": in_nodes, "out": int(w.shape[0]), "block": in_block, "f": []})
            block = (1, 1)
        else:
            if layer.kind == "flatten" and x.dim() == 4:
                block = (int(x.shape[2]), int(x.shape[3]))
            elif block != (1, 1):
                raise SpecError(f"{layer.kind} layer {layer.name!r} between flatten and linear is not supported")
            (pending[-1]["f"] if pending else leading).append(layer)
        x = _shape_after(layer, tensors, x)
    if not pending:
        raise SpecError("spec has no linear or conv2d layer")
    nodes = tuple(NodeLayer(p["layer"], p["in_nodes"], p["out"], p["block"], tuple(p["f"])) for p in pending)
    return Chain(input_nodes, tuple(leading), nodes)


def split_layers(spec: ArchSpec) -> list[tuple[Layer, tuple[Layer, ...]]]:
    """Each linear/conv layer of ``spec`` with the layers that follow it up to the next one (spec only, no shapes)."""
    groups: list[tuple[Layer, list[Layer]]] = []
    for layer in spec.layers:
        if layer.kind in NODE_LAYER_KINDS:
            groups.append((layer, []))
        elif groups:
            groups[-1][1].append(layer)
    return [(layer, tuple(followers)) for layer, followers in groups]
