"""Crash consistency of whole passes: SIGKILL of `certpull sync` / `certpull run` during installs,
and disk write failures (ENOSPC, EIO on write and on fsync) injected into the agent's file system calls.

The kill counts here are the CI-sized ones; `bench/bench_crash.py` runs the full counts with the same
harness (tests/crash_harness.py). ``CERTPULL_CRASH_SYNC_KILLS`` / ``CERTPULL_CRASH_RUN_KILLS`` and
``CERTPULL_CRASH_SEED`` override counts and seed.
"""

from __future__ import annotations

import errno
import os
import random
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, Optional

import pytest

from certpull.config import load_config
from certpull.fileops import FileOps
from certpull.layout import DATA_LINK, DATA_TMP, STAGING_PREFIX
from certpull.outcome import Status
from certpull.wiring import build_agent, live_dir_factory
from tests.apache import ApacheFactory
from tests.aws_local import LocalAws
from tests.aws_proxy import AwsProxy
from tests.crash_harness import (
    ACTIVE_UNSAVED,
    CrashHarness,
    exposed_key_files,
    live_set_problems,
    spawn,
)
from tests.pki import Pki
from tests.site import Site, contains_key_material

pytestmark = pytest.mark.integration

SYNC_KILLS = int(os.environ.get("CERTPULL_CRASH_SYNC_KILLS", "30"))
RUN_KILLS = int(os.environ.get("CERTPULL_CRASH_RUN_KILLS", "24"))
SEED = int(os.environ.get("CERTPULL_CRASH_SEED", str(time.time_ns() % 1_000_000)))


def _new_harness(
    tmp_path: Path, local_aws: LocalAws, proxy: AwsProxy, apache: ApacheFactory, pki: Pki
) -> CrashHarness:
    harness = CrashHarness(Site(tmp_path, local_aws, proxy, apache.new(), pki), random.Random(SEED))
    harness.prepare()
    return harness


@pytest.fixture
def harness(
    tmp_path: Path, local_aws: LocalAws, aws_proxy: AwsProxy, apache: ApacheFactory, pki: Pki
) -> CrashHarness:
    return _new_harness(tmp_path, local_aws, aws_proxy, apache, pki)


# --- SIGKILL -----------------------------------------------------------------------------------


def _kill_when_data_moves(harness: CrashHarness, command: str) -> None:
    """Start `certpull COMMAND` and SIGKILL it the instant `..data` switches (before the reload)."""
    site = harness.site
    before = os.readlink(site.cert_dir / DATA_LINK)
    proc = spawn(site, command, harness.log_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if os.readlink(site.cert_dir / DATA_LINK) != before:
                break
        except OSError:
            pass
        time.sleep(0.0002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"`certpull {command}` ended before the kill"


@pytest.mark.parametrize("command", ["sync", "run"])
def test_kill_between_activation_and_reload_is_finished_by_the_next_start(
    harness: CrashHarness, aws_proxy: AwsProxy, command: str
) -> None:
    """The new files are live but httpd was never reloaded: the next start must reload and verify
    (not conclude "same bytes, nothing to do" and leave httpd serving the old leaf), and record
    the active version so that later checks are cheap again."""
    site = harness.site
    old_leaf = harness.leaves[harness.current]
    harness.rotate()
    _kill_when_data_moves(harness, command)
    assert live_set_problems(site, harness.known) == []
    assert site.served_der() == old_leaf.der, "the kill came after the reload; nothing to test"
    problems = harness.check_recovery(command)
    assert problems == []
    aws_proxy.reset_counts()
    done = site.certpull("sync")
    assert done.returncode == 0, done.stdout
    assert aws_proxy.count("GetSecretValue") == 0, "state.json lost track of the active version"


@pytest.mark.parametrize(("command", "kills"), [("sync", SYNC_KILLS), ("run", RUN_KILLS)])
def test_sigkill_of_certpull_at_random_points(
    harness: CrashHarness, command: str, kills: int
) -> None:
    report = harness.kill_rounds(command, kills, recover_every=10, seed=SEED)
    print("\n" + report.summary())
    assert report.problems == []
    assert (
        report.where[ACTIVE_UNSAVED]
        + sum(n for where, n in report.where.items() if "stag" in where or "swap" in where)
        > 0
    ), f"no kill landed inside an install: {dict(report.where)}"


# --- injected write failures -----------------------------------------------------------------


class FailingOps(FileOps):
    """FileOps where one kind of call fails with one errno on the paths a WriteFault names."""

    def __init__(self, fault: WriteFault, live_dir: str) -> None:
        self.op, self.err, self.matches = fault.op, fault.err, fault.matches
        self.live_dir = live_dir
        self.armed = not fault.after_commit
        self.paths: Dict[int, str] = {}
        self.failures = 0

    def _maybe_fail(self, op: str, path: str) -> None:
        if self.armed and op == self.op and self.matches(path, self.live_dir):
            self.failures += 1
            raise OSError(self.err, os.strerror(self.err), path)

    def open(self, path: str, flags: int, mode: int = 0o777, dir_fd: Optional[int] = None) -> int:
        fd = super().open(path, flags, mode, dir_fd)
        self.paths[fd] = _full(path, dir_fd)
        return fd

    def close(self, fd: int) -> None:
        self.paths.pop(fd, None)
        super().close(fd)

    def write(self, fd: int, data: bytes) -> int:
        self._maybe_fail("write", self.paths.get(fd, ""))
        return super().write(fd, data)

    def fsync(self, fd: int) -> None:
        self._maybe_fail("fsync", self.paths.get(fd, ""))
        super().fsync(fd)

    def mkdir(self, path: str, mode: int, dir_fd: Optional[int] = None) -> None:
        self._maybe_fail("mkdir", _full(path, dir_fd))
        super().mkdir(path, mode, dir_fd)

    def symlink(self, target: str, path: str, dir_fd: Optional[int] = None) -> None:
        self._maybe_fail("symlink", _full(path, dir_fd))
        super().symlink(target, path, dir_fd)

    def rename(self, src: str, dst: str, dir_fd: Optional[int] = None) -> None:
        self._maybe_fail("rename", _full(dst, dir_fd))
        super().rename(src, dst, dir_fd)
        if os.path.basename(dst) == DATA_LINK:
            self.armed = True


def _full(path: str, dir_fd: Optional[int]) -> str:
    """The path a call relative to ``dir_fd`` names (the store works through directory fds)."""
    if dir_fd is None:
        return path
    return os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), path)


