"""systemd's notify protocol (``Type=notify``): READY, STATUS, WATCHDOG, RELOADING, STOPPING.

Uses ``systemd.daemon.notify`` from systemd-python when it is importable; otherwise sends the
datagram to ``$NOTIFY_SOCKET`` itself (the protocol is one ``AF_UNIX`` datagram of
newline-separated ``KEY=VALUE`` lines; ``@`` names an abstract socket), because Amazon Linux 2023
may not ship python3-systemd. Without ``NOTIFY_SOCKET`` (not under systemd) every call is a
no-op. A failed notification is logged at debug level and never raised: the agent must not stop
because its supervisor is gone.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Callable, Mapping, Optional

log = logging.getLogger(__name__)

Backend = Callable[[str], bool]
"""Sends one notification message; returns whether it was sent."""


def systemd_backend() -> Optional[Backend]:
    """``systemd.daemon.notify`` if systemd-python is installed, else None."""
    try:
        import systemd.daemon as sd_daemon  # noqa: PLC0415 - optional dependency
    except ImportError:
        return None

    def send(message: str) -> bool:
        return bool(sd_daemon.notify(message))

    return send


def socket_backend(environ: Optional[Mapping[str, str]] = None) -> Backend:
    """Send the datagram to ``$NOTIFY_SOCKET`` directly (path or ``@abstract``)."""
    env = os.environ if environ is None else environ

    def send(message: str) -> bool:
        address = env.get("NOTIFY_SOCKET", "")
        if not address:
            return False
        if address.startswith("@"):
            address = "\0" + address[1:]
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message.encode("utf-8"), address)
        return True

    return send


class Notifier:
    """What the run loop tells systemd. ``backend``: "auto", "systemd", "socket", or a callable."""

    def __init__(
        self,
        backend: object = "auto",
        environ: Optional[Mapping[str, str]] = None,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
        getpid: Callable[[], int] = os.getpid,
    ) -> None:
        self._env = os.environ if environ is None else environ
        self._monotonic_ns = monotonic_ns
        self._getpid = getpid
        self._send = self._pick(backend)

    def _pick(self, backend: object) -> Backend:
        if callable(backend):
            return backend
        if backend == "socket":
            return socket_backend(self._env)
        if backend in ("auto", "systemd"):
            found = systemd_backend()
            if found is not None:
                return found
            if backend == "systemd":
                raise RuntimeError("systemd-python is not installed (python3-systemd)")
            return socket_backend(self._env)
        raise ValueError(f"unknown notify backend {backend!r}")

    @property
    def enabled(self) -> bool:
        """True when running under systemd with a notify socket."""
        return bool(self._env.get("NOTIFY_SOCKET"))

    def ready(self, status: Optional[str] = None) -> bool:
        """Config loaded and local state recovered (not waiting on AWS)."""
        return self._notify("READY=1", status)

    def reloading(self, status: Optional[str] = None) -> bool:
        """Starting a config reload; call ``ready()`` when done.

        Carries MONOTONIC_USEC, which ``Type=notify-reload`` (systemd >= 253) requires and
        older versions ignore.
        """
        usec = self._monotonic_ns() // 1000
        return self._notify(f"RELOADING=1\nMONOTONIC_USEC={usec}", status)

    def stopping(self, status: Optional[str] = None) -> bool:
        return self._notify("STOPPING=1", status)

    def status(self, text: str) -> bool:
        """One-line summary shown by ``systemctl status``."""
        return self._notify(None, text)

    def watchdog(self) -> bool:
        """Keep-alive from the main loop; only sent when WatchdogSec applies to this process."""
        if self.watchdog_interval_s() is None:
            return False
        return self._notify("WATCHDOG=1", None)

    def watchdog_interval_s(self) -> Optional[float]:
        """How often to send WATCHDOG=1: half of WATCHDOG_USEC, or None when not asked.

        Honours WATCHDOG_PID: the request is for that process only (not a child we started).
        """
        usec_text = self._env.get("WATCHDOG_USEC", "")
        pid_text = self._env.get("WATCHDOG_PID", "")
        try:
            usec = int(usec_text)
        except ValueError:
            return None
        if usec <= 0:
            return None
        if pid_text:
            try:
                if int(pid_text) != self._getpid():
                    return None
            except ValueError:
                return None
        return usec / 2 / 1_000_000

    def _notify(self, state: Optional[str], status: Optional[str]) -> bool:
        lines = [state] if state else []
        if status is not None:
            lines.append("STATUS=" + " ".join(status.split()))
        if not lines or not self.enabled:
            return False
        message = "\n".join(lines)
        try:
            return self._send(message)
        except OSError as exc:
            log.debug("systemd notify failed: %s", exc)
            return False
