"""Contrastive losses and representation-quality metrics on L2-normalised embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def nt_xent(z1: Tensor, z2: Tensor, temperature: float = 0.1) -> Tensor:
    """SimCLR NT-Xent: ``z1[i]`` and ``z2[i]`` are positives, the other ``2B - 2`` embeddings negatives.

    Symmetric (averaged over both directions, all ``2B`` anchors). Inputs are normalised here as well.
    """
    z = F.normalize(torch.cat([z1, z2]), dim=-1)
    n = z1.shape[0]
    sim = z @ z.T / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(sim, target)


def supervised_nt_xent(z: Tensor, labels: Tensor, temperature: float = 0.1) -> Tensor:
    """SupCon (Khosla et al. 2020, L_out): every other sample with the same label is a positive.

    Anchors without any positive are left out; returns 0 if no anchor has one.
    """
    z = F.normalize(z, dim=-1)
    n = z.shape[0]
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    sim = (z @ z.T / temperature).masked_fill(self_mask, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    pos = (labels.view(-1, 1) == labels.view(1, -1)) & ~self_mask
    num_pos = pos.sum(1)
    has_pos = num_pos > 0
    if not bool(has_pos.any()):
        return z.sum() * 0
    mean_log_prob = log_prob.masked_fill(~pos, 0).sum(1)[has_pos] / num_pos[has_pos]
    return -mean_log_prob.mean()


def pairwise_ranking(
    pred: Tensor, target: Tensor, labels: Tensor, margin: float = 0.005, scale: float = 20.0
) -> Tensor:
    """Logistic ranking loss over every pair with one label whose targets differ by more than ``margin``: the pair
    is ordered correctly when ``pred`` orders it as ``target`` does. Returns 0 if there is no such pair."""
    valid = (labels.view(-1, 1) == labels.view(1, -1)) & (target.view(-1, 1) - target.view(1, -1) > margin)
    if not bool(valid.any()):
        return pred.sum() * 0
    return F.softplus(-scale * (pred.view(-1, 1) - pred.view(1, -1)))[valid].mean()


def alignment(z1: Tensor, z2: Tensor, alpha: float = 2.0) -> Tensor:
    """Wang & Isola (2020) alignment: ``E ||z1 - z2||^alpha`` over positive pairs (lower is better)."""
    return (z1 - z2).norm(dim=1).pow(alpha).mean()


def uniformity(z: Tensor, t: float = 2.0) -> Tensor:
    """Wang & Isola (2020) uniformity: ``log E exp(-t ||z_i - z_j||^2)`` over distinct pairs (lower is better)."""
    return torch.pdist(z).pow(2).mul(-t).exp().mean().log()
