"""`certpull run` as a real subprocess, with a test-owned NOTIFY_SOCKET (systemd's notify protocol)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, List, Optional

from tests.site import REPO, Site


class NotifySocket:
    """An AF_UNIX datagram socket collecting sd_notify messages, as systemd would."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: List[str] = []
        self._stop = False
        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()

    def _collect(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            self.messages.extend(line for line in data.decode().split("\n") if line)

    def close(self) -> None:
        self._stop = True
        self._thread.join(timeout=2)
        self.sock.close()

    def keys(self) -> List[str]:
        """The message keys in order, e.g. READY=1 kept whole, STATUS=... reduced to STATUS."""
        return [m if m.endswith("=1") else m.split("=", 1)[0] for m in self.messages]


class Daemon:
    """`certpull -c CONF run`; `command` replaces `python -m certpull` (an installed tree's launcher)."""

    def __init__(
        self,
        site: Site,
        extra_env: Optional[dict] = None,  # type: ignore[type-arg]
        command: Optional[List[str]] = None,
    ) -> None:
        self.site = site
        self.notify = NotifySocket(site.root / "notify.sock")
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO / "agent") + os.pathsep + env.get("PYTHONPATH", "")
        env["NOTIFY_SOCKET"] = str(self.notify.path)
        env.update(extra_env or {})
        self.log_path = site.root / "daemon.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [*(command or [sys.executable, "-m", "certpull"]), "-c", str(site.config_path), "run"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, what: str, check: Callable[[], bool], timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if check():
                return
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"daemon exited {self.proc.returncode} waiting for {what}:\n{self.log()}"
                )
            time.sleep(0.05)
        raise AssertionError(
            f"timed out after {timeout_s} s waiting for {what}; log:\n{self.log()[-4000:]}"
        )

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        self.wait_for("READY=1", lambda: "READY=1" in self.notify.messages, timeout_s)

    def wait_first_pass(self) -> None:
        """READY=1 carries one STATUS=; the first pass sends the next one."""
        self.wait_for("first pass", lambda: self.notify.keys().count("STATUS") >= 2)

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, timeout_s: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        self.notify.close()
        return self.proc.returncode
