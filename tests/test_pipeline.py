"""The main job's entry point end to end on the smallest preset: ``python jobs/pipeline.py`` (what ``scripts/demo.sh``
and ``ray job submit -- python jobs/pipeline.py`` run), zoo -> foreign zoo -> graphs -> train -> index -> report."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from raywse.core.artifacts import EncoderFiles, IndexFiles, ReportFiles, RunLayout
from raywse.eval.summary import SUMMARY_METRICS
from raywse.models.baselines import NonEquivariantEncoder
from raywse.models.checkpoint import load_encoder

REPO = Path(__file__).resolve().parents[1]


def test_main_job_end_to_end_on_the_tiny_preset(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "jobs/pipeline.py", "--out-dir", str(out), "--zoo-preset", "tiny", "--train.epochs", "2",
           "--num-cpus", "2"]  # fmt: skip
    env = os.environ | {"RAY_ADDRESS": ""}  # the embedded default: a local Ray of its own
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for stage in ("zoo", "foreign", "graphify", "train", "index", "evaluate"):
        assert f"] {stage} -> " in proc.stdout, stage
    # a run a person can read: one screen, ending with the summary and the report; the rest in the log file
    lines = proc.stdout.splitlines()
    assert len(lines) <= 60 and not proc.stderr.strip(), proc.stdout + proc.stderr
    assert lines[-1] == f"report: {RunLayout(out).report / ReportFiles.REPORT}"
    assert any(line.lstrip().startswith("raywse ") for line in lines)  # the summary table's row
    assert any(re.search(r"activation and the zoo's probe inputs: foreign [01]\.\d{3}, f→zoo [01]\.\d{3}", line)
               for line in lines)  # fmt: skip
    log = (out / "logs" / "demo.log").read_text()
    assert "Dataset" in log and "[6/6] evaluate" in log  # Ray Data's driver logs and the stage lines
    run = RunLayout(out)
    live = run.index / IndexFiles.VERSIONS / (run.index / IndexFiles.CURRENT).read_text().strip()
    assert (live / IndexFiles.INDEX).stat().st_size > 0
    metrics = json.loads((run.report / ReportFiles.METRICS).read_text())
    assert set(metrics["summary"]["raywse"]) == set(SUMMARY_METRICS)
    assert metrics["summary"]["raywse"]["foreign_to_zoo_p10"] is not None
    assert metrics["counts"]["models"] == metrics["counts"]["manifest_models"]
    assert (run.report / ReportFiles.REPORT).read_text().startswith("# raywse evaluation report")
    # the non-equivariant baseline trained as raywse was: Ray Train, the run's config, as many epochs; the steps of an
    # epoch follow the smallest rank's shard, which Ray Data draws anew (one step per rank and epoch either way)
    raywse = json.loads((run.train / EncoderFiles.TRAIN_METRICS).read_text())
    trained = metrics["trained_as_raywse"]["gnn_nonequivariant"]
    assert trained["epochs"] == len(raywse) == 2 and abs(trained["rank_steps"] - raywse[-1]["rank_steps"]) <= 2 * 2
    baseline, _ = load_encoder(run.report / ReportFiles.BASELINE_RUNS / "gnn_nonequivariant" / EncoderFiles.DIR)
    assert isinstance(baseline, NonEquivariantEncoder) and baseline.config.reads_node_order
