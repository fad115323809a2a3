"""Typed records that flow between stages (one row each in the Parquet tables the stages write)."""

from __future__ import annotations

from dataclasses import dataclass, fields

import pyarrow as pa

#: What a search looks for: ``function``, networks that do what the query does (its embedding); ``lineage``, networks
#: that share its initialisation — its parent, its siblings, its fine-tuned children — whatever they do now (its
#: first-layer sketch and a code of its layer structure, ``NeuralGraphEncoder.kinship_form``). Both search one index.
RELATIONS = ("function", "lineage")


@dataclass
class ModelRecord:
    """One checkpoint in a model zoo (a row of ``manifest.parquet``).

    ``path`` is relative to the zoo directory. ``layer_spec`` is :meth:`raywse.core.spec.ArchSpec.to_json`;
    ``hparams`` is a JSON object of training hyper-parameters. ``parent_id`` is empty for models trained from scratch.
    A zoo saves each training run (``run_id``) at several points: ``step`` of the run's ``steps`` (``epoch`` =
    samples seen / train-split size). ``chance_acc`` is the task's majority-class test rate; ``learned`` says whether
    ``test_acc >= chance_acc + 0.1`` (a model that did not learn is never a relevant item of its task).
    ``input_norm`` is the input normalisation the model was trained with (``unit`` or ``standard``).
    """

    model_id: str
    path: str
    task: str
    dataset: str
    num_classes: int
    family: str
    layer_spec: str
    hparams: str
    seed: int
    train_acc: float  # on at most 2,048 evenly spaced training samples (raywse.zoo.group.TRAIN_ACC_SAMPLES)
    test_acc: float
    steps: int
    parent_id: str = ""
    description: str = ""
    run_id: str = ""
    step: int = 0
    epoch: float = 0.0
    chance_acc: float = 0.0
    learned: bool = True
    input_norm: str = "unit"


@dataclass
class GraphifyFailure:
    """A checkpoint that could not be turned into a neural graph, and why."""

    path: str
    model_id: str
    stage: str  # "read" | "spec" | "validate" | "graph"
    reason: str


def records_to_table(records: list, cls: type) -> pa.Table:
    """Build an Arrow table from dataclass records (the schema comes from the dataclass, so empty lists work)."""
    names = [f.name for f in fields(cls)]
    types = {
        "int": pa.int64(),
        "float": pa.float64(),
        "str": pa.string(),
        "bool": pa.bool_(),
    }  # annotations are strings here
    schema = pa.schema([(f.name, types[f.type]) for f in fields(cls)])
    columns = {n: [getattr(r, n) for r in records] for n in names}
    return pa.Table.from_pydict(columns, schema=schema)


def table_to_records(table: pa.Table, cls: type) -> list:
    """Inverse of :func:`records_to_table` (extra columns are ignored)."""
    names = [f.name for f in fields(cls)]
    rows = table.select([n for n in names if n in table.column_names]).to_pylist()
    return [cls(**row) for row in rows]
