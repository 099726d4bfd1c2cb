"""status.py: severities and what the report says, from state alone (no AWS, no cryptography)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Dict, Optional

import pytest

from certpull.config import parse_config
from certpull.state import CertState, DaemonState, Installed, Pending, State
from certpull.status import CRITICAL, OK, UNKNOWN, WARNING, build_report, render_text
from tests.pki import Pki

NOW = 1_800_000_000.0
ARN = "arn:aws:secretsmanager:us-east-1:111122223333:secret:www-tls-AbCdEf"
CONFIG = parse_config(f"[agent]\nlive_dir = /live\n\n[cert:www]\nsecret_arn = {ARN}\n", "/c.conf")
PKI = Pki()
LEAF = PKI.leaf()
FINGERPRINT = __import__("hashlib").sha256(LEAF.der).hexdigest()


def installed(days_left: float) -> Installed:
    not_after = datetime.fromtimestamp(NOW, timezone.utc) + timedelta(days=days_left)
    return Installed(
        version_id="v1",
        store_version="..v1",
        serial="ab",
        fingerprint_sha256=FINGERPRINT,
        subject="CN=www.example.com",
        names=["www.example.com", "127.0.0.1"],
        not_after=not_after.isoformat(),
    )


def files(cert_pem: Optional[bytes] = None) -> Dict[str, bytes]:
    others = {f"/live/www/{n}": b"x" for n in ("chain.pem", "fullchain.pem", "privkey.pem")}
    return {"/live/www/cert.pem": LEAF.pem.encode() if cert_pem is None else cert_pem, **others}


def report_for(
    cert: Optional[CertState],
    daemon: Optional[DaemonState] = None,
    live: Optional[Dict[str, bytes]] = None,
    alive: bool = True,
):  # type: ignore[no-untyped-def]
    state = State(certs={"www": cert} if cert else {}, daemon=daemon or DaemonState())
    live = files() if live is None else live

    def read(path: str) -> bytes:
        if path not in live:
            raise FileNotFoundError(path)
        return live[path]

    return build_report(
        CONFIG,
        state,
        NOW,
        read_file=read,
        process_identity=lambda pid: (1, None) if alive else None,
        boot_id=lambda: None,
    )


CASES = [
    # (id, cert state, severity, fragment of the summary)
    (
        "healthy",
        CertState(installed=installed(60)),
        OK,
        "1 certificate(s) current, next expiry in 60 days",
    ),
    ("nothing-installed", None, CRITICAL, "nothing installed yet"),
    ("warn-window", CertState(installed=installed(20)), WARNING, "expires in 20.0 days"),
    ("crit-window", CertState(installed=installed(3)), CRITICAL, "expires in 3.0 days"),
    ("expired", CertState(installed=installed(-1)), CRITICAL, "expired on"),
    (
        "last-error",
        CertState(installed=installed(60), last_error="www: DescribeSecret: access denied"),
        WARNING,
        "last check failed: www: DescribeSecret: access denied",
    ),
    (
        "held",
        CertState(installed=installed(60), held_version_id="v9"),
        WARNING,
        "version v9 is held",
    ),
    (
        "cn-only",  # the AWS sample's leaves: installed, but modern clients refuse them
        CertState(installed=replace(installed(60), names=[])),
        WARNING,
        "names its host in the CN only (CN=www.example.com), without a subjectAltName: Go, Chrome",
    ),
    (
        "pending-is-fine",
        CertState(installed=installed(60), pending=Pending("v2", "cd", "2030-01-01", NOW)),
        OK,
        "current",
    ),
]


@pytest.mark.parametrize(
    ("cert", "severity", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_cert_severity(cert: Optional[CertState], severity: int, fragment: str) -> None:
    report = report_for(cert, live=None if cert else {})  # "nothing installed": no live files
    assert report.severity == severity
    assert fragment in report.summary


def test_live_file_that_is_not_the_installed_cert_is_a_warning() -> None:
    other = PKI.leaf(slot=5).pem.encode()
    report = report_for(CertState(installed=installed(60)), live=files(other))
    assert report.severity == WARNING and "drift" in report.summary
    assert report.certs[0].live_fingerprint_matches is False
    gone = report_for(CertState(installed=installed(60)), live={})
    assert gone.severity == CRITICAL and "live cert.pem, chain.pem" in gone.summary


@pytest.mark.parametrize(
    ("daemon", "alive", "severity", "fragment"),
    [
        (DaemonState(), True, OK, None),
        (DaemonState(pid=42, heartbeat_at=NOW - 5, heartbeat_interval_s=30), True, OK, None),
        (
            DaemonState(pid=42, heartbeat_at=NOW - 500, heartbeat_interval_s=30),
            True,
            WARNING,
            "no heartbeat for 500 s",
        ),
        (DaemonState(pid=42, heartbeat_at=NOW - 5), False, WARNING, "gone without a clean stop"),
        (DaemonState(pid=42, stopped_at=NOW - 5), False, WARNING, "stopped"),
        (
            DaemonState(pid=42, heartbeat_at=NOW, config_error="c.conf:3: x: unknown key"),
            True,
            WARNING,
            "new config rejected",
        ),
    ],
)
def test_daemon_liveness(
    daemon: DaemonState, alive: bool, severity: int, fragment: Optional[str]
) -> None:
    report = report_for(CertState(installed=installed(60)), daemon=daemon, alive=alive)
    assert report.daemon.severity == severity
    assert report.severity == severity
    if fragment:
        assert fragment in (report.daemon.problem or "")


def test_text_and_json_render_the_same_facts() -> None:
    report = report_for(CertState(installed=installed(20), last_check_at=NOW - 30, drift_count=2))
    text = render_text(report, NOW)
    assert text.startswith("CERTPULL WARNING - www: expires in 20.0 days")
    assert "serial ab" in text and "repaired 2 time(s)" in text and "30 s ago" in text
    body = report.to_dict()
    assert body["status"] == "WARNING" and body["exit_code"] == 1
    assert body["certs"]["www"]["days_left"] == 20.0


def test_status_module_imports_neither_boto3_nor_cryptography(real_subprocess: None) -> None:
    code = (
        "import sys, certpull.cli;"
        "bad = [m for m in ('boto3', 'botocore', 'cryptography') if m in sys.modules];"
        "print(','.join(bad))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


def test_unknown_is_three() -> None:
    assert UNKNOWN == 3


def test_a_refused_first_sync_shows_when_it_looked_and_when_it_looks_again() -> None:
    """Nothing installed yet, the first check refused the secret: status still says when."""
    cert = CertState(
        last_check_at=NOW - 120,
        next_check_at=NOW + 180,
        consecutive_failures=2,
        last_error="www: CERTIFICATE_PEM has no subjectAltName DNS names or IP addresses",
    )
    report = report_for(cert, live={})
    assert report.severity == CRITICAL
    (www,) = report.certs
    assert (www.last_check_at, www.next_check_at, www.consecutive_failures) == (
        NOW - 120,
        NOW + 180,
        2,
    )
    text = render_text(report, NOW)
    assert "last check:  2027-01-15 07:58:00 UTC (2 min ago)" in text, text
    assert "next check:  in 180 s" in text, text


def test_a_failed_first_install_is_critical_not_a_damaged_state() -> None:
    """The files of a first install stay when it fails (nothing to roll back to); state.json is
    intact and says why, so status names the failure instead of blaming state.json."""
    error = (
        "www: cannot make its compat links: cannot link /etc/x.crt: directory /etc does not exist"
    )
    report = report_for(CertState(last_check_at=NOW, last_error=error))  # live files present
    assert report.severity == CRITICAL
    (www,) = report.certs
    assert www.problems[0].startswith("the first install failed: its files are in the live")
    assert error in www.problems
    assert not any("state.json" in p for p in www.problems)
