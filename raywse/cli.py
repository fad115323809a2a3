"""``raywse``: one command, a subcommand per stage. Thin: parse, call the package, print."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from raywse.config import ConfigError, add_config_args, config_from_args

USER_ERRORS: tuple[type[Exception], ...] = (FileNotFoundError, NotADirectoryError, ConfigError)


def _cmd_zoo(args: argparse.Namespace) -> None:
    from raywse.raycluster import ensure_ray
    from raywse.zoo.build import ZooConfig, build_zoo

    ensure_ray()
    manifest = build_zoo(config_from_args(ZooConfig, args), args.out)
    print(f"zoo manifest: {manifest}")


def _cmd_graphify(args: argparse.Namespace) -> None:
    from raywse.data.graphify import GraphifyConfig, graphify

    source = args.source[0] if len(args.source) == 1 else list(args.source)
    result = graphify(source, args.out, config_from_args(GraphifyConfig, args))
    print(f"graphs: {result.written} written, {result.skipped} already done, {result.total} in {result.out_dir}")
    if result.errors:
        print(f"{len(result.errors)} checkpoints failed (also in {result.out_dir / 'errors.parquet'}):")
        for err in result.errors:
            print(f"  {err.path}: [{err.stage}] {err.reason}")


def _cmd_demo(args: argparse.Namespace) -> None:
    from raywse.pipeline import PipelineConfig, run_pipeline

    artifacts = run_pipeline(config_from_args(PipelineConfig, args))
    for name, path in artifacts.items():
        print(f"{name}: {path}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (stage configs are imported lazily so ``--help`` stays fast)."""
    from raywse.data.graphify import GraphifyConfig
    from raywse.pipeline import PipelineConfig
    from raywse.zoo.build import ZooConfig

    parser = argparse.ArgumentParser(
        prog="raywse",
        description="Ray Weight-Space Embeddings: turn checkpoints into neural graphs, embed them, retrieve models "
        "by what their weights do. Runs on a local Ray by default, or on a cluster via RAY_ADDRESS.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="STAGE")

    p = sub.add_parser("zoo", help="train a model zoo of real tiny networks on bundled datasets")
    p.add_argument("--out", required=True, help="zoo directory (models/*.safetensors + manifest.parquet)")
    add_config_args(p, ZooConfig)
    p.set_defaults(func=_cmd_zoo)

    p = sub.add_parser("graphify", help="checkpoints -> neural-graph shards with Ray Data (bad files reported)")
    p.add_argument("source", nargs="+", help="a zoo dir or manifest.parquet, a directory of .safetensors, or files")
    p.add_argument("--out", required=True, help="output directory (shards/, manifest.parquet, errors.parquet)")
    add_config_args(p, GraphifyConfig)
    p.set_defaults(func=_cmd_graphify)

    p = sub.add_parser("demo", help="the main job end to end: zoo -> graphs -> train -> index -> report")
    add_config_args(p, PipelineConfig)
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; user mistakes end in one line on stderr and exit status 2, never a traceback."""
    from raywse.io import CheckpointError
    from raywse.spec import SpecError

    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (*USER_ERRORS, CheckpointError, SpecError) as exc:
        print(f"raywse: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
