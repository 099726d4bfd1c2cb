"""The control channel on a real UNIX socket in tmp_path, with a stand-in for the daemon's loop
(a thread that runs one "pass" per trigger and records it in PassResults, as the loop will)."""

from __future__ import annotations

import os
import queue
import socket
import stat
import threading
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import pytest

from certpull.control import (
    BUSY,
    OK,
    STOPPING,
    TIMEOUT,
    USAGE,
    AgentNotRunning,
    CheckResult,
    ControlError,
    ControlServer,
    PassResults,
    Reply,
    config_resolver,
    request_check,
)

ARN_WWW = "arn:aws:secretsmanager:us-east-1:111122223333:secret:www-tls-AbCdEf"
ARN_API = "arn:aws:secretsmanager:us-east-1:111122223333:secret:api-tls-GhIjKl"
CERTS = {"www": ARN_WWW, "api": ARN_API}


class FakeLoop:
    """One pass per trigger, `pass_s` long, with the status set per name."""

    def __init__(self, results: PassResults, pass_s: float = 0.05) -> None:
        self.results = results
        self.pass_s = pass_s
        self.status: Dict[str, str] = {}
        self.triggers: List[Tuple[float, str]] = []
        self.enabled = True
        self._queue: queue.Queue[Optional[str]] = queue.Queue()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def trigger(self, name: str) -> None:
        self.triggers.append((time.monotonic(), name))
        if self.enabled:
            self._queue.put(name)

    def run_pass(self, name: str, status: str) -> None:
        pass_id = self.results.started([name])
        time.sleep(self.pass_s)
        self.results.finished(pass_id, {name: CheckResult(name, status, f"{name}: {status}")})

    def _run(self) -> None:
        while True:
            name = self._queue.get()
            if name is None:
                return
            self.run_pass(name, self.status.get(name, "installed"))

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)


@pytest.fixture
def sock_path(tmp_path: Path) -> str:
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    return str(run / "control.sock")


@pytest.fixture
def results() -> PassResults:
    return PassResults()


@pytest.fixture
def loop(results: PassResults) -> Iterator[FakeLoop]:
    fake = FakeLoop(results)
    yield fake
    fake.close()


def serve(path: str, loop: FakeLoop, **kwargs: object) -> ControlServer:
    server = ControlServer(
        path,
        trigger=loop.trigger,
        results=loop.results,
        resolve=config_resolver(lambda: CERTS),
        **kwargs,  # type: ignore[arg-type]
    )
    server.start()
    return server


@pytest.fixture
def server(sock_path: str, loop: FakeLoop) -> Iterator[ControlServer]:
    srv = serve(sock_path, loop)
    yield srv
    srv.stop()


def test_check_by_name_waits_for_the_pass_it_triggered(
    server: ControlServer, loop: FakeLoop
) -> None:
    reply = request_check(server.path, names=["www"], timeout_s=10)
    assert reply.code == OK and reply.ok
    assert reply.results == (CheckResult("www", "installed", "www: installed"),)
    assert [name for _, name in loop.triggers] == ["www"]


def test_a_failed_install_is_reported_as_failed(server: ControlServer, loop: FakeLoop) -> None:
    loop.status["www"] = "failed"
    reply = request_check(server.path, names=["www"], timeout_s=10)
    assert reply.code == OK and not reply.ok
    assert reply.results[0].message == "www: failed"


def test_a_pass_that_started_before_the_request_does_not_answer_it(
    server: ControlServer, loop: FakeLoop, results: PassResults
) -> None:
    # A regular check of www is running (it may have read the old AWSCURRENT) when the
    # doorbell rings; it ends after the trigger. Only the pass after it may answer.
    early = results.started(["www"])
    replies: queue.Queue[object] = queue.Queue()
    threading.Thread(
        target=lambda: replies.put(request_check(server.path, names=["www"], timeout_s=10)),
        daemon=True,
    ).start()
    deadline = time.monotonic() + 5
    while not loop.triggers and time.monotonic() < deadline:
        time.sleep(0.01)
    results.finished(early, {"www": CheckResult("www", "current", "www: current (old)")})
    reply = replies.get(timeout=10)
    assert reply.results == (CheckResult("www", "installed", "www: installed"),)  # type: ignore[attr-defined]


