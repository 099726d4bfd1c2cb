"""Build the RPM with packaging/build-rpm.sh and unpack it; find the CPython 3.9 its tree runs on."""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, List

REPO = Path(__file__).resolve().parent.parent
LIB = "/usr/lib/certpull"
SERVICES_FILE = REPO / "packaging" / "rpm" / "botocore-services.txt"


def trim_bundle() -> ModuleType:
    """packaging/rpm/trim_bundle.py (the build's own list parser and what it removes)."""
    spec = importlib.util.spec_from_file_location(
        "trim_bundle", REPO / "packaging" / "rpm" / "trim_bundle.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bundled_services() -> List[str]:
    """The botocore services the RPM keeps: packaging/rpm/botocore-services.txt, as the build reads it."""
    names: List[str] = trim_bundle().read_services(SERVICES_FILE)
    return names


def run(argv: List[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=300, **kwargs)


def find_python39() -> str:
    """The CPython 3.9 the installed tree runs on (AL2023's /usr/bin/python3 is 3.9); "" if none."""
    candidates = [
        os.environ.get("PYTHON39", ""),
        "/usr/bin/python3",
        shutil.which("python3.9") or "",
        *sorted(glob.glob("/root/.pyenv/versions/3.9*/bin/python3.9")),
    ]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            probe = run([candidate, "-c", "import sys; print(sys.version_info[:2] == (3, 9))"])
            if probe.stdout.strip() == "True":
                return candidate
    return ""


def build_rpm(build_dir: Path) -> Path:
    """packaging/build-rpm.sh with private build and output dirs (two suites may build at once)."""
    env = {
        **os.environ,
        "PYTHON": sys.executable,  # has pip: build-rpm.sh downloads the pinned wheels with it
        "CERTPULL_RPM_TOPDIR": str(build_dir / "top"),
        "CERTPULL_RPM_OUT": str(build_dir / "out"),
    }
    result = run(["bash", str(REPO / "packaging" / "build-rpm.sh")], cwd=REPO, env=env)
    if result.returncode != 0:
        raise AssertionError(f"build-rpm.sh failed:\n{result.stdout}\n{result.stderr}")
    built = REPO / result.stdout.strip().splitlines()[-1]
    if not built.is_file():
        raise AssertionError(f"build-rpm.sh printed no RPM: {result.stdout}")
    return built


LAUNCHER = "usr/bin/certpull"


def launcher_flags(root: Path) -> List[str]:
    """The interpreter flags of the shipped launcher's shebang (`#!/usr/bin/python3 -IOO`)."""
    first = (root / LAUNCHER).read_text(encoding="utf-8").splitlines()[0]
    return first[2:].split()[1:]


def launcher_argv(python39: str, root: Path, *extra_flags: str) -> List[str]:
    """How a host runs the unpacked or installed /usr/bin/certpull: its shebang's flags, on
    this 3.9 (the shebang names AL2023's /usr/bin/python3)."""
    return [python39, *launcher_flags(root), *extra_flags, str(root / LAUNCHER)]


def extract_rpm(package: Path, root: Path) -> Path:
    """The package's files under `root` (rpm2cpio | cpio: no rpm database, no scriptlets)."""
    root.mkdir(parents=True, exist_ok=True)
    with subprocess.Popen(["rpm2cpio", str(package)], stdout=subprocess.PIPE) as rpm2cpio:
        cpio = subprocess.run(
            ["cpio", "--extract", "--make-directories", "--preserve-modification-time", "--quiet"],
            stdin=rpm2cpio.stdout,
            cwd=root,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
    if rpm2cpio.returncode != 0 or cpio.returncode != 0:
        raise AssertionError(f"rpm2cpio | cpio failed: {cpio.stderr}")
    return root
