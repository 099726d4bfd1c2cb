"""The RPMs the host tier installs: the real package, a newer build of it, and Debian bookworm's
repack of each.

- ``real_rpm(version)``: packaging/build-rpm.sh on a copy of the checkout's packaged files (the
  newer build only changes ``__version__``). Cached by a hash of those files, so a second run on an
  unchanged tree builds nothing.
- ``bookworm_rpm(real)``: bookworm's python3 is 3.11, so the RPM's cp39 wheels cannot run there.
  The repack keeps the real RPM's payload, file attributes (%config(noreplace), %dir modes) and
  scriptlets, and only rebuilds /usr/lib/certpull/site-packages from the same pins for cp311 and
  byte-compiles the tree with the container's own interpreter. Installed with the container's
  rpm, it upgrades and runs scriptlets exactly as the real one does on bullseye (and on AL2023).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterable, List, Optional, Tuple

from tests.host.container import MACHINE_PREFIX, forget_propagation_dir
from tests.host.rootfs import CACHE_DIR, PrerequisiteMissing, locked

REPO = Path(__file__).resolve().parents[2]
PACKAGED = (
    "agent/certpull",
    "systemd/certpull.service",
    "packaging/certpull.conf",
    "packaging/build-rpm.sh",
    "packaging/rpm",
    "LICENSE",
    "docs/packaging.md",
    "docs/doctor.md",
    "docs/migration.md",
)
LIB = "/usr/lib/certpull"
BUILD_TIMEOUT_S = 600.0
KEEP_CACHED_BUILDS = 8


def source_version() -> str:
    text = (REPO / "agent/certpull/__init__.py").read_text()
    match = re.search(r'^__version__ = "(.*)"$', text, re.M)
    assert match, "no __version__"
    return match.group(1)


def newer_version(version: str) -> str:
    """A version rpm orders after ``version`` (0.1.0 -> 0.1.0.1)."""
    return f"{version}.1"


def _packaged_files() -> Iterable[Path]:
    for name in PACKAGED:
        path = REPO / name
        if path.is_file():
            yield path
        else:
            for sub in sorted(path.rglob("*")):
                if sub.is_file() and "__pycache__" not in sub.parts and sub.suffix != ".pyc":
                    yield sub


def _inputs_hash(*extra: str) -> str:
    digest = hashlib.sha256("\0".join(extra).encode())
    for path in _packaged_files():
        digest.update(str(path.relative_to(REPO)).encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _run(argv: List[str], what: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
        **kwargs,  # type: ignore[call-overload]
    )
    if result.returncode != 0:
        tail = (result.stdout + result.stderr).strip()[-800:]
        raise PrerequisiteMissing(f"{what} failed ({result.returncode}): {tail}")
    return result


def _prune(parent: Path) -> None:
    builds = sorted((p for p in parent.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    for old in builds[:-KEEP_CACHED_BUILDS]:
        shutil.rmtree(old, ignore_errors=True)


def _cached(out: Path) -> Optional[Path]:
    found = sorted(out.glob("certpull-*.rpm")) if out.is_dir() else []
    return found[0] if found else None


def real_rpm(version: str) -> Path:
    """certpull-VERSION-1.x86_64.rpm built by packaging/build-rpm.sh from the checkout's files."""
    out = CACHE_DIR / "rpms" / f"{version}-{_inputs_hash(version)}"
    hit = _cached(out)
    if hit:
        return hit
    with locked("rpms"):  # another run may be building the same tree
        return _cached(out) or _build_real_rpm(version, out)


