"""Random graph transforms for contrastive views, composable like PyG's ``BaseTransform`` objects.

Each transform maps ``(graph, generator) -> graph`` and never modifies its input; the explicit ``torch.Generator``
makes every view reproducible. A transform of a collated ``Batch`` acts on each of its graphs as on that graph alone
(layers, probes and permutations are per graph), in one pass: training views are made per batch. The exact
symmetries (:class:`RescaleHidden`, :class:`FlipHidden`, :class:`PermuteHidden`) come from
:mod:`raywse.graph.symmetry`; :class:`WeightNoise` and :class:`DropEdges` are small perturbations that change the
function a little; :class:`HideProbes` drops the probe responses, as for a checkpoint whose network cannot be run::

    view = Compose([RescaleHidden(), WeightNoise(0.05), DropEdges(0.1)])
    v1, v2 = view(graph, generator), view(graph, generator)
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.utils import scatter

from raywse.graph.probes import NO_PROBES
from raywse.graph.schema import NodeKind
from raywse.graph.symmetry import (
    flip_graph_hidden,
    graph_of_nodes,
    layer_groups,
    permute_graph_nodes,
    rescale_graph_hidden,
)


class GraphTransform:
    """A random map of neural graphs; subclasses implement :meth:`forward`."""

    def __call__(self, data: Data, generator: torch.Generator) -> Data:
        return self.forward(data, generator)

    def forward(self, data: Data, generator: torch.Generator) -> Data:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class Compose(GraphTransform):
    """Apply ``transforms`` in order."""

    def __init__(self, transforms: Sequence[GraphTransform]) -> None:
        self.transforms = list(transforms)

    def forward(self, data: Data, generator: torch.Generator) -> Data:
        for transform in self.transforms:
            data = transform(data, generator)
        return data


class RescaleHidden(GraphTransform):
    """Function-preserving per-neuron rescaling of hidden neurons with positively homogeneous activations."""

    def __init__(self, low: float = 0.5, high: float = 2.0) -> None:
        self.low, self.high = low, high

    def forward(self, data: Data, generator: torch.Generator) -> Data:
        return rescale_graph_hidden(data, generator, self.low, self.high)


class FlipHidden(GraphTransform):
    """Function-preserving random sign flips of hidden neurons with odd activations (tanh, none)."""

    def forward(self, data: Data, generator: torch.Generator) -> Data:
        return flip_graph_hidden(data, generator)


class PermuteHidden(GraphTransform):
    """Function-preserving shuffle of hidden neurons within each layer, and of the edge order."""

    def forward(self, data: Data, generator: torch.Generator) -> Data:
        return permute_graph_nodes(data, generator, shuffle_edges=True)


def _layer_std(values: Tensor, group: Tensor) -> Tensor:
    """Std of the nonzero entries of ``values [M, k]`` grouped by ``group [M]``, gathered back per row."""
    mask = values != 0
    size = int(group.max()) + 1
    cnt = scatter(mask.sum(-1).float(), group, dim=0, dim_size=size, reduce="sum").clamp(min=1)
    mean = scatter(values.sum(-1), group, dim=0, dim_size=size, reduce="sum") / cnt
    var = scatter(((values - mean[group].unsqueeze(-1)) * mask).pow(2).sum(-1), group, dim=0, dim_size=size) / cnt
    return var.sqrt()[group]


class WeightNoise(GraphTransform):
    """Gaussian noise on weights and biases, ``sigma`` times each layer's std.

    Zero kernel entries (padding of smaller kernels) stay zero; input-node biases stay zero.
    """

    def __init__(self, sigma: float = 0.05) -> None:
        self.sigma = sigma

    def forward(self, data: Data, generator: torch.Generator) -> Data:
        if self.sigma <= 0:
            return data
        out = copy.copy(data)  # a new graph object sharing tensors: every changed field gets a new tensor
        groups = layer_groups(data)
        w_std = _layer_std(data.edge_attr, groups[data.edge_index[1]]).unsqueeze(-1)
        noise = torch.randn(data.edge_attr.shape, generator=generator) * self.sigma * w_std
        out.edge_attr = data.edge_attr + noise * (data.edge_attr != 0)
        b_std = _layer_std(data.x, groups)
        not_input = data.node_kind != NodeKind.INPUT
        b_noise = torch.randn(data.x.shape[0], generator=generator) * self.sigma * b_std * not_input
        out.x = data.x + b_noise.unsqueeze(-1)
        return out


class DropEdges(GraphTransform):
    """Remove each edge independently with probability ``p`` (a dropped ``Batch`` can no longer be split back into
    its graphs with ``to_data_list``; encoders never do)."""

    def __init__(self, p: float = 0.1) -> None:
        self.p = p

    def forward(self, data: Data, generator: torch.Generator) -> Data:
        if self.p <= 0:
            return data
        keep = torch.rand(data.edge_index.shape[1], generator=generator) >= self.p
        out = copy.copy(data)  # a new graph object sharing tensors: every changed field gets a new tensor
        out.edge_index, out.edge_attr = data.edge_index[:, keep], data.edge_attr[keep]
        return out


class HideProbes(GraphTransform):
    """With probability ``p`` per graph, the graph as if its network had not been run: zero responses, source
    ``none``."""

    def __init__(self, p: float = 0.1) -> None:
        self.p = p

    def forward(self, data: Data, generator: torch.Generator) -> Data:
        if self.p <= 0:
            return data
        sources = data.probe_source
        collated = not isinstance(sources, str)
        hidden = torch.rand(len(sources) if collated else 1, generator=generator) < self.p
        if not bool(hidden.any()):
            return data
        out = copy.copy(data)  # a new graph object sharing tensors: every changed field gets a new tensor
        out.probe_act = data.probe_act.masked_fill(hidden[graph_of_nodes(data)].unsqueeze(-1), 0.0)
        if collated:
            out.probe_source = [NO_PROBES if h else s for h, s in zip(hidden.tolist(), sources, strict=True)]
        else:
            out.probe_source = NO_PROBES
        return out


def contrastive_view(
    noise: float = 0.05, edge_drop: float = 0.1, permute: bool = False, hide_probes: float = 0.0
) -> Compose:
    """The standard positive view: the exact symmetries (rescale, sign flip, optionally permutation), then weight
    noise, edge dropout and hidden probes."""
    exact: list[GraphTransform] = [RescaleHidden(), FlipHidden(), *([PermuteHidden()] if permute else [])]
    return Compose([*exact, WeightNoise(noise), DropEdges(edge_drop), HideProbes(hide_probes)])
