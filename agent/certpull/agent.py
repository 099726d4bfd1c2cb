"""One pass, and the other one-shot operations: secret -> validated bundle -> live files -> httpd.

`Agent.sync` owns the order of operations of a pass and nothing else: each step is a call into one
adapter (source, store, httpd, state) or the pure core (bundle); steps 5-8 are install.py's. The
CLI runs one pass per command; the daemon (daemon.py) runs passes when they are due. Every side
effect is a constructor argument; wiring.py builds the real ones.
"""

from __future__ import annotations

import contextlib
import logging
import time
from datetime import datetime, timezone
from typing import Callable, List, Optional, Sequence, Union

from certpull.bundle import CERT_FILE, CertBundle, leaf_info, validate
from certpull.compat import CompatLinks
from certpull.config import CertConfig, Config
from certpull.errors import BundleError, ReloadError, SourceError, StoreError
from certpull.httpd import wait_until_served
from certpull.install import Candidate, Installer
from certpull.interfaces import ServedCheck, Server, Source, StateStore
from certpull.logs import cert_fields
from certpull.outcome import Outcome, PassReport, Status
from certpull.state import CertState, Installed, Pending, State
from certpull.store import LiveDir
from certpull.windows import InstallWindows, install_allowed

log = logging.getLogger("certpull")

