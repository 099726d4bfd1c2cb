"""Monitoring tells the truth (issue 12, item 3), from state alone (status imports neither boto3
nor cryptography): "served: matches" only after a handshake proved it, every certificate served
in the chain counts for expiry, missing live files are CRITICAL, a reused pid is not the daemon."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Dict, Optional

import pytest

from certpull.config import parse_config
from certpull.state import CertState, DaemonState, Installed, State
from certpull.status import CRITICAL, OK, UNKNOWN, WARNING, build_report, render_text
from tests.pki import Pki

NOW = 1_800_000_000.0
ARN = "arn:aws:secretsmanager:us-east-1:111122223333:secret:www-tls-AbCdEf"
CONFIG = parse_config(
    f"[agent]\nlive_dir = /live\n\n[cert:www]\nsecret_arn = {ARN}\nverify = 127.0.0.1:443\n",
    "/c.conf",
)
PKI = Pki()
LEAF = PKI.leaf()
FINGERPRINT = hashlib.sha256(LEAF.der).hexdigest()
LIVE = {
    "/live/www/cert.pem": LEAF.pem.encode(),
    "/live/www/chain.pem": b"chain",
    "/live/www/privkey.pem": b"key",
    "/live/www/fullchain.pem": b"full",
}


def when(days: float) -> str:
    return (datetime.fromtimestamp(NOW, timezone.utc) + timedelta(days=days)).isoformat()


def installed(days_left: float = 60, chain_days: Optional[float] = 400) -> Installed:
    return Installed(
        version_id="v1",
        store_version="..v1",
        serial="ab",
        fingerprint_sha256=FINGERPRINT,
        subject="CN=www.example.com",
        names=["www.example.com", "127.0.0.1"],
        not_after=when(days_left),
        chain_not_after=when(chain_days) if chain_days is not None else "",
        chain_expiring="CN=certpull test intermediate",
    )


def proven(**changes: object) -> CertState:
    """A certificate whose installed leaf a handshake showed served."""
    base = CertState(
        installed=installed(),
        last_verify_ok=True,
        last_verify_at=NOW - 60,
        verified_fingerprint=FINGERPRINT,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def report_for(
    cert: Optional[CertState],
    daemon: Optional[DaemonState] = None,
    live: Optional[Dict[str, bytes]] = None,
    process: Optional[Dict[int, tuple]] = None,  # type: ignore[type-arg]
):  # type: ignore[no-untyped-def]
    state = State(certs={"www": cert} if cert else {}, daemon=daemon or DaemonState())
    files = LIVE if live is None else live

    def read(path: str) -> bytes:
        if path not in files:
            raise FileNotFoundError(path)
        return files[path]

    def identity(pid: int) -> Optional[tuple]:  # type: ignore[type-arg]
        return (process or {}).get(pid)

    return build_report(
        CONFIG, state, NOW, read_file=read, process_identity=identity, boot_id=lambda: "boot-1"
    )


def test_a_proven_certificate_is_ok_and_says_served() -> None:
    report = report_for(proven())
    assert report.severity == OK, report.summary
    assert "served:      matches the installed certificate" in render_text(report, NOW)


@pytest.mark.parametrize(
    ("cert", "fragment"),
    [
        (proven(last_verify_ok=None, verified_fingerprint=None), "installed, not yet served"),
        (proven(verified_fingerprint="00" * 32), "installed, not yet served"),  # an older proof
        (proven(reload_pending=True), "installed, not yet served"),
        (proven(last_verify_ok=False, verified_fingerprint=None), "did not serve"),
    ],
    ids=["never-proven", "proof-of-another-leaf", "reload-pending", "verify-failed"],
)
def test_served_matches_only_after_a_handshake_proved_it(cert: CertState, fragment: str) -> None:
    report = report_for(cert)
    assert report.severity == WARNING and fragment in report.summary
    assert "served:      matches" not in render_text(report, NOW)


@pytest.mark.parametrize(
    ("chain_days", "severity", "fragment"),
    [
        (400, OK, None),
        (20, WARNING, "CN=certpull test intermediate in the chain expires in 20.0 days"),
        (3, CRITICAL, "CN=certpull test intermediate in the chain expires in 3.0 days"),
        (-1, CRITICAL, "CN=certpull test intermediate in the chain expired on"),
    ],
)
def test_expiry_covers_every_certificate_served_in_the_chain(
    chain_days: float, severity: int, fragment: Optional[str]
) -> None:
    report = report_for(proven(installed=installed(days_left=60, chain_days=chain_days)))
    assert report.severity == severity, report.summary
    if fragment:
        assert fragment in report.summary
    assert report.certs[0].days_left == pytest.approx(min(60, chain_days), abs=0.01)


@pytest.mark.parametrize("missing", ["cert.pem", "privkey.pem", "chain.pem"])
def test_live_files_gone_is_critical(missing: str) -> None:
    live = {k: v for k, v in LIVE.items() if not k.endswith("/" + missing)}
    report = report_for(proven(), live=live)
    assert report.severity == CRITICAL
    assert f"live {missing} is missing" in report.summary and "httpd" in report.summary


def test_no_record_but_live_files_is_unknown_not_nothing_installed() -> None:
    report = report_for(CertState(), live=LIVE)
    assert report.severity == UNKNOWN and "state.json does not describe" in report.summary
    assert report_for(None, live={}).severity == CRITICAL  # truly nothing installed


def test_unknown_ranks_below_critical_when_both_occur() -> None:
    config = parse_config(
        f"[agent]\nlive_dir = /live\n[cert:www]\nsecret_arn = {ARN}\n[cert:api]\nsecret_arn = {ARN}x\n",
        "/c.conf",
    )
    state = State(certs={"www": CertState()})

    def read(path: str) -> bytes:
        if path not in LIVE:
            raise FileNotFoundError(path)
        return LIVE[path]

    report = build_report(config, state, NOW, read_file=read, boot_id=lambda: None)
    assert report.severity == CRITICAL  # api: nothing installed; www: unknown


DAEMON = DaemonState(pid=4242, heartbeat_at=NOW - 5, heartbeat_interval_s=30, start_ticks=777)


@pytest.mark.parametrize(
    ("process", "running", "fragment"),
    [
        ({4242: (777, "boot-1")}, True, None),
        ({4242: (999, "boot-1")}, False, "pid 4242 now belongs to another process"),
        ({}, False, "gone without a clean stop"),
    ],
)
def test_a_reused_pid_is_not_a_running_daemon(
    process: Dict[int, tuple],  # type: ignore[type-arg]
    running: bool,
    fragment: Optional[str],
) -> None:
    report = report_for(proven(), daemon=DAEMON, process=process)
    assert report.daemon.running is running
    if fragment:
        assert report.severity == WARNING and fragment in (report.daemon.problem or "")


def test_a_daemon_recorded_before_a_reboot_is_not_running() -> None:
    daemon = replace(DAEMON, boot_id="boot-0")
    report = report_for(proven(), daemon=daemon, process={4242: (777, "boot-1")})
    assert report.daemon.running is False and "before a reboot" in (report.daemon.problem or "")


def test_process_identity_reads_field_22_of_proc_stat(real_subprocess: None) -> None:
    from certpull.procinfo import boot_id, process_identity

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        identity = process_identity(child.pid)
        assert identity is not None and identity[0] > 0
        stat = Path(f"/proc/{child.pid}/stat").read_text()
        assert identity[0] == int(stat.rpartition(")")[2].split()[19])  # field 22 of the whole
        assert identity[1] == boot_id()
    finally:
        child.kill()
        child.wait()
    assert process_identity(child.pid) is None
    assert process_identity(os.getpid()) != identity
