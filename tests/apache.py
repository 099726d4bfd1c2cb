"""A private Apache httpd for tests: its own config, port, pid file and logs, on 127.0.0.1.

Works with Debian's ``apache2`` and Amazon Linux's ``httpd`` (detected). The instance serves one
TLS virtual host whose files are ``<live_dir>/<name>/cert.pem|chain.pem|privkey.pem`` (the paths
certpull installs), and a static ``/index.html``. Use it through ``apache_factory``, whose
finalizer stops every instance it started, even when the test failed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import FrozenSet, Iterator, List, Optional, Sequence, Tuple

from certpull.httpd import VerifyTarget, fetch_served_leaf
from tests.pki import Issued, Pki

WANTED_MODULES = ("mpm_event", "authz_core", "mime", "socache_shmcb", "ssl", "unixd", "log_config")
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0


@dataclasses.dataclass(frozen=True)
class ApacheLayout:
    """Where this distribution keeps Apache."""

    binary: str
    server_root: str
    modules_dir: str
    builtin: FrozenSet[str]

    def load_module_lines(self) -> List[str]:
        lines = []
        for module in WANTED_MODULES:
            so = Path(self.modules_dir) / f"mod_{module}.so"
            if f"mod_{module}.c" in self.builtin or not so.exists():
                continue
            lines.append(f"LoadModule {module}_module {so}")
        return lines


@functools.cache
def detect_layout() -> ApacheLayout:
    """Debian (apache2, /etc/apache2) or Amazon Linux / Fedora (httpd, /etc/httpd)."""
    candidates = [
        ("/usr/sbin/apache2", "/etc/apache2", "/usr/lib/apache2/modules"),
        ("/usr/sbin/httpd", "/etc/httpd", "/usr/lib64/httpd/modules"),
        ("/usr/sbin/httpd", "/etc/httpd", "/usr/lib/httpd/modules"),
    ]
    for binary, server_root, modules_dir in candidates:
        if os.access(binary, os.X_OK) and Path(modules_dir, "mod_ssl.so").exists():
            listed = subprocess.run(
                [binary, "-l"], capture_output=True, text=True, check=True, timeout=10
            ).stdout
            builtin = frozenset(line.strip() for line in listed.splitlines() if line.strip())
            return ApacheLayout(binary, server_root, modules_dir, builtin)
    raise RuntimeError(
        "Apache httpd with mod_ssl not found (apt-get install apache2 / dnf install httpd mod_ssl)"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_file(path: Path, data: str, mode: int = 0o644) -> None:
    """Replace ``path`` atomically; the temporary file is created with the final mode."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_EXCL, mode)
    with os.fdopen(fd, "w") as f:
        f.write(data)
    os.replace(tmp, path)