LiveDirFactory = Callable[[CertConfig], LiveDir]
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
    ) -> None:
        self.config = config
        self.log_outcomes = log_outcomes  # the CLI prints outcomes itself; the daemon logs them
        self.source = source
        self.state_file = state_file
        self.live_dir_for = live_dir_for
        self.compat_for = compat_for
        self.clock = clock
        self.installer = Installer(httpd, served_check, config.agent.verify_timeout_s)

    # --- public passes -----------------------------------------------------------------------

    def sync(
        self,
        names: Optional[Sequence[str]] = None,
        dry_run: bool = False,
        windows: Optional[InstallWindows] = None,
    ) -> PassReport:
        """One pass: check, fetch, validate, install, reload, verify; roll back what fails.

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
        5. Install: stage and activate each changed certificate (one rename of `..data` each).
        6. Config test, once. On failure roll every certificate of this pass back.
        7. Graceful reload, once, if httpd runs; if httpd dies, roll everything back and reload.
        8. Verify: fresh handshakes must serve each new leaf; roll back those that do not and
           reload once more.
        9. Save state.
        """
        certs = self._select(names)
        with self.state_file.lock():
            state = self.state_file.load()
            report = PassReport()
            candidates: List[Candidate] = []
            for cert in certs:
                prepared = self._prepare(cert, state, dry_run, windows)  # (1)-(4)
                if isinstance(prepared, Candidate):
                    candidates.append(prepared)
                else:
                    report.outcomes.append(prepared)
            if candidates:
                self.installer.apply(candidates)  # (5)-(8)
                report.outcomes.extend(self._record_installs(candidates, state))
            if not dry_run:
                self.state_file.save(state)  # (9)
        for outcome in report.outcomes:
            self._log_outcome(outcome)
        return report

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
            state = self.state_file.load()
            cstate = state.cert(name)
            cstate.drift_count += 1
            cstate.last_drift_at = self.clock()
            self.state_file.save(state)
            return True

    def rollback(self, name: str) -> Outcome:
        """Re-activate the previous version of one certificate, reload and verify it.

        The version rolled back from is held: the agent does not install it again until the
        secret's AWSCURRENT moves to another version.
        """
        cert = self.config.cert(name)
        live = self.live_dir_for(cert)
        with self.state_file.lock():
            state = self.state_file.load()
            cstate = state.cert(name)
            try:
                live.rollback(discard_current=True)
                new_version = live.current() or ""
                bundle_files = live.read_all()
            except StoreError as exc:
                outcome = Outcome(name, Status.FAILED, f"{name}: rollback failed: {exc}")
                self._log_outcome(outcome)
                return outcome
            held = cstate.installed.version_id if cstate.installed else None
            try:
                self.installer.reload_checked()
                self.installer.verify(cert, bundle_files[CERT_FILE])
            except ReloadError as exc:
                outcome = Outcome(name, Status.FAILED, f"{name}: rolled back on disk, but {exc}")
            else:
                outcome = Outcome(name, Status.INSTALLED, f"{name}: rolled back to {new_version}")
            cstate.held_version_id = held
            previous = cstate.previous
            cstate.installed = self._installed_record(
                version_id=previous.version_id
                if previous and previous.store_version == new_version
                else "unknown",
                store_version=new_version,
                cert_pem=bundle_files[CERT_FILE],
                arn=previous.certificate_arn if previous else None,
            )
            cstate.previous = None
            cstate.last_change_at = self.clock()
            self.state_file.save(state)
        self._log_outcome(outcome)
        return outcome

    def verify(self, names: Optional[Sequence[str]] = None) -> List[Outcome]:
        """Compare what httpd serves with what is installed, for certificates with `verify` set."""
        outcomes = []
        state = self.state_file.load()
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
            cstate = state.cert(cert.name)
            cstate.last_verify_ok, cstate.last_verify_at = ok, self.clock()
            outcomes.append(outcome)
        with self.state_file.lock():
            fresh = self.state_file.load()
            for name, cstate in state.certs.items():
                if name in fresh.certs:
                    fresh.certs[name].last_verify_ok = cstate.last_verify_ok
                    fresh.certs[name].last_verify_at = cstate.last_verify_at
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
            version_id = self.source.current_version_id(
                cert.secret_arn, cert.role_arn, cert.external_id
            )  # (1)
            if self._is_current(cert, cstate, live, version_id):
                self._record_success(cstate, now, version_id)
                cstate.pending = None
                return Outcome(
                    cert.name, Status.CURRENT, f"{cert.name}: current ({version_id})", version_id
                )
            if cstate.held_version_id == version_id:
                cstate.last_check_at = now
                return Outcome(
                    cert.name,
                    Status.HELD,
                    f"{cert.name}: version {version_id} was rolled back by the operator; waiting for a new version",
                    version_id,
                )
            installed_not_after = self._installed_not_after(live, cstate)
            allowed, why = install_allowed(
                windows,
                datetime.fromtimestamp(now, timezone.utc),
                installed_not_after,
                self.config.agent.urgent_before_expiry_days,
                installed_valid=installed_not_after is not None,
            )
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
            bundle = validate(  # (3)
                value.secret_string,
                cert.policy,
                datetime.fromtimestamp(now, timezone.utc),
                installed_not_after,
            )
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
        if self._same_bytes(live, bundle):  # (4)
            installed = cstate.installed
            if installed is None or installed.store_version != live.current():
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
        if live.current() != installed.store_version:
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
        """Expiry of what the agent installed: its own record first, because a live cert.pem
        edited by someone else must not decide what may replace it; else the live file."""
        if cstate.installed is not None and cstate.installed.not_after:
            with contextlib.suppress(ValueError):
                return datetime.fromisoformat(cstate.installed.not_after)
        try:
            return leaf_info(live.read(CERT_FILE)).not_after
        except (StoreError, BundleError, OSError):
            return None

    def _same_bytes(self, live: LiveDir, bundle: CertBundle) -> bool:
        """The active version holds exactly this bundle, unedited, with the configured modes."""
        if live.current() is None:
            return False
        try:
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
                outcomes.append(
                    self._failure(cand.cert, cstate, now, f"{name}: {cand.problem}", True)
                )
                continue
            cstate.installed = self._installed_record(
                cand.version_id,
                cand.store_version,
                cand.bundle.cert_pem,
                cand.bundle.certificate_arn,
            )
            cstate.last_change_at = now
            cstate.held_version_id = None
            cstate.pending = None
            self._record_success(cstate, now, cand.version_id)
            cstate.last_verify_ok = True if cand.cert.verify else None
            cstate.last_verify_at = now if cand.cert.verify else cstate.last_verify_at
            resumed = " (finished an install that was interrupted)" if cand.resume else ""
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

    def _installed_record(
        self, version_id: str, store_version: str, cert_pem: bytes, arn: Optional[str]
    ) -> Installed:
        info = leaf_info(cert_pem)
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
