"""The shipped unit on a live systemd: what its sandbox allows, what it needs to start, and
systemd's own verdicts on it (`systemd-analyze verify` and `security`)."""

from __future__ import annotations

import re
import shutil
from typing import Iterator

import pytest

from tests.aws_local import LocalAws
from tests.host.host import LIVE, Host, Image, wait_for
from tests.host.report import record
from tests.pki import Pki

# systemd-analyze security's exposure of the unit as shipped (0 = fully locked, 10 = none).
# Measured on systemd 252 (bookworm, = AL2023) and 247 (bullseye); a loosened sandbox fails here.
MAX_EXPOSURE = {"bookworm": 2.1, "bullseye": 2.1}


@pytest.fixture
def running(
    image: Image, local_aws: LocalAws, pki: Pki, request: pytest.FixtureRequest
) -> Iterator[Host]:
    """A provisioned host with the agent running."""
    with Host(image, local_aws, pki, request.node.name.split("[")[0][5:]) as host:
        host.add_site("www")
        host.write_config({"startup_splay_s": "0"})
        host.write_apache()
        host.boot()
        host.provision()
        yield host


@pytest.mark.releases("bookworm")  # systemd 247 (bullseye) does not know PrivateIPC= (248)
@pytest.mark.timeout(120, func_only=True)
def test_systemd_analyze_verify_accepts_the_unit(running: Host) -> None:
    result = running.sh(
        "systemd-analyze", "verify", "/usr/lib/systemd/system/certpull.service", check=False
    )
    assert result.returncode == 0, result.stderr
    mentions = [line for line in result.stderr.splitlines() if "certpull" in line]
    assert mentions == []


@pytest.mark.timeout(120, func_only=True)
def test_security_exposure_of_the_live_unit(running: Host) -> None:
    result = running.sh(
        "systemd-analyze", "security", "--no-pager", "certpull.service", check=False
    )
    match = re.search(
        r"Overall exposure level for certpull\.service: ([0-9.]+) (\S+)", result.stdout
    )
    assert match, result.stdout[-2000:] + result.stderr
    score = float(match.group(1))
    record(f"systemd-analyze security ({running.image.release})", score, match.group(2))
    assert score <= MAX_EXPOSURE[running.image.release], result.stdout


@pytest.mark.releases("bookworm")
@pytest.mark.timeout(120, func_only=True)
def test_run_is_read_only_inside_the_sandbox(running: Host) -> None:
    """ProtectSystem=strict leaves /run writable (an API VFS mount on systemd 252): a runtime unit
    dropped in /run/systemd/system would run outside the sandbox at the next daemon-reload. The
    agent needs no write there: sd_notify, the journal and systemctl only connect to sockets."""
    pid = running.main_pid()
    for path in (
        "/run/certpull-probe",
        "/run/systemd/system/certpull-probe.service",
        "/run/lock/certpull-probe",
    ):
        result = running.container.in_service_namespace(pid, ["sh", "-c", f": > {path}"])
        assert result.returncode != 0, f"{path} is writable inside certpull.service"
        assert "Read-only file system" in result.stderr
    for path in ("/var/lib/certpull/probe", f"{LIVE}/probe"):
        result = running.container.in_service_namespace(
            pid, ["sh", "-c", f": > {path} && rm {path}"]
        )
        assert result.returncode == 0, f"{path}: {result.stderr}"


@pytest.mark.releases("bookworm")
@pytest.mark.timeout(120, func_only=True)
def test_httpd_config_test_runs_inside_the_sandbox(running: Host) -> None:
    """The shipped configtest_command (apachectl configtest) in the agent's mount namespace, with
    httpd running: Debian's apache2ctl only creates /run/apache2 when it is missing."""
    result = running.container.in_service_namespace(running.main_pid(), ["apachectl", "configtest"])
    assert result.returncode == 0, result.stderr
    assert "Syntax OK" in result.stderr


@pytest.mark.releases("bookworm", "bullseye")
@pytest.mark.timeout(180, func_only=True)
def test_the_unit_starts_when_the_live_directory_is_missing(
    image: Image, local_aws: LocalAws, pki: Pki
) -> None:
    """ReadWritePaths=/etc/pki/certpull fails the unit with 226/NAMESPACE when the directory is
    missing (a config-management run that wiped it, an image built without the package's dirs)."""
    with Host(image, local_aws, pki, "nolivedir") as host:
        host.add_site("www")
        host.write_config({"startup_splay_s": "0"})
        host.write_apache()
        host.boot()
        live = host.root / LIVE.lstrip("/")
        live.chmod(0o750)  # an operator's choice: the unit must not reset it
        host.sh("systemctl", "restart", "certpull.service")
        assert live.stat().st_mode & 0o777 == 0o750
        host.sh("systemctl", "stop", "certpull.service")
        shutil.rmtree(live)
        result = host.sh("systemctl", "restart", "certpull.service", check=False)
        assert result.returncode == 0, host.describe(("certpull.service",))
        wait_for(
            "www installed into a recreated live directory",
            (host.root / f"{LIVE}/www/cert.pem".lstrip("/")).exists,
            60,
            context=host.describe,
        )
        assert host.show("certpull.service", "SubState", "NRestarts") == {
            "SubState": "running",
            "NRestarts": "0",
        }
