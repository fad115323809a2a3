"""Contrastive training in plain PyTorch (no Ray): the one loop behind Ray Train workers, Tune trials and the
trained baselines.

A step draws ``batch_tasks`` tasks — the first at random, a ``hard_task_fraction`` of the rest from the first one's
*group* (same inputs and output count, another label map: hard negatives), the others at random — and
``models_per_task`` models of each, spread over the task's families (cross-family positives). Each model gives two
random views (:func:`raywse.graph.transforms.contrastive_view`). The loss is supervised contrastive over every view
(same task = positive, never a negative; negatives gathered across DDP ranks), plus an instance term (NT-Xent between
the two views of one model, so near-duplicates and lineage stay close) and, with an accuracy head, a mean-squared
error plus a within-task ranking loss on the predicted accuracy. :func:`train_contrastive` is the epoch loop; it hands
each epoch's metrics and state to a ``report`` function, which is all that differs between Ray Train
(``ray.train.report`` with a checkpoint) and Tune (``tune.report``).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import Batch, Data

from raywse.graph.kernels import kernel_shape_batches
from raywse.graph.probes import probe_rows
from raywse.graph.schema import NodeKind, NodeType
from raywse.graph.transforms import contrastive_view
from raywse.metrics import kendall_tau, self_retrieval
from raywse.models.encode import encode
from raywse.models.encoder import NeuralGraphEncoder
from raywse.models.losses import alignment, nt_xent, pairwise_ranking, supervised_nt_xent, uniformity


@dataclass
class ContrastiveConfig:
    """Batches, loss and optimiser of contrastive training."""

    batch_tasks: int = field(default=8, metadata={"help": "tasks per step and DDP rank"})
    models_per_task: int = field(default=4, metadata={"help": "models of each task per step (two views each)"})
    hard_task_fraction: float = field(
        default=0.5, metadata={"help": "share of a step's tasks drawn from one group (same inputs, other labels)"}
    )
    lr: float = field(default=1e-3, metadata={"help": "AdamW learning rate"})
    weight_decay: float = 1e-4
    temperature: float = field(default=0.1, metadata={"help": "contrastive temperature tau"})
    instance_weight: float = field(default=0.5, metadata={"help": "weight of the two-views-of-one-model term"})
    accuracy_weight: float = field(default=0.5, metadata={"help": "weight of the accuracy losses (0: no head)"})
    noise: float = field(default=0.02, metadata={"help": "weight noise of a view, in units of each layer's std"})
    edge_drop: float = field(default=0.05, metadata={"help": "edge dropout probability of a view"})
    hide_probes: float = field(default=0.1, metadata={"help": "chance a view has its probe responses hidden"})
    permute_views: bool = field(default=False, metadata={"help": "also permute hidden neurons in each view"})
    seed: int = 0


def input_group(graph: Data) -> str:
    """What a graph's model takes in and gives out, read from the graph alone: its probe rows (the input space it was
    probed in, whatever its normalisation) and its output count. Tasks of one group differ only in their labels:
    hard negatives."""
    return f"{probe_rows(graph.probe_source)}|{int((graph.node_kind == NodeKind.OUTPUT).sum())}"


def family(graph: Data) -> str:
    """Read from the graph alone: ``transformer`` when it has attention queries, ``resnet`` when an edge skips a
    layer (a residual connection), else ``cnn`` when any neuron is a conv channel, else ``mlp``."""
    if bool((graph.node_type == NodeType.ATTENTION_QUERY).any()):
        return "transformer"
    src, dst = graph.edge_index
    if bool((graph.node_layer[dst] - graph.node_layer[src] > 1).any()):
        return "resnet"
    return "cnn" if bool((graph.node_type == NodeType.CONV).any()) else "mlp"


def _codes(values: list[str]) -> np.ndarray:
    index = {v: i for i, v in enumerate(sorted(set(values)))}
    return np.array([index[v] for v in values], dtype=np.int64)


@dataclass
class LabelledGraphs:
    """Graphs with what training reads of their models, per graph: a task index and the test accuracy; the input
    group and family indices are read from the graphs (:func:`input_group`, :func:`family`)."""

    graphs: list[Data]
    task: np.ndarray
    accuracy: np.ndarray
    group: np.ndarray = field(init=False)
    family: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.group = _codes([input_group(g) for g in self.graphs])
        self.family = _codes([family(g) for g in self.graphs])

    def __len__(self) -> int:
        return len(self.graphs)


#: The views of a step as ``(rows, batch)`` pairs, one batch per kernel shape (a loop built with
#: ``batched_views=False``): ``rows`` are the views' positions among the step's views.
ShapeBatches = list[tuple[list[int], Batch]]
#: ``views -> (embeddings [n, d], predicted accuracy [n] or None)``: one forward over the views of a step, a collated
#: ``Batch`` (or :data:`ShapeBatches`).
Forward = Callable[[Batch | ShapeBatches], tuple[Tensor, Tensor | None]]


class EmbedAndPredict(nn.Module):
    """``batch -> (embeddings, predicted accuracy or None)`` in one forward, so DDP sees every parameter used."""

    def __init__(self, encoder: NeuralGraphEncoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, batch: Batch) -> tuple[Tensor, Tensor | None]:
        if self.encoder.accuracy is not None:
            return self.encoder.embed_and_predict(batch)
        return self.encoder(batch), None


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _distributed() -> bool:
    return _world_size() > 1


def gather_across_ranks(z: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Every rank's embeddings (gradients flow back to each rank's own) and labels; the inputs without DDP."""
    if not _distributed():
        return z, labels
    gathered = [torch.empty_like(labels) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, labels)
    return _GatherWithGrad.apply(z), torch.cat(gathered)


