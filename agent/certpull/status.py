"""What `certpull status` reports, computed from config + state.json + the live cert files.

Pure and light on purpose: monitoring runs it every minute on every host, so it must not import boto3
or cryptography (it hashes the PEM's DER itself). Severities follow the monitoring-plugin convention:
0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Dict, List, Optional, Sequence

from certpull.config import Config
from certpull.pem import cert_fingerprint
from certpull.state import CertState, DaemonState, State

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
SEVERITY_NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}


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
    days_left: Optional[float] = None
    last_check_at: Optional[float] = None
    last_change_at: Optional[float] = None
    last_error: Optional[str] = None
    last_verify_ok: Optional[bool] = None
    next_check_at: Optional[float] = None
    backoff_until: Optional[float] = None
    consecutive_failures: int = 0
    pending_version_id: Optional[str] = None
    drift_count: int = 0
    live_fingerprint_matches: Optional[bool] = None


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


def _parse_time(text: str) -> Optional[datetime]:
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _cert_report(
    name: str,
    cstate: Optional[CertState],
    config: Config,
    now: float,
    read_file: Callable[[str], bytes],
) -> CertReport:
    agent = config.agent
    report = CertReport(name=name, severity=OK, secret_arn=config.cert(name).secret_arn)
    if cstate is None or cstate.installed is None:
        report.severity = CRITICAL
        report.problems.append("nothing installed yet")
        if cstate is not None and cstate.last_error:
            report.last_error = cstate.last_error
            report.problems.append(cstate.last_error)
        return report
    inst = cstate.installed
    report.version_id = inst.version_id
    report.serial = inst.serial
    report.fingerprint_sha256 = inst.fingerprint_sha256
    report.subject = inst.subject
    report.not_after = inst.not_after
    report.last_check_at = cstate.last_check_at
    report.last_change_at = cstate.last_change_at
    report.last_error = cstate.last_error
    report.last_verify_ok = cstate.last_verify_ok
    report.next_check_at = cstate.next_check_at
    report.backoff_until = cstate.backoff_until
    report.consecutive_failures = cstate.consecutive_failures
    report.pending_version_id = cstate.pending.version_id if cstate.pending else None
    report.drift_count = cstate.drift_count

    def worse(severity: int, problem: str) -> None:
        report.severity = max(report.severity, severity)
        report.problems.append(problem)

    not_after = _parse_time(inst.not_after)
    if not_after is not None:
        days_left = (not_after.timestamp() - now) / 86400
        report.days_left = round(days_left, 2)
        if days_left <= 0:
            worse(CRITICAL, f"expired on {not_after:%Y-%m-%d %H:%M} UTC")
        elif days_left <= agent.crit_days:
            worse(CRITICAL, f"expires in {days_left:.1f} days ({not_after:%Y-%m-%d})")
        elif days_left <= agent.warn_days:
            worse(WARNING, f"expires in {days_left:.1f} days ({not_after:%Y-%m-%d})")
    try:
        live = cert_fingerprint(read_file(os.path.join(config.live_path(name), "cert.pem")))
    except OSError:
        live = None
    report.live_fingerprint_matches = live == inst.fingerprint_sha256
    if not report.live_fingerprint_matches:
        worse(
            WARNING, "the live cert.pem is not the installed certificate (drift not yet repaired)"
        )
    if cstate.last_error:
        worse(WARNING, f"last check failed: {cstate.last_error}")
    if cstate.last_verify_ok is False:
        worse(WARNING, "httpd did not serve the installed certificate at the last verification")
    if cstate.held_version_id:
        worse(WARNING, f"version {cstate.held_version_id} is held after a rollback")
    return report


def _daemon_report(
    daemon: DaemonState, now: float, pid_alive: Callable[[int], bool]
) -> DaemonReport:
    if daemon.pid is None:
        return DaemonReport(False, None, None, OK, "never started (one-shot `certpull sync` only)")
    running = pid_alive(daemon.pid) and daemon.stopped_at is None
    age = now - daemon.heartbeat_at if daemon.heartbeat_at else None
    report = DaemonReport(running, daemon.pid, age, OK, None, daemon.mode, daemon.config_error)
    if daemon.stopped_at is not None and not running:
        report.problem = "stopped"
        report.severity = WARNING
    elif not running:
        report.problem = f"not running (pid {daemon.pid} is gone without a clean stop)"
        report.severity = WARNING
    elif (
        age is not None
        and daemon.heartbeat_interval_s
        and age > 3 * daemon.heartbeat_interval_s + 30
    ):
        report.problem = f"no heartbeat for {age:.0f} s: the agent may be stuck"
        report.severity = WARNING
    if daemon.config_error:
        report.severity = max(report.severity, WARNING)
        report.problem = (report.problem + "; " if report.problem else "") + (
            f"new config rejected: {daemon.config_error}"
        )
    return report


def build_report(
    config: Config,
    state: State,
    now: float,
    names: Optional[Sequence[str]] = None,
    read_file: Callable[[str], bytes] = lambda path: open(path, "rb").read(),  # noqa: SIM115
    pid_alive: Callable[[int], bool] = _pid_alive,
) -> StatusReport:
    selected = list(names) if names else list(config.names)
    certs = [_cert_report(name, state.certs.get(name), config, now, read_file) for name in selected]
    daemon = _daemon_report(state.daemon, now, pid_alive)
    severity = max([daemon.severity, *(c.severity for c in certs)])
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
        lines.append(f"  last check:  {_ago(c.last_check_at, now)}")
        lines.append(f"  last change: {_ago(c.last_change_at, now)}")
        if c.next_check_at:
            lines.append(f"  next check:  in {max(0.0, c.next_check_at - now):.0f} s")
        if c.backoff_until and c.backoff_until > now:
            lines.append(
                f"  backoff:     {c.consecutive_failures} failure(s), retry in {c.backoff_until - now:.0f} s"
            )
        if c.pending_version_id:
            lines.append(
                f"  pending:     version {c.pending_version_id} (waiting for the install window)"
            )
        if c.last_verify_ok is not None:
            lines.append(
                f"  served:      {'matches' if c.last_verify_ok else 'DOES NOT MATCH'} the installed certificate"
            )
        if c.drift_count:
            lines.append(f"  drift:       repaired {c.drift_count} time(s)")
        if c.last_error:
            lines.append(f"  last error:  {c.last_error}")
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
