#!/usr/bin/env bash
# Set up and run the default test suite (heavier suites: add `-m slow`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m ruff check raywse jobs tests bench
exec .venv/bin/python -m pytest -q tests "$@"