def test_check_by_secret_arn_checks_the_certificates_that_use_it(
    server: ControlServer, loop: FakeLoop
) -> None:
    partial = ARN_API[: -len("-GhIjKl")]  # partial ARNs match as for rotation events
    reply = request_check(server.path, secret_arn=partial, timeout_s=10)
    assert [r.name for r in reply.results] == ["api"]
    assert [name for _, name in loop.triggers] == ["api"]


def test_a_secret_no_certificate_uses_is_ok_and_checks_nothing(
    server: ControlServer, loop: FakeLoop
) -> None:
    other = "arn:aws:secretsmanager:us-east-1:111122223333:secret:other-tls-MnOpQr"
    reply = request_check(server.path, secret_arn=other, timeout_s=10)
    assert reply.code == OK and reply.ok and reply.results == ()
    assert "no certificate on this host uses" in reply.message
    assert loop.triggers == []


def test_an_unknown_name_is_a_usage_error(server: ControlServer, loop: FakeLoop) -> None:
    reply = request_check(server.path, names=["nope"], timeout_s=10)
    assert reply.code == USAGE and "no [cert:nope] section (configured: api, www)" in reply.message
    assert loop.triggers == []


def test_no_result_in_time_is_a_timeout(server: ControlServer, loop: FakeLoop) -> None:
    loop.enabled = False  # the daemon never gets to it
    started = time.monotonic()
    reply = request_check(server.path, names=["www"], timeout_s=2)
    took = time.monotonic() - started
    assert reply.code == TIMEOUT and not reply.ok
    assert "www: no result within" in reply.message
    assert 0.9 <= took < 2.0  # answered before the caller's deadline


def test_the_host_splay_delays_the_trigger(sock_path: str, loop: FakeLoop) -> None:
    srv = serve(sock_path, loop, splay_s=0.6)
    try:
        asked = time.monotonic()
        reply = request_check(sock_path, names=["www"], timeout_s=10)
    finally:
        srv.stop()
    assert reply.ok and reply.splay_s == 0.6
    ((triggered, _),) = loop.triggers
    assert triggered - asked >= 0.6


def test_the_splay_never_takes_more_than_half_the_timeout(sock_path: str, loop: FakeLoop) -> None:
    srv = serve(sock_path, loop, splay_s=60.0)
    try:
        reply = request_check(sock_path, names=["www"], timeout_s=4)
    finally:
        srv.stop()
    assert reply.ok and reply.splay_s == 2.0


def test_a_splay_given_as_a_callable_is_asked_at_each_request_only(
    sock_path: str, loop: FakeLoop
) -> None:
    asked: List[int] = []

    def splay() -> float:  # the daemon's: the instance id is looked up on the first request
        asked.append(1)
        return 0.3

    srv = serve(sock_path, loop, splay_s=splay)
    try:
        assert asked == []  # not at start
        first = request_check(sock_path, names=["www"], timeout_s=10)
        second = request_check(sock_path, names=["www"], timeout_s=10)
    finally:
        srv.stop()
    assert first.ok and second.ok and first.splay_s == 0.3
    assert len(asked) == 2


def test_stopping_releases_a_waiting_request(sock_path: str, loop: FakeLoop) -> None:
    loop.enabled = False
    srv = serve(sock_path, loop)
    replies: queue.Queue[object] = queue.Queue()
    threading.Thread(
        target=lambda: replies.put(request_check(sock_path, names=["www"], timeout_s=30)),
        daemon=True,
    ).start()
    time.sleep(0.3)
    started = time.monotonic()
    srv.stop()
    reply = replies.get(timeout=10)
    assert reply.code == STOPPING  # type: ignore[attr-defined]
    assert time.monotonic() - started < 3
    assert not os.path.exists(sock_path)


