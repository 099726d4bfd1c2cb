"""Fixtures of the host tier: prerequisites, the cached rootfs and packages, one image per release.

Collected only with ``pytest --host-tier tests/host`` (scripts/test.sh does that once per
`./dev test`). A missing prerequisite fails the session with one line saying what is missing:
this machine can run containers, so the tier never skips.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest

from tests.host import packages, rootfs
from tests.host.container import WORK_DIR, close_session, open_session
from tests.host.host import Image, base_dir, build_image
from tests.host.report import MEASUREMENTS, record

RELEASES = ("bookworm", "bullseye")
TOOLS = (
    "systemd-nspawn",
    "nsenter",
    "debootstrap",
    "zstd",
    "tar",
    "rpm",
    "rpm2cpio",
    "rpmbuild",
    "cpio",
    "mount",
)


def _prerequisite_problem() -> str:
    if os.geteuid() != 0:
        return "the host tier needs root (systemd-nspawn, overlay mounts)"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"missing {', '.join(missing)}: run scripts/setup.sh (installs systemd-container, debootstrap, zstd)"
    if "overlay" not in Path("/proc/filesystems").read_text():
        return "the kernel has no overlay file system (modprobe overlay)"
    return ""


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``image`` runs a test on every release, or on those its ``releases`` marker names."""
    if "image" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("releases")
        chosen = marker.args if marker else RELEASES
        metafunc.parametrize("image", chosen, indirect=True, scope="session")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "releases(*names): the Debian releases a host test boots")


@pytest.fixture(scope="session")
def host_session() -> Iterator[Path]:
    """Prerequisites, then this run's session dir (what killed runs left is reaped first)."""
    problem = _prerequisite_problem()
    if problem:
        pytest.exit(f"host tier: {problem}", returncode=1)
    session = open_session()
    try:
        yield session
    finally:
        close_session(session)


@pytest.fixture(scope="session")
def prepared(host_session: Path) -> Dict[str, float]:
    """Rootfs of every release and the RPMs, built in parallel where missing; seconds per step."""
    timings: Dict[str, float] = {}
    started = time.monotonic()

    def timed(name: str, job: Any, *args: Any) -> Any:
        t0 = time.monotonic()
        result = job(*args)
        timings[name] = time.monotonic() - t0
        return result

    def both_rpms() -> None:
        version = packages.source_version()
        timed("rpm", packages.real_rpm, version)
        timed("rpm (newer)", packages.real_rpm, packages.newer_version(version))

    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(RELEASES) + 1) as pool:
            jobs = [pool.submit(timed, f"rootfs {r}", base_dir, r) for r in RELEASES]
            jobs.append(pool.submit(both_rpms))
            for job in jobs:
                job.result()
    except rootfs.PrerequisiteMissing as exc:
        pytest.exit(f"host tier: {exc}", returncode=1)
    timings["total"] = time.monotonic() - started
    for name, seconds in timings.items():
        record(f"prepare: {name}", round(seconds, 1), "s")
    return timings


_IMAGES: Dict[str, Image] = {}


@pytest.fixture(scope="session")
def image(request: pytest.FixtureRequest, prepared: Dict[str, float], host_session: Path) -> Image:
    release = request.param
    if release not in _IMAGES:
        t0 = time.monotonic()
        try:
            _IMAGES[release] = build_image(release, host_session)
        except rootfs.PrerequisiteMissing as exc:
            pytest.exit(f"host tier: {exc}", returncode=1)
        record(f"prepare: image {release}", round(time.monotonic() - t0, 1), "s")
    return _IMAGES[release]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not MEASUREMENTS:
        return
    terminalreporter.section("host tier measurements")
    for m in MEASUREMENTS:
        detail = {k: v for k, v in m.items() if k not in ("name", "value", "unit")}
        extra = f"  {json.dumps(detail, sort_keys=True)}" if detail else ""
        terminalreporter.write_line(f"{m['name']}: {m['value']} {m['unit']}{extra}".rstrip())
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    (WORK_DIR / "measurements.json").write_text(json.dumps(MEASUREMENTS, indent=1))
