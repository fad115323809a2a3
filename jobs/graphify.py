"""Graphify job: ``python jobs/graphify.py SOURCE --out DIR`` (or via ``ray job submit``)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout or an uploaded working dir

from raywse.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["graphify", *sys.argv[1:]]))
