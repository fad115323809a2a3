"""``raywse``: one command, a subcommand per stage. Thin: parse, call the package, print."""

from __future__ import annotations

import argparse
import gc
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

from raywse.core.config import ConfigError, add_config_args, apply_json_overrides, config_from_args
from raywse.core.console import job_console, say
from raywse.core.records import RELATIONS

USER_ERRORS: tuple[type[Exception], ...] = (FileNotFoundError, NotADirectoryError, ConfigError)


def _cmd_zoo(args: argparse.Namespace) -> None:
    from raywse.core.ray_session import ensure_ray
    from raywse.zoo.build import build_zoo
    from raywse.zoo.plan import ZooConfig

    config = config_from_args(ZooConfig, args, base=ZooConfig.preset(args.preset))
    ensure_ray(num_cpus=config.num_cpus)
    manifest = build_zoo(config, args.out)
    say(f"zoo manifest: {manifest}")


def _cmd_graphify(args: argparse.Namespace) -> None:
    from raywse.core.artifacts import GraphFiles
    from raywse.data.graphify import GraphifyConfig, graphify, probe_sources

    source = args.source[0] if len(args.source) == 1 else list(args.source)
    result = graphify(source, args.out, config_from_args(GraphifyConfig, args))
    say(f"graphs: {result.written} written, {result.skipped} already done, {result.total} in {result.out_dir}")
    if sources := probe_sources(result.out_dir):
        say(f"probes: {sources}")
    if result.errors:
        say(f"{len(result.errors)} checkpoints failed (also in {result.out_dir / GraphFiles.ERRORS}):")
        for err in result.errors:
            say(f"  {err.path}: [{err.stage}] {err.reason}")


def _cmd_train(args: argparse.Namespace) -> None:
    from raywse.train.trainer import TrainConfig, train_encoder

    config = apply_json_overrides(config_from_args(TrainConfig, args), args.config_json)
    result = train_encoder(args.zoo, args.graphs, args.out, config)
    last = result.metrics[-1] if result.metrics else {}
    say(f"encoder: {result.encoder_dir}")
    say("last epoch: " + ", ".join(f"{k}={v:.4g}" for k, v in last.items() if isinstance(v, float)))


def _cmd_tune(args: argparse.Namespace) -> None:
    from raywse.core.artifacts import TuneFiles
    from raywse.tune.sweep import TuneConfig, run_sweep

    summary = run_sweep(args.zoo, args.graphs, args.out, config_from_args(TuneConfig, args))
    say(f"best {summary['objective']}={summary['best_score']:.4f} with {summary['best']}")
    say(f"best config: {Path(args.out) / TuneFiles.BEST_CONFIG} (use: raywse train --config-json ...)")


def _cmd_index(args: argparse.Namespace) -> None:
    from raywse.index.embed import build_index
    from raywse.index.faiss_index import IndexConfig

    summary = build_index(args.graphs, args.encoder, args.out, config_from_args(IndexConfig, args),
                              rebuild=args.rebuild, batch_size=args.batch_size)  # fmt: skip
    say(", ".join(f"{k}: {v}" for k, v in summary.items()))


def _cmd_search(args: argparse.Namespace) -> None:
    # One query, then exit: the cyclic garbage collector only costs time here — ~0.5 s while torch and PyG are
    # imported and ~0.7 s when the interpreter tears their modules down (measured: bench/README.md). Reference
    # counting still frees what the query allocates.
    gc.disable()
    from raywse.index.search import Searcher, query_graph

    gc.freeze()  # the imported modules: not scanned at exit

    graph = query_graph(args.checkpoint, args.probe_data, args.spec, args.activation, args.infer_probes)
    print(f"probes: {graph.probe_source}", file=sys.stderr)  # what the network was run on (stdout: the table)
    neighbours = Searcher(args.index, args.encoder, args.zoo).search_graph(graph, args.k, args.relation)
    print(f"{'rank':>4}  {'model_id':<40} {'task':<18} {'family':<11} {'test_acc':>8} {'score':>7}")
    for n in neighbours:
        print(f"{n.rank:>4}  {n.model_id:<40} {n.task:<18} {n.family:<11} {n.test_acc:>8.3f} {n.score:>7.4f}")


def _cmd_probes(args: argparse.Namespace) -> None:
    from raywse.graph.probes import ZOO_ROWS_PREFIX
    from raywse.zoo.datasets import STORED_UNITS, write_zoo_probes

    datasets = args.dataset or list(STORED_UNITS)
    try:
        path = write_zoo_probes(args.out, datasets)
    except ValueError as exc:  # an unknown dataset
        raise ConfigError(str(exc)) from exc
    for dataset in datasets:
        say(f"{ZOO_ROWS_PREFIX}{dataset}: {STORED_UNITS[dataset]}")
    say(f"-> {path} (normalise each array as your model's inputs, keep its name, pass the file as --probe-data)")


