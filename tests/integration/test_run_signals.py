"""`certpull run` and its supervisor: SIGTERM, SIGUSR1, SIGHUP, sd_notify, and AWS outages.

A real subprocess against moto (through the fault-injecting proxy) and a real Apache; the notify
socket is the test's own AF_UNIX datagram socket, as systemd's would be.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import signal
import time
from pathlib import Path
from typing import Any, List, Mapping, Sequence

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.apache import ApacheFactory
from tests.aws_local import LocalAws
from tests.aws_proxy import AwsProxy, Fault
from tests.daemon_proc import Daemon
from tests.pki import Issued, Pki
from tests.site import LIVE_FILES, Site

pytestmark = pytest.mark.integration

PICKUP_TIMEOUT_S = 10.0


def cert_state(site: Site) -> Mapping[str, object]:
    return site.state()["certs"]["www"]  # type: ignore[index,no-any-return]


def checks(attempts: Sequence[float]) -> List[float]:
    """Start times of checks: botocore's retries within one check come milliseconds apart."""
    starts: List[float] = []
    last = float("-inf")
    for t in sorted(attempts):
        if t - last > 0.5:
            starts.append(t)
        last = t
    return starts


def assert_complete_set(site: Site, leaf: Issued) -> None:
    """All four live files come from one version, and that version is `leaf` with its own key."""
    for name in LIVE_FILES:
        assert os.readlink(site.cert_dir / name) == f"..data/{name}", name
    files = site.live_bytes()
    cert = x509.load_pem_x509_certificate(files["cert.pem"])
    assert cert.public_bytes(serialization.Encoding.DER) == leaf.der
    key = serialization.load_pem_private_key(files["privkey.pem"], password=None)
    raw = serialization.PublicFormat.SubjectPublicKeyInfo
    pem = serialization.Encoding.PEM
    assert key.public_key().public_bytes(pem, raw) == cert.public_key().public_bytes(pem, raw)
    assert files["fullchain.pem"].startswith(files["cert.pem"].rstrip(b"\n"))
    assert site.pki.intermediate.pem.encode().strip() in files["chain.pem"]
    assert site.pki.intermediate.pem.encode().strip() in files["fullchain.pem"]


@pytest.fixture
def site(
    tmp_path: Path, local_aws: LocalAws, aws_proxy: AwsProxy, apache: ApacheFactory, pki: Pki
) -> Site:
    s = Site(tmp_path, local_aws, aws_proxy, apache.new(), pki)
    s.agent_options.update(
        {"poll_interval_s": "3600", "startup_splay_s": "0", "max_backoff_s": "10"}
    )
    s.install_first(pki.leaf())
    return s


def start(site: Site, aws_proxy: AwsProxy, env: Mapping[str, str] = {}) -> Daemon:
    daemon = Daemon(site, extra_env=dict(env))
    daemon.wait_ready()
    daemon.wait_first_pass()
    aws_proxy.reset_counts()
    return daemon


def test_sigterm_during_an_install_lets_it_finish_and_exits_0(
    site: Site, aws_proxy: AwsProxy
) -> None:
    # A config test that takes a second holds the pass between "..data switched" and "reloaded":
    # the SIGTERM lands inside the install, after the files moved and before httpd saw them.
    slow_test = f"sleep 1; exec {shlex.join(site.apache.configtest_argv())}"
    site.agent_options.update(
        {"poll_interval_s": "1", "configtest_command": shlex.join(["/bin/sh", "-c", slow_test])}
    )
    site.write_config()
    daemon = start(site, aws_proxy)
    try:
        data_link = site.cert_dir / "..data"
        old_version = os.readlink(data_link)
        leaf_b = site.pki.leaf(slot=1)
        site.put(leaf_b)
        deadline = time.monotonic() + PICKUP_TIMEOUT_S
        while os.readlink(data_link) == old_version:  # tight: the window is one second wide
            assert time.monotonic() < deadline, f"no install started:\n{daemon.log()}"
            time.sleep(0.002)
        assert site.serves(site.first_leaf.der)  # type: ignore[attr-defined]
        daemon.signal(signal.SIGTERM)
        assert daemon.proc.wait(timeout=30) == 0
        assert_complete_set(site, leaf_b)  # all new: the install was finished, not abandoned
        assert site.serves(leaf_b.der)  # ... including the reload and the verification
        state = site.state()
        assert state["daemon"]["stopped_at"] is not None  # type: ignore[index]
        installed = cert_state(site)["installed"]
        assert installed["fingerprint_sha256"] == hashlib.sha256(leaf_b.der).hexdigest()  # type: ignore[index]
        assert daemon.notify.keys()[-1] == "STOPPING=1"
        assert "Traceback" not in daemon.log()
    finally:
        daemon.stop()


