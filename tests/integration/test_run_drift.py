"""`certpull run` keeping the live files right: drift repair, and install windows.

A real subprocess against moto (through the counting proxy) and a real Apache. Drift tests poll
once an hour, so what repairs the files is the watcher, not a scheduled check.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any, Iterator, Mapping

import pytest

from tests.apache import ApacheFactory
from tests.aws_local import LocalAws
from tests.aws_proxy import AwsProxy
from tests.daemon_proc import Daemon
from tests.pki import Pki
from tests.site import Site

pytestmark = pytest.mark.integration

REPAIR_TIMEOUT_S = 10.0


def status_of(site: Site) -> Mapping[str, Any]:
    return site.status_json()[1]["certs"]["www"]  # type: ignore[index,no-any-return]


def closed_window(now: dt.datetime) -> str:
    """A daily one-hour window that opens three hours from now (so it is closed now)."""
    start = now + dt.timedelta(hours=3)
    return f"{start:%H:%M}-{start + dt.timedelta(hours=1):%H:%M} UTC"


def make_site(
    tmp_path: Path,
    local_aws: LocalAws,
    aws_proxy: AwsProxy,
    apache: ApacheFactory,
    pki: Pki,
    first_leaf_days: int = 90,
    **agent_options: str,
) -> Site:
    s = Site(tmp_path, local_aws, aws_proxy, apache.new(), pki)
    s.first_leaf = pki.leaf(days=first_leaf_days)  # type: ignore[attr-defined]
    s.agent_options.update({"startup_splay_s": "0", "max_backoff_s": "10", **agent_options})
    s.create_secret(s.first_leaf)  # type: ignore[attr-defined]
    assert s.certpull("sync").returncode == 0
    s.apache.start()
    return s


def start(site: Site, aws_proxy: AwsProxy) -> Daemon:
    daemon = Daemon(site)
    daemon.wait_ready()
    daemon.wait_first_pass()
    aws_proxy.reset_counts()
    return daemon


@pytest.fixture
def drift_site(
    tmp_path: Path, local_aws: LocalAws, aws_proxy: AwsProxy, apache: ApacheFactory, pki: Pki
) -> Site:
    return make_site(tmp_path, local_aws, aws_proxy, apache, pki, poll_interval_s="3600")


@pytest.fixture
def drift_daemon(drift_site: Site, aws_proxy: AwsProxy) -> Iterator[Daemon]:
    daemon = start(drift_site, aws_proxy)
    try:
        yield daemon
    finally:
        daemon.stop()


def test_deleted_key_link_is_restored_locally(
    drift_site: Site, drift_daemon: Daemon, aws_proxy: AwsProxy
) -> None:
    site = drift_site
    key_link = site.cert_dir / "privkey.pem"
    before = site.live_bytes()
    reloads = site.reloads()
    os.unlink(key_link)
    drift_daemon.wait_for(
        "privkey.pem restored",
        lambda: os.path.islink(key_link) and os.readlink(key_link) == "..data/privkey.pem",
        REPAIR_TIMEOUT_S,
    )
    drift_daemon.wait_for("drift counted", lambda: status_of(site)["drift_count"] == 1)
    assert site.live_bytes() == before
    # a link is restored on the spot: no AWS call, no reload (httpd holds the key in memory)
    assert aws_proxy.count("DescribeSecret") == 0
    assert aws_proxy.count("GetSecretValue") == 0
    assert site.reloads() == reloads
    assert "drift: privkey.pem is missing" in drift_daemon.log()
    assert drift_daemon.stop() == 0


def overwrite_cert_and_wait_for_republish(
    site: Site, daemon: Daemon, intruder_days: int, timeout_s: float = REPAIR_TIMEOUT_S
) -> None:
    right = site.live_bytes()
    intruder = site.pki.leaf(slot=7, days=intruder_days)
    with open(site.cert_dir / "cert.pem", "w") as handle:  # through the link, into the version dir
        handle.write(intruder.pem)
    assert (site.cert_dir / "cert.pem").read_bytes() == intruder.pem.encode()
    daemon.wait_for(
        "cert.pem republished",
        lambda: (site.cert_dir / "cert.pem").read_bytes() == right["cert.pem"],
        timeout_s,
    )
    daemon.wait_for("state saved", lambda: status_of(site)["live_fingerprint_matches"])
    assert site.live_bytes() == right


def test_edited_cert_file_is_republished_from_the_secret(
    drift_site: Site, drift_daemon: Daemon, aws_proxy: AwsProxy
) -> None:
    site = drift_site
    overwrite_cert_and_wait_for_republish(site, drift_daemon, intruder_days=30)
    assert aws_proxy.count("GetSecretValue") == 1  # the right bytes come from the secret
    assert site.serves(site.first_leaf.der)  # type: ignore[attr-defined]
    # Counted by the pass that republishes, whose state is saved after its reload and verify.
    drift_daemon.wait_for("drift counted", lambda: status_of(site)["drift_count"] == 1)
    assert "cert.pem was modified after it was installed" in drift_daemon.log()
    assert drift_daemon.stop() == 0


def test_edited_cert_file_expiring_later_is_republished_too(
    drift_site: Site, drift_daemon: Daemon
) -> None:
    # the working case republishes in about a second
    overwrite_cert_and_wait_for_republish(drift_site, drift_daemon, intruder_days=365, timeout_s=5)


def test_closed_install_window_keeps_a_new_version_pending(
    tmp_path: Path, local_aws: LocalAws, aws_proxy: AwsProxy, apache: ApacheFactory, pki: Pki
) -> None:
    window = closed_window(dt.datetime.now(dt.timezone.utc))
    site = make_site(
        tmp_path, local_aws, aws_proxy, apache, pki, poll_interval_s="1", install_window=window
    )
    daemon = start(site, aws_proxy)
    try:
        before = site.live_bytes()
        reloads = site.reloads()
        leaf_b = site.pki.leaf(slot=1)
        version = site.put(leaf_b)
        daemon.wait_for(
            "pending version in status", lambda: status_of(site)["pending_version_id"] == version
        )
        checks = aws_proxy.count("DescribeSecret")
        daemon.wait_for("two more checks", lambda: aws_proxy.count("DescribeSecret") >= checks + 2)
        assert aws_proxy.count("GetSecretValue") == 1  # validated once, not re-fetched per check
        assert site.live_bytes() == before
        assert site.reloads() == reloads
        assert site.serves(site.first_leaf.der)  # type: ignore[attr-defined]
        assert status_of(site)["version_id"] != version
        assert "pending" in daemon.log() and window in daemon.log()
        assert daemon.stop() == 0
    finally:
        daemon.stop()


def test_expiring_certificate_is_installed_outside_the_window(
    tmp_path: Path, local_aws: LocalAws, aws_proxy: AwsProxy, apache: ApacheFactory, pki: Pki
) -> None:
    window = closed_window(dt.datetime.now(dt.timezone.utc))
    site = make_site(
        tmp_path,
        local_aws,
        aws_proxy,
        apache,
        pki,
        first_leaf_days=3,  # inside urgent_before_expiry_days (7 by default)
        poll_interval_s="1",
        install_window=window,
    )
    daemon = start(site, aws_proxy)
    try:
        leaf_b = site.pki.leaf(slot=2)
        version = site.put(leaf_b)
        daemon.wait_for("new leaf served", lambda: site.serves(leaf_b.der), REPAIR_TIMEOUT_S)
        daemon.wait_for("state saved", lambda: status_of(site)["version_id"] == version)
        assert status_of(site)["pending_version_id"] is None
        assert daemon.stop() == 0
    finally:
        daemon.stop()
