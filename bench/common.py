"""Shared set-up for the `certpull run` benchmarks: a host under test, outside pytest.

`BenchHost` starts what the integration tests use (moto's server, the counting proxy, a private
Apache, the test PKI), creates one secret per certificate, installs them with `certpull sync` and
runs `certpull run` as a real subprocess. Everything lives in a temporary directory that is
removed on exit. Only the first certificate (`www`) is served by Apache and verified; the others
are installed into the same live directory, which is all an idle or call-counting run needs.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Dict, List, Optional, Sequence, Tuple, Type

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "agent"), str(ROOT)]

# Never reach real AWS (the same settings as tests/conftest.py).
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
)
for _name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "HTTP_PROXY", "HTTPS_PROXY"):
    os.environ.pop(_name, None)

from tests.apache import ApacheInstance  # noqa: E402
from tests.aws_local import LocalAws  # noqa: E402
from tests.aws_proxy import AwsProxy  # noqa: E402
from tests.daemon_proc import Daemon  # noqa: E402
from tests.integration.test_run_events import EventBus, label_updated  # noqa: E402
from tests.pki import Issued, Pki  # noqa: E402
from tests.rpm_build import extract_rpm, find_python39, launcher_argv, launcher_flags  # noqa: E402
from tests.site import Site  # noqa: E402

RUN_VARIANT = ROOT / "bench" / "prototypes" / "run_variant.py"

EXTRA_NAMES = ("api", "mail", "admin", "static", "auth")


class MultiSite(Site):
    """A `Site` whose config also lists extra certificates (no verify target: Apache serves `www`)."""

    extra: List[Tuple[str, str]]

    def write_config(self) -> None:
        super().write_config()
        lines = []
        for name, arn in getattr(self, "extra", []):
            lines += ["", f"[cert:{name}]", f"secret_arn = {arn}", "server_name = www.example.com"]
        with open(self.config_path, "a") as handle:
            handle.write("\n".join(lines) + "\n")


class BenchHost:
    """moto + proxy + Apache + `certs` secrets, installed; `start_daemon()` runs `certpull run`."""

    def __init__(
        self, certs: int = 1, events: bool = False, agent_options: Optional[Dict[str, str]] = None
    ) -> None:
        if not 1 <= certs <= 1 + len(EXTRA_NAMES):
            raise SystemExit(f"--certs must be 1..{1 + len(EXTRA_NAMES)}")
        self._certs = certs
        self._events = events
        self._agent_options = dict(agent_options or {})
        self._tmp = tempfile.TemporaryDirectory(prefix="certpull-bench-")
        self.root = Path(self._tmp.name)
        self.aws = LocalAws()
        self.proxy: Optional[AwsProxy] = None
        self.apache: Optional[ApacheInstance] = None
        self.bus: Optional[EventBus] = None
        self.daemon: Optional[Daemon] = None
        self.pki = Pki()
        self._leaf_slot = 0

    def __enter__(self) -> BenchHost:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _start(self) -> None:
        self.aws.start()
        self.proxy = AwsProxy(self.aws.endpoint_url).start()
        self.apache = ApacheInstance(self.root / "apache")
        site = MultiSite(self.root, self.aws, self.proxy, self.apache, self.pki)
        site.extra = []
        site.agent_options.update({"startup_splay_s": "0", **self._agent_options})
        if self._events:
            self.bus = EventBus(self.aws)
            site.agent_options.update(
                {"events_queue_url": self.bus.queue_url, "event_splay_s": "0"}
            )
        sm = self.aws.client("secretsmanager")
        for name in EXTRA_NAMES[: self._certs - 1]:
            arn = sm.create_secret(
                Name=f"{name}-tls-{os.urandom(4).hex()}",
                SecretString=self.pki.secret_string(self.next_leaf()),
            )["ARN"]
            site.extra.append((name, arn))
        site.create_secret(self.next_leaf())  # writes the config
        done = site.certpull("sync")
        if done.returncode != 0:
            raise SystemExit(f"certpull sync failed: {done.stdout}{done.stderr}")
        self.apache.start()
        self.site = site

    def next_leaf(self) -> Issued:
        """A new leaf; each expires no earlier than the last (the agent refuses downgrades)."""
        self._leaf_slot += 1
        return self.pki.leaf(slot=self._leaf_slot % 2)

    def start_daemon(
        self, env: Optional[Dict[str, str]] = None, command: Optional[List[str]] = None
    ) -> Daemon:
        """`certpull run` (or `command -c CONF run`), returned once its first pass is done."""
        self.daemon = Daemon(self.site, extra_env=env, command=command)
        self.daemon.wait_ready()
        self.daemon.wait_for(
            "first pass", lambda: self.daemon is not None and self.passes() >= 1, 60
        )
        return self.daemon

    def passes(self) -> int:
        """Passes the running daemon has finished (each sends one STATUS= line)."""
        assert self.daemon is not None
        return max(0, self.daemon.notify.keys().count("STATUS") - 1)  # READY=1 carries one

    def close(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()
        if self.bus is not None:
            self.bus.close()
        if self.apache is not None:
            self.apache.stop()
        if self.proxy is not None:
            self.proxy.stop()
        self.aws.stop()
        self._tmp.cleanup()

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()


def memory_kib(pid: int) -> Dict[str, int]:
    """VmRSS, RssAnon, RssFile and VmHWM (peak RSS) of `pid`, in KiB; Pss from smaps_rollup."""
    found: Dict[str, int] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                found[key] = int(value.split()[0])
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    found["Pss"] = int(line.split()[1])
    except OSError:
        pass
    return found


class Runtime:
    """How to start the agent: the checkout on this interpreter, or an unpacked RPM on a 3.9."""

    def __init__(self, rpm: Optional[str]) -> None:
        self._tmp: Optional[tempfile.TemporaryDirectory[str]] = None
        self.python = sys.executable
        self.tree: Optional[Path] = None
        if rpm:
            self.python = find_python39()
            if not self.python:
                raise SystemExit("--rpm needs a CPython 3.9 (set PYTHON39)")
            self._tmp = tempfile.TemporaryDirectory(prefix="certpull-bench-rpm-")
            self.tree = extract_rpm(Path(rpm), Path(self._tmp.name))

    @property
    def flags(self) -> List[str]:
        """The interpreter flags the agent runs with: the RPM launcher's shebang's, else none."""
        return launcher_flags(self.tree) if self.tree is not None else []

    def describe(self) -> str:
        version = subprocess.run(
            [self.python, "-c", "import platform; print(platform.python_version())"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        where = f"the unpacked RPM ({self.tree})" if self.tree else "the checkout"
        return f"{where} on Python {version}"

    def command(self, variants: List[str]) -> Optional[List[str]]:
        """argv before `-c CONF run`; None: the default `python -m certpull` of the checkout."""
        if self.tree is not None:
            if not variants:
                return launcher_argv(self.python, self.tree)
            libdir = str(self.tree / "usr/lib/certpull")
            prefix = [self.python, *self.flags, str(RUN_VARIANT), "--tree", libdir]
        elif not variants:
            return None
        else:
            prefix = [self.python, str(RUN_VARIANT)]
        return [*prefix, "--variants", ",".join(variants), "--"]

    def interpreter_rss_kib(self) -> int:
        """The bare interpreter, as the agent starts it (isolated mode for the RPM)."""
        argv = [self.python, *self.flags, "-c", "import time; time.sleep(30)"]
        proc = subprocess.Popen(argv)
        try:
            time.sleep(1.0)
            return memory_kib(proc.pid)["VmRSS"]
        finally:
            proc.kill()
            proc.wait()

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sample."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summary_ms(name: str, values_s: Sequence[float]) -> str:
    ms = [v * 1000 for v in values_s]
    return (
        f"{name:<34} n={len(ms):<4} p50 {statistics.median(ms):8.1f} ms  "
        f"p90 {percentile(ms, 90):8.1f} ms  p99 {percentile(ms, 99):8.1f} ms  "
        f"max {max(ms):8.1f} ms"
    )


__all__ = [
    "BenchHost",
    "EventBus",
    "Runtime",
    "label_updated",
    "memory_kib",
    "percentile",
    "summary_ms",
]