def _cmd_serve(args: argparse.Namespace) -> None:
    from raywse.serve import run_service

    run_service(
        args.index, args.encoder, args.zoo, args.host, args.port, args.replicas, args.max_upload_mb, args.probe_data,
        args.index_root or (),
    )  # fmt: skip


def _cmd_eval(args: argparse.Namespace) -> None:
    from raywse.eval.config import EvalConfig
    from raywse.eval.report import evaluate
    from raywse.train.trainer import train_as

    trainer = train_as(Path(args.encoder).parent, args.zoo, args.graphs)  # the baseline trains as the encoder did
    report = evaluate(args.zoo, args.graphs, args.encoder, args.out, config_from_args(EvalConfig, args), trainer)
    say(f"report: {report}")


def _cmd_demo(args: argparse.Namespace) -> None:
    from raywse.pipeline import run_pipeline

    artifacts = run_pipeline(args.config)
    for name, path in artifacts.items():
        say(f"{name}: {path}")


#: The batch stages: their library output goes to ``<out>/logs/<stage>.log`` unless ``--verbose``.
BATCH_STAGES = ("zoo", "graphify", "train", "tune", "index", "eval", "demo")


def _log_file(args: argparse.Namespace) -> Path:
    out = args.config.out_dir if args.command == "demo" else args.out
    return Path(out) / "logs" / f"{args.command}.log"


#: Each stage's configuration dataclass, imported only when that stage runs (so ``raywse --help`` is instant).
STAGE_CONFIGS = {
    "zoo": "raywse.zoo.plan:ZooConfig",
    "graphify": "raywse.data.graphify:GraphifyConfig",
    "train": "raywse.train.trainer:TrainConfig",
    "tune": "raywse.tune.sweep:TuneConfig",
    "index": "raywse.index.faiss_index:IndexConfig",
    "eval": "raywse.eval.config:EvalConfig",
    "demo": "raywse.pipeline:PipelineConfig",
}


