"""`certpull sync` / `rollback` against the real parts when things go wrong (issue 12): a rollback
SIGKILLed part-way, httpd down at install time, a config test that fails with or without the new
files, a bundle that kills httpd on reload, a verify target that does not answer."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from certpull.layout import DATA_LINK
from tests.apache import ApacheFactory, free_port
from tests.aws_local import LocalAws
from tests.aws_proxy import AwsProxy
from tests.pki import Issued, Pki
from tests.site import REPO, Site

pytestmark = pytest.mark.integration


@pytest.fixture
def site(
    tmp_path: Path, local_aws: LocalAws, aws_proxy: AwsProxy, apache: ApacheFactory, pki: Pki
) -> Iterator[Site]:
    """Leaf A installed by `certpull sync` and served by a running Apache."""
    s = Site(tmp_path, local_aws, aws_proxy, apache.new(), pki)
    s.install_first(pki.leaf())
    assert s.serves(s.first_leaf.der)  # type: ignore[attr-defined]
    yield s


def first(site: Site) -> Issued:
    return site.first_leaf  # type: ignore[attr-defined, no-any-return]


def www(site: Site) -> dict:  # type: ignore[type-arg]
    return site.status_json()[1]["certs"]["www"]  # type: ignore[index, no-any-return]


def rotate(site: Site, slot: int) -> tuple:  # type: ignore[type-arg]
    leaf = site.pki.leaf(slot=slot)
    version = site.put(leaf)
    return leaf, version


def wrapped(site: Site, key: str, script: str) -> None:
    """Run an httpd command through a shell snippet (the real command is "$@")."""
    argv = {
        "configtest_command": site.apache.configtest_argv(),
        "reload_command": site.apache.reload_argv(),
    }[key]
    site.agent_options[key] = shlex.join(["/bin/sh", "-c", script, "sh", *argv])
    site.write_config()


# -- a rollback killed part-way ---------------------------------------------------------------


def test_a_rollback_killed_after_its_switch_is_finished_by_the_next_sync(site: Site) -> None:
    leaf_b, version_b = rotate(site, 1)
    assert site.certpull("sync").returncode == 0 and site.serves(leaf_b.der)
    wrapped(
        site, "configtest_command", 'sleep 3; exec "$@"'
    )  # holds the rollback before its reload
    before = os.readlink(site.cert_dir / DATA_LINK)
    env = dict(os.environ, PYTHONPATH=str(REPO / "agent"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "certpull", "-c", str(site.config_path), "rollback", "www"], env=env
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and os.readlink(site.cert_dir / DATA_LINK) == before:
        time.sleep(0.001)
    time.sleep(0.3)  # inside the slow config test: switched, not reloaded
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert site.serves(leaf_b.der)  # httpd still has B: nothing reloaded it
    del site.agent_options["configtest_command"]
    site.write_config()
    done = site.certpull("sync")
    assert done.returncode == 0, done.stdout + done.stderr
    assert site.serves(first(site).der)  # the rollback was finished, and reloaded
    state = site.state()["certs"]["www"]  # type: ignore[index]
    assert state["held_version_id"] == version_b
    assert (
        state["installed"]["fingerprint_sha256"]
        == __import__("hashlib").sha256(first(site).der).hexdigest()
    )
    assert state["installed"]["version_id"] != "unknown"
    reloads = site.reloads()
    again = site.certpull("sync")
    assert "rolled back by the operator" in again.stdout and site.reloads() == reloads
    assert site.serves(first(site).der)


# -- httpd down at install time ---------------------------------------------------------------


def test_a_certificate_installed_while_httpd_is_down_is_installed_not_yet_served(
    site: Site,
) -> None:
    site.apache.stop()
    leaf_b, _ = rotate(site, 2)
    assert site.certpull("sync").returncode == 0
    code, status = site.status_json()
    cert = status["certs"]["www"]  # type: ignore[index]
    assert code == 1 and cert["served"] == "installed, not yet served", status
    assert "served:      matches" not in site.certpull("status").stdout
    site.apache.start()
    assert site.certpull("sync").returncode == 0  # a handshake now proves it
    code, status = site.status_json()
    assert code == 0 and status["certs"]["www"]["served"].startswith("matches")  # type: ignore[index]
    assert site.serves(leaf_b.der)


# -- the config test --------------------------------------------------------------------------


def test_a_config_test_that_fails_with_the_old_files_too_blames_httpd(site: Site) -> None:
    site.apache.write_config(extra_lines=["NoSuchDirective here"])  # someone broke httpd.conf
    rotate(site, 3)
    reloads = site.reloads()
    done = site.certpull("sync")
    assert done.returncode == 1
    assert "fails with the previous files too" in done.stdout, done.stdout
    assert site.reloads() == reloads and site.serves(first(site).der)


def test_a_config_test_that_fails_only_with_the_new_files_blames_them(site: Site) -> None:
    leaf_b, version_b = rotate(site, 4)
    marker = site.root / "b.pem"
    marker.write_text(leaf_b.pem)
    live_cert = site.cert_dir / "cert.pem"
    wrapped(
        site,
        "configtest_command",
        f"if cmp -s {live_cert} {marker}; then echo 'AH00526: Syntax error on line 3 of x:' >&2;"
        ' echo "SSLCertificateFile: bad" >&2; exit 1; fi; exec "$@"',
    )
    done = site.certpull("sync")
    assert done.returncode == 1 and "fails only with the new files" in done.stdout, done.stdout
    assert site.serves(first(site).der)
    assert www(site)["rejected_version_id"] == version_b


# -- a bundle that kills httpd ----------------------------------------------------------------


def test_a_bundle_that_killed_httpd_on_reload_is_not_retried_until_the_secret_moves_on(
    site: Site, aws_proxy: AwsProxy
) -> None:
    leaf_b, version_b = rotate(site, 5)
    marker = site.root / "b.pem"
    marker.write_text(leaf_b.pem)
    pid_file = site.apache.pid_file
    wrapped(
        site,
        "reload_command",
        # what a graceful reload does with a bundle httpd cannot load (AH02565): httpd stops
        f'"$@" || exit; if cmp -s {site.cert_dir / "cert.pem"} {marker}; then kill -TERM "$(cat {pid_file})"; fi',
    )
    done = site.certpull("sync")
    assert done.returncode == 1 and "rolled back" in done.stdout, done.stdout
    time.sleep(0.5)
    assert site.serves(first(site).der)  # started again with the previous files
    reloads = site.reloads()
    for _ in range(3):
        again = site.certpull("sync")
        assert again.returncode == 1
        assert f"version {version_b}" in again.stdout and "not installing it again" in again.stdout
    assert site.reloads() == reloads and site.serves(first(site).der)
    assert www(site)["rejected_version_id"] == version_b
    leaf_c, _ = rotate(site, 6)  # the secret moves on
    assert site.certpull("sync").returncode == 0 and site.serves(leaf_c.der)
    assert www(site)["rejected_version_id"] is None


# -- a verify target that does not answer -----------------------------------------------------


def test_a_dead_verify_target_costs_one_reload_per_version_not_two_per_retry(site: Site) -> None:
    site.cert_options["verify"] = f"127.0.0.1:{free_port()}"  # nothing listens there
    site.write_config()
    leaf_b, _ = rotate(site, 7)
    reloads = site.reloads()
    done = site.certpull("sync")
    assert "does not answer" in done.stdout, done.stdout
    assert site.reloads() == reloads + 1  # the install's own reload, no rollback reload
    assert site.serves(leaf_b.der)
    for _ in range(3):
        site.certpull("sync")
    assert site.reloads() == reloads + 1
    cert = www(site)
    assert cert["served"] == "installed, not yet served"


# -- reverting a rotation, the AWS way --------------------------------------------------------


def test_awscurrent_moved_back_to_the_previous_version_is_installed_not_refused(
    site: Site,
) -> None:
    version_a = site.state()["certs"]["www"]["installed"]["version_id"]  # type: ignore[index]
    leaf_b = site.pki.leaf(slot=8, days=120)  # expires after A: a normal renewal
    version_b = site.put(leaf_b)
    assert site.certpull("sync").returncode == 0 and site.serves(leaf_b.der)
    site.aws.client("secretsmanager").update_secret_version_stage(
        SecretId=site.secret_arn,
        VersionStage="AWSCURRENT",
        MoveToVersionId=version_a,
        RemoveFromVersionId=version_b,
    )
    done = site.certpull("sync")
    assert done.returncode == 0, done.stdout + done.stderr
    assert site.serves(first(site).der)
    older = site.pki.leaf(slot=9, days=30)  # an older certificate arriving as a new version
    version_c = site.put(older)
    # moto 5 leaves AWSCURRENT on A too after a put that follows update_secret_version_stage;
    # AWS moves it to the new version, as this does:
    site.aws.client("secretsmanager").update_secret_version_stage(
        SecretId=site.secret_arn,
        VersionStage="AWSCURRENT",
        MoveToVersionId=version_c,
        RemoveFromVersionId=version_a,
    )
    refused = site.certpull("sync")
    assert refused.returncode == 1 and "before the installed certificate" in refused.stdout
    assert site.serves(first(site).der)
