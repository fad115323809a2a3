"""Index job: ``python jobs/build_index.py --graphs G --encoder E --out INDEX [--rebuild]`` (or via ``ray job submit``).

Incremental: reruns embed only the graphs not yet in the index; an index of another encoder needs ``--rebuild``.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout or an uploaded working dir

from raywse.config import add_config_args, config_from_args  # noqa: E402
from raywse.index.embed import build_index_job  # noqa: E402
from raywse.index.faiss_index import IndexConfig, IndexVersionError  # noqa: E402
from raywse.raycluster import ensure_ray  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graphs", required=True, help="graphify output directory")
    parser.add_argument("--encoder", required=True, help="trained encoder directory (encoder.pt + config.json)")
    parser.add_argument("--out", required=True, help="index directory")
    parser.add_argument("--rebuild", action="store_true", help="re-embed everything (e.g. after retraining)")
    parser.add_argument("--batch-size", type=int, default=64, help="graphs per Ray Data batch (default: 64)")
    parser.add_argument("--gpu", dest="use_gpu", action=argparse.BooleanOptionalAction, default=None,
                        help="FAISS and embedding on GPU (default: when one is present)")  # fmt: skip
    add_config_args(parser, IndexConfig, skip=("use_gpu",))
    args = parser.parse_args(argv)
    ensure_ray()
    try:
        summary = build_index_job(args.graphs, args.encoder, args.out, config_from_args(IndexConfig, args),
                                  rebuild=args.rebuild, batch_size=args.batch_size)  # fmt: skip
    except (IndexVersionError, FileNotFoundError) as exc:
        print(f"build_index: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
