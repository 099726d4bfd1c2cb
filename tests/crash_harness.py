"""SIGKILL `certpull sync` and `certpull run` at random points of real installs, then check the host.

Shared by the fast CI test (tests/integration/test_crash_consistency.py) and the full-count bench
(bench/bench_crash.py). One round:

  1. Put a new AWSCURRENT version (a leaf other than the installed one) into moto.
  2. Start `certpull sync` (or `certpull run`) as a real subprocess and SIGKILL it after a random
     delay drawn around the moment it installs (calibrated from unkilled runs).
  3. Record where the kill landed, judged from what it left on disk and in state.json.
  4. Check the live set (``live_set_problems``): `..data` names one complete version, every link
     resolves into it, the key matches the certificate, fullchain = cert + chain, the leaf is one
     the test published, and no key file anywhere (staging dirs included) is readable by others;
     httpd is up and serves one of the published leaves.
  5. Every ``recover_every`` rounds (and after the last one), let the next start run to the end
     (``check_recovery``): exit 0 / READY, live = served = AWSCURRENT's leaf, state.json agrees, no
     staging debris. The killed round that follows always starts from the previous kill's debris.

SIGKILL tests process death, not power loss (fsync ordering is covered by the FileOps injection).
"""

from __future__ import annotations

import collections
import contextlib
import os
import random
import signal
import stat
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Counter, Dict, Iterator, List, Optional, Tuple

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certpull.httpd import fetch_served_leaf
from certpull.layout import DATA_LINK, DATA_TMP, LINK_TMP, STAGING_PREFIX, is_version_name
from certpull.store import LiveDir
from tests.apache import ApacheInstance
from tests.aws_local import LocalAws
from tests.aws_proxy import AwsProxy
from tests.pki import Issued, Pki
from tests.site import LIVE_FILES, REPO, Site

KEY = "privkey.pem"
LEAF_POOL = 4  # leaves rotated through (each with its own key)
RUN_POLL_INTERVAL_S = "1"

# Where a kill landed, judged afterwards (see ``classify``).
STAGING = "staging a version"
SWAP_DATA = "swapping ..data"
SWAP_LINK = "swapping a link"
STAGED = "staged, not yet active"
ACTIVE_UNSAVED = "activated, state not saved"
BEFORE = "before the install"
DONE = "installed and recorded"


def dummy_aws_env() -> None:
    """Benches run outside pytest: the same dummy credentials conftest.py sets, never real AWS."""
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    )
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        os.environ.pop(name, None)


@contextlib.contextmanager
def standalone_site(pki: Optional[Pki] = None) -> Iterator[Site]:
    """A Site outside pytest (for bench/): moto server, proxy, a private Apache, a temp dir."""
    dummy_aws_env()
    pki = pki or Pki()
    with tempfile.TemporaryDirectory(prefix="certpull-bench-") as tmp, LocalAws() as aws:
        proxy = AwsProxy(aws.endpoint_url).start()
        apache = ApacheInstance(Path(tmp) / "apache")
        try:
            yield Site(Path(tmp), aws, proxy, apache, pki)
        finally:
            apache.stop()
            proxy.stop()


def certpull_env() -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "agent") + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("NOTIFY_SOCKET", None)
    return env


def spawn(site: Site, command: str, log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "certpull", "-c", str(site.config_path), command],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=certpull_env(),
        )


def public_der(pem: bytes, private: bool) -> bytes:
    if private:
        key = serialization.load_pem_private_key(pem, password=None)
        public = key.public_key()
    else:
        public = x509.load_pem_x509_certificate(pem).public_key()
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def exposed_key_files(cert_dir: Path) -> List[str]:
    """Key files in any hidden dir (versions, staging) whose mode lets others read them."""
    exposed = []
    for entry in cert_dir.iterdir():
        if entry.name.startswith("..") and not entry.is_symlink() and entry.is_dir():
            key = entry / KEY
            with contextlib.suppress(FileNotFoundError):
                if stat.S_IMODE(key.lstat().st_mode) & 0o077:
                    exposed.append(str(key))
    return exposed


