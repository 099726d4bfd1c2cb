#!/usr/bin/env bash
# Build dist/certpull-<version>-1<dist>.<arch>.rpm from a checkout, here (Debian's rpmbuild) or on
# Amazon Linux 2023.
#
#   packaging/build-rpm.sh [--arch x86_64|aarch64]
#
# Steps:
#   (1) read the version from agent/certpull/__init__.py (the one place it is written);
#   (2) pack the sources the spec installs into SOURCES/certpull-<version>.tar.gz;
#   (3) download the pinned, hash-checked CPython 3.9 wheels of packaging/rpm/requirements.txt for
#       the target architecture (the only network access; cached in build/wheels/<arch>) and pack
#       them as SOURCES/certpull-wheels-<version>-<arch>.tar, so rpmbuild itself runs offline;
#   (4) run rpmbuild with a private _topdir, adding packaging/rpm/macros.fallback only when the
#       system has no systemd RPM macros, and --nodeps only when rpm does not manage this system;
#   (5) copy the binary RPM to dist/ (or $CERTPULL_RPM_OUT) and print its path.
#
# Environment: PYTHON (a Python 3 with pip, default: python3), PYTHON39 (CPython 3.9 to byte-compile
# with; default: python3.9 or /usr/bin/python3, whichever is 3.9).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

arch=$(uname -m)
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) arch=${2:?--arch needs a value}; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "build-rpm: unknown argument: $1" >&2; exit 2 ;;
  esac
done
case "$arch" in x86_64|aarch64) ;; *) echo "build-rpm: unsupported architecture: $arch" >&2; exit 2 ;; esac

die() { echo "build-rpm: $*" >&2; exit 1; }

is_py39() { [ -n "$1" ] && "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 9))' 2>/dev/null; }

python=${PYTHON:-python3}
"$python" -m pip --version >/dev/null 2>&1 || die "$python has no pip (set PYTHON to a Python 3 with pip)"
py39=${PYTHON39:-}
if [ -z "$py39" ]; then
  for candidate in /usr/bin/python3 "$(command -v python3.9 || true)" /root/.pyenv/versions/3.9*/bin/python3.9; do
    if is_py39 "$candidate"; then py39=$candidate; break; fi
  done
fi
is_py39 "$py39" || die "no CPython 3.9 found to byte-compile with (set PYTHON39)"

for f in packaging/certpull.conf systemd/certpull.service packaging/rpm/requirements.txt \
         packaging/rpm/botocore-services.txt packaging/rpm/trim_bundle.py LICENSE docs/packaging.md docs/doctor.md docs/migration.md; do
  [ -f "$f" ] || die "missing $f"
done

# (1)
version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' agent/certpull/__init__.py)
[ -n "$version" ] || die "no __version__ in agent/certpull/__init__.py"

# CERTPULL_RPM_TOPDIR / CERTPULL_RPM_OUT: private build and output dirs, so that two builds (the
# test suite under two Pythons at once) never share a tree.
top=${CERTPULL_RPM_TOPDIR:-$root/build/rpm}
out=${CERTPULL_RPM_OUT:-dist}
rm -rf "$top"
mkdir -p "$top"/{SOURCES,SPECS,BUILD,BUILDROOT,RPMS,SRPMS} "$out"

# (2)
tar --create --gzip --file "$top/SOURCES/certpull-$version.tar.gz" \
    --sort=name --owner=0 --group=0 --numeric-owner --exclude=__pycache__ --exclude='*.pyc' \
    --transform "s,^,certpull-$version/," \
    agent/certpull systemd/certpull.service packaging/certpull.conf \
    packaging/rpm/requirements.txt packaging/rpm/botocore-services.txt packaging/rpm/trim_bundle.py \
    LICENSE docs/packaging.md docs/doctor.md docs/migration.md

# (3)
wheels=$root/build/wheels/$arch
mkdir -p "$wheels"
"$python" -m pip download --quiet --disable-pip-version-check --dest "$wheels" \
    --require-hashes --only-binary=:all: \
    --python-version 3.9.16 --implementation cp --abi cp39 --abi abi3 --abi none \
    --platform "manylinux2014_$arch" -r packaging/rpm/requirements.txt \
  || die "could not download the pinned wheels (network, or a hash in packaging/rpm/requirements.txt)"
tar --create --file "$top/SOURCES/certpull-wheels-$version-$arch.tar" \
    --sort=name --owner=0 --group=0 --numeric-owner \
    -C "$root/build/wheels" --transform "s,^$arch,wheels," "$arch"

# (4)
cp packaging/rpm/certpull.spec "$top/SPECS/"
extra=()
if [ "$(rpm --eval '%_unitdir')" = '%_unitdir' ]; then
  # Appended to the default macro path: unlike --load, this survives the reconfiguration --target does.
  extra+=(--macros "$(rpm --showrc | sed -n 's/^Macro path: //p'):$root/packaging/rpm/macros.fallback")
fi
if ! rpm -q --quiet rpm-build 2>/dev/null; then
  extra+=(--nodeps)   # rpm does not manage this system's packages (Debian): BuildRequires cannot be checked
fi
rpmbuild -bb --quiet "${extra[@]}" --target "$arch" \
    --define "_topdir $top" \
    --define "certpull_version $version" \
    --define "certpull_pip_python $("$python" -c 'import sys; print(sys.executable)')" \
    --define "certpull_py39 $py39" \
    "$top/SPECS/certpull.spec"

# (5)
shopt -s nullglob
rpms=("$top/RPMS/$arch"/certpull-"$version"-*."$arch".rpm)
[ ${#rpms[@]} -eq 1 ] || die "expected one RPM in $top/RPMS/$arch"
cp "${rpms[0]}" "$out/"
echo "$out/$(basename "${rpms[0]}")"
