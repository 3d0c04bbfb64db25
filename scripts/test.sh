#!/usr/bin/env bash
# Set up, lint, and run the test suite (what CI runs). Needs the local PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check core workers migrations tests benchmarks scripts docker
.venv/bin/python -m pytest -m "not slow" -p no:cacheprovider "$@"
