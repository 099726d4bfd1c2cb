"""The doorbell's host side: the Run Command document's shell line, run as SSM runs it (`/bin/sh`,
root, `AWS_SSM_INSTANCE_ID` in the environment), against moto and a real Apache, with a running
agent (control socket served) and with none.

`certpull` on the command's PATH is a shim for `python -m certpull.check_now -c CONFIG ... --socket
SOCKET` until cli.py has the `check-now` subcommand; the rest is the shipped code.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, List

import pytest

from tests.apache import ApacheFactory
from tests.aws_local import LocalAws
from tests.aws_proxy import AwsProxy
from tests.daemon_proc import NotifySocket
from tests.integration.test_doorbell_templates import command_line
from tests.pki import Pki
from tests.site import REPO, Site

pytestmark = pytest.mark.integration

INSTANCE_ID = "i-0123456789abcdef0"


class DoorbellDaemon:
    """`certpull run` with the control socket (tests/doorbell_daemon.py) as a real subprocess."""

    def __init__(self, site: Site, socket_path: Path, splay_max_s: float = 0.0) -> None:
        self.notify = NotifySocket(site.root / "notify.sock")
        env = dict(os.environ)
        env["PYTHONPATH"] = f"{REPO / 'agent'}{os.pathsep}{REPO}"
        env["NOTIFY_SOCKET"] = str(self.notify.path)
        env["AWS_SSM_INSTANCE_ID"] = INSTANCE_ID
        self.log_path = site.root / "daemon.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        argv = [sys.executable, "-m", "tests.doorbell_daemon", str(site.config_path)]
        self.proc = subprocess.Popen(
            [*argv, str(socket_path), str(splay_max_s)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(REPO),
        )
        deadline = time.monotonic() + 30
        while "READY=1" not in self.notify.messages:
            assert self.proc.poll() is None, self.log()
            assert time.monotonic() < deadline, self.log()
            time.sleep(0.05)
        while not socket_path.exists():
            assert time.monotonic() < deadline, self.log()
            time.sleep(0.05)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)
        self._log.close()
        self.notify.close()
        return self.proc.returncode


class RunCommand:
    """Runs the document's shell line for a secret as SSM's aws:runShellScript would."""

    def __init__(self, site: Site, socket_path: Path) -> None:
        self.site = site
        self.bin = site.root / "bin"
        self.bin.mkdir()
        shim = self.bin / "certpull"
        shim.write_text(
            "#!/bin/sh\n"
            f'exec "{sys.executable}" -m certpull.check_now -c "{site.config_path}" "$@" '
            f'--socket "{socket_path}"\n'
        )
        shim.chmod(0o755)

    def run(
        self, secret_arn: str, *extra: str, timeout: str = "60"
    ) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ)
        env["PATH"] = f"{self.bin}{os.pathsep}{env['PATH']}"
        env["PYTHONPATH"] = str(REPO / "agent")
        env["AWS_SSM_INSTANCE_ID"] = INSTANCE_ID
        env["AWS_SSM_REGION_NAME"] = "us-east-1"
        line = command_line(secret_arn, timeout) + "".join(f" {arg}" for arg in extra)
        return subprocess.run(
            ["/bin/sh", "-c", line],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            check=False,
        )


@pytest.fixture
def site(
    tmp_path: Path, local_aws: LocalAws, aws_proxy: AwsProxy, apache: ApacheFactory, pki: Pki
) -> Iterator[Site]:
    s = Site(tmp_path, local_aws, aws_proxy, apache.new(), pki)
    s.first_leaf = pki.leaf()  # type: ignore[attr-defined]
    # Hourly polling and no event splay: whatever installs within seconds was the doorbell.
    s.agent_options.update(
        {"poll_interval_s": "3600", "startup_splay_s": "0", "event_splay_s": "0"}
    )
    s.create_secret(s.first_leaf)  # type: ignore[attr-defined]
    assert s.certpull("sync").returncode == 0
    s.apache.start()
    yield s


@pytest.fixture
def socket_path(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    return run / "control.sock"


@pytest.fixture
def ssm(site: Site, socket_path: Path) -> RunCommand:
    return RunCommand(site, socket_path)


@pytest.fixture
def agent(site: Site, socket_path: Path) -> Iterator[DoorbellDaemon]:
    daemon = DoorbellDaemon(site, socket_path)
    try:
        _wait_first_pass(daemon)
        yield daemon
    finally:
        daemon.stop()


def _wait_first_pass(daemon: DoorbellDaemon) -> bool:
    deadline = time.monotonic() + 30
    while [m.split("=")[0] for m in daemon.notify.messages].count("STATUS") < 2:
        assert time.monotonic() < deadline, daemon.log()
        time.sleep(0.05)
    return True


def counts(proxy: AwsProxy) -> List[str]:
    return [op for _, op, _ in list(proxy.log)]


def test_running_agent_installs_the_new_version_before_the_command_returns(
    site: Site, agent: DoorbellDaemon, ssm: RunCommand
) -> None:
    leaf_b = site.pki.leaf(slot=1)
    version = site.put(leaf_b)
    site.proxy.reset_counts()
    done = ssm.run(site.secret_arn)
    assert done.returncode == 0, done.stdout + done.stderr + agent.log()
    assert "www:" in done.stdout and "installed" in done.stdout
    assert version in done.stdout
    assert site.serves(leaf_b.der)  # served already: the command waited for install + verify
    ops = counts(site.proxy)
    assert ops.count("DescribeSecret") == 1 and ops.count("GetSecretValue") == 1, ops
    assert "syncing" not in done.stderr  # the agent did it, not a fallback


def test_running_agent_nothing_new_is_current_and_costs_no_fetch(
    site: Site, agent: DoorbellDaemon, ssm: RunCommand
) -> None:
    site.proxy.reset_counts()
    done = ssm.run(site.secret_arn)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "current" in done.stdout
    ops = counts(site.proxy)
    assert ops.count("GetSecretValue") == 0 and ops.count("DescribeSecret") == 1, ops


def test_running_agent_a_bad_version_exits_one_and_keeps_the_old_certificate(
    site: Site, agent: DoorbellDaemon, ssm: RunCommand
) -> None:
    leaf_b = site.pki.leaf(slot=1)
    other = site.pki.leaf(slot=2)
    site.put(secret_string=site.pki.secret_string(leaf_b, PRIVATE_KEY_PEM=other.key_pem()))
    done = ssm.run(site.secret_arn)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "PRIVATE_KEY_PEM does not match CERTIFICATE_PEM" in done.stdout
    assert site.serves(site.first_leaf.der)  # type: ignore[attr-defined]


def test_a_secret_this_host_does_not_use_succeeds(
    site: Site, agent: DoorbellDaemon, ssm: RunCommand
) -> None:
    other = site.secret_arn.replace("www-tls", "api-tls")
    done = ssm.run(other)
    assert done.returncode == 0 and "no certificate on this host uses" in done.stdout


def test_no_agent_running_falls_back_to_a_one_shot_sync(site: Site, ssm: RunCommand) -> None:
    leaf_b = site.pki.leaf(slot=1)
    site.put(leaf_b)
    done = ssm.run(site.secret_arn)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no agent answers on" in done.stderr and "syncing www in this process" in done.stderr
    assert site.serves(leaf_b.der)


def test_no_agent_running_a_bad_version_exits_one(site: Site, ssm: RunCommand) -> None:
    leaf_b = site.pki.leaf(slot=1)
    other = site.pki.leaf(slot=2)
    site.put(secret_string=site.pki.secret_string(leaf_b, PRIVATE_KEY_PEM=other.key_pem()))
    done = ssm.run(site.secret_arn)
    assert done.returncode == 1, done.stdout + done.stderr
    assert site.serves(site.first_leaf.der)  # type: ignore[attr-defined]


def test_no_agent_running_and_no_fallback_exits_three(site: Site, ssm: RunCommand) -> None:
    leaf_b = site.pki.leaf(slot=1)
    site.put(leaf_b)
    site.proxy.reset_counts()
    done = ssm.run(site.secret_arn, "--no-fallback")
    assert done.returncode == 3, done.stdout + done.stderr
    assert counts(site.proxy) == []
    assert site.serves(site.first_leaf.der)  # type: ignore[attr-defined]


def test_the_host_splay_delays_this_hosts_check(
    site: Site, socket_path: Path, ssm: RunCommand
) -> None:
    from certpull.splay import host_splay_s

    splay = host_splay_s(INSTANCE_ID, 4.0)
    daemon = DoorbellDaemon(site, socket_path, splay_max_s=4.0)
    try:
        _wait_first_pass(daemon)
        leaf_b = site.pki.leaf(slot=1)
        site.put(leaf_b)
        started = time.monotonic()
        done = ssm.run(site.secret_arn)
        took = time.monotonic() - started
    finally:
        daemon.stop()
    assert done.returncode == 0, done.stdout + done.stderr
    assert splay > 0.5 and took >= splay
    assert site.serves(leaf_b.der)
