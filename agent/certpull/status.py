"""What `certpull status` reports, computed from config + state.json + the live cert files.

Pure and light on purpose: monitoring runs it every minute on every host, so it must not import boto3
or cryptography (it hashes the PEM's DER itself; everything else it needs, such as the expiry of the
chain, the agent records in state.json at install time). Severities follow the monitoring-plugin
convention: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN; several are combined by how bad they are
(OK < WARNING < UNKNOWN < CRITICAL), so a CRITICAL is never hidden behind an UNKNOWN.

It says only what it knows: "served: matches" only when a handshake proved that the installed leaf
is served; files installed while httpd was down, or not reloaded yet, are "installed, not yet
served"; a pid is the daemon's only while the process behind it is the one the daemon recorded.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from certpull.config import Config
from certpull.fileops import read_regular_file
from certpull.pem import cert_fingerprint
from certpull.procinfo import boot_id as read_boot_id
from certpull.procinfo import process_identity as read_process_identity
from certpull.state import CertState, DaemonState, State, parse_time

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
SEVERITY_NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}
_RANK = {OK: 0, WARNING: 1, UNKNOWN: 2, CRITICAL: 3}
LIVE_FILES = ("cert.pem", "chain.pem", "fullchain.pem", "privkey.pem")

SERVED_MATCHES = "matches the installed certificate"
SERVED_PENDING = "installed, not yet served"
SERVED_WRONG = "DOES NOT MATCH the installed certificate"
SERVED_UNCHECKED = "not checked (no verify target)"

ProcessIdentity = Callable[[int], Optional[Tuple[int, Optional[str]]]]


def worst(*severities: int) -> int:
    return max(severities, key=lambda s: _RANK[s], default=OK)


@dataclass
class CertReport:
    name: str
    severity: int
    problems: List[str] = field(default_factory=list)
    secret_arn: str = ""
    version_id: Optional[str] = None
    serial: Optional[str] = None
    fingerprint_sha256: Optional[str] = None
    subject: Optional[str] = None
    not_after: Optional[str] = None
    chain_not_after: Optional[str] = None
    days_left: Optional[float] = None  # until the first certificate served expires
    last_check_at: Optional[float] = None
    last_change_at: Optional[float] = None
    last_error: Optional[str] = None
    last_verify_ok: Optional[bool] = None
    served: Optional[str] = None  # one of the SERVED_* texts
    next_check_at: Optional[float] = None
    backoff_until: Optional[float] = None
    consecutive_failures: int = 0
    pending_version_id: Optional[str] = None
    pending_not_before: Optional[str] = None
    rejected_version_id: Optional[str] = None
    drift_count: int = 0
    live_fingerprint_matches: Optional[bool] = None
    live_files_missing: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)


@dataclass
class DaemonReport:
    running: bool
    pid: Optional[int]
    heartbeat_age_s: Optional[float]
    severity: int
    problem: Optional[str] = None
    mode: Optional[str] = None
    config_error: Optional[str] = None


@dataclass
class StatusReport:
    severity: int
    summary: str
    certs: List[CertReport]
    daemon: DaemonReport

    def to_dict(self) -> Dict[str, Any]:
        return {
            "status": SEVERITY_NAMES[self.severity],
            "exit_code": self.severity,
            "summary": self.summary,
            "daemon": asdict(self.daemon),
            "certs": {report.name: asdict(report) for report in self.certs},
        }


def _read_or_none(read_file: Callable[[str], bytes], path: str) -> Optional[bytes]:
    try:
        return read_file(path)
    except OSError:
        return None


class _Cert:
    """Builds one certificate's report."""

    def __init__(self, report: CertReport) -> None:
        self.report = report

    def worse(self, severity: int, problem: str) -> None:
        self.report.severity = worst(self.report.severity, severity)
        self.report.problems.append(problem)


