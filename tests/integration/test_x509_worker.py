"""x509_worker.Worker against real child interpreters: the same answers and errors as
bundle.InProcess, the key only ever on the child's stdin, bounded failures, the installed leaf
read back from memory instead of a call, and one child lingering for a burst of calls, then
gone."""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from certpull.bundle import InProcess
from certpull.bundle_data import NotYetValid
from certpull.config import BundlePolicy
from certpull.errors import BundleError, X509WorkerError
from certpull.x509_worker import BOOT, Worker
from tests.pki import Pki, now

pytestmark = pytest.mark.integration

PKI = Pki()
POLICY = BundlePolicy(server_name="www.example.com")


def recording_python(tmp_path: Path) -> Path:
    """A python that logs its argv, then runs the real one: how many children, and with what."""
    script = tmp_path / "python"
    script.write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$*" >> {tmp_path / "argv.log"}\nexec {sys.executable} "$@"\n'
    )
    script.chmod(0o700)
    return script


def test_validate_in_a_child_equals_validate_in_process() -> None:
    secret = PKI.secret_string(PKI.leaf())
    at = now()
    assert Worker(timeout_s=30).validate(secret, POLICY, at) == InProcess().validate(
        secret, POLICY, at
    )


def test_a_refused_bundle_is_the_same_bundle_error_with_the_same_message() -> None:
    secret = PKI.secret_string(PKI.leaf(), PRIVATE_KEY_PEM=PKI.leaf(slot=5).key_pem())
    with pytest.raises(BundleError) as in_process:
        InProcess().validate(secret, POLICY, now())
    with pytest.raises(BundleError) as in_child:
        Worker(timeout_s=30).validate(secret, POLICY, now())
    assert type(in_child.value) is type(in_process.value)
    assert str(in_child.value) == str(in_process.value)
    assert "does not match" in str(in_child.value)


def test_not_yet_valid_comes_back_with_its_leaf() -> None:
    start = now() + dt.timedelta(minutes=20)
    secret = PKI.secret_string(PKI.leaf(not_before=start))
    with pytest.raises(NotYetValid) as caught:
        Worker(timeout_s=30).validate(secret, POLICY, now())
    assert caught.value.not_before == start
    assert caught.value.leaf.not_before == start


def test_the_key_goes_down_the_pipe_never_in_argv(tmp_path: Path) -> None:
    leaf = PKI.leaf()
    worker = Worker(timeout_s=30, python=str(recording_python(tmp_path)))
    worker.validate(PKI.secret_string(leaf), POLICY, now())
    argv = (tmp_path / "argv.log").read_text()
    assert "PRIVATE KEY" not in argv
    assert leaf.key_pem().splitlines()[1] not in argv


def test_the_leaf_of_a_validated_bundle_is_read_back_without_a_second_child(
    tmp_path: Path,
) -> None:
    worker = Worker(timeout_s=30, python=str(recording_python(tmp_path)), linger_s=0)
    bundle = worker.validate(PKI.secret_string(PKI.leaf()), POLICY, now())
    assert worker.child_pid is None  # linger 0: one child per call
    assert worker.leaf_info(bundle.cert_pem) == bundle.leaf  # the installed cert.pem's bytes
    assert len((tmp_path / "argv.log").read_text().splitlines()) == 1
    other = PKI.leaf(slot=7)
    assert worker.leaf_info(other.pem.encode()) == InProcess().leaf_info(other.pem.encode())
    assert len((tmp_path / "argv.log").read_text().splitlines()) == 2  # another leaf: a child


def children(tmp_path: Path) -> int:
    return len((tmp_path / "argv.log").read_text().splitlines())


def gone(pid: int, within_s: float = 10.0) -> bool:
    """The process has exited and been reaped (no zombie left behind)."""
    deadline = time.monotonic() + within_s
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.02)
    return not os.path.exists(f"/proc/{pid}")


def test_a_burst_of_calls_is_answered_by_one_lingering_child(tmp_path: Path) -> None:
    worker = Worker(timeout_s=30, python=str(recording_python(tmp_path)), linger_s=60)
    try:
        leaves = [PKI.leaf(slot=slot) for slot in (1, 2, 3)]
        bundles = [worker.validate(PKI.secret_string(leaf), POLICY, now()) for leaf in leaves]
        assert [b.leaf for b in bundles] == [InProcess().leaf_info(b.cert_pem) for b in bundles]
        assert len({b.leaf.serial for b in bundles}) == 3
        pid = worker.child_pid
        assert pid is not None and children(tmp_path) == 1
    finally:
        worker.close()
    assert gone(pid) and worker.child_pid is None


