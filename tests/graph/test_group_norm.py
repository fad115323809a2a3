"""Group norm on a real module (convs with ``nn.GroupNorm``, a residual connection across a group norm): the spec
computes the module's function, the graph has a node per channel and an edge per scale, and the symmetries the graph
exposes (channels within their group, groups as wholes) keep function and embedding, while per-channel rescaling of
a group norm's input (not a symmetry: the group's statistics change) is left alone."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from graph_nets import embedding_changes
from safetensors.torch import save_file
from torch import nn

from raywse.core.forward import forward
from raywse.core.spec import ArchSpec, Layer, SpecError
from raywse.graph.checkpoint import GraphifyError, graphify_checkpoint, read_spec_file
from raywse.graph.neural_graph import graph_size, to_neural_graph
from raywse.graph.schema import NodeType
from raywse.graph.symmetry import permute_hidden, rescalable_layers, rescale_hidden, scalable_nodes


class GroupNormNet(nn.Module):
    """conv → GN(2 groups) → relu → conv → GN(4 groups) → relu, plus the first block's output → pool → linear."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, stride=2, padding=1)
        self.gn1 = nn.GroupNorm(2, 8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.gn2 = nn.GroupNorm(4, 8)
        self.head = nn.Linear(8, 3)
        for gn in (self.gn1, self.gn2):  # trained-looking affine parameters, not the ones and zeros of a new net
            nn.init.uniform_(gn.weight, 0.5, 1.5)
            nn.init.uniform_(gn.bias, -0.5, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = F.relu(self.gn1(self.conv1(x)))
        x = F.relu(self.gn2(self.conv2(skip)) + skip)
        return self.head(x.mean(dim=(2, 3)))


def residual_spec(input_shape: tuple[int, ...], groups: tuple[int, int], stride: int = 1) -> ArchSpec:
    """conv1 → gn1 → relu → conv2 → gn2, plus gn1's output → relu → pool → head (:class:`GroupNormNet`'s layout)."""
    return ArchSpec(
        input_shape,
        (
            Layer("conv2d", "conv1", stride=stride, padding=1),
            Layer("groupnorm", "gn1", "relu", groups=groups[0]),
            Layer("conv2d", "conv2", padding=1),
            Layer("groupnorm", "gn2", groups=groups[1]),
            Layer("add", "", "relu", source="gn1"),
            Layer("global_avg_pool"),
            Layer("linear", "head"),
        ),
    )


SPEC = residual_spec((1, 8, 8), groups=(2, 4), stride=2)


def net_and_tensors() -> tuple[GroupNormNet, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    net = GroupNormNet().eval()
    return net, dict(net.state_dict())


def test_the_spec_computes_the_module():
    net, tensors = net_and_tensors()
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(forward(SPEC, tensors, x), net(x), rtol=1e-5, atol=1e-6)


def test_graph_has_a_node_per_channel_and_one_scale_edge_each():
    _, tensors = net_and_tensors()
    g = to_neural_graph(tensors, SPEC, "gn")
    assert g.num_nodes == 1 + 8 + 8 + 8 + 8 + 3  # a node per channel
    assert g.num_edges == 8 * 1 + 8 + 8 * 8 + 8 + 8 + 3 * 8  # conv1, gn1, conv2, gn2, the identity skip, head
    assert graph_size(SPEC, tensors) == (g.num_nodes, g.num_edges)
    norm = g.node_type == NodeType.GROUPNORM
    assert int(norm.sum()) == 16
    torch.testing.assert_close(g.x[norm, 0], torch.cat([tensors["gn1.bias"], tensors["gn2.bias"]]))
    # no conv channel that a group norm reads may be rescaled alone
    src, dst = g.edge_index
    into_norm = torch.zeros(g.num_nodes, dtype=torch.bool).index_fill_(0, src[norm[dst]], True)
    assert not bool((scalable_nodes(g) & into_norm).any())


def test_channels_permute_within_their_groups_and_keep_function_and_embedding():
    net, tensors = net_and_tensors()
    x = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    for seed in range(4):
        twin = permute_hidden(tensors, SPEC, torch.Generator().manual_seed(seed))
        # gn1 and gn2 share one order (the residual): gn1's 2 groups of 4 and gn2's 4 groups of 2 both stay whole
        perm = [int(torch.nonzero(tensors["conv1.bias"] == b)) for b in twin["conv1.bias"]]
        assert perm != list(range(8))
        for size in (4, 2):
            assert all(p // size == perm[size * (i // size)] // size for i, p in enumerate(perm)), perm
        with torch.no_grad():
            torch.testing.assert_close(forward(SPEC, twin, x), net(x), rtol=1e-4, atol=1e-5)
    assert rescalable_layers(SPEC) == []  # both convs feed group norms
    torch.testing.assert_close(rescale_hidden(tensors, SPEC, torch.Generator().manual_seed(0)), tensors)
    changed = dict(tensors, **{"gn2.weight": tensors["gn2.weight"] * 1.5})
    permuted, rescaled = embedding_changes(SPEC, tensors, twin, changed)
    assert permuted < 1e-4 and rescaled > 1e-3  # the group norm's scales are seen


def test_a_foreign_group_norm_checkpoint_is_refused_by_name_and_graphified_with_a_spec_file(tmp_path):
    _, tensors = net_and_tensors()
    path = tmp_path / "gn.safetensors"
    save_file({k: v.contiguous() for k, v in tensors.items()}, path)
    with pytest.raises(GraphifyError, match="gn1: 1-D weight and bias without running statistics.*--spec"):
        graphify_checkpoint(str(path), "gn")
    (tmp_path / "gn.json").write_text(SPEC.to_json())
    g = graphify_checkpoint(str(path), "gn", fallback_spec=read_spec_file(tmp_path / "gn.json"))
    assert (g.num_nodes, g.num_edges) == graph_size(SPEC, tensors)


def test_group_counts_that_do_not_split_the_channels_are_refused_in_one_line():
    _, tensors = net_and_tensors()
    bad = ArchSpec(SPEC.input_shape, (SPEC.layers[0], Layer("groupnorm", "gn1", groups=3), *SPEC.layers[2:]))
    with pytest.raises(SpecError, match="groupnorm 'gn1': 8 channels do not split into 3 groups"):
        bad.validate(tensors)
    with pytest.raises(SpecError, match="a groupnorm layer \\(and only one\\) has groups >= 1"):
        Layer("groupnorm", "gn1")


def test_group_counts_that_do_not_nest_permute_only_within_the_cells_they_share():
    # 12 channels under a group norm of 2 groups (6 each) and, through the residual, one of 3 groups (4 each): their
    # partitions share the cells {0,1}, {2,3}, ... only (lcm 6); no permutation that moves a channel across may run
    spec = residual_spec((2, 5, 5), groups=(2, 3))
    gen = torch.Generator().manual_seed(0)
    shapes = {"conv1.weight": (12, 2, 3, 3), "conv2.weight": (12, 12, 3, 3), "head.weight": (3, 12)}
    tensors = {k: torch.randn(*s, generator=gen) for k, s in shapes.items()}
    tensors |= {f"{n}.bias": torch.randn(len(tensors[f"{n}.weight"]), generator=gen) for n in ("conv1", "conv2")}
    tensors["head.bias"] = torch.randn(3, generator=gen)
    tensors |= {f"{n}.{p}": torch.rand(12, generator=gen) + 0.5 for n in ("gn1", "gn2") for p in ("weight", "bias")}
    x = torch.randn(4, 2, 5, 5, generator=gen)
    moved = False
    for seed in range(4):
        twin = permute_hidden(tensors, spec, torch.Generator().manual_seed(seed))
        perm = [int(torch.nonzero(tensors["conv1.bias"] == b)) for b in twin["conv1.bias"]]
        assert all(p // 2 == i // 2 for i, p in enumerate(perm)), perm
        moved |= perm != list(range(12))
        torch.testing.assert_close(forward(spec, twin, x), forward(spec, tensors, x), rtol=1e-4, atol=1e-5)
    assert moved
