#!/usr/bin/env bash
# Set up, lint, and run the test suite (what CI runs). Needs the local PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The browser tests (tests/test_review_browser.py) drive Debian's chromium through
# Playwright; install it where we can (CI runs as root). They skip without it.
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  { apt-get install -y -qq chromium || { apt-get update -qq && apt-get install -y -qq chromium; }; } \
    >/dev/null 2>&1 || echo "test: could not install chromium; the browser tests will skip"
fi
.venv/bin/ruff check core workers migrations tests benchmarks scripts docker
.venv/bin/python -m pytest -m "not slow" -p no:cacheprovider "$@"
