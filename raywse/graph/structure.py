"""The layer structure a neural graph shows: :func:`architecture_key`, the one definition of "same architecture"
(the evaluation's, the ``arch_oracle`` row's and lineage search's), and :func:`structure_codes`, a fixed random unit
vector per structure.

A key holds the node count, node type and activation of every node layer and the kernel shape of the edges. Two
models with the same key are indistinguishable without reading weights; strides and the spatial size of a CNN's input
are not part of it, as the graph does not show them (after global pooling).
"""

from __future__ import annotations

import zlib

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import Batch, Data

from raywse.core.spec import ACTIVATIONS
from raywse.graph.kernels import kernel_shape_of
from raywse.graph.schema import NodeType

_TYPES = tuple(t.name.lower() for t in NodeType)


def architecture_key(g: Data) -> str:
    """The graph's layer structure as text, e.g. ``64 input | 32 linear relu | 10 linear none | kernel 1x1``."""
    return _key(g.node_layer, g.node_type, g.node_act, kernel_shape_of(g))


def architecture_keys(batch: Batch) -> list[str]:
    """:func:`architecture_key` of every graph of a batch (of one kernel shape), without splitting it."""
    shape, ptr = kernel_shape_of(batch), batch.ptr.tolist()
    layer, node_type, act = (t.cpu() for t in (batch.node_layer, batch.node_type, batch.node_act))  # one copy each
    return [_key(layer[a:b], node_type[a:b], act[a:b], shape) for a, b in zip(ptr[:-1], ptr[1:], strict=True)]


def structure_codes(batch: Batch, dim: int, seed: int = 0) -> Tensor:
    """``[B, dim]``: each graph's fixed random unit vector of its :func:`architecture_key` (drawn from the key and
    ``seed``), so graphs of one structure share a code and codes of different structures are near orthogonal."""
    out = torch.empty(int(batch.num_graphs), dim)
    for i, key in enumerate(architecture_keys(batch)):
        gen = torch.Generator().manual_seed(zlib.crc32(f"{seed}|{key}".encode()))
        out[i] = torch.randn(dim, generator=gen)
    return F.normalize(out, dim=1).to(batch.node_layer.device)


def _key(layer: Tensor, node_type: Tensor, act: Tensor, kernel: tuple[int, int]) -> str:
    parts = []
    for depth in range(int(layer.max()) + 1):
        mask = layer == depth
        text = f"{int(mask.sum())} {_names(node_type[mask], _TYPES)}"
        if depth > 0:  # input nodes carry no activation
            text += " " + _names(act[mask], ACTIVATIONS)
        parts.append(text)
    return " | ".join(parts) + f" | kernel {kernel[0]}x{kernel[1]}"


def _names(values: Tensor, names: tuple[str, ...]) -> str:
    return "/".join(names[int(v)] for v in torch.unique(values))
