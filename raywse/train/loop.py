"""The contrastive training loop in plain PyTorch (no Ray): shared by Ray Train workers and Tune trials."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch_geometric.data import Batch, Data

from raywse.eval.metrics import kendall_tau, self_retrieval
from raywse.models.augment import make_view
from raywse.models.encoder import NeuralGraphEncoder
from raywse.models.losses import alignment, nt_xent, supervised_nt_xent, uniformity


@dataclass
class LoopConfig:
    batch_size: int
    temperature: float
    same_task_prob: float
    supervised: bool
    accuracy_weight: float
    noise: float
    edge_drop: float
    seed: int


class EmbedAndPredict(nn.Module):
    """``batch -> (embeddings, predicted accuracy or None)`` in one forward, so DDP sees every parameter used."""

    def __init__(self, encoder: NeuralGraphEncoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.encoder.config.accuracy_head:
            return self.encoder.embed_and_predict(batch)
        return self.encoder(batch), None


class ContrastiveLoop:
    """Positive pairs, NT-Xent (or supervised contrastive) and the optional accuracy loss, epoch by epoch.

    ``graphs`` carry ``task_label`` (int) and ``accuracy`` (float) attributes. A positive pair is two augmented views
    (rescaling, weight noise, edge dropout) of one model, or with probability ``same_task_prob`` of two models of
    the same task. ``model`` is the (possibly DDP-wrapped) :class:`EmbedAndPredict` around ``encoder``; graphs are
    padded once to the encoder's kernel size so MLP and CNN graphs batch together.
    """

    def __init__(
        self,
        config: LoopConfig,
        graphs: list[Data],
        encoder: NeuralGraphEncoder,
        model: nn.Module,
        optimizer,
        device,
        rank: int = 0,
    ):
        self.config, self.model, self.optimizer = config, model, optimizer
        self.graphs = [encoder.prepare(g) for g in graphs]
        self.device, self.rank = device, rank
        self.by_task: dict[int, list[int]] = {}
        for i, g in enumerate(graphs):
            self.by_task.setdefault(int(g.task_label), []).append(i)
        steps = torch.tensor(max(1, len(self.graphs) // config.batch_size), device=device)  # NCCL: on the GPU
        if dist.is_available() and dist.is_initialized():  # every DDP rank must take the same number of steps
            dist.all_reduce(steps, op=dist.ReduceOp.MIN)
        self.steps_per_epoch = int(steps)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        cfg = self.config
        seed = cfg.seed * 100_003 + epoch * 101 + self.rank
        rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)
        order = list(range(len(self.graphs)))
        rng.shuffle(order)
        self.model.train()
        totals = {"loss": 0.0, "alignment": 0.0, "uniformity": 0.0}
        for step in range(self.steps_per_epoch):
            anchors = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            partners = [
                rng.choice(self.by_task[int(self.graphs[i].task_label)]) if rng.random() < cfg.same_task_prob else i
                for i in anchors
            ]
            members = [self.graphs[i] for i in anchors + partners]
            views = [make_view(g, gen, noise=cfg.noise, edge_drop=cfg.edge_drop) for g in members]
            z, acc_pred = self.model(Batch.from_data_list(views).to(self.device))
            z1, z2 = z[: len(anchors)], z[len(anchors) :]
            if cfg.supervised:
                task = torch.tensor([int(g.task_label) for g in members], device=self.device)
                loss = supervised_nt_xent(z, task, cfg.temperature)
            else:
                loss = nt_xent(z1, z2, cfg.temperature)
            if acc_pred is not None and cfg.accuracy_weight > 0:
                acc = torch.tensor([float(g.accuracy) for g in members], device=self.device)
                loss = loss + cfg.accuracy_weight * F.mse_loss(acc_pred, acc)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            totals["loss"] += loss.item()
            totals["alignment"] += alignment(z1.detach(), z2.detach()).item()
            totals["uniformity"] += uniformity(z1.detach()).item()
        return {k: v / self.steps_per_epoch for k, v in totals.items()}


@torch.no_grad()
def validate(encoder: NeuralGraphEncoder, graphs: list[Data], device, batch_size: int = 128) -> dict[str, float]:
    """Leave-one-out same-task retrieval among ``graphs`` and accuracy-prediction Kendall tau (if the head is on)."""
    if len(graphs) < 2:
        return {}
    encoder.eval()
    graphs = [encoder.prepare(g) for g in graphs]
    z, acc_pred = [], []
    for start in range(0, len(graphs), batch_size):
        batch = Batch.from_data_list(graphs[start : start + batch_size]).to(device)
        if encoder.config.accuracy_head:
            emb, acc = encoder.embed_and_predict(batch)
            acc_pred.append(acc.cpu())
        else:
            emb = encoder(batch)
        z.append(emb.cpu())
    retrieval = self_retrieval(torch.cat(z).numpy(), np.array([int(g.task_label) for g in graphs]), ks=(10,))
    out = {"val_precision@10": retrieval["precision@10"], "val_mAP": retrieval["mAP"]}
    if acc_pred:
        out["val_kendall_tau"] = kendall_tau(torch.cat(acc_pred).numpy(), np.array([g.accuracy for g in graphs]))
    return out