Match = Callable[[str, str], bool]
"""(path, live dir of the certificate) -> whether the fault applies to this call."""


def _in_staging(name: str) -> Match:
    return lambda p, _live: STAGING_PREFIX in p and os.path.basename(p) == name


def _staging_dir(p: str, _live: str) -> bool:
    return os.path.basename(p).startswith(STAGING_PREFIX)


def _live_dir(p: str, live: str) -> bool:
    return p.rstrip("/") == live


def _named(suffix: str) -> Match:
    return lambda p, _live: p.endswith("/" + suffix)


@dataclass(frozen=True)
class WriteFault:
    id: str
    op: str
    err: int
    matches: Match
    after_commit: bool = False  # armed only once `..data` was switched (the commit point)


WRITE_FAULTS = [
    WriteFault("write-ENOSPC-privkey", "write", errno.ENOSPC, _in_staging("privkey.pem")),
    WriteFault("write-EIO-cert", "write", errno.EIO, _in_staging("cert.pem")),
    WriteFault("write-ENOSPC-manifest", "write", errno.ENOSPC, _in_staging("..manifest")),
    WriteFault("fsync-EIO-privkey", "fsync", errno.EIO, _in_staging("privkey.pem")),
    WriteFault("fsync-ENOSPC-chain", "fsync", errno.ENOSPC, _in_staging("chain.pem")),
    WriteFault("fsync-EIO-staging-dir", "fsync", errno.EIO, _staging_dir),
    WriteFault("fsync-EIO-live-dir-before-switch", "fsync", errno.EIO, _live_dir),
    WriteFault("fsync-EIO-live-dir-after-switch", "fsync", errno.EIO, _live_dir, True),
    WriteFault("mkdir-ENOSPC-staging", "mkdir", errno.ENOSPC, _staging_dir),
    WriteFault("symlink-ENOSPC-data-tmp", "symlink", errno.ENOSPC, _named(DATA_TMP)),
    WriteFault("rename-EIO-data-link", "rename", errno.EIO, _named(DATA_LINK)),
]


@pytest.fixture(scope="module")
def fault_site(
    tmp_path_factory: pytest.TempPathFactory, local_aws: LocalAws, apache_session: ApacheFactory
) -> Iterator[CrashHarness]:
    proxy = AwsProxy(local_aws.endpoint_url).start()
    try:
        yield _new_harness(
            tmp_path_factory.mktemp("write-faults"), local_aws, proxy, apache_session, Pki()
        )
    finally:
        proxy.stop()


@pytest.mark.parametrize("fault", WRITE_FAULTS, ids=lambda f: f.id)
def test_write_failure_keeps_the_old_set_and_does_not_reload(
    fault_site: CrashHarness, fault: WriteFault
) -> None:
    harness = fault_site
    site = harness.site
    files, reloads, served = site.live_bytes(), site.reloads(), site.served_der()
    state_before = site.state()["certs"]["www"]["installed"]  # type: ignore[index]
    harness.rotate()
    fs = FailingOps(fault, str(site.cert_dir))
    config = load_config(str(site.config_path), lambda p: Path(p).read_text())
    agent = build_agent(config)
    agent.live_dir_for = live_dir_factory(config, None, fs=fs)
    report = agent.sync()
    assert fs.failures > 0, f"{fault.id}: the fault was never hit"
    [outcome] = report.outcomes
    assert outcome.status == Status.FAILED, outcome.message
    assert "cannot install" in outcome.message and os.strerror(fault.err) in outcome.message
    assert not contains_key_material(outcome.message, [k.key_pem() for k in harness.leaves])
    assert site.live_bytes() == files
    assert site.reloads() == reloads, "a failed install must not reload httpd"
    assert site.served_der() == served
    assert live_set_problems(site, harness.known) == []
    assert exposed_key_files(site.cert_dir) == []
    debris = [n for n in os.listdir(site.cert_dir) if n.startswith(STAGING_PREFIX)]
    assert debris == [], debris
    cstate = site.state()["certs"]["www"]  # type: ignore[index]
    assert cstate["installed"] == state_before
    assert cstate["last_error_transient"] is True


def test_after_write_failures_the_next_healthy_pass_installs(fault_site: CrashHarness) -> None:
    problems = fault_site.check_recovery("sync")
    assert problems == []
    assert fault_site.site.reloads() >= 1
