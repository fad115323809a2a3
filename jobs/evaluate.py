"""Evaluation job: ``python jobs/evaluate.py --zoo Z --graphs G --encoder E --out DIR`` (or via ``ray job submit``)."""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout or an uploaded working dir

from raywse.eval.report import EvalConfig, evaluate  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="raywse evaluation report (raywse vs baselines, hard splits)")
    parser.add_argument("--zoo", required=True, type=Path, help="zoo dir (manifest.parquet + models/)")
    parser.add_argument("--graphs", required=True, type=Path, help="graphify output dir")
    parser.add_argument("--encoder", required=True, type=Path, help="exported encoder dir (encoder.pt + config.json)")
    parser.add_argument("--out", required=True, type=Path, help="output dir for report.md, metrics.json, figures")
    parser.add_argument("--baselines", default=",".join(EvalConfig.baselines), help="comma-separated baseline names")
    parser.add_argument("--finetune-tasks", default=",".join(EvalConfig.finetune_tasks), help="comma-separated tasks")
    parser.add_argument("--finetune-steps", type=int, default=EvalConfig.finetune_steps)
    parser.add_argument("--baseline-train-steps", type=int, default=EvalConfig.baseline_train_steps)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for flag, path in (("--zoo", args.zoo), ("--graphs", args.graphs), ("--encoder", args.encoder)):
        if not path.is_dir():
            print(f"error: {flag} {path}: no such directory", file=sys.stderr)
            return 2
    config = EvalConfig(
        baselines=tuple(b for b in args.baselines.split(",") if b),
        finetune_tasks=tuple(t for t in args.finetune_tasks.split(",") if t),
        finetune_steps=args.finetune_steps,
        baseline_train_steps=args.baseline_train_steps,
        seed=args.seed,
    )
    try:
        report = evaluate(args.zoo, args.graphs, args.encoder, args.out, config)
    except (FileNotFoundError, KeyError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
