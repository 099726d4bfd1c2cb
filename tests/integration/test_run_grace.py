"""`certpull run` ends httpd's liveness grace once the new leaf is served, and still catches a
death in the rest of it: a real Apache killed right after the pass, moto through the proxy."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.apache import ApacheFactory
from tests.aws_local import LocalAws
from tests.aws_proxy import AwsProxy
from tests.daemon_proc import Daemon
from tests.pki import Pki
from tests.site import Site

pytestmark = pytest.mark.integration


@pytest.fixture
def site(
    tmp_path: Path, local_aws: LocalAws, aws_proxy: AwsProxy, apache: ApacheFactory, pki: Pki
) -> Iterator[Site]:
    s = Site(tmp_path, local_aws, aws_proxy, apache.new(), pki)
    s.agent_options.update({"poll_interval_s": "3600", "startup_splay_s": "0"})
    s.install_first(pki.leaf())
    yield s


def passes(daemon: Daemon) -> int:
    """Passes finished (each sends one STATUS= line; READY=1 carries one too)."""
    return max(0, daemon.notify.keys().count("STATUS") - 1)


def test_httpd_killed_after_the_pass_ended_its_grace_early_is_rolled_back_and_restarted(
    site: Site,
) -> None:
    daemon = Daemon(site)
    try:
        daemon.wait_ready()
        daemon.wait_for("the first pass", lambda: passes(daemon) >= 1)
        done = passes(daemon)
        leaf_b = site.pki.leaf(slot=1)
        site.put(leaf_b)
        started = time.monotonic()
        daemon.signal(signal.SIGUSR1)
        daemon.wait_for("the install pass", lambda: passes(daemon) > done, timeout_s=30)
        ended = time.monotonic() - started
        assert site.serves(leaf_b.der)
        pid = site.apache.main_pid()
        assert pid is not None
        os.kill(pid, signal.SIGTERM)  # httpd dies within the 2 s grace, after the pass ended
        daemon.wait_for(
            "the first leaf served again",
            lambda: site.serves(site.first_leaf.der),
            timeout_s=30,  # type: ignore[attr-defined]
        )
        daemon.wait_for(
            "the refusal recorded",
            lambda: (
                (site.state()["certs"]["www"].get("rejected") or {}).get("version_id")  # type: ignore[index, union-attr]
                is not None
            ),
        )
        log = daemon.log()
        assert "httpd stopped within its liveness grace" in log, (ended, log)
        assert site.apache.is_running()
        cert = site.state()["certs"]["www"]  # type: ignore[index]
        assert cert["installed"]["serial"] == format(site.first_leaf.cert.serial_number, "x")  # type: ignore[index, attr-defined]
        assert daemon.stop() == 0
    finally:
        daemon.stop()
