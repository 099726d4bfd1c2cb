"""`certpull run` healing and telling the truth (issue 12): drop-ins reload like the main file, a
second `run` is refused, a reused pid is not a running daemon. Real subprocesses, moto, Apache."""

from __future__ import annotations

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


@pytest.fixture
def daemon(site: Site) -> Iterator[Daemon]:
    d = Daemon(site)
    try:
        d.wait_ready()
        d.wait_first_pass()
        yield d
    finally:
        d.stop()


def test_editing_a_dropin_reloads_the_config_like_editing_the_main_file(
    site: Site, daemon: Daemon
) -> None:
    dropins = site.root / "conf.d"
    dropins.mkdir()
    (dropins / "50-broken.conf").write_text("[agent]\nbogus_key = 1\n")
    daemon.wait_for(
        "config error in state",
        lambda: bool(site.state()["daemon"].get("config_error")),  # type: ignore[union-attr]
    )
    assert "50-broken.conf:2: bogus_key: unknown key" in daemon.log()
    (dropins / "50-broken.conf").write_text("[agent]\npoll_interval_s = 1800\n")
    daemon.wait_for("config error cleared", lambda: not site.state()["daemon"].get("config_error"))  # type: ignore[union-attr]
    daemon.wait_for("override applied", lambda: "polling every 1800 s" in daemon.log())
    assert daemon.stop() == 0


def test_a_second_run_is_refused_while_one_runs(site: Site, daemon: Daemon) -> None:
    before = site.state()["daemon"]
    second = site.certpull("run", timeout=30)
    assert second.returncode == 1, second.stdout + second.stderr
    message = second.stderr.strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in message
    assert f"already running (pid {daemon.proc.pid})" in message
    after = site.state()["daemon"]
    assert after["pid"] == before["pid"] == daemon.proc.pid  # the record is the first one's
    assert after["started_at"] == before["started_at"]
    _, status = site.status_json()
    assert status["daemon"]["running"] is True  # type: ignore[index]
    assert daemon.stop() == 0
    (site.root / "notify.sock").unlink()
    third = Daemon(site)  # the lock goes with its holder
    try:
        third.wait_ready()
    finally:
        assert third.stop() == 0


def test_a_pid_reused_by_another_process_is_not_a_running_daemon(
    site: Site, daemon: Daemon
) -> None:
    import json
    import signal
    import subprocess

    daemon.proc.send_signal(signal.SIGKILL)
    daemon.proc.wait()
    stranger = subprocess.Popen(["sleep", "60"])  # the kernel gave the daemon's pid away
    try:
        path = site.state_dir / "state.json"
        body = json.loads(path.read_text())
        assert body["daemon"]["start_ticks"]  # recorded by the daemon at start
        body["daemon"]["pid"] = stranger.pid
        path.write_text(json.dumps(body))
        code, status = site.status_json()
        report = status["daemon"]  # type: ignore[index]
        assert report["running"] is False and code == 1
        assert f"pid {stranger.pid} now belongs to another process" in report["problem"]
    finally:
        stranger.kill()
        stranger.wait()