def test_sigusr1_checks_at_once(site: Site, aws_proxy: AwsProxy) -> None:
    daemon = start(site, aws_proxy)
    try:
        leaf_b = site.pki.leaf(slot=2)
        site.put(leaf_b)
        daemon.signal(signal.SIGUSR1)
        daemon.wait_for("new leaf served", lambda: site.serves(leaf_b.der), PICKUP_TIMEOUT_S)
        assert aws_proxy.count("DescribeSecret") == 1
        assert aws_proxy.count("GetSecretValue") == 1
        assert "SIGUSR1: checking every certificate now" in daemon.log()
        assert daemon.stop() == 0
        assert "WATCHDOG=1" not in daemon.notify.messages  # not asked for: WATCHDOG_USEC unset
    finally:
        daemon.stop()


def test_notify_messages_arrive_in_order_with_watchdog(site: Site, aws_proxy: AwsProxy) -> None:
    daemon = start(site, aws_proxy, {"WATCHDOG_USEC": "2000000"})  # WatchdogSec=2
    try:
        keys = daemon.notify.keys
        daemon.wait_for("three watchdog pings", lambda: keys().count("WATCHDOG=1") >= 3)
        daemon.signal(signal.SIGHUP)
        daemon.wait_for("READY=1 after reload", lambda: keys().count("READY=1") >= 2)
        daemon.wait_for(
            "a watchdog ping after reload",
            lambda: "WATCHDOG=1" in keys()[keys().index("RELOADING=1") :],
        )
        assert daemon.stop() == 0
    finally:
        daemon.stop()
    got = daemon.notify.keys()
    assert got[0] == "READY=1" and got[-1] == "STOPPING=1", got
    assert got.count("STOPPING=1") == 1
    ready_1, ready_2 = [i for i, k in enumerate(got) if k == "READY=1"]
    reloading = got.index("RELOADING=1")
    assert got[reloading + 1] == "MONOTONIC_USEC"  # Type=notify-reload needs it
    assert ready_1 < got.index("STATUS", ready_1 + 2) < reloading < ready_2  # a pass's STATUS=
    assert got.count("RELOADING=1") == 1
    assert "WATCHDOG=1" in got[:reloading]


@pytest.mark.parametrize(
    ("fault", "reported"),
    [
        (Fault(status=500, code="InternalServiceError"), "InternalServiceError"),
        (Fault(reset=True), "connection failed"),
    ],
    ids=["5xx", "reset"],
)
def test_outage_backs_off_keeps_serving_and_recovers(
    site: Site, aws_proxy: AwsProxy, fault: Fault, reported: str
) -> None:
    site.agent_options.update({"poll_interval_s": "1", "max_backoff_s": "5"})
    site.write_config()
    daemon = start(site, aws_proxy)
    try:
        aws_proxy.inject(fault)
        leaf_b = site.pki.leaf(slot=3)
        site.put(leaf_b)  # straight to moto: only the agent's path is broken
        time.sleep(6)
        attempts = [t for t, op, _ in list(aws_proxy.log) if op == "DescribeSecret"]
        assert site.serves(site.first_leaf.der)  # type: ignore[attr-defined]
        # Polling every second would make ~6 checks; full-jitter backoff (delays uniform in 0-5 s,
        # floored at 1 s) makes ~3, and 6 only if five delays in a row drew about the floor.
        assert 1 <= len(checks(attempts)) <= 5, attempts
        assert aws_proxy.count("GetSecretValue") == 0
        code, status = site.status_json()
        www: Any = status["certs"]["www"]  # type: ignore[index]
        assert code == 1, status
        assert reported in str(www["last_error"]), www
        assert www["consecutive_failures"] >= 1
        assert www["backoff_until"] is not None
        aws_proxy.clear_faults()
        daemon.wait_for("recovery", lambda: site.serves(leaf_b.der), timeout_s=20)
        daemon.wait_for("failures reset", lambda: cert_state(site)["consecutive_failures"] == 0)
        assert cert_state(site)["last_error"] is None
        assert daemon.stop() == 0
    finally:
        daemon.stop()
