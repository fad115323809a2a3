"""A foreign model zoo: checkpoints written by plain PyTorch code that knows nothing of raywse.

This script deliberately imports no raywse module. Its networks have their own module names (``net.0``, ``conv1``,
``fc``), its own training loop (SGD with momentum or AdamW, epochs over a shuffled split), its own train/test split
(30% test, seed 1) and its own input normalisation (digits scaled to [-1, 1], tabular features divided by their
largest absolute train value). Checkpoints are plain ``.safetensors`` files without a layer spec, as a user's would
be; ``manifest.csv`` holds what the user knows about each: task, dataset, family, architecture, hidden activation,
test accuracy, chance rate, and whether it learned (test accuracy >= chance + 0.1).

Tasks are partly shared with the raywse zoo (``digits/all10``, ``digits/parity``, ``digits/ge5``, ``iris``,
``wine``, ``breast_cancer``) and partly not (``digits/mod4``).

With ``--zoo-probes FILE`` (the raywse zoo's probe inputs, ``raywse probes --out FILE``) it also writes
``probes.npz``: those inputs under this zoo's normalisation, as a user would prepare them for ``--probe-data``.

Usage: ``python foreign/train_foreign.py --out runs/foreign [--models-per-task 30] [--seed 0] [--zoo-probes FILE]``
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from sklearn import datasets
from sklearn.model_selection import train_test_split
from torch import nn

LABEL_MAPS = {
    "all10": lambda y: y,
    "parity": lambda y: y % 2,
    "ge5": lambda y: (y >= 5).astype(np.int64),
    "mod4": lambda y: y % 4,
}
TASKS = ["digits/all10", "digits/parity", "digits/ge5", "digits/mod4", "iris", "wine", "breast_cancer"]


def load(task: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """This zoo's own split and normalisation of a task: ``x_train, y_train, x_test, y_test``."""
    dataset, _, label_map = task.partition("/")
    d = SOURCES[dataset]()
    y = LABEL_MAPS[label_map](d.target) if dataset == "digits" else d.target
    x_tr, x_te, y_tr, y_te = train_test_split(d.data, y, test_size=0.3, random_state=1, stratify=y)
    norm = normaliser(dataset, x_tr)
    return norm(x_tr).astype(np.float32), y_tr.astype(np.int64), norm(x_te).astype(np.float32), y_te.astype(np.int64)


SOURCES = {"digits": datasets.load_digits, "iris": datasets.load_iris, "wine": datasets.load_wine,
           "breast_cancer": datasets.load_breast_cancer}  # fmt: skip


def normaliser(dataset: str, x_train: np.ndarray):
    """This zoo's input normalisation, from scikit-learn's raw units: digits to [-1, 1], tabular features divided
    by their largest absolute value in the train split ``x_train``."""
    if dataset == "digits":
        return lambda x: x / 8.0 - 1.0
    scale = np.abs(x_train).max(0) + 1e-12
    return lambda x: x / scale


