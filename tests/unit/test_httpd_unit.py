"""httpd.py without httpd: a FakeRunner, a fake clock and a fake fetch come in through the API.

Real subprocesses are refused here too (same guard as test_proc.py), except for the one test that
needs a real zombie process.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import pytest

from certpull.config_values import parse_host_port
from certpull.errors import CommandError, ReloadError
from certpull.httpd import (
    ConfigTestError,
    Httpd,
    VerifyTarget,
    describe_cert,
    wait_until_served,
)
from certpull.proc import CommandResult, CommandRunner
from tests.pki import Pki

# A pid no process can have (above Linux's PID_MAX_LIMIT of 2**22): signal 0 answers ESRCH.
DEAD_PID = 2**30


# -- test doubles ----------------------------------------------------------------------------

Script = Union[CommandResult, CommandError, Callable[[], None]]


class FakeRunner(CommandRunner):
    """Records argv; answers from a script keyed by argv (a result, an error, or an action)."""

    def __init__(self, script: Optional[Dict[Tuple[str, ...], Script]] = None) -> None:
        super().__init__()
        self.script = script or {}
        self.calls: List[Tuple[str, ...]] = []

    def run(
        self, argv: Sequence[str], timeout_s: Optional[float] = None, check: bool = True
    ) -> CommandResult:
        key = tuple(argv)
        self.calls.append(key)
        answer = self.script.get(key)
        if isinstance(answer, CommandError):
            raise answer
        if isinstance(answer, CommandResult):
            return answer
        if answer is not None:
            answer()
        return CommandResult(key, 0, "", "", 0.01)


@dataclass
class FakeClock:
    """Time moves only when the code under test sleeps; events fire when their time comes."""

    now: float = 100.0
    events: List[Tuple[float, Callable[[], None]]] = field(default_factory=list)
    sleeps: List[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        due = [e for e in self.events if e[0] <= self.now]
        self.events = [e for e in self.events if e[0] > self.now]
        for _, action in due:
            action()

    def at(self, offset_s: float, action: Callable[[], None]) -> None:
        self.events.append((self.now + offset_s, action))


CONFIGTEST = ("apachectl", "configtest")
RELOAD = ("systemctl", "reload", "httpd")


def make_httpd(
    runner: FakeRunner, pid_file: Optional[Path], clock: FakeClock, grace: float = 1.0
) -> Httpd:
    return Httpd(
        runner,
        CONFIGTEST,
        RELOAD,
        str(pid_file) if pid_file else None,
        alive_grace_s=grace,
        clock=clock,
        sleep=clock.sleep,
    )


def write_pid(path: Path, pid: Optional[int]) -> Callable[[], None]:
    def action() -> None:
        if pid is None:
            path.unlink()
        else:
            path.write_text(f"{pid}\n")

    return action


# -- main_pid / is_running -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, None),
        ("", None),
        ("abc\n", None),
        ("0\n", None),
        ("-1\n", None),
        (f"{DEAD_PID}\n", None),
        ("SELF", "SELF"),
        ("SELF_NO_NEWLINE", "SELF"),
    ],
)
def test_main_pid(tmp_path: Path, content: Optional[str], expected: Optional[str]) -> None:
    pid_file = tmp_path / "httpd.pid"
    if content == "SELF":
        pid_file.write_text(f"{os.getpid()}\n")
    elif content == "SELF_NO_NEWLINE":
        pid_file.write_text(str(os.getpid()))
    elif content is not None:
        pid_file.write_text(content)
    httpd = make_httpd(FakeRunner(), pid_file, FakeClock())
    assert httpd.main_pid() == (os.getpid() if expected == "SELF" else None)
    assert httpd.is_running() is (expected is not None)


def test_main_pid_without_pid_file_is_unknown() -> None:
    httpd = make_httpd(FakeRunner(), None, FakeClock())
    assert httpd.main_pid() is None
    assert httpd.is_running() is False


def test_a_zombie_is_not_running(real_subprocess: None, tmp_path: Path) -> None:
    # An exited, unreaped child still answers signal 0: exactly what a crashed, daemonized httpd
    # looks like under a PID 1 that does not reap.
    child = subprocess.Popen(["/bin/true"])
    try:
        status = Path(f"/proc/{child.pid}/stat")
        while status.read_text().rpartition(")")[2].split()[0] != "Z":
            os.sched_yield()
        os.kill(child.pid, 0)  # still "exists"
        pid_file = tmp_path / "httpd.pid"
        pid_file.write_text(str(child.pid))
        assert make_httpd(FakeRunner(), pid_file, FakeClock()).main_pid() is None
    finally:
        child.wait()


# -- config_test -----------------------------------------------------------------------------


def test_config_test_runs_the_configured_argv() -> None:
    runner = FakeRunner()
    make_httpd(runner, None, FakeClock()).config_test()
    assert runner.calls == [CONFIGTEST]


@pytest.mark.parametrize(
    ("stderr", "message"),
    [
        (
            "AH00526: Syntax error on line 23 of /etc/httpd/conf.d/ssl.conf:\n"
            "SSLCertificateFile: file '/etc/pki/certpull/www/cert.pem' does not exist or is empty\n",
            "`apachectl configtest` exited 1: AH00526: Syntax error on line 23 of "
            "/etc/httpd/conf.d/ssl.conf: SSLCertificateFile: file '/etc/pki/certpull/www/cert.pem' "
            "does not exist or is empty",
        ),
        (
            # Debian's apachectl adds two lines of its own after httpd's.
            "AH00526: Syntax error on line 3 of /etc/apache2/sites-enabled/x.conf:\n"
            "Invalid command 'SSLEngin', perhaps misspelled\n"
            "Action 'configtest' failed.\nThe Apache error log may have more information.\n",
            "`apachectl configtest` exited 1: AH00526: Syntax error on line 3 of "
            "/etc/apache2/sites-enabled/x.conf: Invalid command 'SSLEngin', perhaps misspelled",
        ),
        (
            "httpd: bad user name nobody\n",
            "`apachectl configtest` exited 1: httpd: bad user name nobody",
        ),
    ],
)
def test_config_test_failure_carries_httpds_message(stderr: str, message: str) -> None:
    runner = FakeRunner({CONFIGTEST: CommandError(CONFIGTEST, 1, "", stderr)})
    with pytest.raises(ReloadError) as caught:
        make_httpd(runner, None, FakeClock()).config_test()
    err = caught.value
    assert isinstance(err, CommandError)
    assert str(err) == message
    assert (err.argv, err.returncode, err.stderr) == (list(CONFIGTEST), 1, stderr)


def test_config_test_that_could_not_run_keeps_the_runner_error() -> None:
    missing = CommandError(
        CONFIGTEST, None, "", "", reason="could not run: No such file or directory"
    )
    runner = FakeRunner({CONFIGTEST: missing})
    with pytest.raises(CommandError) as caught:
        make_httpd(runner, None, FakeClock()).config_test()
    assert caught.value is missing
    assert not isinstance(caught.value, ConfigTestError)


# -- graceful_reload -------------------------------------------------------------------------


@pytest.fixture
def pid_file(tmp_path: Path) -> Path:
    path = tmp_path / "httpd.pid"
    path.write_text(f"{os.getpid()}\n")
    return path


def test_graceful_reload_runs_argv_and_watches_for_the_grace_period(pid_file: Path) -> None:
    runner, clock = FakeRunner(), FakeClock()
    make_httpd(runner, pid_file, clock, grace=1.0).graceful_reload()
    assert runner.calls == [RELOAD]
    assert clock.now - 100.0 == pytest.approx(1.0, abs=0.06)


def test_graceful_reload_raises_at_once_when_httpd_dies_during_the_reload(pid_file: Path) -> None:
    clock = FakeClock()
    runner = FakeRunner({RELOAD: write_pid(pid_file, DEAD_PID)})
    with pytest.raises(ReloadError, match=r"^httpd stopped after the graceful reload; .*AH02565"):
        make_httpd(runner, pid_file, clock, grace=1.0).graceful_reload()
    assert clock.sleeps == []


@pytest.mark.parametrize("after", [DEAD_PID, None])  # stale pid file, or removed
def test_graceful_reload_raises_when_httpd_dies_within_the_grace_period(
    pid_file: Path, after: Optional[int]
) -> None:
    clock = FakeClock()
    runner = FakeRunner({RELOAD: lambda: clock.at(0.3, write_pid(pid_file, after))})
    with pytest.raises(ReloadError, match="httpd stopped after the graceful reload"):
        make_httpd(runner, pid_file, clock, grace=1.0).graceful_reload()
    assert clock.now - 100.0 == pytest.approx(0.3, abs=0.06)


def test_graceful_reload_does_not_notice_a_death_after_the_grace_period(pid_file: Path) -> None:
    # The window is the contract: what happens later is wait_until_served's to catch.
    clock = FakeClock()
    runner = FakeRunner({RELOAD: lambda: clock.at(1.5, write_pid(pid_file, DEAD_PID))})
    make_httpd(runner, pid_file, clock, grace=1.0).graceful_reload()


def test_graceful_reload_ends_early_once_proven_and_hands_back_the_rest_of_the_grace(
    pid_file: Path,
) -> None:
    clock = FakeClock()
    proofs: List[float] = []

    def proven() -> bool:  # the new leaf reaches fresh handshakes 0.2 s after the command
        proofs.append(clock.now)
        return clock.now - 100.0 >= 0.2

    watch = make_httpd(FakeRunner(), pid_file, clock, grace=1.0).graceful_reload(proven)
    assert watch is not None
    assert clock.now - 100.0 == pytest.approx(0.2, abs=0.06)  # not the whole 1 s
    assert watch.remaining_s() == pytest.approx(0.8, abs=0.06)
    assert watch.poll() is None  # alive, window not over
    clock.now += 1.0
    assert watch.poll() is True  # lived through it


def test_the_rest_of_an_early_ended_grace_sees_httpd_die(pid_file: Path) -> None:
    clock = FakeClock()
    watch = make_httpd(FakeRunner(), pid_file, clock, grace=1.0).graceful_reload(lambda: True)
    assert watch is not None and clock.sleeps == []
    write_pid(pid_file, DEAD_PID)()
    assert watch.poll() is False


def test_no_proof_while_httpd_is_not_running_keeps_the_whole_grace(tmp_path: Path) -> None:
    # httpd started by the graceful: the pid file appears 0.2 s later; a proof before that (an
    # old process still answering) does not end the grace while no main process is seen alive.
    pid_file = tmp_path / "httpd.pid"
    clock = FakeClock()
    runner = FakeRunner({RELOAD: lambda: clock.at(0.2, write_pid(pid_file, os.getpid()))})
    watch = make_httpd(runner, pid_file, clock, grace=1.0).graceful_reload(lambda: True)
    assert watch is not None
    assert clock.now - 100.0 == pytest.approx(0.2, abs=0.06)


def test_a_reload_that_kills_httpd_is_caught_though_a_proof_was_offered(pid_file: Path) -> None:
    clock = FakeClock()
    runner = FakeRunner({RELOAD: lambda: clock.at(0.3, write_pid(pid_file, DEAD_PID))})
    with pytest.raises(ReloadError, match="httpd stopped after the graceful reload"):
        make_httpd(runner, pid_file, clock, grace=1.0).graceful_reload(lambda: False)


def test_graceful_reload_may_start_a_stopped_httpd(tmp_path: Path) -> None:
    # `apache2 -k graceful` starts httpd when it is not running; its pid file appears later.
    pid_file = tmp_path / "httpd.pid"
    clock = FakeClock()
    runner = FakeRunner({RELOAD: lambda: clock.at(0.2, write_pid(pid_file, os.getpid()))})
    make_httpd(runner, pid_file, clock, grace=1.0).graceful_reload()


def test_graceful_reload_raises_when_httpd_never_runs(tmp_path: Path) -> None:
    pid_file = tmp_path / "httpd.pid"
    with pytest.raises(
        ReloadError, match=r"httpd is not running after the graceful reload \(no live process in "
    ):
        make_httpd(FakeRunner(), pid_file, FakeClock(), grace=1.0).graceful_reload()


def test_graceful_reload_without_pid_file_does_not_watch() -> None:
    runner, clock = FakeRunner(), FakeClock()
    make_httpd(runner, None, clock).graceful_reload()
    assert runner.calls == [RELOAD]
    assert clock.sleeps == []


def test_graceful_reload_command_failure_is_a_reload_error(pid_file: Path) -> None:
    failure = CommandError(RELOAD, 1, "", "Job for httpd.service failed.\nSee journalctl -xe\n")
    runner, clock = FakeRunner({RELOAD: failure}), FakeClock()
    with pytest.raises(ReloadError) as caught:
        make_httpd(runner, pid_file, clock).graceful_reload()
    assert caught.value is failure
    assert str(caught.value) == "`systemctl reload httpd` exited 1: See journalctl -xe"
    assert clock.sleeps == []


@pytest.mark.parametrize(
    ("configtest", "reload", "grace", "message"),
    [
        ((), RELOAD, 1.0, "must not be empty"),
        (CONFIGTEST, (), 1.0, "must not be empty"),
        (CONFIGTEST, RELOAD, -1, "negative"),
    ],
)
def test_httpd_rejects_bad_arguments(
    configtest: Tuple[str, ...], reload: Tuple[str, ...], grace: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Httpd(FakeRunner(), configtest, reload, None, alive_grace_s=grace)


# -- VerifyTarget ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "server_name", "sni"),
    [
        ("127.0.0.1", "www.example.com", "www.example.com"),
        ("127.0.0.1", None, None),
        ("127.0.0.1", "", None),
        ("127.0.0.1", "10.0.0.1", None),
        ("::1", None, None),
        ("lb.internal", None, "lb.internal"),
        ("lb.internal", "www.example.com", "www.example.com"),
    ],
)
def test_sni_is_a_dns_name_or_nothing(
    host: str, server_name: Optional[str], sni: Optional[str]
) -> None:
    assert VerifyTarget(host, 443, server_name).sni == sni


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("127.0.0.1:443", "127.0.0.1:443"),
        ("[::1]:8443", "[::1]:8443"),
        ("h.example:1", "h.example:1"),
    ],
)
def test_verify_target_str_round_trips(value: str, text: str) -> None:
    assert str(VerifyTarget(*parse_host_port(value), server_name=None)) == text


# -- wait_until_served -----------------------------------------------------------------------

PKI = Pki()
OLD = PKI.leaf(slot=0)
NEW = PKI.leaf(slot=1)
TARGET = VerifyTarget("127.0.0.1", 8443, "www.example.com")


@dataclass
class FakeFetch:
    """Serves answers in order (the last one repeats); records the per-attempt timeouts."""

    answers: Sequence[Union[bytes, Exception]]
    timeouts: List[float] = field(default_factory=list)

    def __call__(self, target: VerifyTarget, timeout_s: float) -> bytes:
        assert target is TARGET
        self.timeouts.append(timeout_s)
        answer = self.answers[min(len(self.timeouts) - 1, len(self.answers) - 1)]
        if isinstance(answer, Exception):
            raise answer
        return answer


def wait(fetch: FakeFetch, clock: FakeClock, timeout_s: float = 10.0) -> float:
    return wait_until_served(
        TARGET, NEW.der, timeout_s, clock=clock, sleep=clock.sleep, fetch=fetch
    )


def test_wait_returns_at_once_when_already_served() -> None:
    clock, fetch = FakeClock(), FakeFetch([NEW.der])
    assert wait(fetch, clock) == 0.0
    assert clock.sleeps == []


@pytest.mark.parametrize("old_answers", [1, 3, 20])
def test_wait_polls_fresh_handshakes_until_the_new_leaf(old_answers: int) -> None:
    clock = FakeClock()
    fetch = FakeFetch([OLD.der] * old_answers + [NEW.der])
    waited = wait(fetch, clock)
    assert len(fetch.timeouts) == old_answers + 1
    assert waited == pytest.approx(sum(clock.sleeps))
    assert len(clock.sleeps) == old_answers


def test_wait_retries_connection_errors() -> None:
    refused = ReloadError("cannot connect to 127.0.0.1:8443: Connection refused")
    fetch = FakeFetch([refused, OSError("reset"), OLD.der, NEW.der])
    clock = FakeClock()
    wait(fetch, clock)
    assert len(fetch.timeouts) == 4


def test_wait_times_out_naming_served_and_expected() -> None:
    clock, fetch = FakeClock(), FakeFetch([OLD.der])
    with pytest.raises(ReloadError) as caught:
        wait(fetch, clock, timeout_s=2.0)
    message = str(caught.value)
    assert message.startswith("127.0.0.1:8443 does not serve the new certificate after 2 s: ")
    assert f"it serves {describe_cert(OLD.der)}, expected {describe_cert(NEW.der)}" in message
    assert format(OLD.cert.serial_number, "x")[:16] in message
    assert clock.now - 100.0 == pytest.approx(2.0, abs=0.06)


def test_wait_times_out_with_the_last_connection_error() -> None:
    clock = FakeClock()
    fetch = FakeFetch([ReloadError("cannot connect to 127.0.0.1:8443: Connection refused")])
    with pytest.raises(
        ReloadError,
        match=r"^127.0.0.1:8443 does not serve the new certificate after 1 s: cannot connect to 127.0.0.1:8443: Connection refused$",
    ):
        wait(fetch, clock, timeout_s=1.0)


def test_wait_bounds_each_attempt_by_what_is_left() -> None:
    clock, fetch = FakeClock(), FakeFetch([OLD.der])
    with pytest.raises(ReloadError):
        wait(fetch, clock, timeout_s=30.0)
    assert fetch.timeouts[0] == 5.0  # one stuck connect cannot eat the whole budget
    assert fetch.timeouts[-1] <= 5.0
    assert min(fetch.timeouts) > 0


def test_describe_cert() -> None:
    text = describe_cert(NEW.der)
    serial = format(NEW.cert.serial_number, "x")
    assert text.startswith(f"serial {serial[:16]}")
    assert text.endswith(")") and "sha256 " in text
    assert describe_cert(b"not a certificate").startswith("an unparsable certificate (sha256 ")
