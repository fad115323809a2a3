#!/usr/bin/env bash
# Set up and run the default test suite (heavier suites: add `-m slow`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate  # subprocesses (a local Ray head, submitted jobs) must find this venv's python and ray
python -m ruff check raywse jobs tests bench foreign
exec python -m pytest -q tests "$@"
