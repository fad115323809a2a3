"""Contrastive losses: sanity values and a short toy training run."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from raywse.models.contrastive import ContrastiveConfig, EmbedAndPredict, fit_steps
from raywse.models.embedder import labelled
from raywse.models.encoder import EncoderConfig, NeuralGraphEncoder
from raywse.models.losses import alignment, nt_xent, pairwise_ranking, supervised_nt_xent, uniformity


def test_nt_xent_perfect_and_random():
    torch.manual_seed(0)
    z = F.normalize(torch.randn(64, 128), dim=-1)
    assert nt_xent(z, z, temperature=0.05) < 0.1
    random_loss = nt_xent(torch.randn(64, 128), torch.randn(64, 128), temperature=10.0)
    assert abs(float(random_loss) - math.log(2 * 64 - 1)) < 0.05


def test_supervised_nt_xent_prefers_label_clusters():
    torch.manual_seed(0)
    labels = torch.arange(8).repeat_interleave(4)
    centres = F.normalize(torch.randn(8, 32), dim=-1)
    clustered = centres[labels] + 0.01 * torch.randn(32, 32)
    assert supervised_nt_xent(clustered, labels) < supervised_nt_xent(torch.randn(32, 32), labels)
    assert supervised_nt_xent(torch.randn(4, 8), torch.arange(4)) == 0


def test_pairwise_ranking_scores_order_within_a_label_only():
    target = torch.tensor([0.9, 0.5, 0.9, 0.1])
    labels = torch.tensor([0, 0, 1, 1])
    right = pairwise_ranking(torch.tensor([0.8, 0.2, 0.7, 0.3]), target, labels)
    wrong = pairwise_ranking(torch.tensor([0.2, 0.8, 0.3, 0.7]), target, labels)
    assert right < 0.1 < wrong
    shifted = torch.tensor([0.3, -0.3, 0.9, 0.5])  # same gaps within each label, other order across labels
    assert torch.isclose(pairwise_ranking(shifted, target, labels), right)
    assert pairwise_ranking(target, target, torch.arange(4)) == 0


def test_alignment_uniformity():
    torch.manual_seed(0)
    z = F.normalize(torch.randn(256, 16), dim=-1)
    assert alignment(z, z) == 0
    collapsed = F.normalize(torch.ones(256, 16), dim=-1)
    assert uniformity(z) < uniformity(collapsed + 1e-4 * torch.randn(256, 16))


def test_toy_training_reduces_loss(graphs):
    torch.manual_seed(0)
    config = EncoderConfig(depth=2, hidden=32, edge_hidden=16, embed_dim=16, accuracy_head=False, fingerprint_dim=0)
    encoder = NeuralGraphEncoder(config)  # the learned part only: the fixed fingerprint has nothing to learn
    data = labelled([encoder.prepare(g) for g in graphs], None)
    config = ContrastiveConfig(
        batch_tasks=len(graphs), models_per_task=1, lr=3e-3, temperature=0.2, instance_weight=0, accuracy_weight=0
    )
    model = EmbedAndPredict(encoder).train()
    history = fit_steps(config, data, model, model.parameters(), 30)
    first, last = sum(history[:10]) / 10, sum(history[-10:]) / 10
    print(f"toy NT-Xent: first 10 steps {first:.3f}, last 10 steps {last:.3f}")
    assert len(history) == 30 and last < first
