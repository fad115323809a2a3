"""Contrastive training in plain PyTorch (no Ray): the one loop behind Ray Train workers, Tune trials and the
trained baselines.

A positive pair is two random views (:func:`raywse.graph.transforms.contrastive_view`) of one model or, with
probability ``same_task_prob``, of two models of the same task. The loss is NT-Xent with in-batch negatives, or
supervised contrastive (every same-task model is a positive), plus an optional accuracy-prediction term.
:func:`train_contrastive` is the epoch loop; it hands each epoch's metrics and state to a ``report`` function, which
is all that differs between Ray Train (``ray.train.report`` with a checkpoint) and Tune (``tune.report``).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import Batch, Data

from raywse.graph.transforms import contrastive_view
from raywse.metrics import kendall_tau, self_retrieval
from raywse.models.encode import encode
from raywse.models.encoder import NeuralGraphEncoder
from raywse.models.losses import alignment, nt_xent, supervised_nt_xent, uniformity


@dataclass
class ContrastiveConfig:
    """Pairs, loss and optimiser of contrastive training."""

    batch_size: int = field(default=32, metadata={"help": "pairs per step and DDP rank (in-batch negatives)"})
    lr: float = field(default=1e-3, metadata={"help": "AdamW learning rate"})
    weight_decay: float = 1e-4
    temperature: float = field(default=0.1, metadata={"help": "NT-Xent temperature tau"})
    same_task_prob: float = field(default=0.5, metadata={"help": "chance a positive is another model of the task"})
    supervised: bool = field(default=False, metadata={"help": "supervised contrastive loss (same task = positive)"})
    accuracy_weight: float = field(default=0.5, metadata={"help": "weight of the accuracy-prediction loss (0: off)"})
    noise: float = field(default=0.05, metadata={"help": "weight noise of a view, in units of each layer's std"})
    edge_drop: float = field(default=0.1, metadata={"help": "edge dropout probability of a view"})
    permute_views: bool = field(default=False, metadata={"help": "also permute hidden neurons in each view"})
    seed: int = 0


@dataclass
class LabelledGraphs:
    """Graphs with what training reads of their models: a task index and the test accuracy, per graph."""

    graphs: list[Data]
    task: np.ndarray
    accuracy: np.ndarray

    def __len__(self) -> int:
        return len(self.graphs)


#: ``views -> (embeddings [n, d], predicted accuracy [n] or None)``: one forward over a list of graphs.
Forward = Callable[[list[Data]], tuple[Tensor, Tensor | None]]


class EmbedAndPredict(nn.Module):
    """``batch -> (embeddings, predicted accuracy or None)`` in one forward, so DDP sees every parameter used."""

    def __init__(self, encoder: NeuralGraphEncoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, batch: Batch) -> tuple[Tensor, Tensor | None]:
        if self.encoder.accuracy is not None:
            return self.encoder.embed_and_predict(batch)
        return self.encoder(batch), None


class ContrastiveLoop:
    """One epoch at a time over ``data`` (graphs already prepared for the model, e.g. padded by the encoder)."""

    def __init__(
        self, config: ContrastiveConfig, data: LabelledGraphs, forward: Forward, optimizer, device="cpu", rank: int = 0
    ):
        self.config, self.data, self.forward, self.optimizer = config, data, forward, optimizer
        self.device, self.rank = device, rank
        self.view = contrastive_view(config.noise, config.edge_drop, config.permute_views)
        self.by_task: dict[int, list[int]] = {}
        for i, task in enumerate(data.task.tolist()):
            self.by_task.setdefault(int(task), []).append(i)
        steps = torch.tensor(max(1, len(data) // config.batch_size), device=device)  # NCCL: on the GPU
        if dist.is_available() and dist.is_initialized():  # every DDP rank must take the same number of steps
            dist.all_reduce(steps, op=dist.ReduceOp.MIN)
        self.steps_per_epoch = int(steps)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass of ``steps_per_epoch`` optimiser steps; mean loss, alignment and uniformity."""
        cfg, task, acc = self.config, self.data.task, self.data.accuracy
        seed = cfg.seed * 100_003 + epoch * 101 + self.rank
        rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)
        order = list(range(len(self.data)))
        rng.shuffle(order)
        totals = {"loss": 0.0, "alignment": 0.0, "uniformity": 0.0}
        for step in range(self.steps_per_epoch):
            anchors = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            partners = [
                rng.choice(self.by_task[int(task[i])]) if rng.random() < cfg.same_task_prob else i for i in anchors
            ]
            members = anchors + partners
            z, acc_pred = self.forward([self.view(self.data.graphs[i], gen) for i in members])
            z1, z2 = z[: len(anchors)], z[len(anchors) :]
            if cfg.supervised:
                loss = supervised_nt_xent(z, torch.as_tensor(task[members], device=z.device), cfg.temperature)
            else:
                loss = nt_xent(z1, z2, cfg.temperature)
            if acc_pred is not None and cfg.accuracy_weight > 0:
                target = torch.as_tensor(acc[members], dtype=acc_pred.dtype, device=acc_pred.device)
                loss = loss + cfg.accuracy_weight * F.mse_loss(acc_pred, target)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            totals["loss"] += loss.item()
            totals["alignment"] += alignment(z1.detach(), z2.detach()).item()
            totals["uniformity"] += uniformity(z1.detach()).item()
        return {k: v / self.steps_per_epoch for k, v in totals.items()}


