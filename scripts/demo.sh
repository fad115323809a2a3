#!/usr/bin/env bash
# The main job on the embedded default (a local Ray): zoo -> graphs -> train -> index -> evaluation report.
# Extra arguments go to jobs/pipeline.py (see `python jobs/pipeline.py --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
exec python jobs/pipeline.py "$@"