def _build_real_rpm(version: str, out: Path) -> Path:
    (CACHE_DIR / "rpms").mkdir(parents=True, exist_ok=True)
    wheels = CACHE_DIR / "wheels-cp39"
    wheels.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="certpull-rpm-", dir=CACHE_DIR) as tmp:
        tree = Path(tmp) / "src"
        for path in _packaged_files():
            dest = tree / path.relative_to(REPO)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)
        init = tree / "agent/certpull/__init__.py"
        init.write_text(
            re.sub(
                r'^__version__ = ".*"$', f'__version__ = "{version}"', init.read_text(), flags=re.M
            )
        )
        (tree / "build").mkdir()
        (tree / "build/wheels").symlink_to(wheels)  # the pinned cp39 wheels, downloaded once
        staging = Path(tmp) / "out"
        env = {
            **os.environ,
            "PYTHON": sys.executable,
            "CERTPULL_RPM_TOPDIR": str(Path(tmp) / "top"),
            "CERTPULL_RPM_OUT": str(staging),
        }
        _run(["bash", str(tree / "packaging/build-rpm.sh")], "build-rpm.sh", cwd=tree, env=env)
        built = sorted(staging.glob("certpull-*.rpm"))
        if len(built) != 1:
            raise PrerequisiteMissing(f"build-rpm.sh made {len(built)} RPMs")
        partial = out.with_name(out.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        shutil.copy2(built[0], partial / built[0].name)
        shutil.rmtree(out, ignore_errors=True)
        os.replace(partial, out)
    _prune(CACHE_DIR / "rpms")
    return out / built[0].name


# --- bookworm's repack -------------------------------------------------------------------------


def _query(rpm: Path, fmt: str) -> str:
    return _run(["rpm", "-qp", "--qf", fmt, str(rpm)], f"rpm -qp {rpm.name}").stdout


def _unpinned_requirements() -> List[str]:
    """packaging/rpm/requirements.txt's NAME==VERSION pins, without the cp39 wheels' hashes."""
    pins = []
    for line in (REPO / "packaging/rpm/requirements.txt").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+==[A-Za-z0-9_.+-]+)", line)
        if match:
            pins.append(match.group(1))
    return pins


def _cp311_site_packages(dest: Path) -> None:
    wheels = CACHE_DIR / "wheels-cp311"
    wheels.mkdir(parents=True, exist_ok=True)
    pins = _unpinned_requirements()
    platform = [
        "--only-binary=:all:",
        "--python-version",
        "3.11",
        "--implementation",
        "cp",
        "--abi",
        "cp311",
        "--abi",
        "abi3",
        "--abi",
        "none",
        "--platform",
        "manylinux2014_x86_64",
    ]
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    _run(
        [*pip, "download", "--no-deps", "--dest", str(wheels), *platform, *pins],
        "pip download (cp311)",
    )
    _run(
        [
            *pip,
            "install",
            "--no-index",
            "--find-links",
            str(wheels),
            "--no-deps",
            "--no-compile",
            "--target",
            str(dest),
            *platform,
            *pins,
        ],
        "pip install --target (cp311)",
    )
    shutil.rmtree(dest / "bin", ignore_errors=True)


def _files_section(real: Path) -> List[str]:
    """%files lines reproducing the real RPM's attributes; /usr/lib/certpull/ as one tree."""
    rows = _query(
        real,
        "[%{FILEMODES}\t%{FILEUSERNAME}\t%{FILEGROUPNAME}\t%{FILEFLAGS:fflags}\t%{FILENAMES}\n]",
    )
    lines = ["%defattr(-,root,root,-)", f"{LIB}/"]
    for row in rows.splitlines():
        mode_text, user, group, flags, path = row.split("\t")
        if path == LIB or path.startswith(LIB + "/"):
            continue
        mode = int(mode_text)
        attr = f"%attr({stat.S_IMODE(mode):04o},{user},{group})"
        prefix = "%dir " if stat.S_ISDIR(mode) else ""
        if "c" in flags:
            prefix += "%config(noreplace) " if "n" in flags else "%config "
        lines.append(f"{prefix}{attr} {path}")
    return lines


def _scriptlets(real: Path) -> List[str]:
    lines = []
    for tag, section in (
        ("PREIN", "pre"),
        ("POSTIN", "post"),
        ("PREUN", "preun"),
        ("POSTUN", "postun"),
    ):
        body = _query(real, f"%{{{tag}}}")
        if body.strip() and body.strip() != "(none)":
            lines += [f"%{section}", body.rstrip("\n"), ""]
    return lines