def stage_config(stage: str) -> type:
    module, name = STAGE_CONFIGS[stage].split(":")
    return getattr(importlib.import_module(module), name)


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The argument parser; only the stage named in ``argv`` gets its configuration options (imported lazily)."""
    selected = next((a for a in argv if a in STAGE_CONFIGS), None)

    def add_stage_config(parser: argparse.ArgumentParser, stage: str) -> None:
        if stage == selected:
            add_config_args(parser, stage_config(stage))

    parser = argparse.ArgumentParser(
        prog="raywse",
        description="Ray Weight-Space Embeddings: turn checkpoints into neural graphs, embed them, retrieve models "
        "by what their weights do. Runs on a local Ray by default, or on a cluster via RAY_ADDRESS.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="STAGE")

    p = sub.add_parser("zoo", help="train a model zoo of real tiny networks on bundled datasets")
    p.add_argument("--out", required=True, help="zoo directory (models/*.safetensors + manifest.parquet)")
    p.add_argument("--preset", default="small", help="tiny | small | bench: the base config the options below change")
    add_stage_config(p, "zoo")
    p.set_defaults(func=_cmd_zoo)

    p = sub.add_parser("graphify", help="checkpoints -> neural-graph shards with Ray Data (bad files reported)")
    p.add_argument("source", nargs="+", help="a zoo dir or manifest.parquet, a directory of .safetensors, or files")
    p.add_argument("--out", required=True, help="output directory (shards/, manifest.parquet, errors.parquet)")
    add_stage_config(p, "graphify")
    p.set_defaults(func=_cmd_graphify)

    p = sub.add_parser("train", help="DDP contrastive training of the GNN encoder on Ray Train")
    p.add_argument("--zoo", required=True, help="zoo directory (for tasks, accuracies and splits)")
    p.add_argument("--graphs", required=True, help="graphify output directory")
    p.add_argument("--out", required=True, help="run directory (encoder/, ray_results/, train_metrics.json)")
    p.add_argument("--config-json", help="JSON of TrainConfig overrides, e.g. best_config.json from raywse tune")
    add_stage_config(p, "train")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("tune", help="Ray Tune sweep (ASHA) over temperature, depth, width, learning rate")
    p.add_argument("--zoo", required=True)
    p.add_argument("--graphs", required=True)
    p.add_argument("--out", required=True, help="sweep directory (best_config.json, ray_results/)")
    add_stage_config(p, "tune")
    p.set_defaults(func=_cmd_tune)

    p = sub.add_parser("index", help="embed every graph (Ray Data actors) and build/extend the FAISS index")
    p.add_argument("--graphs", required=True)
    p.add_argument("--encoder", required=True, help="trained encoder directory (encoder.pt + config.json)")
    p.add_argument("--out", required=True, help="index directory")
    p.add_argument("--rebuild", action="store_true", help="rebuild from scratch (e.g. after retraining)")
    p.add_argument("--batch-size", type=int, default=64, help="graphs per Ray Data batch (default: 64)")
    add_stage_config(p, "index")
    p.set_defaults(func=_cmd_index)

    p = sub.add_parser("search", help="find the zoo models nearest to a checkpoint")
    p.add_argument("checkpoint", help="a .safetensors file")
    p.add_argument("--index", required=True)
    p.add_argument("--encoder", required=True)
    p.add_argument("--zoo", help="zoo directory, to show task, family and accuracy of neighbours")
    p.add_argument("-k", type=int, default=10, help="neighbours to show (default: 10)")
    p.add_argument("--probe-data", default="", help=".npy/.npz probe inputs of the checkpoint's input space "
                   "(default: the zoo's probe set it answers most informatively, else Gaussian probes)")  # fmt: skip
    p.add_argument("--spec", default="", help="JSON spec file (input_shape, layers) for a checkpoint that carries "
                   "none, where its tensor names cannot tell the architecture (default: inferred)")  # fmt: skip
    p.add_argument("--activation", default="", help="hidden activation of an inferred chain (relu, tanh, ...): "
                   "weights cannot show it (default: inferred with the probes)")  # fmt: skip
    p.add_argument("--no-infer-probes", dest="infer_probes", action="store_false", help="do not try the zoo's "
                   "probe sets and activations where the input domain or activation is unknown (then: Gaussian "
                   "probes, and no probes for an unknown activation)")  # fmt: skip
    p.add_argument("--relation", choices=RELATIONS, default=RELATIONS[0], help="function: models that do what it "
                   "does; lineage: its parent, siblings and fine-tuned children, whatever they do "
                   "(default: function)")  # fmt: skip
    p.set_defaults(func=_cmd_search)

    p = sub.add_parser("probes", help="write the zoo's probe inputs (.npz), to probe your own models on them")
    p.add_argument("--out", required=True, help="the .npz to write (one train:<dataset> array per dataset)")
    p.add_argument("--dataset", action="append", help="a zoo dataset (repeatable; default: every one)")
    p.set_defaults(func=_cmd_probes)

    p = sub.add_parser("serve", help="online search service (Ray Serve): POST /search with a checkpoint's bytes")
    p.add_argument("--index", required=True)
    p.add_argument("--encoder", required=True)
    p.add_argument("--zoo", help="zoo directory, to answer with task, family and accuracy of neighbours")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--replicas", type=int, default=1, help="Serve replicas, each with its own encoder and index")
    p.add_argument("--max-upload-mb", type=int, default=512, help="largest accepted upload (default: 512 MiB)")
    p.add_argument("--probe-data", default="", help=".npy/.npz probes for uploads that name no zoo task "
                   "(use the file the index's checkpoints were graphified with)")  # fmt: skip
    p.add_argument("--index-root", action="append", metavar="DIR", help="POST /index may add checkpoints under DIR "
                   "(repeatable; without one the route is off)")  # fmt: skip
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("eval", help="evaluation report: raywse vs baselines on held-out and hard splits")
    p.add_argument("--zoo", required=True)
    p.add_argument("--graphs", required=True)
    p.add_argument("--encoder", required=True)
    p.add_argument("--out", required=True, help="report directory (report.md, metrics.json, plots)")
    add_stage_config(p, "eval")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("demo", help="the main job end to end: zoo -> graphs -> train -> index -> report")
    add_stage_config(p, "demo")
    p.set_defaults(func=_cmd_demo)
    for stage in BATCH_STAGES:
        sub.choices[stage].add_argument("--verbose", action="store_true", help="print every library and Ray log "
                                        "line here instead of only to <out>/logs/<stage>.log")  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; user mistakes end in one line on stderr and exit status 2, never a traceback."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    from raywse.core.io import CheckpointError
    from raywse.core.spec import SpecError
    from raywse.index.faiss_index import IndexVersionError

    try:
        if args.command not in BATCH_STAGES:
            args.func(args)
            return 0
        if args.command == "demo":
            args.config = config_from_args(stage_config("demo"), args)
        with job_console(_log_file(args), verbose=args.verbose):
            try:
                args.func(args)
            finally:  # inside the redirection: what Ray still prints goes to the log
                if "ray" in sys.modules:  # a stage used Ray (importing it here would cost every command)
                    from raywse.core.ray_session import close_ray

                    close_ray()
    except (*USER_ERRORS, CheckpointError, SpecError, IndexVersionError) as exc:
        print(f"raywse: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
