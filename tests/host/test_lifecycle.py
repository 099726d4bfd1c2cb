"""A provisioned host through its life: reboot, package upgrade with the agent running,
`systemctl reload certpull`, `systemctl stop certpull`.

Each starts from the README's quick start (sync, httpd on the files, enable --now), so these do
not depend on the first-boot fix; test_first_boot.py covers a host with no certificate.
"""

from __future__ import annotations

import shutil
import time

import pytest

from tests.aws_local import LocalAws
from tests.host.host import CONFIG, LIVE, Host, Image, handshakes, wait_for
from tests.host.report import record
from tests.pki import Pki


def provisioned(host: Host, **agent: str) -> Host:
    host.add_site("www")
    host.write_config({"startup_splay_s": "0", **agent})
    host.write_apache()
    host.boot()
    host.provision()
    return host


@pytest.mark.timeout(240, func_only=True)
def test_reboot_keeps_serving_without_fetching_again(
    image: Image, local_aws: LocalAws, pki: Pki
) -> None:
    with Host(image, local_aws, pki, "reboot") as host:
        provisioned(host)
        installed = host.state()["certs"]["www"]["installed"]
        host.proxy.reset_counts()
        host.container.reboot()
        waited = wait_for(
            "the secret's leaf served after the reboot", host.serves, 60, context=host.describe
        )
        record(
            f"reboot ({image.release}): boot to certificate served",
            round(time.monotonic() - host.container.boot_started, 1),
            "s",
        )
        assert waited >= 0
        assert host.show("certpull.service", "SubState", "NRestarts") == {
            "SubState": "running",
            "NRestarts": "0",
        }
        assert host.show("apache2.service", "SubState")["SubState"] == "running"
        assert host.state()["certs"]["www"]["installed"]["version_id"] == installed["version_id"]
        # The agent only checked: AWSCURRENT did not move, so no GetSecretValue (a billed KMS decrypt).
        wait_for("the first check after boot", lambda: host.proxy.count("DescribeSecret") >= 1, 30)
        assert host.proxy.count("GetSecretValue") == 0


@pytest.mark.timeout(240, func_only=True)
def test_boot_orders_certpull_before_the_distributions_httpd(
    image: Image, local_aws: LocalAws, pki: Pki
) -> None:
    """At boot httpd must start after certpull is READY (its files recovered), whatever the
    distribution calls it: httpd.service on AL2023, apache2.service on Debian."""
    with Host(image, local_aws, pki, "ordering") as host:
        provisioned(host)
        before = host.show("certpull.service", "Before")["Before"].split()
        assert "httpd.service" in before
        assert "apache2.service" in before
        host.container.reboot()
        assert "certpull.service" in host.show("apache2.service", "After")["After"].split()
        entries = host.container.journal()
        ready = [
            int(e["__MONOTONIC_TIMESTAMP"])
            for e in entries
            if e.get("UNIT") == "certpull.service"
            and str(e.get("MESSAGE", "")).startswith("Started")
        ]
        httpd_starting = [
            int(e["__MONOTONIC_TIMESTAMP"])
            for e in entries
            if e.get("UNIT") == "apache2.service"
            and str(e.get("MESSAGE", "")).startswith("Starting")
        ]
        assert ready and httpd_starting, host.describe()
        assert ready[0] < httpd_starting[0]


