"""raywse.zoo: a model zoo of really-trained tiny networks on real, offline datasets.

``datasets`` (tasks, interfaces, input normalisations and their train/test tensors), ``plan`` (configuration,
presets and the task-independent sampling of groups), ``batched`` (many same-shaped models trained as one tensor
program), ``group`` (one group's runs and snapshots), ``build`` (Ray fan-out, checkpoints and manifest).
Nothing is imported here, so that reading a task's probes does not start Ray or sklearn.
"""
