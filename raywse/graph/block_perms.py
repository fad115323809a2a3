"""Random permutations that keep blocks of consecutive indices together: an attention layer's heads, a group
norm's groups (the hidden-neuron symmetries of :mod:`raywse.graph.symmetry` that are not plain shuffles)."""

from __future__ import annotations

import math
from itertools import pairwise

import torch
from torch import Tensor


def head_perms(heads: int, qk: int, v: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``(query/key permutation [qk], value permutation [v])`` of an attention layer: one shuffle of its heads, then
    a shuffle of the dimensions within each head (one for queries and keys: their dot products pair them)."""
    order = torch.randperm(heads, generator=generator).tolist()
    return block_perm(order, qk, generator), block_perm(order, v, generator)


def grouped_perm(counts: list[int], n: int, generator: torch.Generator) -> Tensor:
    """A random permutation of ``n`` channels that keeps each partition into ``counts[i]`` groups of consecutive
    channels (the group norms on them): nested counts (each dividing the next) shuffle the groups of each level
    within the group above and the channels within the finest groups; other counts shuffle only within the cells
    all the partitions share. No counts: any permutation."""
    if not counts:
        return torch.randperm(n, generator=generator)
    if any(b % a for a, b in pairwise(counts)):
        size = n // math.lcm(*counts)
        return torch.cat([c * size + torch.randperm(size, generator=generator) for c in range(n // size)])
    radices = [counts[0], *(b // a for a, b in pairwise(counts)), n // counts[-1]]

    def block(start: int, size: int, level: int) -> list[int]:
        if level == len(radices):
            return [start]
        sub = size // radices[level]
        order = torch.randperm(radices[level], generator=generator).tolist()
        return [i for j in order for i in block(start + j * sub, sub, level + 1)]

    return torch.tensor(block(0, n, 0))


def block_perm(order: list[int], width: int, generator: torch.Generator) -> Tensor:
    """A permutation of ``width`` indices in ``len(order)`` blocks of consecutive ones: the blocks in ``order``, the
    indices within each block shuffled."""
    d = width // len(order)
    return torch.cat([block * d + torch.randperm(d, generator=generator) for block in order])
