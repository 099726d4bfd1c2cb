"""Step 0 of a pass: the record made true to what the live directories say.

state.json is a cache of the live directories and the secret. When it is damaged it is kept aside
and each certificate's record is rebuilt from its active version (the manifest proves certpull
wrote it; the version directory's label is the secret's version id); an interrupted rollback is
finished, never undone. The module-level queries answer what a live directory holds.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime
from typing import Callable, Optional

from certpull.bundle_data import CertBundle
from certpull.config import CertConfig
from certpull.errors import BundleError, ReloadError, StoreError
from certpull.install import Installer
from certpull.interfaces import X509, StateStore
from certpull.layout import CERT_FILE, sanitize_label, version_label
from certpull.logs import cert_fields
from certpull.record import installed_record, record_verified
from certpull.state import CertState, State, StateDamaged, parse_time
from certpull.store import LiveDir

log = logging.getLogger("certpull")

QUICK_VERIFY_S = 2.0  # one look at what is served, when nothing was reloaded


class Healer:
    """Loads the record and heals it; ``installer`` gives the one handshake that proves a
    rebuilt record served."""

    def __init__(
        self,
        state_file: StateStore,
        installer: Installer,
        clock: Callable[[], float],
        x509: X509,
    ) -> None:
        self.state_file = state_file
        self.installer = installer
        self.clock = clock
        self.x509 = x509

    def load_state(self) -> State:
        """state.json, or an empty state when it is damaged (kept aside; the record of each
        certificate is then rebuilt from its live directory by `heal_record`)."""
        try:
            return self.state_file.load()
        except StateDamaged as exc:
            kept = self.state_file.quarantine()
            log.warning(
                "%s; kept as %s; rebuilding it from the live directories", exc, kept or "nothing"
            )
            return State()

    def heal_record(self, cert: CertConfig, cstate: CertState, live: LiveDir) -> None:
        """Step 0 for one certificate: finish an interrupted rollback; rebuild a missing record
        from an intact active version (the label of its directory is the secret's version id);
        a rebuilt record not proven served by a handshake is marked for a reload."""
        if cstate.rollback_to:
            self.finish_rollback(cert, cstate, live)
        if cstate.installed is not None:
            return
        with contextlib.suppress(StoreError):
            held = live.hold()
            if held and held != version_label(live.current() or ""):
                cstate.held_version_id = held
        try:
            active = live.current()
            if active is None or live.verify_links():
                return
            files = live.read_all()
            cstate.installed = installed_record(
                self.clock(), version_label(active), active, self.x509.installed_bundle(files), None
            )
        except (StoreError, BundleError, KeyError):
            return
        log.info(
            "%s: rebuilt its record from %s (version %s)",
            cert.name,
            live.path,
            cstate.installed.version_id,
            extra=cert_fields(cert.name),
        )
        cstate.reload_pending = not self.served_now(cert, cstate, files[CERT_FILE])

    def served_now(self, cert: CertConfig, cstate: CertState, cert_pem: bytes) -> bool:
        """One quick look at what is served: True only when a handshake shows ``cert_pem``."""
        if cert.verify is None:
            return False
        try:
            self.installer.verify(cert, cert_pem, timeout_s=QUICK_VERIFY_S)
        except ReloadError:
            return False
        record_verified(cstate, True, self.clock())
        return True

    def finish_rollback(self, cert: CertConfig, cstate: CertState, live: LiveDir) -> None:
        """Activate ``rollback_to`` (unless already active) and record it as installed, with a
        reload pending. A target that is gone cancels the rollback and its hold."""
        target = cstate.rollback_to or ""
        if not active_is(live, target):
            if target not in live.versions():
                log.warning(
                    "%s: the interrupted rollback to %s cannot be finished: it is gone",
                    cert.name,
                    target,
                    extra=cert_fields(cert.name),
                )
                cstate.rollback_to = None
                cstate.held_version_id = None
                with contextlib.suppress(StoreError):
                    live.set_hold(None)
                return
            if live.rollback_target() == target:
                live.rollback(discard_current=True)
            else:
                live.activate(target)
        previous = cstate.previous
        version_id = (
            previous.version_id
            if previous is not None and previous.store_version == target
            else version_label(target)
        )
        cstate.installed = installed_record(
            self.clock(),
            version_id,
            target,
            self.x509.installed_bundle(live.read_all()),
            previous.certificate_arn if previous is not None else None,
        )
        cstate.previous = None
        cstate.reload_pending = True
        cstate.rollback_to = None
        cstate.last_change_at = self.clock()


def active_is(live: LiveDir, store_version: str) -> bool:
    """Whether ``store_version`` is the active version (False when ``..data`` is broken)."""
    try:
        return live.current() == store_version
    except StoreError:
        return False


def intact(cstate: CertState, live: LiveDir) -> bool:
    """The installed record's version is active and its files are as installed."""
    installed = cstate.installed
    return (
        installed is not None
        and active_is(live, installed.store_version)
        and not live.verify_links()
    )


def same_bytes(live: LiveDir, bundle: CertBundle) -> bool:
    """The active version holds exactly this bundle, unedited, with the configured modes."""
    try:
        if live.current() is None:
            return False
        return live.read_all() == bundle.files() and not live.verify_links()
    except (StoreError, OSError):
        return False


def installed_expiry(live: LiveDir, cstate: CertState, x509: X509) -> Optional[datetime]:
    """Expiry of what the agent installed. The live cert.pem when the active version is
    intact (its manifest proves certpull wrote it): state.json is only a cache of it, and a
    damaged record must not refuse every rotation as a downgrade. Else the record (an
    edited cert.pem must not decide what may replace it)."""
    try:
        if live.current() is not None and not live.verify_links():
            return x509.leaf_info(live.read(CERT_FILE)).not_after
    except (StoreError, BundleError, OSError):
        pass
    if cstate.installed is not None and cstate.installed.not_after:
        return parse_time(cstate.installed.not_after)
    return None


def moved_back(cstate: CertState, live: LiveDir, version_id: str) -> bool:
    """AWSCURRENT is a version this host installed before (its own history, or a version
    directory it still keeps): the operator reverted a rotation, the AWS way. A version it
    never installed is new, even when its certificate is older."""
    installed = cstate.installed
    if installed is not None and installed.version_id == version_id:
        return False
    if version_id in cstate.version_history:
        return True
    try:
        labels = {version_label(v) for v in live.versions()}
    except StoreError:
        return False
    return sanitize_label(version_id) in labels