def _cert_report(
    name: str,
    cstate: Optional[CertState],
    config: Config,
    now: float,
    read_file: Callable[[str], bytes],
) -> CertReport:
    cert = config.cert(name)
    report = CertReport(name=name, severity=OK, secret_arn=cert.secret_arn)
    build = _Cert(report)
    live_dir = config.live_path(name)
    live = {f: _read_or_none(read_file, os.path.join(live_dir, f)) for f in LIVE_FILES}
    report.live_files_missing = [f for f, data in live.items() if data is None]
    if cstate is None or cstate.installed is None:
        _not_installed(build, cstate, live["cert.pem"] is not None)
        return report
    inst = cstate.installed
    report.version_id = inst.version_id
    report.serial = inst.serial
    report.fingerprint_sha256 = inst.fingerprint_sha256
    report.subject = inst.subject
    report.not_after = inst.not_after
    report.chain_not_after = inst.chain_not_after or None
    _checks(report, cstate)
    report.last_change_at = cstate.last_change_at
    report.last_error = cstate.last_error
    report.last_verify_ok = cstate.last_verify_ok
    report.pending_version_id = cstate.pending.version_id if cstate.pending else None
    report.pending_not_before = (cstate.pending.not_before or None) if cstate.pending else None
    report.rejected_version_id = cstate.rejected.version_id if cstate.rejected else None
    report.drift_count = cstate.drift_count
    report.notes = list(cstate.warnings)

    _expiry(build, inst.not_after, inst.chain_not_after, inst.chain_expiring, config, now)
    if report.live_files_missing:
        missing = ", ".join(report.live_files_missing)
        verb = "is" if len(report.live_files_missing) == 1 else "are"
        build.worse(
            CRITICAL,
            f"live {missing} {verb} missing: httpd cannot start or reload with {live_dir}",
        )
    live_cert = live["cert.pem"]
    report.live_fingerprint_matches = (
        live_cert is not None and cert_fingerprint(live_cert) == inst.fingerprint_sha256
    )
    if live_cert is not None and not report.live_fingerprint_matches:
        build.worse(
            WARNING, "the live cert.pem is not the installed certificate (drift not yet repaired)"
        )
    if not inst.names:
        build.worse(
            WARNING,
            f"the certificate names its host in the CN only ({inst.subject}), without a "
            "subjectAltName: Go, Chrome and other modern clients refuse it; reissue it with a "
            "subjectAltName (certpull's rotation function does)",
        )
    _served(build, cstate, cert.verify is not None)
    if cstate.last_error:
        build.worse(WARNING, f"last check failed: {cstate.last_error}")
    if cstate.rejected:
        build.worse(
            WARNING,
            f"version {cstate.rejected.version_id} was refused ({cstate.rejected.reason}); "
            "it is not installed again until the secret moves on",
        )
    if cstate.held_version_id:
        build.worse(WARNING, f"version {cstate.held_version_id} is held after a rollback")
    return report


def _expiry(
    build: _Cert,
    leaf_not_after: str,
    chain_not_after: str,
    chain_subject: str,
    config: Config,
    now: float,
) -> None:
    """The first certificate served to expire decides: the leaf, or one in the chain."""
    agent = config.agent
    candidates = []
    leaf = parse_time(leaf_not_after)
    if leaf is not None:
        candidates.append((leaf, "the certificate"))
    chain = parse_time(chain_not_after) if chain_not_after else None
    if chain is not None:
        candidates.append((chain, f"{chain_subject or 'a certificate'} in the chain"))
    if not candidates:
        return
    moment, what = min(candidates, key=lambda c: c[0])
    days_left = (moment.timestamp() - now) / 86400
    build.report.days_left = round(days_left, 2)
    prefix = "" if what == "the certificate" else f"{what} "
    if days_left <= 0:
        build.worse(CRITICAL, f"{prefix}expired on {moment:%Y-%m-%d %H:%M} UTC")
    elif days_left <= agent.crit_days:
        build.worse(CRITICAL, f"{prefix}expires in {days_left:.1f} days ({moment:%Y-%m-%d})")
    elif days_left <= agent.warn_days:
        build.worse(WARNING, f"{prefix}expires in {days_left:.1f} days ({moment:%Y-%m-%d})")


def _not_installed(build: _Cert, cstate: Optional[CertState], live_cert: bool) -> None:
    """No installed record: nothing yet, a failed first install, or a damaged state.json."""
    if live_cert and cstate is not None and cstate.last_error:
        build.worse(  # state.json is intact: it says the first install failed
            CRITICAL,
            "the first install failed: its files are in the live directory, not proven "
            "served; the next pass tries again",
        )
    elif live_cert:
        build.worse(
            UNKNOWN,
            "state.json does not describe the installed files (damaged or lost?); "
            "the next pass of the agent rebuilds it",
        )
    else:
        build.worse(CRITICAL, "nothing installed yet")
    if cstate is not None:
        _checks(build.report, cstate)  # a first sync refused: when it looked, when it looks again
        if cstate.last_error:
            build.report.last_error = cstate.last_error
            build.report.problems.append(cstate.last_error)


