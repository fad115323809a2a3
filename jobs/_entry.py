"""Shared bootstrap of the job scripts: make ``raywse`` importable from a checkout or an uploaded working dir
(``ray job submit --working-dir .``), then run one CLI stage with the script's arguments."""

import sys
from pathlib import Path


def run_stage(stage: str) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from raywse.cli import main

    sys.exit(main([stage, *sys.argv[1:]]))