def test_the_lingering_child_is_ended_and_reaped_after_its_linger(tmp_path: Path) -> None:
    worker = Worker(timeout_s=30, linger_s=0.3)
    worker.leaf_info(PKI.leaf().pem.encode())
    pid = worker.child_pid
    assert pid is not None
    assert gone(pid)
    assert worker.child_pid is None


def test_a_prepared_child_answers_the_next_call_or_leaves_after_its_linger(tmp_path: Path) -> None:
    worker = Worker(timeout_s=30, python=str(recording_python(tmp_path)), linger_s=60)
    try:
        worker.prepare()  # before GetSecretValue: the child imports while the secret comes
        prepared = worker.child_pid
        assert prepared is not None
        worker.validate(PKI.secret_string(PKI.leaf()), POLICY, now())
        assert worker.child_pid == prepared and children(tmp_path) == 1
    finally:
        worker.close()
    unused = Worker(timeout_s=30, linger_s=0.3)
    unused.prepare()  # and then the fetch failed: nothing calls
    pid = unused.child_pid
    assert pid is not None and gone(pid)
    once = Worker(timeout_s=30, linger_s=0)
    once.prepare()
    assert once.child_pid is None  # linger 0: a child per call, none ahead


def test_a_lingering_child_killed_meanwhile_is_replaced_once(tmp_path: Path) -> None:
    worker = Worker(timeout_s=30, python=str(recording_python(tmp_path)), linger_s=60)
    try:
        worker.leaf_info(PKI.leaf(slot=1).pem.encode())
        first = worker.child_pid
        assert first is not None
        os.kill(first, signal.SIGKILL)  # the OOM killer, say
        other = PKI.leaf(slot=2)
        assert worker.leaf_info(other.pem.encode()) == InProcess().leaf_info(other.pem.encode())
        assert worker.child_pid not in (None, first) and children(tmp_path) == 2
    finally:
        worker.close()


def test_a_child_leaves_on_its_own_when_no_request_comes() -> None:
    """Should the daemon stop answering (SIGSTOP, a hang), its child does not stay forever."""
    child = subprocess.Popen(
        [sys.executable, "-B", "-c", BOOT.format(paths=list(sys.path), idle_s=0.3)],
        stdin=subprocess.PIPE,  # held open: no end of file tells it to go
    )
    try:
        assert child.wait(timeout=30) == 0
    finally:
        if child.poll() is None:
            child.kill()
        assert child.stdin is not None
        child.stdin.close()


def test_an_installed_bundle_and_an_unreadable_leaf(tmp_path: Path) -> None:
    bundle = InProcess().validate(PKI.secret_string(PKI.leaf()), POLICY, now())
    worker = Worker(timeout_s=30)
    assert worker.installed_bundle(bundle.files()) == InProcess().installed_bundle(bundle.files())
    with pytest.raises(BundleError, match=r"cert\.pem"):
        worker.leaf_info(b"not a certificate")


@pytest.mark.parametrize(
    ("python", "timeout_s", "message"),
    [
        ("/nonexistent/python3", 5.0, "cannot start the X.509 worker"),
        ("/bin/false", 5.0, "the X.509 worker failed (exit 1)"),
    ],
)
def test_a_worker_that_cannot_answer_is_a_transient_worker_error(
    python: str, timeout_s: float, message: str
) -> None:
    with pytest.raises(X509WorkerError, match=re.escape(message)):
        Worker(timeout_s=timeout_s, python=python).leaf_info(PKI.leaf().pem.encode())


@pytest.mark.parametrize("size", [1_000, 300_000])  # the second does not fit in a pipe
def test_a_hung_worker_is_bounded_by_its_timeout(tmp_path: Path, size: int) -> None:
    hung = tmp_path / "python"
    hung.write_text("#!/bin/sh\nexec sleep 30\n")
    hung.chmod(0o700)
    worker = Worker(timeout_s=0.5, python=str(hung))
    started = time.monotonic()
    with pytest.raises(X509WorkerError, match=r"did not answer within 0\.5 s"):
        worker.leaf_info(b"x" * size)
    assert time.monotonic() - started < 4  # killed at the timeout, not left to linger
    assert worker.child_pid is None


def test_a_crash_inside_the_child_names_its_type_not_its_traceback(tmp_path: Path) -> None:
    """A bug in the child's code (here: arguments it cannot take) is one line, no traceback."""
    worker = Worker(timeout_s=30)
    with pytest.raises(X509WorkerError, match=r"^the X.509 worker failed: TypeError: ") as caught:
        worker._call("leaf_info", b"x", b"y")
    assert "Traceback" not in str(caught.value)
