"""The doorbell's host side: the Run Command document's shell line, run as SSM runs it (`/bin/sh`,
root, `AWS_SSM_INSTANCE_ID` in the environment), against moto, a real Apache and the real
`certpull run` (its control socket at the config's `control_socket`), and with no agent running.

`certpull` on the command's PATH is the package's own entry point (`python -m certpull -c CONFIG`);
everything else is the shipped code. Also here: `certpull check-now NAME` typed by an operator, and
the fleet view the running agent publishes after each pass.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, List

import pytest

from tests.apache import ApacheFactory
from tests.aws_local import LocalAws
from tests.aws_proxy import AwsProxy
from tests.daemon_proc import Daemon
from tests.integration.test_doorbell_templates import command_line
from tests.pki import Pki
from tests.site import REPO, Site

pytestmark = pytest.mark.integration

INSTANCE_ID = "i-0123456789abcdef0"


class DoorbellDaemon(Daemon):
    """`certpull run` with the doorbell on, as this instance (its splay comes from the id)."""

    def __init__(self, site: Site) -> None:
        super().__init__(site, extra_env={"AWS_SSM_INSTANCE_ID": INSTANCE_ID})
        self.wait_ready()
        deadline = time.monotonic() + 30
        while not site.control_socket.exists():
            assert self.proc.poll() is None and time.monotonic() < deadline, self.log()
            time.sleep(0.05)


class RunCommand:
    """Runs the document's shell line for a secret as SSM's aws:runShellScript would."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.bin = site.root / "bin"
        self.bin.mkdir()
        shim = self.bin / "certpull"
        shim.write_text(
            f'#!/bin/sh\nexec "{sys.executable}" -m certpull -c "{site.config_path}" "$@"\n'
        )
        shim.chmod(0o755)

    def env(self) -> dict:  # type: ignore[type-arg]
        env = dict(os.environ)
        env["PATH"] = f"{self.bin}{os.pathsep}{env['PATH']}"
        env["PYTHONPATH"] = str(REPO / "agent")
        env["AWS_SSM_INSTANCE_ID"] = INSTANCE_ID
        env["AWS_SSM_REGION_NAME"] = "us-east-1"
        return env

    def run(
        self, secret_arn: str, *extra: str, timeout: str = "60"
    ) -> subprocess.CompletedProcess[str]:
        line = command_line(secret_arn, timeout) + "".join(f" {arg}" for arg in extra)
        return self.shell(line)

    def shell(self, line: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["/bin/sh", "-c", line],
            capture_output=True,
            text=True,
            timeout=120,
            env=self.env(),
            check=False,
        )


@pytest.fixture
def site(
    tmp_path: Path, local_aws: LocalAws, aws_proxy: AwsProxy, apache: ApacheFactory, pki: Pki
) -> Iterator[Site]:
    s = Site(tmp_path, local_aws, aws_proxy, apache.new(), pki)
    s.first_leaf = pki.leaf()  # type: ignore[attr-defined]
    (tmp_path / "textfile").mkdir()
    (tmp_path / "inventory").mkdir()
    # The doorbell on: the safety poll waits hours, so whatever installs within seconds was the
    # doorbell. No restart splay (the first pass comes at once) and no host splay.
    s.agent_options.update(
        {
            "doorbell": "yes",
            "startup_splay_s": "0",
            "restart_splay_s": "0",
            "host_splay_s": "0",
            "prometheus_textfile_dir": str(tmp_path / "textfile"),
            "ssm_inventory": str(tmp_path / "inventory"),
        }
    )
    s.create_secret(s.first_leaf)  # type: ignore[attr-defined]
    assert s.certpull("sync").returncode == 0
    s.apache.start()
    yield s


@pytest.fixture
def ssm(site: Site) -> RunCommand:
    return RunCommand(site)


@pytest.fixture
def agent(site: Site) -> Iterator[DoorbellDaemon]:
    daemon = DoorbellDaemon(site)
    try:
        daemon.wait_first_pass()
        yield daemon
    finally:
        daemon.stop()


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


def test_the_host_splay_delays_this_hosts_check(site: Site, ssm: RunCommand) -> None:
    from certpull.splay import host_splay_s

    splay = host_splay_s(INSTANCE_ID, 4.0)
    site.agent_options["host_splay_s"] = "4"
    site.write_config()
    daemon = DoorbellDaemon(site)
    try:
        daemon.wait_first_pass()
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


def test_an_operator_check_now_by_name_installs_and_the_fleet_view_shows_it(
    site: Site, agent: DoorbellDaemon, ssm: RunCommand
) -> None:
    leaf_b = site.pki.leaf(slot=1)
    version = site.put(leaf_b)
    done = ssm.shell("certpull check-now www --timeout-s 60")
    assert done.returncode == 0, done.stdout + done.stderr + agent.log()
    assert "www:" in done.stdout and "installed" in done.stdout and version in done.stdout
    assert site.serves(leaf_b.der)
    # the pass that answered publishes the fleet view (just after check-now has its answer)
    prom_path = site.root / "textfile" / "certpull.prom"
    inventory = site.root / "inventory" / "CertpullCertificate.json"
    deadline = time.monotonic() + 10
    while not all(p.exists() and version in p.read_text() for p in (prom_path, inventory)):
        assert time.monotonic() < deadline, agent.log()
        time.sleep(0.05)
    prom = prom_path.read_text()
    sha256 = hashlib.sha256(leaf_b.der).hexdigest()
    assert 'certpull_certificate_info{name="www"' in prom and f"{version}" in prom, prom
    doc = json.loads(inventory.read_text())
    assert doc["TypeName"] == "Custom:CertpullCertificate"
    (entry,) = doc["Content"]
    assert entry["Name"] == "www" and entry["VersionId"] == version
    assert entry["FingerprintSha256"].replace(":", "").lower() == sha256, entry
    assert entry["ServedMatches"] == "true"


def test_check_now_of_an_unknown_name_is_a_usage_error(
    site: Site, agent: DoorbellDaemon, ssm: RunCommand
) -> None:
    done = ssm.shell("certpull check-now nosuch")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "no [cert:nosuch] section" in done.stderr


def _next_check_in(site: Site) -> float:
    """Seconds until the next check, once the first pass saved its schedule (STATUS= is sent
    just before state.json records it)."""
    deadline = time.monotonic() + 10
    while True:
        certs = site.state()["certs"]
        assert isinstance(certs, dict)
        at = certs["www"].get("next_check_at")
        if (at is not None and float(at) - time.time() > 60) or time.monotonic() > deadline:
            return float(at or 0) - time.time()
        time.sleep(0.05)


def test_the_safety_poll_waits_hours_when_nothing_is_due(site: Site, agent: DoorbellDaemon) -> None:
    wait = _next_check_in(site)  # after the first pass: the safety interval, 6 h +- 50 %
    assert 3 * 3600 - 60 <= wait <= 9 * 3600, wait


def test_the_safety_poll_watches_a_rotation_due_today(site: Site) -> None:
    # DescribeSecret's NextRotationDate (moto: a day from now) opens the rotation watch at once
    site.aws.client("secretsmanager").rotate_secret(
        SecretId=site.secret_arn,
        RotationRules={"AutomaticallyAfterDays": 1},
        RotateImmediately=False,
    )
    daemon = DoorbellDaemon(site)
    try:
        daemon.wait_first_pass()
        wait = _next_check_in(site)
    finally:
        daemon.stop()
    assert 300 - 60 <= wait <= 900, wait  # rotation_poll_interval_s 600 +- 50 %
