"""Weight-space symmetries keep the function of the real tiny-zoo checkpoints on their tasks' real test inputs.

Covers every (family, hidden activation) combination in the zoo manifest, with one checkpoint per distinct
architecture (layer spec) within each combination.
"""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
import torch

from raywse.core.artifacts import ZooFiles
from raywse.core.forward import forward
from raywse.core.io import load_checkpoint
from raywse.core.spec import POSITIVELY_HOMOGENEOUS, ArchSpec
from raywse.graph.symmetry import permute_hidden, rescalable_layers, rescale_hidden
from raywse.zoo.arch import FAMILIES
from raywse.zoo.datasets import load_task

TOL = 1e-5


def hidden_activation(spec: ArchSpec) -> str:
    """The activation(s) of the model (the zoo uses one per model; a ResNet's sit on its batch norms and adds)."""
    return "+".join(sorted({ly.activation for ly in spec.layers if ly.activation != "none"})) or "none"


@pytest.fixture(scope="module")
def zoo_models(tiny_zoo) -> dict[tuple[str, str], list[dict]]:
    """``(family, activation) -> manifest rows``, one row per distinct layer spec."""
    groups: dict[tuple[str, str], dict[str, dict]] = {}
    for row in pq.read_table(tiny_zoo / ZooFiles.MANIFEST).to_pylist():
        key = (row["family"], hidden_activation(ArchSpec.from_json(row["layer_spec"])))
        groups.setdefault(key, {}).setdefault(row["layer_spec"], row)
    return {key: list(by_spec.values()) for key, by_spec in sorted(groups.items())}


def _changed(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    return [k for k in a if not torch.equal(a[k], b[k])]


def test_zoo_covers_every_family(zoo_models):
    families = {family for family, _ in zoo_models}
    assert families == set(FAMILIES), sorted(zoo_models)
    print("combinations:", {key: len(rows) for key, rows in zoo_models.items()})


def test_symmetries_preserve_zoo_functions(tiny_zoo, zoo_models):
    torch.set_num_threads(1)
    report = []
    for (family, act), rows in zoo_models.items():
        for i, row in enumerate(rows):
            spec = ArchSpec.from_json(row["layer_spec"])
            tensors, metadata = load_checkpoint(tiny_zoo / row["path"])
            assert metadata["model_id"] == row["model_id"]
            task = load_task(row["task"], row["input_norm"])
            x = task.x_test.reshape(-1, *spec.input_shape)
            with torch.no_grad():  # the real test inputs: the stored checkpoint reproduces its recorded accuracy
                accuracy = (forward(spec, tensors, x).argmax(-1) == task.y_test).double().mean().item()
            assert accuracy == pytest.approx(row["test_acc"], abs=1e-9), row["model_id"]

            # Evaluated (and the twins built) in float64: in float32 the changed summation order alone moves the
            # logits (up to ~50 in this zoo) by up to ~1.2e-5 > TOL; in float64 the twins agree to ~1e-14.
            t64, x64 = {k: v.double() for k, v in tensors.items()}, x.double()
            gen = torch.Generator().manual_seed(1000 + i)
            twins = {"permuted": permute_hidden(t64, spec, gen)}
            rescalable = rescalable_layers(spec)
            # every hidden layer is rescalable exactly when the activation is positively homogeneous
            assert bool(rescalable) == all(a in POSITIVELY_HOMOGENEOUS for a in act.split("+")), (act, rescalable)
            if rescalable:
                twins["rescaled"] = rescale_hidden(t64, spec, gen)
            with torch.no_grad():
                y = forward(spec, t64, x64)
                for name, twin in twins.items():
                    changed = _changed(twin, t64)
                    assert len(changed) >= 2, (row["model_id"], name, changed)  # a layer's out and the next's in
                    diff = float((forward(spec, twin, x64) - y).abs().max())
                    report.append((family, act, row["model_id"], name, diff))
                    assert diff <= TOL, (family, act, row["model_id"], name, diff)
    for line in report:
        print(*line)
    assert {(f, a) for f, a, *_ in report} == set(zoo_models)
    assert any(name == "rescaled" for *_, name, _ in report)