def live_set_problems(site: Site, known: Dict[bytes, str]) -> List[str]:
    """What a reader such as httpd would find wrong in the live set now; [] when it is whole."""
    cert_dir = site.cert_dir
    data = cert_dir / DATA_LINK
    if not data.is_symlink() or not is_version_name(os.readlink(data)):
        return [f"{data} is not a link to a version directory"]
    problems: List[str] = []
    files: Dict[str, bytes] = {}
    for name in LIVE_FILES:
        link = cert_dir / name
        if not link.is_symlink() or os.readlink(link) != f"{DATA_LINK}/{name}":
            problems.append(f"{name} is not a link to {DATA_LINK}/{name}")
        try:
            files[name] = link.read_bytes()
        except OSError as exc:
            problems.append(f"{name} cannot be read: {exc.strerror}")
    if problems:
        return problems
    try:
        if public_der(files[KEY], private=True) != public_der(files["cert.pem"], private=False):
            problems.append("privkey.pem does not match cert.pem")
        leaf_der = x509.load_pem_x509_certificate(files["cert.pem"]).public_bytes(
            serialization.Encoding.DER
        )
    except ValueError as exc:
        return [f"a live file does not parse: {type(exc).__name__}"]
    if leaf_der not in known:
        problems.append("cert.pem is not a leaf this test published")
    if files["fullchain.pem"] != files["cert.pem"] + files["chain.pem"]:
        problems.append("fullchain.pem is not cert.pem + chain.pem")
    if files["chain.pem"] != site.pki.chain_pem().encode():
        problems.append("chain.pem is not the test chain")
    if stat.S_IMODE(os.stat(cert_dir / KEY).st_mode) != 0o600:
        problems.append("privkey.pem is not mode 0600")
    problems.extend(f"{path} is readable by others" for path in exposed_key_files(cert_dir))
    problems.extend(LiveDir(str(cert_dir), file_modes={KEY: 0o600}).verify_links())
    return problems


def served_problems(site: Site, known: Dict[bytes, str]) -> List[str]:
    if not site.apache.is_running():
        return ["httpd is not running"]
    try:
        der = fetch_served_leaf(site.apache.target(), 5.0)
    except Exception as exc:
        return [f"no TLS handshake: {exc}"]
    return [] if der in known else ["httpd serves a leaf this test did not publish"]


def classify(site: Site, active_before: str, saved: bool) -> str:
    """Where in an install the kill landed, judged from what it left behind.

    ``active_before`` is the version `..data` named when the round started; ``saved`` says whether
    state.json already records the round's version as installed.
    """
    names = set(os.listdir(site.cert_dir))
    if any(n.startswith(STAGING_PREFIX) for n in names):
        return STAGING
    if DATA_TMP in names:
        return SWAP_DATA
    if LINK_TMP in names:
        return SWAP_LINK
    active = os.readlink(site.cert_dir / DATA_LINK)
    if active == active_before:
        return STAGED if any(is_version_name(n) and n > active for n in names) else BEFORE
    return DONE if saved else ACTIVE_UNSAVED


def _installed(site: Site) -> Tuple[Optional[str], Optional[str]]:
    """(version_id, store_version) that state.json records for the site's certificate."""
    try:
        installed = site.state()["certs"][site.name]["installed"]  # type: ignore[index]
    except (OSError, ValueError, KeyError, TypeError):
        return None, None
    if not installed:
        return None, None
    return installed.get("version_id"), installed.get("store_version")


@dataclass
class CrashReport:
    command: str
    kills: int = 0
    finished_first: int = 0  # rounds the process finished before its kill (timing, under load)
    recoveries: int = 0
    where: Counter[str] = field(default_factory=collections.Counter)
    problems: List[str] = field(default_factory=list)
    served_old_after_kill: int = 0
    state_tmp_files_left: int = 0  # `.state.*` temporaries a killed save left in state_dir
    elapsed_s: float = 0.0
    delay_window_s: Tuple[float, float] = (0.0, 0.0)
    seed: int = 0

    def inside_install(self) -> int:
        """Kills that left an install half done (anything between staging and saving state)."""
        return sum(self.where[w] for w in (STAGING, SWAP_DATA, SWAP_LINK, STAGED, ACTIVE_UNSAVED))

    def summary(self) -> str:
        lo, hi = self.delay_window_s
        return (
            f"certpull {self.command}: {self.kills} SIGKILLs ({self.finished_first} finished first), "
            f"{self.recoveries} full recoveries, "
            f"{len(self.problems)} problems, {self.elapsed_s:.0f} s (seed {self.seed}, kill delay "
            f"{lo * 1000:.0f}-{hi * 1000:.0f} ms); landed: {dict(self.where)}; "
            f"old leaf still served right after the kill: {self.served_old_after_kill}; "
            f"state.json temporaries left behind: {self.state_tmp_files_left}"
        )