def write_probes(zoo_probes: Path, out: Path) -> None:
    """What a user does to probe their models on the raywse zoo's inputs: read the rows ``raywse probes`` wrote
    (digits pixels in [0, 1], tabular features raw), normalise each as this zoo's inputs, keep each array's name, and
    save them as ``out/probes.npz`` (to pass as ``--probe-data``)."""
    stored = np.load(zoo_probes)
    arrays = {}
    for name in stored.files:
        dataset = name.partition(":")[2]
        if dataset not in SOURCES:
            continue
        raw = stored[name] * 16.0 if dataset == "digits" else stored[name]  # back to scikit-learn's 0-16 pixels
        d = SOURCES[dataset]()
        x_tr = train_test_split(d.data, d.target, test_size=0.3, random_state=1, stratify=d.target)[0]
        arrays[name] = normaliser(dataset, x_tr)(raw).astype(np.float32)
    tmp = out / ".probes.npz.tmp"
    with tmp.open("wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, out / "probes.npz")


class MLP(nn.Module):
    def __init__(self, d_in: int, hidden: list[int], d_out: int, act: type[nn.Module]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for width in hidden:
            layers += [nn.Linear(d_in, width), act()]
            d_in = width
        self.net = nn.Sequential(*layers, nn.Linear(d_in, d_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SmallCNN(nn.Module):
    """Two 3x3 convs, global average pooling, a linear classifier (8x8 digit images)."""

    def __init__(self, c1: int, c2: int, d_out: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, c1, 3, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.fc = nn.Linear(c2, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv1(x.view(-1, 1, 8, 8)))
        h = torch.relu(self.conv2(h))
        return self.fc(h.mean(dim=(2, 3)))


def make_model(rng: random.Random, family: str, d_in: int, d_out: int) -> tuple[nn.Module, str, str]:
    """A fresh network, its description and its hidden activation."""
    if family == "cnn":
        c1, c2 = rng.choice([6, 12]), rng.choice([12, 24])
        return SmallCNN(c1, c2, d_out), f"cnn conv{c1}-conv{c2}-gap-fc", "relu"
    hidden = [rng.choice([24, 48, 96]) for _ in range(rng.choice([1, 2]))]
    act = rng.choice([nn.ReLU, nn.Tanh])
    name = act.__name__.lower()
    return MLP(d_in, hidden, d_out, act), f"mlp {'-'.join(map(str, hidden))} {name}", name


def train(model: nn.Module, data: tuple, rng: random.Random, seed: int) -> tuple[float, str]:
    """Train with this zoo's own loop; returns test accuracy and a recipe string."""
    x_tr, y_tr, x_te, y_te = (torch.from_numpy(a) for a in data)
    if rng.random() < 0.5:
        lr = rng.choice([0.02, 0.05, 0.1])
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
        recipe = f"sgd lr {lr}"
    else:
        lr = rng.choice([1e-3, 3e-3, 1e-2])
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
        recipe = f"adamw lr {lr}"
    epochs, batch = rng.choice([10, 20, 40]), 32
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(x_tr), generator=gen).split(batch):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x_tr[idx]), y_tr[idx]).backward()
            opt.step()
    with torch.no_grad():
        acc = float((model(x_te).argmax(-1) == y_te).float().mean())
    return acc, f"{recipe}, {epochs} epochs"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--models-per-task", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--zoo-probes", help="the raywse zoo's probe inputs (raywse probes --out FILE): also write "
                    "probes.npz, those inputs normalised as this zoo's")  # fmt: skip
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    if args.zoo_probes and not (out / "probes.npz").exists():
        write_probes(Path(args.zoo_probes), out)
    manifest = out / "manifest.csv"
    if manifest.exists():
        print(f"foreign zoo already built: {manifest}")
        return
    rng = random.Random(args.seed)
    rows, start = [], time.perf_counter()
    for task in TASKS:
        data = load(task)
        d_in, d_out = data[0].shape[1], int(data[1].max()) + 1
        chance = float(np.bincount(data[3]).max() / len(data[3]))
        for i in range(args.models_per_task):
            family = "cnn" if task.startswith("digits") and i % 4 == 3 else "mlp"
            seed = rng.randrange(2**31)
            torch.manual_seed(seed)
            model, arch, activation = make_model(rng, family, d_in, d_out)
            acc, recipe = train(model, data, rng, seed)
            name = f"{task.replace('/', '_')}_{i:03d}"
            tmp = out / "checkpoints" / f".{name}.tmp"
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp), {"format": "pt"})
            os.replace(tmp, out / "checkpoints" / f"{name}.safetensors")
            rows.append({"file": f"checkpoints/{name}.safetensors", "model_id": f"foreign/{name}", "task": task,
                         "dataset": task.partition("/")[0], "family": family, "arch": arch,
                         "activation": activation, "recipe": recipe, "test_acc": acc, "chance_acc": chance,
                         "learned": acc >= chance + 0.1})  # fmt: skip
    tmp = out / ".manifest.csv.tmp"
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, manifest)
    learned = sum(r["learned"] for r in rows)
    print(f"foreign zoo: {len(rows)} models ({learned} learned) in {time.perf_counter() - start:.0f} s -> {out}")


if __name__ == "__main__":
    main()
