"""What a pass writes into a certificate's record (`CertState`) and the outcome it reports.

The agent decides; these functions keep the record consistent with the decision: a success clears
the error and its backoff, a failure counts, an install moves `installed` to `previous`, a
handshake proves (or not) the installed leaf. They change the record they are given, and on disk
only the hold of an install's live directory (cleared once a new version is installed).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from datetime import datetime, timezone
from typing import TYPE_CHECKING, List, Optional

from certpull.bundle_data import CertBundle, NotYetValid, utc_text
from certpull.config import CertConfig
from certpull.errors import StoreError
from certpull.install import LATE_DEATH, Candidate
from certpull.interfaces import X509, Defer
from certpull.outcome import Outcome, Status
from certpull.state import CertState, Installed, Pending, Rejected, State, parse_time

if TYPE_CHECKING:
    from certpull.source import SecretValue

log = logging.getLogger("certpull")

HISTORY_LEN = 20  # versions remembered as installed by this host (AWSCURRENT moved back)


def record_success(cstate: CertState, now: float, version_id: str) -> None:
    """A check that reached the secret: the error and its backoff are over."""
    cstate.last_check_at = now
    cstate.seen_version_id = version_id
    cstate.last_error = None
    cstate.last_error_at = None
    cstate.last_error_transient = None
    cstate.consecutive_failures = 0


def record_failure(
    cert: CertConfig, cstate: CertState, now: float, message: str, transient: bool
) -> Outcome:
    """A failed check or install: recorded with its one-line reason, counted for backoff."""
    cstate.last_check_at = now
    cstate.last_error = message
    cstate.last_error_at = now
    cstate.last_error_transient = transient
    cstate.consecutive_failures += 1
    return Outcome(cert.name, Status.FAILED, message, transient=transient)


def record_verified(cstate: CertState, ok: bool, now: float) -> None:
    """What a handshake just proved: the installed leaf is served (ok), or it is not."""
    cstate.last_verify_ok, cstate.last_verify_at = ok, now
    installed = cstate.installed
    cstate.verified_fingerprint = installed.fingerprint_sha256 if ok and installed else None


def proven(cstate: CertState) -> bool:
    """A handshake showed the installed leaf served (after its last reload)."""
    installed = cstate.installed
    return (
        installed is not None
        and cstate.last_verify_ok is True
        and cstate.verified_fingerprint == installed.fingerprint_sha256
    )


def installed_record(
    now: float,
    version_id: str,
    store_version: str,
    bundle: CertBundle,
    arn: Optional[str],
) -> Installed:
    """The record of installed files; what status needs about them (status parses no PEM)."""
    info = bundle.leaf
    chain_not_after, chain_expiring = bundle.chain_not_after, bundle.chain_expiring
    return Installed(
        version_id=version_id,
        store_version=store_version,
        serial=info.serial,
        fingerprint_sha256=info.fingerprint_sha256,
        subject=info.subject,
        names=list(info.names),
        not_before=info.not_before.isoformat(),
        not_after=info.not_after.isoformat(),
        key_type=info.key_type,
        certificate_arn=arn,
        installed_at=now,
        chain_not_after=chain_not_after.isoformat() if chain_not_after else "",
        chain_expiring=chain_expiring,
    )


def refused_again(cert: CertConfig, cstate: CertState, now: float, version_id: str) -> Outcome:
    """A bundle httpd refused before: not installed again (no reload) until the secret
    moves on to another bundle."""
    rejected = cstate.rejected
    assert rejected is not None  # noqa: S101 - the caller checked
    when = datetime.fromtimestamp(rejected.at, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return record_failure(
        cert,
        cstate,
        now,
        f"{cert.name}: version {version_id} carries the bundle httpd refused at {when} "
        f"({rejected.reason}); not installing it again until the secret moves on",
        False,
    )


def not_yet_valid(
    cert: CertConfig, cstate: CertState, now: float, version_id: str
) -> Optional[Outcome]:
    """AWSCURRENT is a version found valid but for its notBefore, still ahead: pending,
    without fetching it again."""
    pending = cstate.pending
    if pending is None or pending.version_id != version_id or not pending.not_before:
        return None
    start = parse_time(pending.not_before)
    if start is None or now >= start.timestamp():
        return None
    cstate.last_check_at = now
    return Outcome(
        cert.name,
        Status.PENDING,
        f"{cert.name}: version {version_id} is pending until {utc_text(start)} (its notBefore)",
        version_id,
        due_at=start.timestamp(),
    )


def put_off(
    cert: CertConfig,
    cstate: CertState,
    now: float,
    version_id: str,
    installed_not_after: Optional[datetime],
    defer: Optional[Defer],
    dry_run: bool,
) -> Optional[Outcome]:
    """Step 4's ``defer``: a pending outcome when the daemon puts this version off."""
    at = defer(cert.name, version_id, installed_not_after) if defer and not dry_run else None
    if at is None:
        return None
    cstate.last_check_at = now
    moment = datetime.fromtimestamp(at, timezone.utc).isoformat(timespec="seconds")
    return Outcome(
        cert.name,
        Status.PENDING,
        f"{cert.name}: version {version_id} found by the safety poll; installing it at "
        f"{moment} (poll_install_delay_s) unless the doorbell brings it first",
        version_id,
    )