class _GatherWithGrad(torch.autograd.Function):
    """All ranks' tensors concatenated; the backward pass hands each rank the summed gradient of its own slice
    (what ``torch.distributed.nn.all_gather`` did before its deprecation, for any backend)."""

    @staticmethod
    def forward(ctx, z: Tensor) -> Tensor:
        parts = [torch.empty_like(z) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, z.contiguous())
        ctx.rows = z.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()  # all_reduce works in place; autograd may share the incoming gradient
        dist.all_reduce(grad)
        start = dist.get_rank() * ctx.rows
        return grad[start : start + ctx.rows]


class TaskSampler:
    """Draws the models of one step (see the module docstring) from task, group and family indices."""

    def __init__(self, data: LabelledGraphs, config: ContrastiveConfig):
        self.config = config
        self.members: dict[int, dict[int, list[int]]] = {}  # task -> family -> model indices
        self.group_tasks: dict[int, list[int]] = {}
        self.task_group: dict[int, int] = {}
        for i, (t, g, f) in enumerate(zip(data.task.tolist(), data.group.tolist(), data.family.tolist(), strict=True)):
            self.members.setdefault(t, {}).setdefault(f, []).append(i)
            if t not in self.task_group:
                self.task_group[t] = g
                self.group_tasks.setdefault(g, []).append(t)
        self.tasks = sorted(self.members)
        if not self.tasks:
            raise ValueError("no training models to draw from (every model filtered out, or an empty DDP shard)")

    def draw(self, rng: random.Random) -> list[int]:
        """``batch_tasks * models_per_task`` model indices (tasks repeat their models when there are fewer tasks)."""
        cfg = self.config
        k = min(cfg.batch_tasks, len(self.tasks))
        first = rng.choice(self.tasks)
        peers = [t for t in self.group_tasks[self.task_group[first]] if t != first]
        hard = rng.sample(peers, min(len(peers), round(cfg.hard_task_fraction * (k - 1))))
        chosen = {first, *hard}
        others = [t for t in self.tasks if t not in chosen]
        tasks = [first, *hard, *rng.sample(others, min(len(others), k - len(chosen)))]
        total = cfg.batch_tasks * cfg.models_per_task  # fixed, so every DDP rank gathers equal shapes
        models = []
        for j, t in enumerate(tasks):
            count = total // len(tasks) + (j < total % len(tasks))
            models += self._spread(t, count, rng)
        return models

    def _spread(self, task: int, count: int, rng: random.Random) -> list[int]:
        """``count`` models of ``task``, round-robin over its families, distinct while the task has enough."""
        pools = [rng.sample(ms, len(ms)) for ms in self.members[task].values()]
        rng.shuffle(pools)
        order = [m for group in itertools.zip_longest(*pools) for m in group if m is not None]
        return [order[i % len(order)] for i in range(count)]


