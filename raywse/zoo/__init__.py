"""raywse.zoo: a model zoo of really-trained tiny networks on real, offline datasets.

``datasets`` (tasks, interfaces, input normalisations and their train/test tensors), ``plan`` (configuration,
presets and the task-independent sampling of groups), ``batched`` (many same-shaped models trained as one tensor
program), ``group`` (one group's runs and snapshots), ``build`` (Ray fan-out, checkpoints and manifest).
"""

from raywse.zoo.build import build_zoo
from raywse.zoo.datasets import TaskData, TaskSpec, list_tasks, load_task
from raywse.zoo.plan import ZooConfig

__all__ = ["TaskData", "TaskSpec", "ZooConfig", "build_zoo", "list_tasks", "load_task"]