def _checks(report: CertReport, cstate: CertState) -> None:
    """When the agent last looked at the secret and when it looks next."""
    report.last_check_at = cstate.last_check_at
    report.next_check_at = cstate.next_check_at
    report.backoff_until = cstate.backoff_until
    report.consecutive_failures = cstate.consecutive_failures


def _served(build: _Cert, cstate: CertState, has_target: bool) -> None:
    """ "matches" only when a handshake showed the installed leaf, after its last reload."""
    report = build.report
    inst = cstate.installed
    proven = (
        inst is not None
        and cstate.last_verify_ok is True
        and cstate.verified_fingerprint == inst.fingerprint_sha256
        and not cstate.reload_pending
    )
    if not has_target:
        report.served = SERVED_UNCHECKED
        if cstate.reload_pending:
            build.worse(WARNING, "installed, not yet loaded by httpd (a reload is pending)")
        return
    if proven:
        report.served = SERVED_MATCHES
    elif cstate.last_verify_ok is False and not cstate.reload_pending:
        report.served = SERVED_WRONG
        build.worse(
            WARNING, "httpd did not serve the installed certificate at the last verification"
        )
    else:
        report.served = SERVED_PENDING
        why = (
            "httpd has not been reloaded with it"
            if cstate.reload_pending
            else "no handshake has shown it yet"
        )
        build.worse(WARNING, f"{SERVED_PENDING} ({why})")


def _daemon_report(
    daemon: DaemonState,
    now: float,
    identity: ProcessIdentity,
    boot_id: Optional[str],
) -> DaemonReport:
    if daemon.pid is None:
        return DaemonReport(False, None, None, OK, "never started (one-shot `certpull sync` only)")
    age = now - daemon.heartbeat_at if daemon.heartbeat_at else None
    seen = identity(daemon.pid)
    problem: Optional[str] = None
    if daemon.boot_id and boot_id and daemon.boot_id != boot_id:
        running, problem = False, "not running (it was recorded before a reboot)"
    elif seen is None:
        running = False
    elif daemon.start_ticks is not None and seen[0] != daemon.start_ticks:
        running = False
        problem = f"not running (pid {daemon.pid} now belongs to another process)"
    else:
        running = daemon.stopped_at is None
    report = DaemonReport(running, daemon.pid, age, OK, None, daemon.mode, daemon.config_error)
    if daemon.stopped_at is not None and not running and problem is None:
        report.problem = "stopped"
        report.severity = WARNING
    elif not running:
        report.problem = problem or (f"not running (pid {daemon.pid} is gone without a clean stop)")
        report.severity = WARNING
    elif (
        age is not None
        and daemon.heartbeat_interval_s
        and age > 3 * daemon.heartbeat_interval_s + 30
    ):
        report.problem = f"no heartbeat for {age:.0f} s: the agent may be stuck"
        report.severity = WARNING
    if daemon.config_error:
        report.severity = worst(report.severity, WARNING)
        report.problem = (report.problem + "; " if report.problem else "") + (
            f"new config rejected: {daemon.config_error}"
        )
    return report


def _read_file(path: str) -> bytes:
    return read_regular_file(path)


def build_report(
    config: Config,
    state: State,
    now: float,
    names: Optional[Sequence[str]] = None,
    read_file: Callable[[str], bytes] = _read_file,
    process_identity: ProcessIdentity = read_process_identity,
    boot_id: Callable[[], Optional[str]] = read_boot_id,
) -> StatusReport:
    selected = list(names) if names else list(config.names)
    certs = [_cert_report(name, state.certs.get(name), config, now, read_file) for name in selected]
    daemon = _daemon_report(state.daemon, now, process_identity, boot_id())
    severity = worst(daemon.severity, *(c.severity for c in certs))
    bad = [c for c in certs if c.severity != OK]
    if not bad:
        soonest = min((c.days_left for c in certs if c.days_left is not None), default=None)
        summary = f"{len(certs)} certificate(s) current"
        if soonest is not None:
            summary += f", next expiry in {soonest:.0f} days"
    else:
        summary = "; ".join(f"{c.name}: {c.problems[0]}" for c in bad)
    if daemon.severity != OK and daemon.problem:
        summary += f"; daemon {daemon.problem}"
    return StatusReport(severity=severity, summary=summary, certs=certs, daemon=daemon)


