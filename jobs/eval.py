"""Evaluation job: raywse vs baselines, report.md + metrics.json + plots:
``python jobs/eval.py --zoo Z --graphs G --encoder E --out REPORT``."""

from _entry import run_stage

if __name__ == "__main__":
    run_stage("eval")
