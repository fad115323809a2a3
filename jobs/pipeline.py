"""Main job: ``python jobs/pipeline.py`` locally, or ``ray job submit --working-dir . -- python jobs/pipeline.py``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout or an uploaded working dir

from raywse.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
