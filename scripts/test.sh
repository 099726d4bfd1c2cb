#!/usr/bin/env bash
# The whole test suite, as CI runs it: static checks first (fast failures), then every test.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
step() { printf '\n== %s\n' "$*"; }

step "ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
step "mypy"
.venv/bin/mypy
step "vermin (Python 3.9)"
.venv/bin/vermin -t=3.9- --no-tips --violations --eval-annotations agent
step "pytest ($("$PY" --version))"
"$PY" -m pytest -q "$@"
if [ -x .venv39/bin/python ] && [ "${CERTPULL_SKIP_PY39:-}" != 1 ]; then
  # Amazon Linux 2023 runs the agent on Python 3.9: the whole suite again under 3.9.
  step "pytest ($(.venv39/bin/python --version))"
  .venv39/bin/python -m pytest -q -p no:cacheprovider "$@"
fi
