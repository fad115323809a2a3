"""The contrastive batch sampler: hard negatives from one input group, models spread over families."""

from __future__ import annotations

import random

import numpy as np
import torch
from torch_geometric.data import Data

from raywse.graph.schema import NodeKind, NodeType
from raywse.models.contrastive import ContrastiveConfig, LabelledGraphs, TaskSampler


def fake_graph(source: str, outputs: int, conv: bool) -> Data:
    kinds = torch.tensor([int(NodeKind.INPUT)] + [int(NodeKind.OUTPUT)] * outputs)
    types = torch.full((outputs + 1,), int(NodeType.CONV if conv else NodeType.LINEAR))
    layers = torch.tensor([0] + [1] * outputs)
    edges = torch.stack([torch.zeros(outputs, dtype=torch.long), torch.arange(1, outputs + 1)])  # input -> outputs
    return Data(node_kind=kinds, node_type=types, node_layer=layers, edge_index=edges, probe_source=source,
                num_nodes=outputs + 1)  # fmt: skip


def test_a_step_draws_hard_negatives_from_one_group_and_both_families():
    graphs, tasks = [], []
    # tasks 0-3: digits inputs, 10 outputs (one group); tasks 4-7: wine inputs, 3 outputs; two families each
    for task in range(8):
        source, outputs = ("train:digits", 10) if task < 4 else ("train:wine", 3)
        for i in range(6):
            norm = "unit" if i < 3 else "standard"  # one group whatever the normalisation
            graphs.append(fake_graph(f"{source}|{norm}", outputs, conv=i % 2 == 1))
            tasks.append(task)
    data = LabelledGraphs(graphs, np.array(tasks), np.zeros(len(graphs)))
    assert len(set(data.group.tolist())) == 2 and len(set(data.family.tolist())) == 2
    config = ContrastiveConfig(batch_tasks=4, models_per_task=4, hard_task_fraction=1.0)
    sampler = TaskSampler(data, config)
    rng = random.Random(0)
    for _ in range(20):
        members = sampler.draw(rng)
        assert len(members) == 16
        drawn = [data.task[i] for i in members]
        assert len(set(drawn)) == 4 and len({data.group[i] for i in members}) == 1  # all four from one group
        assert len(set(members)) == 16  # each task has 6 models: no model twice in one step
        for task in set(drawn):
            assert {data.family[i] for i in members if data.task[i] == task} == {0, 1}  # both families


def test_a_step_has_a_fixed_size_even_with_fewer_tasks_than_asked():
    """DDP ranks gather equal shapes, so a rank whose shard holds few tasks still draws a full batch."""
    graphs = [fake_graph("train:digits|unit", 10, conv=False) for _ in range(6)]
    data = LabelledGraphs(graphs, np.array([0, 0, 0, 1, 1, 1]), np.zeros(6))
    sampler = TaskSampler(data, ContrastiveConfig(batch_tasks=8, models_per_task=4))
    members = sampler.draw(random.Random(0))
    assert len(members) == 32 and {data.task[i] for i in members} == {0, 1}
