"""`certpull check-now`: arguments, replies and the fallback to a one-shot sync -> exit codes."""

from __future__ import annotations

import argparse
from typing import Any, List, Optional, Tuple

import pytest

from certpull.check_now import (
    EXIT_FAILED,
    EXIT_NO_AGENT,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    add_parser,
    run,
)
from certpull.config import Config, parse_config
from certpull.control import (
    BUSY,
    OK,
    STOPPING,
    TIMEOUT,
    USAGE,
    AgentNotRunning,
    CheckResult,
    ControlError,
    Reply,
)

ARN_WWW = "arn:aws:secretsmanager:us-east-1:111122223333:secret:www-tls-AbCdEf"
ARN_OTHER = "arn:aws:secretsmanager:us-east-1:111122223333:secret:other-tls-MnOpQr"
CONFIG = parse_config(f"[cert:www]\nsecret_arn = {ARN_WWW}\n", "/etc/certpull/certpull.conf")


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["check-now", *argv])


class Host:
    """What `run` talks to: the control socket (a canned reply or error) and the sync fallback."""

    def __init__(self, reply: Any = None, sync_code: int = EXIT_OK) -> None:
        self.reply = reply
        self.sync_code = sync_code
        self.requests: List[dict] = []  # type: ignore[type-arg]
        self.synced: List[List[str]] = []
        self.out: List[str] = []
        self.err: List[str] = []

    def request(self, path: str, **kwargs: Any) -> Reply:
        self.requests.append({"path": path, **kwargs})
        if isinstance(self.reply, Exception):
            raise self.reply
        assert isinstance(self.reply, Reply)
        return self.reply

    def sync(self, config: Config, names: List[str]) -> int:
        self.synced.append(names)
        return self.sync_code

    def run(self, *argv: str) -> int:
        return run(
            CONFIG,
            parse(*argv),
            sync=self.sync,
            request=self.request,
            out=self.out.append,
            err=self.err.append,
        )


def installed(status: str = "installed") -> Reply:
    return Reply(OK, "", (CheckResult("www", status, f"www: {status} v2", "v2"),))


@pytest.mark.parametrize(
    ("status", "code"),
    [
        ("installed", EXIT_OK),
        ("current", EXIT_OK),
        ("unchanged", EXIT_OK),
        ("pending", EXIT_OK),
        ("held", EXIT_OK),
        ("failed", EXIT_FAILED),
    ],
)
def test_the_result_decides_the_exit_code(status: str, code: int) -> None:
    host = Host(installed(status))
    assert host.run("--secret", ARN_WWW, "--timeout-s", "60") == code
    assert host.out == [f"www: {status} v2"]
    assert host.requests == [
        {
            "path": "/run/certpull/control.sock",
            "names": [],
            "secret_arn": ARN_WWW,
            "timeout_s": 60.0,
        }
    ]
    assert host.synced == []


@pytest.mark.parametrize(
    ("reply", "code", "message"),
    [
        (Reply(TIMEOUT, "www: no result within 119 s"), EXIT_TIMEOUT, "no result within"),
        (Reply(USAGE, "no [cert:x] section"), EXIT_USAGE, "no [cert:x]"),
        (Reply(BUSY, "more than 16 requests at once"), EXIT_FAILED, "more than 16"),
        (ControlError("malformed reply from the agent"), EXIT_FAILED, "malformed reply"),
    ],
)
def test_replies_that_are_not_results(reply: Any, code: int, message: str) -> None:
    host = Host(reply)
    assert host.run("www") == code
    assert len(host.err) == 1 and message in host.err[0]
    assert host.synced == []


@pytest.mark.parametrize(
    "reply", [AgentNotRunning("no agent answers on /run/certpull/control.sock"), Reply(STOPPING)]
)
@pytest.mark.parametrize("sync_code", [EXIT_OK, EXIT_FAILED])
def test_without_an_agent_it_syncs_itself(reply: Any, sync_code: int) -> None:
    host = Host(reply, sync_code=sync_code)
    assert host.run("--secret", ARN_WWW) == sync_code
    assert host.synced == [["www"]]
    assert "syncing www in this process" in host.err[0]


def test_no_fallback_exits_three_without_syncing() -> None:
    host = Host(AgentNotRunning("no agent answers on /run/certpull/control.sock"))
    assert host.run("www", "--no-fallback") == EXIT_NO_AGENT
    assert host.synced == []
    assert host.err == [
        "certpull check-now: no agent answers on /run/certpull/control.sock; "
        "not checking (--no-fallback)"
    ]


def test_a_secret_no_certificate_uses_succeeds_without_asking() -> None:
    host = Host(AgentNotRunning("would fail"))
    assert host.run("--secret", ARN_OTHER) == EXIT_OK
    assert host.out == [f"no certificate on this host uses {ARN_OTHER}"]
    assert host.requests == [] and host.synced == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ((), "name certificates or give --secret ARN"),
        (("www", "--secret", ARN_WWW), "name certificates or give --secret ARN"),
        (("www", "--timeout-s", "0"), "--timeout-s must be between 1 and"),
        (("nope",), "/etc/certpull/certpull.conf: no [cert:nope] section (configured: www)"),
    ],
)
def test_usage_errors(argv: Tuple[str, ...], message: str) -> None:
    host = Host(installed())
    assert host.run(*argv) == EXIT_USAGE
    assert len(host.err) == 1 and message in host.err[0]
    assert host.requests == [] and host.synced == []


def test_the_socket_path_can_be_given_for_tests() -> None:
    host = Host(installed())
    assert host.run("www", "--socket", "/tmp/x.sock") == EXIT_OK
    first: Optional[dict] = host.requests[0]  # type: ignore[type-arg]
    assert first is not None and first["path"] == "/tmp/x.sock"
