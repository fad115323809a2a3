"""The report on the real tiny zoo: its files, and its retrieval numbers equal a recomputation from the embeddings."""

from __future__ import annotations

import json

import pytest

from raywse.core.artifacts import ReportFiles
from raywse.core.embeddings import read_embeddings
from raywse.eval.config import HARD, HELD_OUT, RAYWSE, EvalConfig
from raywse.eval.report import evaluate, recompute_metrics
from raywse.models.checkpoint import export_encoder
from raywse.models.encoder import EncoderConfig, NeuralGraphEncoder

TINY = EvalConfig(
    baselines=("weight_stats", "input_saliency", "metadata_text"),
    finetune_tasks=("digits/ge5",),
    finetune_steps=20,
    finetune_eval_every=10,
    finetune_repeats=1,
)


@pytest.fixture(scope="module")
def exported_encoder(tmp_path_factory):
    cfg = EncoderConfig(depth=1, hidden=16, edge_hidden=8, embed_dim=8, accuracy_head=True)
    encoder_dir = tmp_path_factory.mktemp("encoder")
    return encoder_dir, export_encoder(NeuralGraphEncoder(cfg).state_dict(), cfg, encoder_dir)


@pytest.fixture(scope="module")
def report_dir(tiny_zoo, tiny_graphs, exported_encoder, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    assert evaluate(tiny_zoo, tiny_graphs, exported_encoder[0], out, TINY) == out / ReportFiles.REPORT
    return out


def test_outputs_written(report_dir):
    for name in (ReportFiles.REPORT, ReportFiles.METRICS, ReportFiles.PROJECTION, ReportFiles.PRECISION_CURVES):
        assert (report_dir / name).stat().st_size > 0
    saved = {p.stem for p in (report_dir / ReportFiles.EMBEDDINGS).glob("*.parquet")}
    assert saved == {RAYWSE, *TINY.baselines}
    assert not list(report_dir.rglob(".*.tmp"))  # no leftovers of atomic writes


def test_embeddings_carry_their_version(report_dir, exported_encoder):
    metrics = json.loads((report_dir / ReportFiles.METRICS).read_text())
    assert metrics["encoder_version"] == exported_encoder[1]
    for name in (RAYWSE, *TINY.baselines):
        table = read_embeddings(report_dir / ReportFiles.EMBEDDINGS / f"{name}.parquet")
        assert len(table) == metrics["counts"]["models"]
        assert set(table.column("encoder_version").to_pylist()) == {exported_encoder[1] if name == RAYWSE else name}


def test_report_numbers_equal_recomputation(report_dir, tiny_zoo):
    metrics = json.loads((report_dir / ReportFiles.METRICS).read_text())["embedders"]
    again = recompute_metrics(report_dir, tiny_zoo, TINY)
    assert set(again) == set(metrics)
    for name, scores in again.items():
        for split, values in scores.items():
            for key, value in values.items():
                assert metrics[name][split][key] == value, (name, split, key)
    report = (report_dir / ReportFiles.REPORT).read_text()
    p10 = metrics[RAYWSE]["cross_family"]["precision@10"]
    assert p10 is None or f"{p10:.3f}" in report


def test_metrics_cover_every_split_and_arm(report_dir):
    metrics = json.loads((report_dir / ReportFiles.METRICS).read_text())
    for split in (*HELD_OUT, *HARD, "same_family"):
        assert split in metrics["embedders"][RAYWSE]
    assert "head_kendall_tau" in metrics["embedders"][RAYWSE]["held_out"]
    ft = metrics["finetune"]["digits/ge5"]
    assert {"retrieved:raywse", "retrieved:input_saliency", "random", "scratch"} <= set(ft["summary"])
    assert "raywse does" in (report_dir / ReportFiles.REPORT).read_text()  # the plain raywse-vs-saliency statements