def test_too_many_requests_at_once_are_told_busy(sock_path: str, loop: FakeLoop) -> None:
    loop.enabled = False
    srv = serve(sock_path, loop, max_clients=2)
    replies: queue.Queue[object] = queue.Queue()
    try:
        for _ in range(2):
            threading.Thread(
                target=lambda: replies.put(request_check(sock_path, names=["www"], timeout_s=3)),
                daemon=True,
            ).start()
        time.sleep(0.3)
        third = request_check(sock_path, names=["www"], timeout_s=3)
    finally:
        srv.stop()
    assert third.code == BUSY


# --- no agent, stale sockets, permissions --------------------------------------------------------


def test_no_socket_means_no_agent(sock_path: str) -> None:
    with pytest.raises(AgentNotRunning, match="no agent answers on"):
        request_check(sock_path, names=["www"])


def test_a_stale_socket_means_no_agent_and_is_replaced_on_start(
    sock_path: str, loop: FakeLoop
) -> None:
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(sock_path)  # an agent that was SIGKILLed leaves this behind
    dead.close()
    with pytest.raises(AgentNotRunning):
        request_check(sock_path, names=["www"])
    srv = serve(sock_path, loop)
    try:
        assert request_check(sock_path, names=["www"], timeout_s=10).ok
    finally:
        srv.stop()


def test_a_second_agent_does_not_steal_the_socket(server: ControlServer, loop: FakeLoop) -> None:
    with pytest.raises(ControlError, match="another certpull agent already answers"):
        serve(server.path, loop)
    assert request_check(server.path, names=["www"], timeout_s=10).ok


def test_a_file_in_the_way_is_not_replaced(sock_path: str, loop: FakeLoop) -> None:
    Path(sock_path).write_text("not a socket")
    with pytest.raises(ControlError, match="is not a socket"):
        serve(sock_path, loop)
    assert Path(sock_path).read_text() == "not a socket"


def test_socket_and_directory_are_private(tmp_path: Path, loop: FakeLoop) -> None:
    path = tmp_path / "fresh" / "control.sock"
    srv = serve(str(path), loop)
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    finally:
        srv.stop()


def test_a_directory_others_may_write_is_refused(tmp_path: Path, loop: FakeLoop) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(ControlError, match="writable by others"):
        serve(str(shared / "control.sock"), loop)


def test_callers_of_another_uid_are_refused(sock_path: str, loop: FakeLoop) -> None:
    srv = serve(sock_path, loop, allowed_uids={os.geteuid() + 12345})
    try:
        reply = request_check(sock_path, names=["www"], timeout_s=10)
    finally:
        srv.stop()
    assert reply.code == USAGE and "may not use the control socket" in reply.message
    assert loop.triggers == []


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"hello\n", "not JSON"),
        (b'{"op": "reload"}\n', '"op": "check"'),
        (b'{"op": "check"}\n', "not both and not neither"),
        (b'{"op": "check", "names": ["www"], "secret_arn": "x"}\n', "not both"),
        (b'{"op": "check", "names": "www"}\n', "must be a list"),
        (b'{"op": "check", "names": ["www"], "timeout_s": 0}\n', "between 1 and"),
        (b'{"op": "check", "names": ["www"], "timeout_s": true}\n', "must be a number"),
        (b"{" + b"x" * 70000, "longer than"),
    ],
)
def test_malformed_requests_get_one_clear_line(
    server: ControlServer, loop: FakeLoop, raw: bytes, message: str
) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(server.path)
        sock.sendall(raw)
        answer = sock.makefile().readline()
    reply = Reply.from_json(answer)
    assert reply.code == USAGE and message in reply.message
    assert answer.count("\n") == 1 and "Traceback" not in answer
    assert loop.triggers == []


def test_a_caller_that_never_finishes_its_request_is_dropped(
    sock_path: str, loop: FakeLoop
) -> None:
    srv = serve(sock_path, loop, read_timeout_s=0.3)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(sock_path)
            sock.sendall(b'{"op": "check", ')  # and nothing more
            answer = sock.makefile().readline()
        assert "no complete request within 0.3 s" in answer
        assert request_check(sock_path, names=["www"], timeout_s=10).ok  # still serving
    finally:
        srv.stop()
