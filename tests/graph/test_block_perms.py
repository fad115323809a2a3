"""Block-structured random permutations: every partition they must keep is kept, and they do move things."""

from __future__ import annotations

import pytest
import torch

from raywse.graph.block_perms import grouped_perm, head_perms


def keeps(perm: torch.Tensor, blocks: int) -> bool:
    """Whether ``perm`` maps each of ``blocks`` blocks of consecutive indices onto one whole block."""
    size = len(perm) // blocks
    return all(len({int(i) // size for i in perm[b * size : (b + 1) * size]}) == 1 for b in range(blocks))


@pytest.mark.parametrize(("counts", "n", "kept"), [([], 6, []), ([2], 8, [2]), ([2, 4], 8, [2, 4]), ([2, 3], 12, [6])])
def test_grouped_perms_keep_every_group_norms_partition_and_move(counts, n, kept):
    perms = [grouped_perm(counts, n, torch.Generator().manual_seed(s)) for s in range(6)]
    for perm in perms:
        assert sorted(perm.tolist()) == list(range(n))
        assert all(keeps(perm, blocks) for blocks in [*counts, *kept])
    assert any(perm.tolist() != list(range(n)) for perm in perms)


def test_head_perms_move_queries_keys_and_values_by_the_same_heads():
    qk, v = head_perms(4, 8, 12, torch.Generator().manual_seed(0))
    assert keeps(qk, 4) and keeps(v, 4)
    assert [int(i) // 2 for i in qk[::2]] == [int(i) // 3 for i in v[::3]]  # head order shared
