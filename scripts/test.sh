#!/usr/bin/env bash
# The whole test suite, as CI runs it: static checks first (fast failures), then every test, under
# the venv's Python and, where a CPython 3.9 exists (Amazon Linux 2023's python3), under 3.9 as well.
# The two pytest runs go side by side: they share nothing (own moto server, own Apache instances on
# free ports, own temporary directories) and mostly wait on I/O, so this halves the wall time.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
step() { printf '\n== %s\n' "$*"; }
# Private temporary dirs for this run: pytest empties its --basetemp at start, so a fixed path would
# let two checkouts' runs on one machine delete each other's files.
run_tmp=$(mktemp -d /tmp/certpull-test-XXXXXX)
host_pid=""
py39_pid=""
finish() {
  # An interrupted run stops its own background runs; SIGINT lets the host tier stop its containers.
  if [ -n "$host_pid" ] && kill -0 "$host_pid" 2>/dev/null; then kill -INT "$host_pid"; wait "$host_pid" || true; fi
  if [ -n "$py39_pid" ] && kill -0 "$py39_pid" 2>/dev/null; then kill "$py39_pid"; wait "$py39_pid" || true; fi
  rm -rf "$run_tmp"
}
trap finish EXIT

step "ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
step "mypy"
.venv/bin/mypy
step "vermin (Python 3.9)"
.venv/bin/vermin -t=3.9- --no-tips --violations --eval-annotations agent

# The host tier (tests/host): Debian booted under a real systemd with the RPM installed, once per
# run (its containers share this machine's loopback). It goes alongside the two interpreter runs,
# since it mostly waits on systemd's timers; each scenario has its own pytest-timeout budget and the
# whole tier a hard one here (SIGINT first, so its fixtures stop containers and unmount overlays).
# It runs with the full suite (no arguments), or when CERTPULL_HOST_TIER=1; CERTPULL_HOST_TIER=0
# leaves it out of a local run.
host_log=$run_tmp/host.log
host_started=$SECONDS
if { [ $# -eq 0 ] && [ "${CERTPULL_HOST_TIER:-}" != 0 ]; } || [ "${CERTPULL_HOST_TIER:-}" = 1 ]; then
  timeout -s INT -k 120 "${CERTPULL_HOST_TIER_TIMEOUT_S:-2400}" \
    "$PY" -m pytest -q -p no:cacheprovider --host-tier --basetemp="$run_tmp/host" \
    --durations=0 tests/host >"$host_log" 2>&1 &
  host_pid=$!
fi

py39_log=$run_tmp/py39.log
if [ -x .venv39/bin/python ] && [ "${CERTPULL_SKIP_PY39:-}" != 1 ]; then
  .venv39/bin/python -m pytest -q -p no:cacheprovider --basetemp="$run_tmp/py39" "$@" \
    >"$py39_log" 2>&1 &
  py39_pid=$!
fi

step "pytest ($("$PY" --version))"
status=0
"$PY" -m pytest -q --basetemp="$run_tmp/main" "$@" || status=$?

if [ -n "$py39_pid" ]; then
  step "pytest ($(.venv39/bin/python --version)), run alongside"
  py39_status=0
  wait "$py39_pid" || py39_status=$?
  grep -v 'PythonDeprecationWarning\|warnings.warn(warning' "$py39_log" | tail -n 40
  [ "$py39_status" -eq 0 ] || status=$py39_status
fi

if [ -n "$host_pid" ]; then
  step "host tier (tests/host: Debian under systemd, the RPM installed), run alongside"
  host_status=0
  wait "$host_pid" || host_status=$?
  if [ "$host_status" -eq 0 ]; then
    sed -n '/slowest durations/,$p' "$host_log" | grep -v '^$'
  else
    cat "$host_log"
  fi
  [ "$host_status" -ne 124 ] || echo "host tier: stopped after ${CERTPULL_HOST_TIER_TIMEOUT_S:-2400} s"
  echo "host tier: $((SECONDS - host_started)) s wall, exit $host_status"
  [ "$host_status" -eq 0 ] || status=$host_status
fi
exit "$status"