def pending_until(
    cert: CertConfig,
    cstate: CertState,
    now: float,
    value: SecretValue,
    early: NotYetValid,
    installed_not_after: Optional[datetime],
    x509: X509,
) -> Outcome:
    """Validation stopped at a notBefore at most NOT_BEFORE_PENDING_S ahead (clock skew, a
    fresh issuance). Checked
    as it will be at that time: a bundle with another problem fails now, with its reason;
    a good one is pending and installed then, not an error with backoff."""
    start = early.not_before
    x509.validate(value.secret_string, cert.policy, start, installed_not_after)  # BundleError
    cstate.pending = Pending(
        version_id=value.version_id,
        serial=early.leaf.serial,
        not_after=early.leaf.not_after.isoformat(),
        found_at=now,
        not_before=start.isoformat(),
    )
    record_success(cstate, now, value.version_id)
    return Outcome(
        cert.name,
        Status.PENDING,
        f"{cert.name}: version {value.version_id} is valid from {utc_text(start)}; "
        f"pending until {utc_text(start)}",
        value.version_id,
        due_at=start.timestamp(),
    )


def record_installs(candidates: List[Candidate], state: State, now: float) -> List[Outcome]:
    """Outcomes and state records of what install.py applied (or rolled back)."""
    outcomes = []
    for cand in candidates:
        name = cand.cert.name
        cstate = state.cert(name)
        if cand.problem:
            if cand.bundle_fault and not cand.reload_only:
                cstate.rejected = _rejected(cand, cand.problem, now)
            outcomes.append(
                record_failure(
                    cand.cert, cstate, now, f"{name}: {cand.problem}", not cand.bundle_fault
                )
            )
            continue
        cstate.reload_pending = False
        if cand.reload_only:
            if cand.verified is not None:
                record_verified(cstate, cand.verified, now)
            cstate.last_check_at = now
            outcomes.append(
                Outcome(
                    name,
                    Status.INSTALLED,
                    f"{name}: reloaded httpd with the installed version {cand.version_id} "
                    "(it had not been loaded yet)",
                    cand.version_id,
                )
            )
            continue
        outcomes.append(_record_install(cand, cstate, now))
    return outcomes


def _record_install(cand: Candidate, cstate: CertState, now: float) -> Outcome:
    name = cand.cert.name
    old = cstate.installed
    if old is not None and old.store_version != cand.store_version:
        cstate.previous = old
    cstate.installed = installed_record(
        now,
        cand.version_id,
        cand.store_version,
        cand.bundle,
        cand.bundle.certificate_arn,
    )
    remember(cstate.version_history, cand.version_id)
    try:
        if cstate.held_version_id is not None or cand.live.hold() is not None:
            cand.live.set_hold(None)
    except StoreError as exc:
        log.warning("%s: cannot clear the hold: %s", name, exc)
    if cand.verified is not None:
        record_verified(cstate, cand.verified, now)
    else:  # not proven served (no target, or httpd down: loaded when it starts)
        cstate.last_verify_ok, cstate.verified_fingerprint = None, None
    cstate.last_change_at = now
    cstate.held_version_id = None
    cstate.rejected = None
    cstate.pending = None
    record_success(cstate, now, cand.version_id)
    resumed = " (finished an install that was interrupted)" if cand.resume else ""
    if cand.note:
        resumed += f"; {cand.note}"
    cstate.warnings = list(cand.bundle.warnings)
    for warning in cand.bundle.warnings:
        resumed += f"; note: {warning}"
    return Outcome(
        name,
        Status.INSTALLED,
        f"{name}: installed version {cand.version_id} (serial {cand.bundle.leaf.serial}, "
        f"expires {cand.bundle.leaf.not_after:%Y-%m-%d}){resumed}",
        cand.version_id,
    )


def record_late_death(cand: Candidate, cstate: CertState, now: float) -> Outcome:
    """httpd died in the rest of a liveness grace that ended early, after install.py rolled the
    files back: the record follows (the previous version installed again, the bundle refused)."""
    previous = cstate.previous
    with contextlib.suppress(StoreError):
        if previous is not None and cand.live.current() == previous.store_version:
            cstate.installed, cstate.previous = previous, None
    cstate.last_verify_ok, cstate.verified_fingerprint = None, None
    if not cand.reload_only:
        cstate.rejected = _rejected(cand, cand.problem or LATE_DEATH, now)
    return record_failure(cand.cert, cstate, now, f"{cand.cert.name}: {cand.problem}", False)


def _rejected(cand: Candidate, problem: str, now: float) -> Rejected:
    """httpd refused this candidate's bundle: not installed again until the secret moves on."""
    return Rejected(
        version_id=cand.version_id,
        fingerprint=bundle_id(cand.bundle),
        reason=_short(problem),
        at=now,
    )


def bundle_id(bundle: CertBundle) -> str:
    """What identifies a bundle across versions: the SHA-256 of its certificates (no key)."""
    return hashlib.sha256(bundle.cert_pem + b"\0" + bundle.chain_pem).hexdigest()


def remember(history: List[str], version_id: str) -> None:
    """Append ``version_id`` to the versions this host installed (most recent last)."""
    if version_id in history:
        history.remove(version_id)
    history.append(version_id)
    del history[:-HISTORY_LEN]


def _short(problem: str, limit: int = 160) -> str:
    first = problem.split("; rolled back", 1)[0]
    return first if len(first) <= limit else first[: limit - 3] + "..."