def render_text(report: StatusReport, now: float) -> str:
    """Human-readable status; the first line is a monitoring-plugin style summary."""
    lines = [f"CERTPULL {SEVERITY_NAMES[report.severity]} - {report.summary}"]
    d = report.daemon
    if d.running:
        beat = f", heartbeat {d.heartbeat_age_s:.0f} s ago" if d.heartbeat_age_s is not None else ""
        lines.append(f"daemon: running (pid {d.pid}, {d.mode or 'poll'} mode{beat})")
    else:
        lines.append(f"daemon: {d.problem or 'not running'}")
    if d.config_error:
        lines.append(f"  config: {d.config_error}")
    for c in report.certs:
        lines.append("")
        lines.append(f"[{c.name}] {SEVERITY_NAMES[c.severity]}")
        lines.append(f"  secret:      {c.secret_arn}")
        if c.serial:
            lines.append(f"  installed:   version {c.version_id}, serial {c.serial}")
            lines.append(f"  sha256:      {c.fingerprint_sha256}")
            lines.append(f"  subject:     {c.subject}")
            days = f" ({c.days_left:.1f} days left)" if c.days_left is not None else ""
            lines.append(f"  not after:   {c.not_after}{days}")
            if c.chain_not_after:
                lines.append(f"  chain until: {c.chain_not_after}")
        lines.append(f"  last check:  {_ago(c.last_check_at, now)}")
        lines.append(f"  last change: {_ago(c.last_change_at, now)}")
        if c.next_check_at:
            lines.append(f"  next check:  in {max(0.0, c.next_check_at - now):.0f} s")
        if c.backoff_until and c.backoff_until > now:
            lines.append(
                f"  backoff:     {c.consecutive_failures} failure(s), retry in {c.backoff_until - now:.0f} s"
            )
        if c.pending_version_id:
            why = (
                f"until its notBefore, {c.pending_not_before}"
                if c.pending_not_before
                else "waiting for the install window"
            )
            lines.append(f"  pending:     version {c.pending_version_id} ({why})")
        if c.served:
            lines.append(f"  served:      {c.served}")
        if c.drift_count:
            lines.append(f"  drift:       repaired {c.drift_count} time(s)")
        if c.last_error:
            lines.append(f"  last error:  {c.last_error}")
        for note in c.notes:
            lines.append(f"  note:        {note}")
        for problem in c.problems:
            if problem != c.last_error and not problem.endswith(c.last_error or "\x00"):
                lines.append(f"  problem:     {problem}")
    return "\n".join(lines) + "\n"


def _ago(when: Optional[float], now: float) -> str:
    if not when:
        return "never"
    stamp = datetime.fromtimestamp(when, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    delta = max(0.0, now - when)
    if delta < 120:
        age = f"{delta:.0f} s ago"
    elif delta < 7200:
        age = f"{delta / 60:.0f} min ago"
    else:
        age = f"{delta / 3600:.1f} h ago"
    return f"{stamp} ({age})"


def status_line(names: Sequence[str], state: State, next_check_s: float) -> str:
    """systemd's STATUS= line over every certificate, from state.json (not only the last pass):
    ``2 certificate(s): 1 OK, 1 failing (www: ...); next check in 5 s``."""
    failing = [n for n in names if n in state.certs and state.certs[n].last_error]
    waiting = [
        n
        for n in names
        if n not in failing and (n not in state.certs or not state.certs[n].installed)
    ]
    ok = len(names) - len(failing) - len(waiting)
    parts = [f"{ok} OK"]
    if failing:
        first = " ".join(str(state.certs[failing[0]].last_error).split())
        if len(first) > 160:
            first = first[:157] + "..."
        if not first.startswith(failing[0]):
            first = f"{failing[0]}: {first}"
        parts.append(f"{len(failing)} failing ({first})")
    if waiting:
        parts.append(f"{len(waiting)} not installed yet")
    return f"{len(names)} certificate(s): {', '.join(parts)}; next check in {max(0.0, next_check_s):.0f} s"
