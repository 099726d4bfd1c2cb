"""`certpull run` as a real subprocess against moto server (through the proxy) and a real Apache."""

from __future__ import annotations

import hashlib
import json
import signal
import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.apache import ApacheFactory
from tests.aws_local import LocalAws
from tests.aws_proxy import AwsProxy, Fault
from tests.daemon_proc import Daemon
from tests.pki import Pki
from tests.site import Site, contains_key_material

pytestmark = pytest.mark.integration


@pytest.fixture
def site(
    tmp_path: Path, local_aws: LocalAws, aws_proxy: AwsProxy, apache: ApacheFactory, pki: Pki
) -> Iterator[Site]:
    s = Site(tmp_path, local_aws, aws_proxy, apache.new(), pki)
    s.agent_options.update({"poll_interval_s": "2", "startup_splay_s": "0", "max_backoff_s": "10"})
    s.install_first(pki.leaf())
    yield s


@pytest.fixture
def daemon(site: Site) -> Iterator[Daemon]:
    d = Daemon(site)
    try:
        d.wait_ready()
        yield d
    finally:
        d.stop()


def test_rotation_is_picked_up_by_polling(site: Site, daemon: Daemon) -> None:
    leaf_b = site.pki.leaf(slot=1)
    site.put(leaf_b)
    daemon.wait_for("new leaf served", lambda: site.serves(leaf_b.der), timeout_s=30)
    assert daemon.stop() == 0
    keys = daemon.notify.keys()
    assert keys[0] == "READY=1" and keys[-1] == "STOPPING=1"
    assert "STATUS" in keys
    state = site.state()
    assert state["daemon"]["stopped_at"] is not None  # type: ignore[index]
    keys_pem = [site.first_leaf.key_pem(), leaf_b.key_pem()]  # type: ignore[attr-defined]
    assert not contains_key_material(daemon.log() + json.dumps(state), keys_pem)


def test_the_daemon_never_loads_cryptography_its_x509_work_runs_in_workers(
    site: Site, daemon: Daemon
) -> None:
    """cryptography keeps ~10 MiB resident once loaded: the daemon validates a rotation (and
    reads back the installed leaf) in worker processes, so none of it is ever mapped into it."""
    leaf_b = site.pki.leaf(slot=3)
    site.put(leaf_b)
    daemon.wait_for("new leaf served", lambda: site.serves(leaf_b.der), timeout_s=30)
    fingerprint = hashlib.sha256(leaf_b.der).hexdigest()
    daemon.wait_for(
        "the install recorded",
        lambda: site.state()["certs"]["www"]["installed"]["fingerprint_sha256"] == fingerprint,  # type: ignore[index]
    )
    maps = Path(f"/proc/{daemon.proc.pid}/maps").read_text()
    assert "_ssl" in maps  # the probe sees the daemon's extension modules
    assert "cryptography" not in maps and "_rust.abi3" not in maps
    assert daemon.stop() == 0


def test_sighup_with_broken_config_keeps_running_and_reports_it(site: Site, daemon: Daemon) -> None:
    good = site.config_path.read_text()
    site.config_path.write_text(good + "bogus_key = 1\n")
    daemon.signal(signal.SIGHUP)
    daemon.wait_for(
        "config error in state", lambda: bool(site.state()["daemon"].get("config_error"))
    )  # type: ignore[union-attr]
    code, status = site.status_json()  # status cannot read the broken file either
    assert code == 3 and "bogus_key: unknown key" in status["summary"]  # type: ignore[operator]
    assert "config reload rejected" in daemon.log()
    site.config_path.write_text(good)
    daemon.signal(signal.SIGHUP)
    daemon.wait_for("config error cleared", lambda: not site.state()["daemon"].get("config_error"))  # type: ignore[union-attr]
    leaf_b = site.pki.leaf(slot=2)
    site.put(leaf_b)
    daemon.wait_for("new leaf served", lambda: site.serves(leaf_b.der))
    keys = daemon.notify.keys()
    assert keys.count("RELOADING=1") >= 2
    assert keys.index("RELOADING=1") < len(keys) - 1 - keys[::-1].index("READY=1")


def test_throttling_backs_off_keeps_serving_and_recovers(
    site: Site, daemon: Daemon, aws_proxy: AwsProxy
) -> None:
    aws_proxy.inject(Fault(operation="DescribeSecret", status=400, code="ThrottlingException"))
    leaf_b = site.pki.leaf(slot=3)
    site.put(leaf_b)
    time.sleep(8)
    calls = aws_proxy.count("DescribeSecret")
    assert site.serves(site.first_leaf.der)  # type: ignore[attr-defined]
    # max_attempts=1: no botocore retries on top. Full-jitter backoff (floor 1 s, ceiling 5 s then
    # 10 s) allows at most one call per second; the distribution itself is tested in test_schedule.
    assert 1 <= calls <= 9, calls
    code, status = site.status_json()
    assert code == 1 and "ThrottlingException" in json.dumps(status)
    aws_proxy.clear_faults()
    daemon.wait_for("recovery", lambda: site.serves(leaf_b.der), timeout_s=30)
