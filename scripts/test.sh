#!/usr/bin/env bash
# The whole test suite, as CI runs it: static checks first (fast failures), then every test, under
# the venv's Python and, where a CPython 3.9 exists (Amazon Linux 2023's python3), under 3.9 as well.
# The two pytest runs go side by side: they share nothing (own moto server, own Apache instances on
# free ports, own temporary directories) and mostly wait on I/O, so this halves the wall time.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
step() { printf '\n== %s\n' "$*"; }
# pytest's temporary root, per checkout: two checkouts testing at once must not delete each other's
tmp_root=/tmp/certpull-pytest-$(pwd -P | sha256sum | cut -c1-10)

step "ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
step "mypy"
.venv/bin/mypy
step "vermin (Python 3.9)"
.venv/bin/vermin -t=3.9- --no-tips --violations --eval-annotations agent

py39_pid=""
py39_log=$(mktemp /tmp/certpull-py39-XXXXXX.log)
if [ -x .venv39/bin/python ] && [ "${CERTPULL_SKIP_PY39:-}" != 1 ]; then
  .venv39/bin/python -m pytest -q -p no:cacheprovider --basetemp="$tmp_root-py39" "$@" \
    >"$py39_log" 2>&1 &
  py39_pid=$!
fi

step "pytest ($("$PY" --version))"
status=0
"$PY" -m pytest -q --basetemp="$tmp_root-main" "$@" || status=$?

if [ -n "$py39_pid" ]; then
  step "pytest ($(.venv39/bin/python --version)), run alongside"
  py39_status=0
  wait "$py39_pid" || py39_status=$?
  grep -v 'PythonDeprecationWarning\|warnings.warn(warning' "$py39_log" | tail -n 40
  [ "$py39_status" -eq 0 ] || status=$py39_status
fi
rm -f "$py39_log"
exit "$status"
