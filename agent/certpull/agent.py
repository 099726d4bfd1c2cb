"""One pass, and the other one-shot operations: secret -> validated bundle -> live files -> httpd.

`Agent.sync` owns the order of operations of a pass and nothing else: each step is a call into one
adapter (source, store, httpd, state) or the pure core (bundle); steps 5-8 are install.py's. The
CLI runs one pass per command; the daemon (daemon.py) runs passes when they are due. Every side
effect is a constructor argument; wiring.py builds the real ones.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Callable, List, Optional, Sequence, Union

from certpull.bundle import (
    CERT_FILE,
    CHAIN_FILE,
    CertBundle,
    NotYetValid,
    chain_expiry,
    installed_bundle,
    leaf_info,
    validate,
)
from certpull.compat import CompatLinks
from certpull.config import CertConfig, Config
from certpull.errors import BundleError, ReloadError, SourceError, StoreError
from certpull.httpd import wait_until_served
from certpull.install import LATE_DEATH, Candidate, Installer
from certpull.interfaces import ServedCheck, Server, Source, StateStore
from certpull.layout import sanitize_label, version_label
from certpull.logs import cert_fields
from certpull.outcome import Outcome, PassReport, Status
from certpull.state import CertState, Installed, Pending, Rejected, State, StateDamaged
from certpull.store import LiveDir
from certpull.windows import InstallWindows, install_allowed

if TYPE_CHECKING:
    from certpull.source import SecretValue

log = logging.getLogger("certpull")

LiveDirFactory = Callable[[CertConfig], LiveDir]
QUICK_VERIFY_S = 2.0  # one look at what is served, when nothing was reloaded
# A notBefore at most this far ahead (clock skew, a certificate issued a moment ago) is pending
# until then; further ahead is refused like any invalid certificate.
NOT_BEFORE_PENDING_S = 3600.0
HISTORY_LEN = 20
CompatFactory = Callable[[CertConfig], CompatLinks]


class Agent:
    """Runs passes over the configured certificates; every side effect is a constructor argument."""

    def __init__(
        self,
        config: Config,
        *,
        source: Source,
        httpd: Server,
        state_file: StateStore,
        live_dir_for: LiveDirFactory,
        compat_for: CompatFactory,
        served_check: ServedCheck = wait_until_served,
        clock: Callable[[], float] = time.time,
        log_outcomes: bool = True,
        defer_grace: bool = False,
    ) -> None:
        """``defer_grace``: end a reload's liveness grace once its new leaves are served and
        leave the rest to ``watch_reload`` (the daemon calls it between passes)."""
        self.config = config
        self.log_outcomes = log_outcomes  # the CLI prints outcomes itself; the daemon logs them
        self.source = source
        self.state_file = state_file
        self.live_dir_for = live_dir_for
        self.compat_for = compat_for
        self.clock = clock
        self.installer = Installer(
            httpd, served_check, config.agent.verify_timeout_s, defer_grace=defer_grace
        )

    # --- public passes -----------------------------------------------------------------------

    def sync(
        self,
        names: Optional[Sequence[str]] = None,
        dry_run: bool = False,
        windows: Optional[InstallWindows] = None,
        retry_refused: bool = False,
    ) -> PassReport:
        """One pass: check, fetch, validate, install, reload, verify; roll back what fails.

        A bundle httpd refused (it stopped httpd, failed the config test alone, was not served)
        is not installed again until AWSCURRENT moves to another bundle, unless
        ``retry_refused`` (`certpull sync --retry-refused`, once its cause is fixed).

        0. Heal the record: a state.json that cannot be read is kept aside and rebuilt from the
           live directories (the active version's manifest and files); an interrupted rollback
           is finished; files active on disk but never loaded by httpd are reloaded; if httpd
           died in the rest of the previous reload's liveness grace (``defer_grace``), that
           install is undone first (see ``watch_reload``).
        1. Check: DescribeSecret per certificate. AWSCURRENT equal to the installed version with
           intact live files means current: no GetSecretValue, no reload.
        2. Fetch AWSCURRENT (GetSecretValue) for the others.
        3. Validate (pure). A rejected secret leaves files, httpd and the served certificate as
           they were, and records a one-line reason.
        4. Compare bytes: a new version with the same certificate and key only records its id,
           unless state.json does not record the active files (a pass was killed after it
           activated them): then they still need the reload and verify of steps 6-8.
           Outside the install `windows` (the daemon passes them; a manual sync does not) a new
           version is pending, unless the installed certificate is invalid or expires soon.
        5. Install: save state first (a state directory that cannot be written refuses the
           install here, before it costs a reload every pass); then stage and activate each
           changed certificate (one rename of `..data` each).
        6. Config test, once. On failure roll every certificate of this pass back.
        7. Graceful reload, once, if httpd runs; if httpd dies, roll everything back and reload.
        8. Verify: fresh handshakes must serve each new leaf; roll back those that do not and
           reload once more.
        9. Save state.
        """
        certs = self._select(names)
        with self.state_file.lock():
            state = self._load_state()
            if not dry_run and self.installer.watch_died():
                self._died_late(state)  # (0) the previous reload killed httpd after all
            report = PassReport()
            candidates: List[Candidate] = []
            if retry_refused and not dry_run:
                for cert in certs:
                    state.cert(cert.name).rejected = None
            for cert in certs:
                prepared = self._prepare(cert, state, dry_run, windows)  # (1)-(4)
                if isinstance(prepared, Candidate):
                    candidates.append(prepared)
                else:
                    report.outcomes.append(prepared)
            unwritable = self._save_before_install(state) if candidates else None  # (5)
            if unwritable is not None:
                now = self.clock()
                for cand in candidates:
                    message = f"{cand.cert.name}: not installing: {unwritable}"
                    report.outcomes.append(
                        self._failure(cand.cert, state.cert(cand.cert.name), now, message, True)
                    )
            elif candidates:
                self.installer.apply(candidates)  # (5)-(8)
                report.outcomes.extend(self._record_installs(candidates, state))
            if not dry_run and unwritable is None:
                self.state_file.save(state)  # (9)
        for outcome in report.outcomes:
            self._log_outcome(outcome)
        return report

    def watching_s(self) -> Optional[float]:
        """Seconds until ``watch_reload`` should look again; None: no liveness grace runs on."""
        return self.installer.watching_s()

    def watch_reload(self) -> List[str]:
        """Between passes: the rest of the last reload's liveness grace. If httpd died in it,
        its certificates are rolled back, httpd started and the refusal recorded; their names."""
        if not self.installer.watch_died():
            return []
        with self.state_file.lock():
            state = self._load_state()
            names = self._died_late(state)
            self.state_file.save(state)
        return names

    def recover(self, certs: Optional[Sequence[CertConfig]] = None) -> List[str]:
        """At start: clean half-staged versions, restore links, make compat links. No AWS call.

        Compat links made here (a host configured before its first start, or links someone
        removed) only reach httpd through a reload: one config test and reload for all of them.
        """
        problems = []
        relinked = []
        for cert in self.config.certs if certs is None else certs:
            try:
                live = self.live_dir_for(cert)
                removed = live.recover()
                if removed:
                    log.info(
                        "%s: recovered from an interrupted install (removed %s)",
                        cert.name,
                        ", ".join(removed),
                        extra=cert_fields(cert.name),
                    )
                if live.current() is not None and self.compat_for(cert).apply():
                    relinked.append(cert.name)
            except StoreError as exc:
                problems.append(
                    f"{cert.name}: cannot recover {self.config.live_path(cert.name)}: {exc}"
                )
        if relinked:
            try:
                self.installer.reload_checked()
                log.info("compat links of %s made; httpd reloaded", ", ".join(relinked))
            except ReloadError as exc:
                problems.append(f"compat links of {', '.join(relinked)} made, but {exc}")
        return problems

    def drifted(self, name: str) -> bool:
        """Read-only: does an installed certificate's live dir differ from what was installed?"""
        live = self.live_dir_for(self.config.cert(name))
        return live.current() is not None and bool(live.verify_links())

    def repair(self, name: str) -> bool:
        """Drift: someone changed the live files. Restore links locally (no AWS call, no reload:
        httpd holds the certificate in memory). False when files themselves were edited: then
        the next check republishes them from the secret."""
        cert = self.config.cert(name)
        live = self.live_dir_for(cert)
        with self.state_file.lock():
            problems = live.verify_links()
            if problems:
                log.warning(
                    "%s: drift: %s; restoring", name, "; ".join(problems), extra=cert_fields(name)
                )
                live.repair()
                if live.verify_links():
                    return False  # edited files: the check that republishes them counts the drift
            relinked = live.current() is not None and self.compat_for(cert).apply()
            if relinked:
                log.warning("%s: drift: compat links restored", name, extra=cert_fields(name))
            if not problems and not relinked:
                return True
            state = self._load_state()
            cstate = state.cert(name)
            cstate.drift_count += 1
            cstate.last_drift_at = self.clock()
            self.state_file.save(state)
            return True

    def rollback(self, name: str) -> Outcome:
        """Re-activate the previous version of one certificate, reload and verify it.

        The version rolled back from is held: the agent does not install it again until the
        secret's AWSCURRENT moves to another version. Each step is durable before the next:

        1. Find the version to go back to; none: fail, nothing changed.
        2. Save the hold (also next to the versions, as `..held`: it survives a lost
           state.json) and the rollback's target (`rollback_to`).
        3. Switch the files; save the target as installed, with `reload_pending`.
        4. Config test, reload, verify; save the outcome.

        Killed after (2) or (3), the next pass finishes the rollback from state.json
        (`_finish_rollback`, then the pending reload): it is never undone.
        """
        cert = self.config.cert(name)
        live = self.live_dir_for(cert)
        with self.state_file.lock():
            state = self._load_state()
            cstate = state.cert(name)
            try:
                target, active = live.rollback_target(), live.current()  # (1)
            except StoreError as exc:
                target, active, failure = None, None, str(exc)
            else:
                failure = "no previous version to roll back to"
            if target is None or active is None:
                outcome = Outcome(name, Status.FAILED, f"{name}: rollback failed: {failure}")
                self._log_outcome(outcome)
                return outcome
            try:
                installed = cstate.installed
                cstate.held_version_id = (
                    installed.version_id
                    if installed is not None and installed.store_version == active
                    else version_label(active)
                )
                cstate.rollback_to = target
                live.set_hold(cstate.held_version_id)
                self.state_file.save(state)  # (2)
                self._finish_rollback(cert, cstate, live)  # (3)
                self.state_file.save(state)
            except StoreError as exc:
                outcome = Outcome(name, Status.FAILED, f"{name}: rollback failed: {exc}")
                self._log_outcome(outcome)
                return outcome
            new_version = cstate.installed.store_version if cstate.installed else ""
            try:  # (4)
                if self.installer.reload_checked():
                    cert_pem = live.read(CERT_FILE)
                    self.installer.verify(cert, cert_pem)
                    self._record_verified(cstate, cert, True)
                    served = ""
                else:
                    served = " (httpd is not running: it loads them when it starts)"
                cstate.reload_pending = False
            except (ReloadError, StoreError) as exc:
                outcome = Outcome(name, Status.FAILED, f"{name}: rolled back on disk, but {exc}")
                self._record_verified(cstate, cert, False)
            else:
                outcome = Outcome(
                    name, Status.INSTALLED, f"{name}: rolled back to {new_version}{served}"
                )
            self.state_file.save(state)
        self._log_outcome(outcome)
        return outcome

    def verify(self, names: Optional[Sequence[str]] = None) -> List[Outcome]:
        """Compare what httpd serves with what is installed, for certificates with `verify` set."""
        outcomes = []
        state = self._load_state()
        for cert in self._select(names):
            if cert.verify is None:
                outcomes.append(
                    Outcome(cert.name, Status.CURRENT, f"{cert.name}: no verify target configured")
                )
                continue
            live = self.live_dir_for(cert)
            try:
                waited = self.installer.verify(cert, live.read(CERT_FILE))
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
            self._record_verified(state.cert(cert.name), cert, ok, live)
            outcomes.append(outcome)
        with self.state_file.lock():
            fresh = self._load_state()
            for name, cstate in state.certs.items():
                if name in fresh.certs:
                    fresh.certs[name].last_verify_ok = cstate.last_verify_ok
                    fresh.certs[name].last_verify_at = cstate.last_verify_at
                    fresh.certs[name].verified_fingerprint = cstate.verified_fingerprint
            self.state_file.save(fresh)
        return outcomes

    def update_state(self, change: Callable[[State], None]) -> None:
        """Change state.json under the lock (the daemon's heartbeat and schedule fields)."""
        self.state_file.update(change)

    # --- steps 1-4 ---------------------------------------------------------------------------

    def _select(self, names: Optional[Sequence[str]]) -> List[CertConfig]:
        if not names:
            return list(self.config.certs)
        return [self.config.cert(name) for name in names]

    def _prepare(
        self, cert: CertConfig, state: State, dry_run: bool, windows: Optional[InstallWindows]
    ) -> Union[Outcome, Candidate]:
        """Steps 1-4 for one certificate: an outcome when done, or a candidate to install."""
        cstate = state.cert(cert.name)
        cstate.secret_arn = cert.secret_arn
        now = self.clock()
        try:
            live = self.live_dir_for(cert)
            if not dry_run:
                self._heal_record(cert, cstate, live)  # (0)
            version_id = self.source.current_version_id(
                cert.secret_arn, cert.role_arn, cert.external_id
            )  # (1)
            if self._is_current(cert, cstate, live, version_id):
                if cstate.reload_pending and not dry_run:
                    return self._reload_candidate(cert, cstate, live, version_id)
                if not dry_run and not self._proven(cstate):
                    self._served_now(cert, cstate, live.read(CERT_FILE))
                self._record_success(cstate, now, version_id)
                cstate.pending = None
                return Outcome(
                    cert.name, Status.CURRENT, f"{cert.name}: current ({version_id})", version_id
                )
            if cstate.held_version_id == version_id:
                if cstate.reload_pending and not dry_run and self._intact(cstate, live):
                    return self._reload_candidate(cert, cstate, live, version_id)
                cstate.last_check_at = now
                return Outcome(
                    cert.name,
                    Status.HELD,
                    f"{cert.name}: version {version_id} was rolled back by the operator; waiting for a new version",
                    version_id,
                )
            rejected = cstate.rejected
            if rejected is not None and rejected.version_id == version_id:
                return self._refused_again(cert, cstate, now, version_id)
            installed_not_after = self._installed_not_after(live, cstate)
            allowed, why = install_allowed(
                windows,
                datetime.fromtimestamp(now, timezone.utc),
                installed_not_after,
                self.config.agent.urgent_before_expiry_days,
                installed_valid=installed_not_after is not None,
            )
            waiting = self._not_yet_valid(cert, cstate, now, version_id)
            if waiting is not None:
                return waiting
            if not allowed and cstate.pending and cstate.pending.version_id == version_id:
                cstate.last_check_at = now
                return Outcome(
                    cert.name,
                    Status.PENDING,
                    f"{cert.name}: version {version_id} is pending ({why})",
                    version_id,
                )
            value = self.source.fetch_current(
                cert.secret_arn, cert.role_arn, cert.external_id
            )  # (2)
            if self._moved_back(cstate, live, value.version_id):
                log.info(
                    "%s: AWSCURRENT moved back to version %s, which this host installed before: "
                    "installing it even if it expires earlier",
                    cert.name,
                    value.version_id,
                    extra=cert_fields(cert.name),
                )
                installed_not_after = None
            try:
                bundle = validate(  # (3)
                    value.secret_string,
                    cert.policy,
                    datetime.fromtimestamp(now, timezone.utc),
                    installed_not_after,
                )
            except NotYetValid as early:
                if early.not_before.timestamp() - now > NOT_BEFORE_PENDING_S:
                    raise  # not skew nor a fresh issuance: a BundleError, reported below
                return self._pending_until(cert, cstate, now, value, early, installed_not_after)
        except SourceError as exc:
            return self._failure(
                cert, cstate, now, f"{cert.name} ({cert.secret_arn}): {exc}", exc.transient
            )
        except BundleError as exc:
            return self._failure(
                cert, cstate, now, f"{cert.name} ({cert.secret_arn}): {exc}", False
            )
        except StoreError as exc:  # the live directory itself is unreadable: this cert only
            return self._failure(cert, cstate, now, f"{cert.name}: {exc}", True)
        if cstate.rejected is not None and cstate.rejected.fingerprint == bundle_id(bundle):
            return self._refused_again(cert, cstate, now, value.version_id)
        if self._same_bytes(live, bundle):  # (4)
            installed = cstate.installed
            if installed is None or not self._active_is(live, installed.store_version):
                return self._resume(cert, value.version_id, bundle, live, dry_run)
            installed.version_id = value.version_id
            self._record_success(cstate, now, value.version_id)
            return Outcome(
                cert.name,
                Status.UNCHANGED,
                f"{cert.name}: version {value.version_id} carries the installed certificate; nothing to do",
                value.version_id,
            )
        if not allowed and not dry_run:
            cstate.pending = Pending(
                version_id=value.version_id,
                serial=bundle.leaf.serial,
                not_after=bundle.leaf.not_after.isoformat(),
                found_at=now,
            )
            self._record_success(cstate, now, value.version_id)
            return Outcome(
                cert.name,
                Status.PENDING,
                f"{cert.name}: version {value.version_id} validated; pending ({why})",
                value.version_id,
            )
        if dry_run:
            return Outcome(
                cert.name,
                Status.WOULD_INSTALL,
                f"{cert.name}: would install version {value.version_id} (serial {bundle.leaf.serial}, "
                f"expires {bundle.leaf.not_after:%Y-%m-%d})",
                value.version_id,
            )
        return Candidate(cert, value.version_id, bundle, live, self.compat_for(cert))

    def _is_current(
        self, cert: CertConfig, cstate: CertState, live: LiveDir, version_id: str
    ) -> bool:
        """Installed == AWSCURRENT with intact live files. Broken links are repaired here;
        edited files or changed modes make the certificate not current, so the pass republishes."""
        installed = cstate.installed
        if installed is None or installed.version_id != version_id:
            return False
        if not self._active_is(live, installed.store_version):
            return False
        problems = live.verify_links()
        if not problems:
            return True
        log.warning(
            "%s: live files changed by someone else (%s); restoring",
            cert.name,
            "; ".join(problems),
            extra=cert_fields(cert.name),
        )
        cstate.drift_count += 1
        cstate.last_drift_at = self.clock()
        live.repair()
        return not live.verify_links()

    def _resume(
        self, cert: CertConfig, version_id: str, bundle: CertBundle, live: LiveDir, dry_run: bool
    ) -> Union[Outcome, Candidate]:
        """The bundle is active on disk but state.json does not record it: a pass was killed after
        activating it, maybe before the reload. Reload and verify it (steps 6-8), whatever the
        install window: the files on disk already changed."""
        if dry_run:
            return Outcome(
                cert.name,
                Status.WOULD_INSTALL,
                f"{cert.name}: would reload httpd to finish installing version {version_id}",
                version_id,
            )
        return Candidate(cert, version_id, bundle, live, self.compat_for(cert), resume=True)

    def _installed_not_after(self, live: LiveDir, cstate: CertState) -> Optional[datetime]:
        """Expiry of what the agent installed. The live cert.pem when the active version is
        intact (its manifest proves certpull wrote it): state.json is only a cache of it, and a
        damaged record must not refuse every rotation as a downgrade. Else the record (an
        edited cert.pem must not decide what may replace it)."""
        try:
            if live.current() is not None and not live.verify_links():
                return leaf_info(live.read(CERT_FILE)).not_after
        except (StoreError, BundleError, OSError):
            pass
        if cstate.installed is not None and cstate.installed.not_after:
            with contextlib.suppress(ValueError):
                parsed = datetime.fromisoformat(cstate.installed.not_after)
                return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
        return None

    def _active_is(self, live: LiveDir, store_version: str) -> bool:
        """Whether ``store_version`` is the active version (False when ``..data`` is broken)."""
        try:
            return live.current() == store_version
        except StoreError:
            return False

    def _intact(self, cstate: CertState, live: LiveDir) -> bool:
        """The installed record's version is active and its files are as installed."""
        installed = cstate.installed
        return (
            installed is not None
            and self._active_is(live, installed.store_version)
            and not live.verify_links()
        )

    # --- step 0: healing the record -------------------------------------------------------

    def _load_state(self) -> State:
        """state.json, or an empty state when it is damaged (kept aside; the record of each
        certificate is then rebuilt from its live directory by `_heal_record`)."""
        try:
            return self.state_file.load()
        except StateDamaged as exc:
            kept = self.state_file.quarantine()
            log.warning(
                "%s; kept as %s; rebuilding it from the live directories", exc, kept or "nothing"
            )
            return State()

    def _heal_record(self, cert: CertConfig, cstate: CertState, live: LiveDir) -> None:
        """Step 0 for one certificate: finish an interrupted rollback; rebuild a missing record
        from an intact active version (the label of its directory is the secret's version id);
        a rebuilt record not proven served by a handshake is marked for a reload."""
        if cstate.rollback_to:
            self._finish_rollback(cert, cstate, live)
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
            cstate.installed = self._installed_record(
                version_label(active),
                active,
                files[CERT_FILE],
                files.get(CHAIN_FILE, b""),
                None,
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
        cstate.reload_pending = not self._served_now(cert, cstate, files[CERT_FILE])

    def _served_now(self, cert: CertConfig, cstate: CertState, cert_pem: bytes) -> bool:
        """One quick look at what is served: True only when a handshake shows ``cert_pem``."""
        if cert.verify is None:
            return False
        try:
            self.installer.verify(cert, cert_pem, timeout_s=QUICK_VERIFY_S)
        except ReloadError:
            return False
        self._record_verified(cstate, cert, True)
        return True

    def _finish_rollback(self, cert: CertConfig, cstate: CertState, live: LiveDir) -> None:
        """Activate ``rollback_to`` (unless already active) and record it as installed, with a
        reload pending. A target that is gone cancels the rollback and its hold."""
        target = cstate.rollback_to or ""
        if not self._active_is(live, target):
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
        cstate.installed = self._installed_record(
            version_id,
            target,
            live.read(CERT_FILE),
            live.read(CHAIN_FILE),
            previous.certificate_arn if previous is not None else None,
        )
        cstate.previous = None
        cstate.reload_pending = True
        cstate.rollback_to = None
        cstate.last_change_at = self.clock()

    def _reload_candidate(
        self, cert: CertConfig, cstate: CertState, live: LiveDir, version_id: str
    ) -> Candidate:
        """The installed files, to reload and verify (nothing is published; a failure keeps
        them: they are what is installed)."""
        installed = cstate.installed
        bundle = installed_bundle(live.read_all())
        return Candidate(
            cert,
            installed.version_id if installed else version_id,
            bundle,
            live,
            self.compat_for(cert),
            resume=True,
            reload_only=True,
        )

    def _not_yet_valid(
        self, cert: CertConfig, cstate: CertState, now: float, version_id: str
    ) -> Optional[Outcome]:
        """AWSCURRENT is a version found valid but for its notBefore, still ahead: pending,
        without fetching it again."""
        pending = cstate.pending
        if pending is None or pending.version_id != version_id or not pending.not_before:
            return None
        start = _aware(pending.not_before)
        if start is None or now >= start.timestamp():
            return None
        cstate.last_check_at = now
        return Outcome(
            cert.name,
            Status.PENDING,
            f"{cert.name}: version {version_id} is pending until {_when(start)} (its notBefore)",
            version_id,
            due_at=start.timestamp(),
        )

    def _pending_until(
        self,
        cert: CertConfig,
        cstate: CertState,
        now: float,
        value: SecretValue,
        early: NotYetValid,
        installed_not_after: Optional[datetime],
    ) -> Outcome:
        """Validation stopped at a notBefore at most NOT_BEFORE_PENDING_S ahead (clock skew, a
        fresh issuance). Checked
        as it will be at that time: a bundle with another problem fails now, with its reason;
        a good one is pending and installed then, not an error with backoff."""
        start = early.not_before
        validate(value.secret_string, cert.policy, start, installed_not_after)  # BundleError
        cstate.pending = Pending(
            version_id=value.version_id,
            serial=early.leaf.serial,
            not_after=early.leaf.not_after.isoformat(),
            found_at=now,
            not_before=start.isoformat(),
        )
        self._record_success(cstate, now, value.version_id)
        return Outcome(
            cert.name,
            Status.PENDING,
            f"{cert.name}: version {value.version_id} is valid from {_when(start)}; "
            f"pending until {_when(start)}",
            value.version_id,
            due_at=start.timestamp(),
        )

    def _moved_back(self, cstate: CertState, live: LiveDir, version_id: str) -> bool:
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

    def _proven(self, cstate: CertState) -> bool:
        """A handshake showed the installed leaf served (after its last reload)."""
        installed = cstate.installed
        return (
            installed is not None
            and cstate.last_verify_ok is True
            and cstate.verified_fingerprint == installed.fingerprint_sha256
        )

    def _refused_again(
        self, cert: CertConfig, cstate: CertState, now: float, version_id: str
    ) -> Outcome:
        """A bundle httpd refused before: not installed again (no reload) until the secret
        moves on to another bundle."""
        rejected = cstate.rejected
        assert rejected is not None  # noqa: S101 - the caller checked
        when = datetime.fromtimestamp(rejected.at, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        return self._failure(
            cert,
            cstate,
            now,
            f"{cert.name}: version {version_id} carries the bundle httpd refused at {when} "
            f"({rejected.reason}); not installing it again until the secret moves on",
            False,
        )

    def _save_before_install(self, state: State) -> Optional[str]:
        """Save state before anything is installed; the reason when it cannot be written."""
        try:
            self.state_file.save(state)
        except StoreError as exc:
            return str(exc)
        return None

    def _same_bytes(self, live: LiveDir, bundle: CertBundle) -> bool:
        """The active version holds exactly this bundle, unedited, with the configured modes."""
        try:
            if live.current() is None:
                return False
            return live.read_all() == bundle.files() and not live.verify_links()
        except (StoreError, OSError):
            return False

    # --- bookkeeping -------------------------------------------------------------------------

    def _record_installs(self, candidates: List[Candidate], state: State) -> List[Outcome]:
        """Outcomes and state records of what install.py applied (or rolled back)."""
        now = self.clock()
        outcomes = []
        for cand in candidates:
            name = cand.cert.name
            cstate = state.cert(name)
            if cand.problem:
                if cand.bundle_fault and not cand.reload_only:
                    cstate.rejected = Rejected(
                        version_id=cand.version_id,
                        fingerprint=bundle_id(cand.bundle),
                        reason=_short(cand.problem),
                        at=now,
                    )
                outcomes.append(
                    self._failure(
                        cand.cert, cstate, now, f"{name}: {cand.problem}", not cand.bundle_fault
                    )
                )
                continue
            cstate.reload_pending = False
            if cand.reload_only:
                if cand.verified is not None:
                    self._record_verified(cstate, cand.cert, cand.verified)
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
            old = cstate.installed
            if old is not None and old.store_version != cand.store_version:
                cstate.previous = old
            cstate.installed = self._installed_record(
                cand.version_id,
                cand.store_version,
                cand.bundle.cert_pem,
                cand.bundle.chain_pem,
                cand.bundle.certificate_arn,
            )
            _remember(cstate.version_history, cand.version_id)
            try:
                if cstate.held_version_id is not None or cand.live.hold() is not None:
                    cand.live.set_hold(None)
            except StoreError as exc:
                log.warning("%s: cannot clear the hold: %s", name, exc)
            if cand.verified is not None:
                self._record_verified(cstate, cand.cert, cand.verified)
            else:  # not proven served (no target, or httpd down: loaded when it starts)
                cstate.last_verify_ok, cstate.verified_fingerprint = None, None
            cstate.last_change_at = now
            cstate.held_version_id = None
            cstate.rejected = None
            cstate.pending = None
            self._record_success(cstate, now, cand.version_id)
            resumed = " (finished an install that was interrupted)" if cand.resume else ""
            if cand.note:
                resumed += f"; {cand.note}"
            cstate.warnings = list(cand.bundle.warnings)
            for warning in cand.bundle.warnings:
                resumed += f"; note: {warning}"
            outcomes.append(
                Outcome(
                    name,
                    Status.INSTALLED,
                    f"{name}: installed version {cand.version_id} (serial {cand.bundle.leaf.serial}, "
                    f"expires {cand.bundle.leaf.not_after:%Y-%m-%d}){resumed}",
                    cand.version_id,
                )
            )
        return outcomes

    def _died_late(self, state: State) -> List[str]:
        """httpd died in the rest of a grace that ended early: undo that install as step 7
        would have (roll back, start httpd, refuse the bundle) and record it; the names."""
        now = self.clock()
        names = []
        for cand in self.installer.fail_watched():
            name = cand.cert.name
            cstate = state.cert(name)
            previous = cstate.previous
            with contextlib.suppress(StoreError):
                if previous is not None and cand.live.current() == previous.store_version:
                    cstate.installed, cstate.previous = previous, None
            cstate.last_verify_ok, cstate.verified_fingerprint = None, None
            if not cand.reload_only:
                cstate.rejected = Rejected(
                    version_id=cand.version_id,
                    fingerprint=bundle_id(cand.bundle),
                    reason=_short(cand.problem or LATE_DEATH),
                    at=now,
                )
            outcome = self._failure(cand.cert, cstate, now, f"{name}: {cand.problem}", False)
            self._log_outcome(outcome)
            names.append(name)
        return names

    def _record_verified(
        self,
        cstate: CertState,
        cert: CertConfig,
        ok: bool,
        live: Optional[LiveDir] = None,
    ) -> None:
        """What a handshake just proved: the installed leaf is served (ok), or it is not."""
        cstate.last_verify_ok, cstate.last_verify_at = ok, self.clock()
        installed = cstate.installed
        cstate.verified_fingerprint = installed.fingerprint_sha256 if ok and installed else None

    def _installed_record(
        self,
        version_id: str,
        store_version: str,
        cert_pem: bytes,
        chain_pem: bytes,
        arn: Optional[str],
    ) -> Installed:
        info = leaf_info(cert_pem)
        chain_not_after, chain_expiring = chain_expiry(chain_pem)
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
            installed_at=self.clock(),
            chain_not_after=chain_not_after.isoformat() if chain_not_after else "",
            chain_expiring=chain_expiring,
        )

    def _record_success(self, cstate: CertState, now: float, version_id: str) -> None:
        cstate.last_check_at = now
        cstate.seen_version_id = version_id
        cstate.last_error = None
        cstate.last_error_at = None
        cstate.last_error_transient = None
        cstate.consecutive_failures = 0

    def _failure(
        self, cert: CertConfig, cstate: CertState, now: float, message: str, transient: bool
    ) -> Outcome:
        cstate.last_check_at = now
        cstate.last_error = message
        cstate.last_error_at = now
        cstate.last_error_transient = transient
        cstate.consecutive_failures += 1
        return Outcome(cert.name, Status.FAILED, message, transient=transient)

    def _log_outcome(self, outcome: Outcome) -> None:
        if not self.log_outcomes:
            return
        secret_arn = None
        with contextlib.suppress(KeyError):
            secret_arn = self.config.cert(outcome.name).secret_arn
        level = logging.ERROR if outcome.status is Status.FAILED else logging.INFO
        if outcome.status in (Status.CURRENT, Status.UNCHANGED):
            level = logging.DEBUG
        extra = cert_fields(outcome.name, secret_arn, outcome.version_id)
        log.log(level, "%s", outcome.message, extra=extra)


def _aware(text: str) -> Optional[datetime]:
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _when(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def bundle_id(bundle: CertBundle) -> str:
    """What identifies a bundle across versions: the SHA-256 of its certificates (no key)."""
    return hashlib.sha256(bundle.cert_pem + b"\0" + bundle.chain_pem).hexdigest()


def _short(problem: str, limit: int = 160) -> str:
    first = problem.split("; rolled back", 1)[0]
    return first if len(first) <= limit else first[: limit - 3] + "..."


def _remember(history: List[str], version_id: str) -> None:
    """Append ``version_id`` to the versions this host installed (most recent last)."""
    if version_id in history:
        history.remove(version_id)
    history.append(version_id)
    del history[:-HISTORY_LEN]
