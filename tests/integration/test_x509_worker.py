"""x509_worker.Worker against real child interpreters: the same answers and errors as
bundle.InProcess, the key only ever on the child's stdin, bounded failures, and the installed
leaf read back from memory instead of a second child."""

from __future__ import annotations

import datetime as dt
import re
import sys
from pathlib import Path

import pytest

from certpull.bundle import InProcess
from certpull.bundle_data import NotYetValid
from certpull.config import BundlePolicy
from certpull.errors import BundleError, X509WorkerError
from certpull.x509_worker import Worker
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
    worker = Worker(timeout_s=30, python=str(recording_python(tmp_path)))
    bundle = worker.validate(PKI.secret_string(PKI.leaf()), POLICY, now())
    assert worker.leaf_info(bundle.cert_pem) == bundle.leaf  # the installed cert.pem's bytes
    assert len((tmp_path / "argv.log").read_text().splitlines()) == 1
    other = PKI.leaf(slot=7)
    assert worker.leaf_info(other.pem.encode()) == InProcess().leaf_info(other.pem.encode())
    assert len((tmp_path / "argv.log").read_text().splitlines()) == 2  # another leaf: a child


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


def test_a_hung_worker_is_bounded_by_its_timeout(tmp_path: Path) -> None:
    hung = tmp_path / "python"
    hung.write_text("#!/bin/sh\nexec sleep 30\n")
    hung.chmod(0o700)
    with pytest.raises(X509WorkerError, match=r"did not answer within 0\.5 s"):
        Worker(timeout_s=0.5, python=str(hung)).leaf_info(PKI.leaf().pem.encode())


def test_a_crash_inside_the_child_names_its_type_not_its_traceback(tmp_path: Path) -> None:
    """A bug in the child's code (here: arguments it cannot take) is one line, no traceback."""
    worker = Worker(timeout_s=30)
    with pytest.raises(X509WorkerError, match=r"^the X.509 worker failed: TypeError: ") as caught:
        worker._call("leaf_info", b"x", b"y")
    assert "Traceback" not in str(caught.value)