class ApacheInstance:
    """One private httpd. Not started until ``start()``; ``stop()`` is idempotent."""

    def __init__(
        self, root: Path, name: str = "www", layout: Optional[ApacheLayout] = None
    ) -> None:
        self.layout = layout or detect_layout()
        self.root = root
        self.name = name
        self.port = free_port()
        self.run_dir = root / "run"
        self.logs_dir = root / "logs"
        self.live_dir = root / "live"
        self.cert_dir = self.live_dir / name
        self.conf_path = root / "httpd.conf"
        self.pid_file = self.run_dir / "httpd.pid"
        self.error_log = self.logs_dir / "error.log"
        for d in (self.run_dir, self.logs_dir, self.cert_dir):
            d.mkdir(parents=True, exist_ok=True)
        # Children drop root for the compiled-in user; pytest's tmp dirs are 0700, so the
        # document root lives in a world-traversable directory of its own.
        self.docroot = Path(tempfile.mkdtemp(prefix="certpull-docroot-"))
        os.chmod(self.docroot, 0o755)  # noqa: S103 - a public test document root
        write_file(self.docroot / "index.html", "<h1>certpull test</h1>\n")
        self._started_pids: List[int] = []
        self.ssl_files: Tuple[str, str, Optional[str]] = (
            f"{self.cert_dir}/cert.pem",
            f"{self.cert_dir}/privkey.pem",
            f"{self.cert_dir}/chain.pem",
        )
        self.write_config()

    # -- configuration and files ------------------------------------------------------------

    def use_files(self, cert: Path, key: Path, chain: Optional[Path] = None) -> None:
        """Read the certificate, key (and chain, if any) from these paths instead of the live dir,
        as an unmodified ssl.conf does (``localhost.crt``, ``localhost.key``, no chain file)."""
        self.ssl_files = (str(cert), str(key), None if chain is None else str(chain))
        self.write_config()

    def write_config(self, extra_lines: Sequence[str] = ()) -> None:
        """(Re)write the config; ``extra_lines`` go inside the virtual host (e.g. a broken line)."""
        cert_file, key_file, chain_file = self.ssl_files
        lines = [
            f'ServerRoot "{self.layout.server_root}"',
            "ServerName 127.0.0.1",
            f"PidFile {self.pid_file}",
            f"DefaultRuntimeDir {self.run_dir}",
            f"Mutex file:{self.run_dir} default",
            f"ErrorLog {self.error_log}",
            "LogLevel info",
            *self.layout.load_module_lines(),
            "TypesConfig /etc/mime.types",
            f"Listen 127.0.0.1:{self.port}",
            f"SSLSessionCache shmcb:{self.run_dir}/ssl_scache(512000)",
            f"<VirtualHost 127.0.0.1:{self.port}>",
            "  ServerName www.example.com",
            f'  DocumentRoot "{self.docroot}"',
            f'  <Directory "{self.docroot}">',
            "    Require all granted",
            "  </Directory>",
            "  SSLEngine on",
            f"  SSLCertificateFile {cert_file}",
            f"  SSLCertificateKeyFile {key_file}",
            *([f"  SSLCertificateChainFile {chain_file}"] if chain_file else []),
            *(f"  {line}" for line in extra_lines),
            "</VirtualHost>",
            "",
        ]
        write_file(self.conf_path, "\n".join(lines))

    def install(self, cert_pem: str, chain_pem: str, key_pem: str) -> None:
        """Replace the three files httpd reads (each atomically; the key is 0600 from creation)."""
        write_file(self.cert_dir / "chain.pem", chain_pem)
        write_file(self.cert_dir / "privkey.pem", key_pem, mode=0o600)
        write_file(self.cert_dir / "cert.pem", cert_pem)

    def install_issued(self, pki: Pki, leaf: Issued, key_of: Optional[Issued] = None) -> None:
        """Install ``leaf`` with the key of ``key_of`` (default: its own key)."""
        self.install(leaf.pem, pki.chain_pem(), (key_of or leaf).key_pem())

    # -- commands ---------------------------------------------------------------------------

    def configtest_argv(self) -> List[str]:
        return [self.layout.binary, "-f", str(self.conf_path), "-t"]

    def reload_argv(self) -> List[str]:
        return [self.layout.binary, "-f", str(self.conf_path), "-k", "graceful"]

    def start_argv(self) -> List[str]:
        return [self.layout.binary, "-f", str(self.conf_path), "-k", "start"]

    def stop_argv(self) -> List[str]:
        return [self.layout.binary, "-f", str(self.conf_path), "-k", "stop"]

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start httpd and wait until it accepts connections; raise with the error log if not."""
        done = subprocess.run(
            self.start_argv(), check=False, capture_output=True, text=True, timeout=30
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"apache start failed: {done.stderr.strip()} {self.error_log_tail()}"
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            pid = self.main_pid()
            if pid is not None:
                if pid not in self._started_pids:
                    self._started_pids.append(pid)
                if self._accepts():
                    return
            time.sleep(0.02)
        raise RuntimeError(f"apache did not come up on port {self.port}: {self.error_log_tail()}")

    def stop(self) -> None:
        """``-k stop``, wait for the main process to exit, then SIGKILL anything left of it.

        ``-k stop`` parses the config first; when a test broke it, SIGTERM does the same job.
        """
        pid = self.main_pid()
        if pid is not None:
            done = subprocess.run(self.stop_argv(), capture_output=True, timeout=30, check=False)
            if done.returncode != 0:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT_S
            while self.is_running() and time.monotonic() < deadline:
                time.sleep(0.02)
        for leftover in self._leftover_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(leftover, signal.SIGKILL)
        shutil.rmtree(self.docroot, ignore_errors=True)

    def main_pid(self) -> Optional[int]:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def is_running(self) -> bool:
        return self.main_pid() is not None

    def _leftover_pids(self) -> List[int]:
        """Live processes running this instance's config (main and children share its argv)."""
        marker = str(self.conf_path).encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if marker in argv and _alive(int(entry.name)):
                found.append(int(entry.name))
        return found

    def _accepts(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    # -- observations -----------------------------------------------------------------------

    def target(self, server_name: Optional[str] = "www.example.com") -> VerifyTarget:
        return VerifyTarget("127.0.0.1", self.port, server_name)

    def served_leaf_der(self, timeout_s: float = 5.0) -> bytes:
        return fetch_served_leaf(self.target(), timeout_s)

    def http_get(self, path: str = "/index.html") -> str:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        url = f"https://127.0.0.1:{self.port}{path}"
        with urllib.request.urlopen(url, context=context, timeout=5) as response:
            return str(response.read().decode())

    def error_log_tail(self, lines: int = 5) -> str:
        try:
            text = self.error_log.read_text(errors="replace")
        except OSError:
            return "(no error log)"
        return " | ".join(text.strip().splitlines()[-lines:])


def _alive(pid: int) -> bool:
    """Signal 0 reaches zombies too; /proc/PID/stat says whether it is one."""
    try:
        os.kill(pid, 0)
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (ProcessLookupError, FileNotFoundError):
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


class ApacheFactory:
    """Makes instances in fresh temporary directories and stops all of them at the end."""

    def __init__(self, tmp_path_factory: object) -> None:
        self._tmp = tmp_path_factory
        self.instances: List[ApacheInstance] = []

    def new(self, name: str = "www") -> ApacheInstance:
        root = self._tmp.mktemp("apache")  # type: ignore[attr-defined]
        instance = ApacheInstance(Path(root), name=name)
        self.instances.append(instance)
        return instance

    def started(self, pki: Pki, leaf: Optional[Issued] = None, name: str = "www") -> ApacheInstance:
        """A running instance serving ``leaf`` (a fresh leaf of ``pki`` by default)."""
        instance = self.new(name)
        instance.install_issued(pki, leaf or pki.leaf())
        instance.start()
        return instance

    def stop_all(self) -> None:
        errors = []
        for instance in self.instances:
            try:
                instance.stop()
            except Exception as exc:  # stop the others regardless
                errors.append(f"{instance.conf_path}: {exc}")
        self.instances.clear()
        if errors:
            raise RuntimeError("could not stop apache: " + "; ".join(errors))


def apache_factory(tmp_path_factory: object) -> Iterator[ApacheFactory]:
    """Fixture body: ``apache = pytest.fixture(apache_factory)`` (any scope)."""
    factory = ApacheFactory(tmp_path_factory)
    try:
        yield factory
    finally:
        factory.stop_all()