def validate(encoder: NeuralGraphEncoder, val: LabelledGraphs, device="cpu") -> dict[str, float]:
    """Leave-one-out same-task retrieval within ``val`` and accuracy-prediction Kendall τ (if the head is on)."""
    if len(val) < 2:
        return {}
    encoded = encode(encoder, val.graphs, batch_size=128, device=device)
    retrieval = self_retrieval(encoded.embeddings, val.task, ks=(10,))
    out = {"val_precision@10": retrieval["precision@10"], "val_mAP": retrieval["mAP"]}
    if encoded.accuracy is not None:
        out["val_kendall_tau"] = kendall_tau(encoded.accuracy, val.accuracy)
    return out


#: ``report(metrics, state)`` receives each epoch's metrics and the state to checkpoint (encoder, optimizer, epoch).
Report = Callable[[dict, dict], None]


def train_contrastive(
    encoder: NeuralGraphEncoder,
    train: LabelledGraphs,
    val: LabelledGraphs,
    config: ContrastiveConfig,
    epochs: int,
    report: Report,
    *,
    wrap: Callable[[nn.Module], nn.Module] = lambda model: model,
    device="cpu",
    rank: int = 0,
    resume: dict | None = None,
) -> None:
    """Train ``encoder`` for ``epochs`` (continuing after ``resume["epoch"]`` when given), reporting every epoch.

    ``wrap`` prepares the model for distributed training (Ray Train's ``prepare_model``); ``resume`` is a state
    previously handed to ``report``.
    """
    model = wrap(EmbedAndPredict(encoder))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    start = 0
    if resume is not None:
        encoder.load_state_dict(resume["encoder"])
        optimizer.load_state_dict(resume["optimizer"])
        start = resume["epoch"] + 1
    graphs = LabelledGraphs([encoder.prepare(g) for g in train.graphs], train.task, train.accuracy)

    def forward(views: list[Data]) -> tuple[Tensor, Tensor | None]:
        return model(Batch.from_data_list(views).to(device))

    loop = ContrastiveLoop(config, graphs, forward, optimizer, device, rank)
    for epoch in range(start, epochs):
        model.train()
        metrics = loop.train_epoch(epoch) | validate(encoder, val, device) | {"epoch": epoch}
        report(metrics, {"encoder": encoder.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch})


def fit_steps(config: ContrastiveConfig, data: LabelledGraphs, forward: Forward, params, steps: int) -> list[float]:
    """Train for whole epochs until at least ``steps`` optimiser steps are taken; the loss per epoch."""
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    loop = ContrastiveLoop(config, data, forward, optimizer)
    epochs = -(-steps // loop.steps_per_epoch)
    return [loop.train_epoch(epoch)["loss"] for epoch in range(epochs)]
