"""The one-shot operations besides a pass: `certpull rollback NAME` and `certpull verify`.

Both work on what is installed (no AWS call) and record what they prove in state.json under its
lock, as a pass does.
"""

from __future__ import annotations

from typing import Callable, List, Sequence

from certpull.config import CertConfig
from certpull.errors import ReloadError, StoreError
from certpull.heal import Healer
from certpull.install import Installer
from certpull.interfaces import StateStore
from certpull.layout import CERT_FILE, version_label
from certpull.outcome import Outcome, Status
from certpull.record import record_verified
from certpull.store import LiveDir


def rollback(
    cert: CertConfig,
    live: LiveDir,
    state_file: StateStore,
    healer: Healer,
    installer: Installer,
    clock: Callable[[], float],
) -> Outcome:
    """Re-activate the previous version of one certificate, reload and verify it.

    The version rolled back from is held: the agent does not install it again until the
    secret's AWSCURRENT moves to another version. Each step is durable before the next:

    1. Find the version to go back to; none: fail, nothing changed.
    2. Save the hold (also next to the versions, as `..held`: it survives a lost
       state.json) and the rollback's target (`rollback_to`).
    3. Switch the files; save the target as installed, with `reload_pending`.
    4. Config test, reload, verify; save the outcome.

    Killed after (2) or (3), the next pass finishes the rollback from state.json
    (`Healer.finish_rollback`, then the pending reload): it is never undone.
    """
    name = cert.name
    with state_file.lock():
        state = healer.load_state()
        cstate = state.cert(name)
        try:
            target, active = live.rollback_target(), live.current()  # (1)
        except StoreError as exc:
            target, active, failure = None, None, str(exc)
        else:
            failure = "no previous version to roll back to"
        if target is None or active is None:
            return Outcome(name, Status.FAILED, f"{name}: rollback failed: {failure}")
        try:
            installed = cstate.installed
            cstate.held_version_id = (
                installed.version_id
                if installed is not None and installed.store_version == active
                else version_label(active)
            )
            cstate.rollback_to = target
            live.set_hold(cstate.held_version_id)
            state_file.save(state)  # (2)
            healer.finish_rollback(cert, cstate, live)  # (3)
            state_file.save(state)
        except StoreError as exc:
            return Outcome(name, Status.FAILED, f"{name}: rollback failed: {exc}")
        new_version = cstate.installed.store_version if cstate.installed else ""
        try:  # (4)
            if installer.reload_checked():
                cert_pem = live.read(CERT_FILE)
                installer.verify(cert, cert_pem)
                record_verified(cstate, True, clock())
                served = ""
            else:
                served = " (httpd is not running: it loads them when it starts)"
            cstate.reload_pending = False
        except (ReloadError, StoreError) as exc:
            outcome = Outcome(name, Status.FAILED, f"{name}: rolled back on disk, but {exc}")
            record_verified(cstate, False, clock())
        else:
            outcome = Outcome(
                name, Status.INSTALLED, f"{name}: rolled back to {new_version}{served}"
            )
        state_file.save(state)
    return outcome


def verify(
    certs: Sequence[CertConfig],
    live_dir_for: Callable[[CertConfig], LiveDir],
    state_file: StateStore,
    healer: Healer,
    installer: Installer,
    clock: Callable[[], float],
) -> List[Outcome]:
    """Compare what httpd serves with what is installed, for certificates with `verify` set."""
    outcomes = []
    state = healer.load_state()
    for cert in certs:
        if cert.verify is None:
            outcomes.append(
                Outcome(cert.name, Status.CURRENT, f"{cert.name}: no verify target configured")
            )
            continue
        live = live_dir_for(cert)
        try:
            waited = installer.verify(cert, live.read(CERT_FILE))
        except (StoreError, ReloadError, OSError) as exc:
            outcome = Outcome(cert.name, Status.FAILED, f"{cert.name}: {exc}")
            ok = False
        else:
            outcome = Outcome(
                cert.name,
                Status.CURRENT,
                f"{cert.name}: served certificate matches ({waited:.2f} s)",
            )
            ok = True
        record_verified(state.cert(cert.name), ok, clock())
        outcomes.append(outcome)
    with state_file.lock():
        fresh = healer.load_state()
        for name, cstate in state.certs.items():
            if name in fresh.certs:
                fresh.certs[name].last_verify_ok = cstate.last_verify_ok
                fresh.certs[name].last_verify_at = cstate.last_verify_at
                fresh.certs[name].verified_fingerprint = cstate.verified_fingerprint
        state_file.save(fresh)
    return outcomes
