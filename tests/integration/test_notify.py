"""The notify protocol against a test-owned AF_UNIX datagram socket, with both backends."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path
from typing import Iterator, List

import pytest

from certpull.notify import Notifier, socket_backend, systemd_backend

pytestmark = pytest.mark.integration

BACKENDS = ["systemd", "socket"]


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    sock.bind(str(path))
    sock.settimeout(2.0)
    # systemd-python reads the real process environment, so the test sets it there too
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield sock
    sock.close()


def drain(sock: socket.socket) -> List[str]:
    messages = []
    sock.setblocking(False)
    try:
        while True:
            messages.append(sock.recv(4096).decode())
    except BlockingIOError:
        pass
    finally:
        sock.setblocking(True)
    return messages


def test_systemd_python_is_installed_here() -> None:
    assert systemd_backend() is not None


@pytest.mark.parametrize("backend", BACKENDS)
def test_lifecycle_messages_arrive_in_order(
    backend: str, notify_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    n = Notifier(backend, monotonic_ns=lambda: 123_456_789_000)
    assert n.ready("1 certificate, loading")
    assert n.status("www: current (v1), next check in 4 min\nsecond line")
    assert n.watchdog()
    assert n.reloading()
    assert n.ready()
    assert n.stopping("stopping")
    assert drain(notify_socket) == [
        "READY=1\nSTATUS=1 certificate, loading",
        "STATUS=www: current (v1), next check in 4 min second line",
        "WATCHDOG=1",
        "RELOADING=1\nMONOTONIC_USEC=123456789",
        "READY=1",
        "STOPPING=1\nSTATUS=stopping",
    ]


def test_abstract_socket_with_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"certpull-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2.0)
        n = Notifier("socket", environ={"NOTIFY_SOCKET": "@" + name})
        assert n.ready()
        assert sock.recv(4096) == b"READY=1"


@pytest.mark.parametrize("backend", BACKENDS)
def test_abstract_socket_with_each_backend(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"certpull-test-{uuid.uuid4().hex}"
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2.0)
        assert Notifier(backend).status("ok")
        assert sock.recv(4096) == b"STATUS=ok"


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_notify_socket_is_a_silent_no_op(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    n = Notifier(backend)
    assert not n.enabled
    assert n.ready() is False
    assert n.status("x") is False


def test_a_vanished_socket_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    n = Notifier("socket", environ={"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    with caplog.at_level("DEBUG", logger="certpull.notify"):
        assert n.ready() is False
    assert "systemd notify failed" in caplog.text


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "junk"}, None),
        ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "junk"}, None),
    ],
)
def test_watchdog_interval(env: dict, expected: object) -> None:  # type: ignore[type-arg]
    n = Notifier(lambda m: True, environ={"NOTIFY_SOCKET": "/x", **env}, getpid=lambda: 4242)
    assert n.watchdog_interval_s() == expected


class Collector:
    def __init__(self) -> None:
        self.sent: List[str] = []

    def __call__(self, message: str) -> bool:
        self.sent.append(message)
        return True


def test_watchdog_is_not_sent_without_watchdog_usec() -> None:
    collector = Collector()
    n = Notifier(collector, environ={"NOTIFY_SOCKET": "/x"})
    assert n.watchdog() is False
    assert collector.sent == []


def test_injected_backend_and_bad_names() -> None:
    collector = Collector()
    n = Notifier(collector, environ={"NOTIFY_SOCKET": "/x"})
    assert n.stopping()
    assert collector.sent == ["STOPPING=1"]
    with pytest.raises(ValueError, match="unknown notify backend"):
        Notifier("dbus")
    assert socket_backend({})("READY=1") is False
