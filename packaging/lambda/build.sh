#!/usr/bin/env bash
# Build dist/certpull-rotation.zip: the Secrets Manager rotation function for the AWS Lambda Python
# runtime (handler certpull.rotation.handler.lambda_handler).
#
#   packaging/lambda/build.sh [--arch x86_64|arm64]      (default x86_64; must match the function's
#                                                         Architectures in rotation.yaml)
#
# Steps:
#   (1) stage certpull/__init__.py, errors.py, bundle.py and rotation/ — nothing else of the agent,
#       so the zip stays small and the function cannot depend on the daemon by accident;
#   (2) check that the staged package imports on its own (no daemon, cli, source or store modules);
#   (3) download the cryptography wheel (and cffi, pycparser) built for the Lambda runtime:
#       the runtime ships boto3 but not cryptography (the only network access; cached in
#       build/lambda/wheels/<arch>);
#   (4) unpack the wheels next to the package and zip everything, with sorted names and fixed
#       timestamps so the same inputs give the same zip.
#
# Environment: PYTHON (a Python 3 with pip; default .venv/bin/python, else python3),
# LAMBDA_PYTHON (the runtime's version, default 3.12), CRYPTOGRAPHY_VERSION (default 50.0.2).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD

arch=x86_64
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) arch=${2:?--arch needs a value}; shift 2 ;;
    -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-lambda: unknown argument: $1" >&2; exit 2 ;;
  esac
done
case "$arch" in
  x86_64) platform=manylinux2014_x86_64 ;;
  arm64|aarch64) arch=arm64; platform=manylinux2014_aarch64 ;;
  *) echo "build-lambda: --arch must be x86_64 or arm64, not $arch" >&2; exit 2 ;;
esac
python=${PYTHON:-}
if [ -z "$python" ]; then
  if [ -x .venv/bin/python ]; then python=.venv/bin/python; else python=python3; fi
fi
lambda_python=${LAMBDA_PYTHON:-3.12}
cryptography_version=${CRYPTOGRAPHY_VERSION:-50.0.2}

stage=$root/build/lambda/stage-$arch
wheels=$root/build/lambda/wheels/$arch-py$lambda_python-cryptography$cryptography_version
out=$root/dist/certpull-rotation.zip
rm -rf "$stage"
mkdir -p "$stage/certpull/rotation" "$wheels" "$root/dist"

# (1)
src=$root/agent/certpull
cp "$src/__init__.py" "$src/errors.py" "$src/bundle.py" "$stage/certpull/"
cp "$src"/rotation/*.py "$stage/certpull/rotation/"

# (2) only the staged package (and the build Python's own cryptography/boto3) on the path
"$python" - "$stage" <<'EOF'
import sys
stage = sys.argv[1]
sys.path = [stage] + [p for p in sys.path if p and "agent" not in p]
import certpull.rotation.handler  # noqa: F401
bad = sorted(m for m in sys.modules if m.startswith("certpull.") and m.split(".")[1] not in ("errors", "bundle", "rotation"))
if bad or not certpull.rotation.handler.__file__.startswith(stage):
    sys.exit(f"build-lambda: the rotation package pulls in {bad or 'modules from outside the stage'}")
EOF

# (3)
if ! ls "$wheels"/cryptography-*.whl >/dev/null 2>&1; then
  "$python" -m pip download --quiet --dest "$wheels" \
    --platform "$platform" --only-binary=:all: --implementation cp \
    --python-version "$lambda_python" "cryptography==$cryptography_version"
fi

# (4)
for wheel in "$wheels"/*.whl; do
  "$python" -m zipfile -e "$wheel" "$stage"
done
find "$stage" -name '__pycache__' -prune -exec rm -rf {} +
rm -f "$out"
"$python" - "$stage" "$out" <<'EOF'
import os, sys, zipfile
stage, out = sys.argv[1], sys.argv[2]
names = sorted(
    os.path.relpath(os.path.join(d, f), stage) for d, _, files in os.walk(stage) for f in files
)
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
    for name in names:
        info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
        info.external_attr = 0o644 << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        with open(os.path.join(stage, name), "rb") as f:
            archive.writestr(info, f.read())
EOF
echo "build-lambda: $out ($arch, python$lambda_python, cryptography $cryptography_version," \
  "$(du -k "$out" | cut -f1) KiB)"
