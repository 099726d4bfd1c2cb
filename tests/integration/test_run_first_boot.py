"""A fresh host under `certpull run` (issue 10, part 2), as a real subprocess against moto server
(through the proxy) and a real Apache, with a test-owned NOTIFY_SOCKET standing in for systemd:
the first install comes before READY=1 (httpd, ordered after the agent, then starts on the
files); an installed host is READY before any AWS call; a first install that comes after READY
starts the stopped httpd itself. httpd_pid_file is left unset: the agent asks httpd for its
PidFile (`httpd -t -D DUMP_RUN_CFG`)."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Iterator

import pytest

from tests.apache import ApacheFactory
from tests.aws_local import LocalAws
from tests.aws_proxy import AwsProxy, Fault
from tests.daemon_proc import Daemon
from tests.import_gate import ImportGate
from tests.pki import Pki
from tests.site import REPO, Site

pytestmark = pytest.mark.integration


@pytest.fixture
def fresh(
    tmp_path: Path, local_aws: LocalAws, aws_proxy: AwsProxy, apache: ApacheFactory, pki: Pki
) -> Iterator[Site]:
    """A host with the secret in AWS, no certificate installed, httpd not started yet."""
    s = Site(tmp_path, local_aws, aws_proxy, apache.new(), pki)
    s.leaf = pki.leaf()  # type: ignore[attr-defined]
    # The shipped splay: a first install skips it. httpd_pid_file empty: learned from httpd.
    s.agent_options.update({"startup_splay_s": "10", "max_backoff_s": "5", "httpd_pid_file": ""})
    s.create_secret(s.leaf)  # type: ignore[attr-defined]
    yield s


def ready_status(daemon: Daemon) -> str:
    """The STATUS= that comes with READY=1 (or right after it, from the loop, when READY=1 was
    sent before the loop was built)."""
    at = daemon.notify.messages.index("READY=1")
    daemon.wait_for("STATUS= after READY=1", lambda: len(daemon.notify.messages) > at + 1)
    return daemon.notify.messages[at + 1]


def test_the_first_install_comes_before_ready_so_httpd_starts_on_the_files(fresh: Site) -> None:
    daemon = Daemon(fresh)
    try:
        daemon.wait_ready(timeout_s=20)
        assert ready_status(daemon).startswith("STATUS=1 certificate(s): 1 OK")
        assert fresh.proxy.count("GetSecretValue") == 1
        assert not fresh.apache.is_running()  # not started by the agent before READY
        fresh.apache.start()  # what systemd does once the agent is READY
        assert fresh.serves(fresh.leaf.der)  # type: ignore[attr-defined]
        assert daemon.stop() == 0
    finally:
        daemon.stop()


def test_an_installed_host_is_ready_before_any_aws_call(fresh: Site) -> None:
    assert fresh.certpull("sync").returncode == 0
    fresh.proxy.reset_counts()
    fresh.proxy.inject(Fault(operation="*", delay_s=3600.0))  # AWS accepts and never answers
    daemon = Daemon(fresh)
    try:
        daemon.wait_ready(timeout_s=10)
        assert fresh.proxy.count("DescribeSecret") == 0
        assert "certificate(s)" in ready_status(daemon)
    finally:
        fresh.proxy.faults.clear()
        daemon.stop()


def test_an_installed_host_is_ready_before_botocore_and_cryptography_load(
    fresh: Site, tmp_path: Path
) -> None:
    """READY=1 (httpd's start at boot) does not wait for the AWS and X.509 libraries when every
    certificate's files are in place: the daemon, held at its first import of either, has sent
    it. A SIGTERM that arrives meanwhile is a clean stop once the imports go on."""
    assert fresh.certpull("sync").returncode == 0
    gate = ImportGate(tmp_path, holds=("botocore", "cryptography"))
    daemon = Daemon(fresh, extra_env=gate.env(pythonpath=str(REPO / "agent")))
    try:
        daemon.wait_ready(timeout_s=20)
        held = gate.waiting_at()
        assert held is not None and held.split(".")[0] in ("botocore", "cryptography")
        daemon.signal(signal.SIGTERM)
        gate.open()
        assert daemon.stop() == 0
        assert fresh.state()["daemon"]["stopped_at"] is not None  # type: ignore[index]
        assert "certpull run: stopped" in daemon.log()
    finally:
        gate.open()
        daemon.stop()


def test_a_first_install_after_ready_starts_the_stopped_httpd(fresh: Site) -> None:
    """AWS fails the first attempt (READY then comes at once, with nothing installed: at boot,
    httpd's own start fails without files); the retry installs, and the agent starts httpd
    with its start_command, then proves the leaf served."""
    fresh.proxy.inject(
        Fault(operation="DescribeSecret", status=500, code="InternalFailure", remaining=1)
    )
    daemon = Daemon(fresh)
    try:
        daemon.wait_ready(timeout_s=20)
        assert "1 failing" in ready_status(daemon)
        daemon.wait_for("httpd started by the agent", fresh.apache.is_running, timeout_s=30)
        daemon.wait_for("the leaf served", lambda: fresh.serves(fresh.leaf.der), timeout_s=10)  # type: ignore[attr-defined]
        daemon.wait_for(
            "the handshake recorded",
            lambda: fresh.state()["certs"]["www"].get("last_verify_ok") is True,  # type: ignore[index]
            timeout_s=10,
        )
        assert "starting it on the first installed certificate" in daemon.log()
    finally:
        daemon.stop()
        fresh.apache.stop()
