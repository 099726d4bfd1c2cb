"""A SIGSTOPped agent resumed later (issue 12, item 5) does not count a finished reload as timed
out: neither the reload command that finished while it was stopped, nor the served-leaf check
whose handshake started before the stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import List

from certpull.errors import ReloadError
from certpull.httpd import VerifyTarget, wait_until_served
from tests.pki import Pki

PKI = Pki()
OLD, NEW = PKI.leaf(slot=0), PKI.leaf(slot=1)
TARGET = VerifyTarget("127.0.0.1", 8443, "www.example.com")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_a_handshake_that_spans_a_stop_longer_than_the_timeout_is_checked_again() -> None:
    """The first handshake began before the reload reached new connections; the agent was then
    stopped for a minute. The served leaf is checked once more before failing, and matches."""
    clock = Clock()
    answers: List[bytes] = []

    def fetch(target: VerifyTarget, timeout_s: float) -> bytes:
        answers.append(b"")
        if len(answers) == 1:
            clock.now += 60.0  # SIGSTOP ... SIGCONT inside the handshake
            return OLD.der
        return NEW.der

    waited = wait_until_served(TARGET, NEW.der, 10.0, clock=clock, sleep=clock.sleep, fetch=fetch)
    assert len(answers) == 2 and waited >= 60.0


def test_a_leaf_that_is_still_wrong_after_the_deadline_fails_as_before() -> None:
    clock = Clock()
    calls: List[float] = []

    def fetch(target: VerifyTarget, timeout_s: float) -> bytes:
        calls.append(clock.now)
        clock.now += 60.0 if len(calls) == 1 else 0.0
        return OLD.der

    try:
        wait_until_served(TARGET, NEW.der, 10.0, clock=clock, sleep=clock.sleep, fetch=fetch)
    except ReloadError as exc:
        assert "does not serve the new certificate after 10 s" in str(exc)
    else:
        raise AssertionError("an old leaf after the deadline must fail")
    assert len(calls) == 2  # the re-check ran once, after the stop; nothing more


CHILD = """
import sys, time
from certpull.proc import CommandRunner
from certpull.errors import CommandError
print("ready", flush=True)
try:
    result = CommandRunner().run(["sleep", "0.5"], timeout_s=1.5)
except CommandError as exc:
    print("failed:", exc, flush=True)
else:
    print("ok", result.returncode, flush=True)
"""


def test_a_command_that_finished_while_the_agent_was_stopped_is_not_a_timeout(
    real_subprocess: None,
) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True, env=dict(os.environ)
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        time.sleep(0.2)  # the command runs; the agent waits for it
        os.kill(child.pid, signal.SIGSTOP)
        time.sleep(2.5)  # longer than the command's timeout; the command finishes meanwhile
        os.kill(child.pid, signal.SIGCONT)
        out, _ = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert out.strip() == "ok 0", out