def bookworm_rpm(real: Path, bookworm_root: Path) -> Path:
    """The real RPM's payload and scriptlets, site-packages for cp311, compiled by bookworm's python3."""
    out = (
        CACHE_DIR
        / "rpms-bookworm"
        / _inputs_hash(
            real.name,
            hashlib.sha256(real.read_bytes()).hexdigest(),
            hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
        )
    )
    hit = _cached(out)
    if hit:
        return hit
    with locked("rpms-bookworm"):
        return _cached(out) or _repack(real, bookworm_root, out)


def _repack(real: Path, bookworm_root: Path, out: Path) -> Path:
    (CACHE_DIR / "rpms-bookworm").mkdir(parents=True, exist_ok=True)
    name, version, release, summary, license_ = _query(
        real, "%{NAME}\t%{VERSION}\t%{RELEASE}\t%{SUMMARY}\t%{LICENSE}"
    ).split("\t")
    with tempfile.TemporaryDirectory(prefix="certpull-repack-", dir=CACHE_DIR) as tmp:
        stage = Path(tmp) / "stage"
        stage.mkdir()
        rpm2cpio = subprocess.Popen(["rpm2cpio", str(real)], stdout=subprocess.PIPE)
        _run(["cpio", "-idm", "--quiet"], "rpm2cpio | cpio", stdin=rpm2cpio.stdout, cwd=stage)
        assert rpm2cpio.stdout is not None
        rpm2cpio.stdout.close()
        rpm2cpio.wait()
        site = stage / LIB.lstrip("/") / "site-packages"
        shutil.rmtree(site)
        _cp311_site_packages(site)
        for cache in list((stage / LIB.lstrip("/")).rglob("__pycache__")):
            shutil.rmtree(cache)
        machine = f"{MACHINE_PREFIX}compile-{os.getpid()}"
        _run(  # the container's own interpreter, on a read-only copy of its root
            [
                "systemd-nspawn",
                "--quiet",
                "--register=no",
                "--keep-unit",
                "--read-only",
                "-D",
                str(bookworm_root),
                "-M",
                machine,
                f"--bind={stage}:/mnt",  # /mnt exists: a read-only root cannot get a mount point
                "python3",
                "-m",
                "compileall",
                "-q",
                "-j0",
                "--invalidation-mode",
                "checked-hash",
                "-s",
                "/mnt",
                "-p",
                "/",
                f"/mnt{LIB}",
            ],
            "compileall with bookworm's python3",
        )
        forget_propagation_dir(machine)
        spec = Path(tmp) / "certpull-bookworm.spec"
        spec.write_text(
            "\n".join(
                [
                    f"Name: {name}",
                    f"Version: {version}",
                    f"Release: {release}",
                    f"Summary: {summary}",
                    f"License: {license_}",
                    "AutoReqProv: no",
                    "%global debug_package %{nil}",
                    "%global __os_install_post %{nil}",
                    "%global _build_id_links none",
                    "%description",
                    f"{real.name} repacked by tests/host for Debian bookworm's Python 3.11.",
                    "%install",
                    f"cp -a {stage}/. %{{buildroot}}/",
                    "%files",
                    *_files_section(real),
                    "",
                    *_scriptlets(real),
                ]
            )
            + "\n"
        )
        top = Path(tmp) / "top"
        _run(
            [
                "rpmbuild",
                "-bb",
                "--quiet",
                "--nodeps",
                "--target",
                "x86_64",
                "--define",
                f"_topdir {top}",
                str(spec),
            ],
            "rpmbuild (bookworm repack)",
        )
        built = sorted((top / "RPMS").rglob("*.rpm"))
        partial = out.with_name(out.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        shutil.copy2(built[0], partial / built[0].name)
        shutil.rmtree(out, ignore_errors=True)
        os.replace(partial, out)
    _prune(CACHE_DIR / "rpms-bookworm")
    return out / built[0].name


def describe(rpm: Path) -> Tuple[str, str]:
    """(NAME-VERSION-RELEASE, payload size) for reports."""
    return _query(rpm, "%{NAME}-%{VERSION}-%{RELEASE}"), _query(rpm, "%{SIZE}")
