#!/usr/bin/env bash
# Install everything certpull's demo and tests need on a fresh Debian 12 or Amazon Linux 2023 host
# (run as root): system packages, then a virtualenv in .venv with the package and its test extras.
# Idempotent: a second run only checks what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs() {
  if command -v apt-get >/dev/null 2>&1; then
    local missing=()
    # systemd-container (systemd-nspawn), debootstrap, zstd, cpio: the host tier (tests/host) boots
    # Debian under a real systemd. --no-install-recommends keeps libnss-mymachines (recommended by
    # systemd-container, it edits /etc/nsswitch.conf) off this machine.
    for p in apache2 libsystemd-dev pkg-config rpm rpmlint systemd gcc python3-venv python3-dev wrk nghttp2-client \
             systemd-container debootstrap zstd cpio; do
      dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
      echo "setup: apt-get install ${missing[*]}"
      DEBIAN_FRONTEND=noninteractive apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    # The Debian package starts a system apache2 on port 80; certpull's tests run their own private one.
    if command -v systemctl >/dev/null 2>&1; then systemctl disable --now apache2 >/dev/null 2>&1 || true; fi
    if [ -x /usr/sbin/apache2ctl ] && pgrep -x apache2 >/dev/null 2>&1 && [ -f /var/run/apache2/apache2.pid ]; then
      /usr/sbin/apache2ctl stop >/dev/null 2>&1 || true
    fi
  elif command -v dnf >/dev/null 2>&1; then
    dnf install -y -q httpd mod_ssl systemd-devel pkgconf-pkg-config rpm-build gcc python3-devel python3-pip >/dev/null
  else
    echo "setup: neither apt-get nor dnf found; install Apache httpd with mod_ssl, libsystemd headers, pkg-config and rpm by hand" >&2
  fi
}

# pip warns about index locations of this machine's pip config that do not exist; drop that noise.
quiet_pip() {
  "$@" 2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
}

# make_venv DIR PYTHON: a venv in DIR with the package and its test extras, reinstalled when
# setup.cfg changed or an import is missing.
make_venv() {
  local dir=$1 py=$2
  if [ ! -x "$dir/bin/python" ]; then
    echo "setup: creating $dir with $($py --version)"
    "$py" -m venv "$dir"
  fi
  if ! "$dir/bin/python" -c 'import certpull, moto, pytest, systemd.daemon' >/dev/null 2>&1 \
     || [ setup.cfg -nt "$dir/.installed" ]; then
    echo "setup: pip install -e .[test] into $dir"
    quiet_pip "$dir/bin/python" -m pip install -q --upgrade pip
    quiet_pip "$dir/bin/python" -m pip install -q -e '.[test]'
    touch "$dir/.installed"
  fi
}

# Amazon Linux 2023's /usr/bin/python3 is 3.9: where a 3.9 exists here, the suite runs under it too.
find_python39() {
  local candidate
  for candidate in "${PYTHON39:-}" /usr/bin/python3 "$(command -v python3.9 || true)" /root/.pyenv/versions/3.9*/bin/python3.9; do
    [ -n "$candidate" ] && [ -x "$candidate" ] || continue
    if "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 9))' 2>/dev/null; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

need_venv39() {
  local py39
  py39=$(find_python39) || { echo "setup: no CPython 3.9 here; the suite runs under $(.venv/bin/python --version) only"; return 0; }
  make_venv .venv39 "$py39"
}

need_pkgs
make_venv .venv "${PYTHON:-python3}"
[ "${CERTPULL_SKIP_PY39:-}" = 1 ] || need_venv39