class ContrastiveLoop:
    """One epoch at a time over ``data`` (graphs already prepared for the model, e.g. padded by the encoder)."""

    def __init__(
        self,
        config: ContrastiveConfig,
        data: LabelledGraphs,
        forward: Forward,
        optimizer,
        device="cpu",
        rank: int = 0,
        batched_views: bool = True,
    ):
        self.config, self.data, self.forward, self.optimizer = config, data, forward, optimizer
        self.device, self.rank, self.batched_views = device, rank, batched_views
        self.view = contrastive_view(config.noise, config.edge_drop, config.permute_views, config.hide_probes)
        self.sampler = TaskSampler(data, config)
        per_step = config.batch_tasks * config.models_per_task
        steps = torch.tensor(max(1, len(data) // per_step), device=device)  # NCCL: on the GPU
        if dist.is_available() and dist.is_initialized():  # every DDP rank must take the same number of steps
            dist.all_reduce(steps, op=dist.ReduceOp.MIN)
        self.steps_per_epoch = int(steps)

    def loss(self, members: list[int], z: Tensor, acc_pred: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """The step's loss from the embeddings of both views (first views, then second views)."""
        cfg, n = self.config, len(members)
        labels = torch.as_tensor(self.data.task[members], device=z.device).repeat(2)
        z_all, labels_all = gather_across_ranks(z, labels)
        loss = supervised_nt_xent(z_all, labels_all, cfg.temperature)
        z1, z2 = z[:n], z[n:]
        if cfg.instance_weight > 0:
            loss = loss + cfg.instance_weight * nt_xent(z1, z2, cfg.temperature)
        if acc_pred is not None and cfg.accuracy_weight > 0:
            target = torch.as_tensor(self.data.accuracy[members], dtype=acc_pred.dtype, device=z.device).repeat(2)
            accuracy_loss = F.mse_loss(acc_pred, target) + pairwise_ranking(acc_pred, target, labels)
            loss = loss + cfg.accuracy_weight * accuracy_loss
        return loss, z1, z2

    def views(self, members: list[int], gen: torch.Generator) -> Batch | ShapeBatches:
        """Two views of every member (first views, then second views), made on collated batches in one pass each:
        the step's one batch, or (``batched_views=False``: graphs whose kernels differ and are not padded) one
        batch per kernel shape, with the rows it holds."""
        originals = [self.data.graphs[i] for i in members] * 2
        if self.batched_views:
            return self.view(Batch.from_data_list(originals), gen)
        return [
            (rows, self.view(Batch.from_data_list([originals[i] for i in rows]), gen))
            for rows in kernel_shape_batches(originals, len(originals))
        ]

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass of ``steps_per_epoch`` optimiser steps; mean loss, alignment and uniformity."""
        seed = self.config.seed * 100_003 + epoch * 101 + self.rank
        rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)
        totals = {"loss": 0.0, "alignment": 0.0, "uniformity": 0.0}
        for _ in range(self.steps_per_epoch):
            members = self.sampler.draw(rng)
            z, acc_pred = self.forward(self.views(members, gen))
            loss, z1, z2 = self.loss(members, z, acc_pred)
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

    def forward(views: Batch) -> tuple[Tensor, Tensor | None]:
        return model(views.to(device))

    loop = ContrastiveLoop(config, graphs, forward, optimizer, device, rank)
    for epoch in range(start, epochs):
        model.train()
        steps = (epoch + 1) * loop.steps_per_epoch * _world_size()  # graphs seen = steps x one rank's batch
        metrics = loop.train_epoch(epoch) | validate(encoder, val, device) | {"epoch": epoch, "rank_steps": steps}
        report(metrics, {"encoder": encoder.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch})


def fit_steps(
    config: ContrastiveConfig, data: LabelledGraphs, forward: Forward, params, steps: int, batched_views: bool = True
) -> list[float]:
    """Train for whole epochs until at least ``steps`` optimiser steps are taken; the loss per epoch."""
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    loop = ContrastiveLoop(config, data, forward, optimizer, batched_views=batched_views)
    epochs = -(-steps // loop.steps_per_epoch)
    return [loop.train_epoch(epoch)["loss"] for epoch in range(epochs)]