class CrashHarness:
    """Rounds of put -> spawn -> SIGKILL -> check against one Site whose Apache is running."""

    def __init__(self, site: Site, rng: random.Random) -> None:
        self.site = site
        self.rng = rng
        self.leaves: List[Issued] = [site.pki.leaf(slot=i) for i in range(LEAF_POOL)]
        self.known: Dict[bytes, str] = {leaf.der: f"leaf{i}" for i, leaf in enumerate(self.leaves)}
        self.current = 0
        self.version_id = ""
        self.log_path = site.root / "killed.log"

    # -- set-up -------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Secret + first install + Apache running; fast polling for `run`; downgrades allowed."""
        site = self.site
        site.cert_options["allow_downgrade"] = "yes"  # the pool's leaves are reused in any order
        site.agent_options.update(
            {"poll_interval_s": RUN_POLL_INTERVAL_S, "startup_splay_s": "0", "max_backoff_s": "5"}
        )
        site.create_secret(self.leaves[0])
        self.version_id = self._current_version()
        done = site.certpull("sync")
        if done.returncode != 0:
            raise RuntimeError(f"first sync failed: {done.stdout} {done.stderr}")
        site.apache.start()

    def _current_version(self) -> str:
        for version, stages in self.site.aws.version_stages(self.site.secret_arn).items():
            if "AWSCURRENT" in stages:
                return version
        raise RuntimeError("no AWSCURRENT version")

    def rotate(self) -> None:
        """A new AWSCURRENT version carrying a leaf that is neither the last put nor the live one."""
        live = self.known.get(self._live_der() or b"")
        choices = [i for i in range(LEAF_POOL) if i != self.current and f"leaf{i}" != live]
        self.current = self.rng.choice(choices)
        self.version_id = self.site.put(self.leaves[self.current])

    # -- timing -------------------------------------------------------------------------------

    def calibrate(self, command: str, runs: int = 3) -> Tuple[float, float]:
        """Median seconds from spawn until a staging dir appears and until `..data` moves."""
        staged, active = [], []
        for _ in range(runs):
            self.rotate()
            before = os.readlink(self.site.cert_dir / DATA_LINK)
            marks: Dict[str, float] = {}
            started = time.monotonic()
            proc = spawn(self.site, command, self.log_path)
            watcher = threading.Thread(
                target=self._watch, args=(before, started, marks), daemon=True
            )
            watcher.start()
            watcher.join(timeout=30)
            if command == "run":
                self._wait(self._converged, 30, "the daemon to converge")
                proc.send_signal(signal.SIGTERM)
            if proc.wait(timeout=60) != 0:
                raise RuntimeError(f"unkilled `certpull {command}` failed; see {self.log_path}")
            if "active" not in marks:
                raise RuntimeError(f"`certpull {command}` never moved ..data")
            staged.append(marks.get("staging", marks["active"]))
            active.append(marks["active"])
        return statistics.median(staged), statistics.median(active)

    def _watch(self, before: str, started: float, marks: Dict[str, float]) -> None:
        deadline = started + 30
        while time.monotonic() < deadline:
            names = os.listdir(self.site.cert_dir)
            now = time.monotonic() - started
            if "staging" not in marks and any(n.startswith(STAGING_PREFIX) for n in names):
                marks["staging"] = now
            with contextlib.suppress(OSError):
                if os.readlink(self.site.cert_dir / DATA_LINK) != before:
                    marks["active"] = now
                    return
            time.sleep(0.0005)

    # -- rounds -------------------------------------------------------------------------------

    def kill_rounds(
        self,
        command: str,
        kills: int,
        recover_every: int,
        seed: int,
        progress: Optional[Callable[[int], None]] = None,
    ) -> CrashReport:
        """``kills`` rounds of put -> spawn -> SIGKILL -> check; full recovery every few rounds."""
        report = CrashReport(command=command, seed=seed)
        staged_at, active_at = self.calibrate(command)
        # Half the kills aim at the few milliseconds of staging and switching (process start-up
        # jitter spreads them), half anywhere from the AWS calls to the reload and verify.
        narrow = (max(0.0, staged_at - 0.015), active_at + 0.01)
        wide = (max(0.0, staged_at - 0.15), active_at + 0.25)
        report.delay_window_s = wide
        started = time.monotonic()
        for kill in range(kills):
            self.rotate()  # (1)
            active_before = os.readlink(self.site.cert_dir / DATA_LINK)
            proc = spawn(self.site, command, self.log_path)  # (2)
            time.sleep(self.rng.uniform(*(narrow if kill % 2 else wide)))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            context = f"{command} kill {kill} (seed {seed})"
            if proc.returncode == 0:
                report.finished_first += 1  # no kill to test; the checks below still apply
            elif proc.returncode != -signal.SIGKILL:
                report.problems.append(f"{context}: exited {proc.returncode} before the kill")
            report.kills += 1
            saved = _installed(self.site)[0] == self.version_id
            where = classify(self.site, active_before, saved)
            report.where[where] += 1  # (3)
            problems = live_set_problems(self.site, self.known) + served_problems(
                self.site, self.known
            )  # (4)
            report.problems.extend(f"{context} ({where}): {p}" for p in problems)
            if self._served_der() != self._live_der():
                report.served_old_after_kill += 1
            if (kill + 1) % recover_every == 0 or kill == kills - 1:
                report.problems.extend(
                    f"{context} recovery: {p}" for p in self.check_recovery(command)
                )  # (5)
                report.recoveries += 1
            if progress:
                progress(kill + 1)
        report.elapsed_s = time.monotonic() - started
        if report.finished_first * 5 > kills:  # a shared machine's load moved the timing a lot
            report.problems.append(
                f"{report.finished_first} of {kills} rounds finished before their kill: "
                "the calibrated delays no longer hit the install"
            )
        report.state_tmp_files_left = len(list(self.site.state_dir.glob(".state.*")))
        return report

    def check_recovery(self, command: str) -> List[str]:
        """The next start, unkilled, must leave AWSCURRENT's leaf installed, served and recorded."""
        problems: List[str] = []
        if command == "sync":
            done = self.site.certpull("sync")
            if done.returncode != 0:
                problems.append(f"next sync exited {done.returncode}: {done.stdout.strip()}")
        else:
            proc = spawn(self.site, "run", self.log_path)
            try:
                # The killed run may have converged already: wait for this daemon's own record
                # too (written after its signal handlers are in place), or SIGTERM lands while it
                # is still importing and kills it (-15).
                self._wait(
                    lambda: self._daemon_recorded(proc.pid) and self._converged(),
                    30,
                    "the restarted daemon to converge",
                )
            except RuntimeError as exc:
                problems.append(str(exc))
            proc.send_signal(signal.SIGTERM)
            if proc.wait(timeout=60) != 0:
                problems.append(f"restarted daemon exited {proc.returncode} on SIGTERM")
        problems.extend(live_set_problems(self.site, self.known))
        want = self.leaves[self.current].der
        if self._live_der() != want:
            problems.append("the live leaf is not AWSCURRENT's")
        if self._served_der() != want:
            problems.append("httpd does not serve AWSCURRENT's leaf")
        version_id, store_version = _installed(self.site)
        if version_id != self.version_id:
            problems.append("state.json does not record AWSCURRENT as installed")
        if store_version != os.readlink(self.site.cert_dir / DATA_LINK):
            problems.append("state.json's store version is not the active one")
        debris = [
            n
            for n in os.listdir(self.site.cert_dir)
            if n.startswith(STAGING_PREFIX) or n in (DATA_TMP, LINK_TMP)
        ]
        if debris:
            problems.append(f"debris left after recovery: {debris}")
        return problems

    def _daemon_recorded(self, pid: int) -> bool:
        try:
            return self.site.state()["daemon"]["pid"] == pid  # type: ignore[index, no-any-return]
        except (OSError, ValueError, KeyError, TypeError):
            return False

    def _converged(self) -> bool:
        version_id, _ = _installed(self.site)
        return version_id == self.version_id and self._served_der() == self._live_der()

    def _live_der(self) -> Optional[bytes]:
        try:
            pem = (self.site.cert_dir / "cert.pem").read_bytes()
            return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
        except (OSError, ValueError):
            return None

    def _served_der(self) -> Optional[bytes]:
        try:
            return fetch_served_leaf(self.site.apache.target(), 5.0)
        except Exception:
            return None

    @staticmethod
    def _wait(check: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.05)
        raise RuntimeError(f"timed out after {timeout_s:g} s waiting for {what}")