@pytest.mark.timeout(300, func_only=True)
def test_package_upgrade_with_the_agent_running_loses_nothing(
    image: Image, local_aws: LocalAws, pki: Pki
) -> None:
    """rpm -U of a newer build: the unit restarts on the new code (%postun try-restart), the edited
    config, the installed certificate and state survive, and clients never see a failure."""
    with Host(image, local_aws, pki, "upgrade") as host:
        provisioned(host)
        old_pid = host.main_pid()
        config_before = (host.root / CONFIG.lstrip("/")).read_text()
        live_before = (host.root / f"{LIVE}/www/cert.pem".lstrip("/")).read_bytes()
        installed = host.state()["certs"]["www"]["installed"]
        newer = host.image.newer_rpm
        shutil.copy2(newer, host.root / "var/tmp" / newer.name)
        host.proxy.reset_counts()
        upgrade_started = time.monotonic()
        with handshakes(host) as seen:
            result = host.sh(
                "rpm", "-U", "--nodeps", "--force-debian", f"/var/tmp/{newer.name}", timeout=180
            )
            wait_for(
                "the agent restarted on the new build",
                lambda: (
                    host.main_pid() not in (0, old_pid)
                    and host.show("certpull.service", "SubState")["SubState"] == "running"
                ),
                60,
                context=host.describe,
            )
            time.sleep(3)  # the new agent's first pass
        record(
            f"upgrade ({image.release}): rpm -U to agent running",
            round(time.monotonic() - upgrade_started, 1),
            "s",
        )
        assert result.returncode == 0
        nvr = host.sh("rpm", "-q", "certpull").stdout.strip()
        assert nvr.startswith(f"certpull-{newer.name.split('-')[1]}-"), nvr
        assert host.certpull("--version").stdout.strip() == f"certpull {newer.name.split('-')[1]}"
        assert host.show("certpull.service", "ActiveState", "NRestarts") == {
            "ActiveState": "active",
            "NRestarts": "0",
        }
        assert (host.root / CONFIG.lstrip("/")).read_text() == config_before
        assert not list((host.root / "etc/certpull").glob("*.rpm*"))
        assert (host.root / f"{LIVE}/www/cert.pem".lstrip("/")).read_bytes() == live_before
        assert host.state()["certs"]["www"]["installed"]["version_id"] == installed["version_id"]
        assert host.proxy.count("GetSecretValue") == 0
        assert seen and all(der == host.leaves["www"].der for der in seen), (
            f"{seen.count(None)} failed handshakes"
        )
        errors = [
            e["MESSAGE"]
            for e in host.journal()
            if e.get("SYSLOG_IDENTIFIER") == "certpull" and int(e.get("PRIORITY", 6)) <= 3
        ]
        assert errors == []


@pytest.mark.releases("bookworm")
@pytest.mark.timeout(240, func_only=True)
def test_systemctl_reload_rereads_the_config(image: Image, local_aws: LocalAws, pki: Pki) -> None:
    """`systemctl reload certpull` succeeds and reaches the agent (SIGHUP: config reloaded, same
    process); a certificate added to the config is installed."""
    with Host(image, local_aws, pki, "reload") as host:
        provisioned(host)
        pid = host.main_pid()
        host.add_site("api", server_name="api.example.com", verify="")
        host.write_config({"startup_splay_s": "0"})
        # The agent watches its config file: the edit alone reloads it once.
        wait_for(
            "the edit noticed",
            lambda: sum(m.startswith("config reloaded") for m in host.messages()) >= 1,
            30,
            context=host.describe,
        )
        result = host.sh("systemctl", "reload", "certpull.service", check=False)
        assert result.returncode == 0, result.stderr.strip()
        wait_for(
            "a second 'config reloaded' (SIGHUP)",
            lambda: sum(m.startswith("config reloaded") for m in host.messages()) >= 2,
            30,
            context=host.describe,
        )
        assert host.main_pid() == pid
        assert host.show("certpull.service", "ActiveState", "SubState") == {
            "ActiveState": "active",
            "SubState": "running",
        }
        wait_for(
            "api installed",
            lambda: "installed" in (host.state().get("certs", {}).get("api") or {}),
            60,
            context=host.describe,
        )
        live = host.root / f"{LIVE}/api/cert.pem".lstrip("/")
        assert live.read_bytes() == host.leaves["api"].pem.encode()


@pytest.mark.releases("bookworm")
@pytest.mark.timeout(180, func_only=True)
def test_systemctl_stop_is_clean(image: Image, local_aws: LocalAws, pki: Pki) -> None:
    with Host(image, local_aws, pki, "stop") as host:
        provisioned(host)
        started = time.monotonic()
        result = host.sh("systemctl", "stop", "certpull.service", check=False)
        took = time.monotonic() - started
        record(f"stop ({image.release}): systemctl stop certpull", round(took, 2), "s")
        assert result.returncode == 0
        assert took < 10
        props = host.show(
            "certpull.service", "ActiveState", "Result", "ExecMainCode", "ExecMainStatus"
        )
        assert props == {
            "ActiveState": "inactive",
            "Result": "success",
            "ExecMainCode": "1",
            "ExecMainStatus": "0",
        }
        messages = host.messages()
        assert "certpull run: stopped" in messages
        assert not [m for m in messages if "SIGKILL" in m or "timed out" in m]
        assert host.state()["daemon"]["stopped_at"]
        _, status = host.status_json()
        assert status["daemon"]["running"] is False
        assert status["daemon"]["problem"] == "stopped"
        assert host.serves()  # httpd keeps serving what is installed
