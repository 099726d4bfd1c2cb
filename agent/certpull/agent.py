"""One pass, and the other one-shot operations: secret -> validated bundle -> live files -> httpd.

`Agent.sync` owns the order of operations of a pass and nothing else: each step is a call into one
adapter (source, store, httpd, state) or the pure core (bundle); step 0 is heal.py's, steps 5-8
are install.py's, and record.py keeps each certificate's record consistent with the outcome. The
CLI runs one pass per command; the daemon (daemon.py) runs passes when they are due. Every side
effect is a constructor argument; wiring.py builds the real ones.
"""

from __future__ import annotations

import contextlib
import logging
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, AbstractSet, Callable, List, Optional, Sequence, Union

from certpull import oneshot
from certpull.bundle_data import CertBundle, NotYetValid
from certpull.compat import CompatLinks
from certpull.config import CertConfig, Config
from certpull.errors import BundleError, ReloadError, SourceError, StoreError, X509WorkerError
from certpull.heal import Healer, active_is, installed_expiry, intact, moved_back, same_bytes
from certpull.httpd import wait_until_served
from certpull.install import Candidate, Installer, Watch
from certpull.interfaces import X509, Defer, ServedCheck, Server, Source, StateStore
from certpull.layout import CERT_FILE
from certpull.logs import cert_fields
from certpull.outcome import Outcome, PassReport, Status
from certpull.record import (
    bundle_id,
    not_yet_valid,
    pending_until,
    proven,
    put_off,
    record_failure,
    record_installs,
    record_late_death,
    record_success,
    refused_again,
)
from certpull.state import CertState, Pending, State
from certpull.store import LiveDir
from certpull.windows import InstallWindows, install_allowed

if TYPE_CHECKING:
    from certpull.source import SecretValue

log = logging.getLogger("certpull")

LiveDirFactory = Callable[[CertConfig], LiveDir]
# A notBefore at most this far ahead (clock skew, a certificate issued a moment ago) is pending
# until then; further ahead is refused like any invalid certificate.
NOT_BEFORE_PENDING_S = 3600.0
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
        monotonic: Callable[[], float] = time.monotonic,
        log_outcomes: bool = True,
        defer_grace: bool = False,
        x509: Optional[X509] = None,
    ) -> None:
        """``defer_grace``: end a reload's liveness grace once its new leaves are served and
        leave the rest to ``watch_reload`` (the daemon calls it between passes). ``x509``: the
        daemon's worker process (x509_worker.Worker); by default this process does it."""
        self.config = config
        self.log_outcomes = log_outcomes  # the CLI prints outcomes itself; the daemon logs them
        self.source = source
        self.state_file = state_file
        self.live_dir_for = live_dir_for
        self.compat_for = compat_for
        self.clock = clock
        self.monotonic = monotonic
        self.installer = Installer(
            httpd, served_check, config.agent.verify_timeout_s, defer_grace=defer_grace
        )
        self.x509 = x509 if x509 is not None else _in_process()
        self.healer = Healer(state_file, self.installer, clock, self.x509)

    # --- public passes -----------------------------------------------------------------------

    def sync(
        self,
        names: Optional[Sequence[str]] = None,
        dry_run: bool = False,
        windows: Optional[InstallWindows] = None,
        retry_refused: bool = False,
        defer: Optional[Defer] = None,
        deadline: Optional[float] = None,
        start_httpd: Optional[Callable[[], bool]] = None,
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
           So is a new version ``defer(name, version_id, installed notAfter)`` puts off (the
           daemon's safety poll with the doorbell on: ``fleet_loop.FleetPlan``), before any
           GetSecretValue.
        5. Install: save state first (a state directory that cannot be written refuses the
           install here, before it costs a reload every pass); then stage and activate each
           changed certificate (one rename of `..data` each).
        6. Config test, once. On failure roll every certificate of this pass back.
        7. Graceful reload, once, if httpd runs; if httpd dies, roll everything back and reload.
        8. Verify: fresh handshakes must serve each new leaf; roll back those that do not and
           reload once more.
        9. Save state.

        ``deadline`` (monotonic; the daemon's): a certificate not begun by then is DEFERRED
        (nothing recorded; the daemon checks it next), so a stalled AWS endpoint cannot make a
        pass outlast its bound and the failures seen so far reach state.json. ``start_httpd``:
        asked after a first install finds httpd stopped; True starts it (install.py).
        """
        certs = self._select(names)
        with self.state_file.lock():
            state = self.healer.load_state()
            if not dry_run and self.installer.watch_died():
                self._died_late(state)  # (0) the previous reload killed httpd after all
            report = PassReport()
            candidates: List[Candidate] = []
            if retry_refused and not dry_run:
                for cert in certs:
                    state.cert(cert.name).rejected = None
            for cert in certs:
                if deadline is not None and self.monotonic() >= deadline:
                    report.outcomes.append(_deferred(cert.name))
                    continue
                prepared = self._prepare(cert, state, dry_run, windows, defer)  # (1)-(4)
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
                        record_failure(cand.cert, state.cert(cand.cert.name), now, message, True)
                    )
            elif candidates:
                self.installer.apply(candidates, start_httpd)  # (5)-(8)
                report.outcomes.extend(record_installs(candidates, state, self.clock()))
            if not dry_run and unwritable is None:
                self.state_file.save(state)  # (9)
        for outcome in report.outcomes:
            self._log_outcome(outcome)
        return report

    def watching_s(self) -> Optional[float]:
        """Seconds until ``watch_reload`` should look again; None: no liveness grace runs on."""
        return self.installer.watching_s()

    def take_watch(self) -> Optional[object]:
        """Hand the rest of a liveness grace to the agent that replaces this one (a reload)."""
        watch, self.installer.watch = self.installer.watch, None
        return watch

    def keep_watch(self, watch: Optional[object]) -> None:
        if isinstance(watch, Watch):
            self.installer.watch = watch

    def watch_reload(self) -> List[str]:
        """Between passes: the rest of the last reload's liveness grace. If httpd died in it,
        its certificates are rolled back, httpd started and the refusal recorded; their names."""
        if not self.installer.watch_died():
            return []
        with self.state_file.lock():
            state = self.healer.load_state()
            names = self._died_late(state)
            self.state_file.save(state)
        return names

    def recover(
        self, certs: Optional[Sequence[CertConfig]] = None, reload: bool = True
    ) -> List[str]:
        """At start: clean half-staged versions, restore links, make compat links. No AWS call.

        Compat links made here (a host configured before its first start, or links someone
        removed) only reach httpd through a reload: one config test and reload for all of them.
        Not with ``reload=False`` (the daemon before READY=1: httpd's unit is ordered after
        certpull's, so a reload job for it would wait for certpull's own start job): then each
        is recorded as reload pending, and the daemon's first pass over it reloads.
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
        if relinked and not reload:
            names = set(relinked)
            self.update_state(lambda state: _mark_reload_pending(state, names))
        elif relinked:
            try:
                self.installer.reload_checked()
                log.info("compat links of %s made; httpd reloaded", ", ".join(relinked))
            except ReloadError as exc:
                problems.append(f"compat links of {', '.join(relinked)} made, but {exc}")
        return problems

    def not_installed(self) -> List[str]:
        """Certificates with no active version in their live directory (a fresh host's)."""
        names = []
        for cert in self.config.certs:
            try:
                active = self.live_dir_for(cert).current()
            except StoreError:
                active = None
            if active is None:
                names.append(cert.name)
        return names

    def httpd_stopped(self) -> bool:
        """httpd is observably not running (at boot: it starts after the agent is READY)."""
        return self.installer.server.known_stopped()

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
            state = self.healer.load_state()
            cstate = state.cert(name)
            cstate.drift_count += 1
            cstate.last_drift_at = self.clock()
            self.state_file.save(state)
            return True

    def rollback(self, name: str) -> Outcome:
        """Re-activate the previous version of one certificate, reload and verify it; the
        version rolled back from is held until AWSCURRENT moves (oneshot.rollback's steps)."""
        cert = self.config.cert(name)
        live = self.live_dir_for(cert)
        outcome = oneshot.rollback(
            cert, live, self.state_file, self.healer, self.installer, self.clock
        )
        self._log_outcome(outcome)
        return outcome

    def verify(self, names: Optional[Sequence[str]] = None) -> List[Outcome]:
        """Compare what httpd serves with what is installed, for certificates with `verify` set."""
        return oneshot.verify(
            self._select(names),
            self.live_dir_for,
            self.state_file,
            self.healer,
            self.installer,
            self.clock,
        )

    def update_state(self, change: Callable[[State], None]) -> None:
        """Change state.json under the lock (the daemon's heartbeat and schedule fields)."""
        self.state_file.update(change)

    # --- steps 1-4 ---------------------------------------------------------------------------

    def _select(self, names: Optional[Sequence[str]]) -> List[CertConfig]:
        if not names:
            return list(self.config.certs)
        return [self.config.cert(name) for name in names]

    def _fetch_new(self, cert: CertConfig) -> SecretValue:
        """GetSecretValue of a version to install; the X.509 worker gets ready meanwhile (its
        interpreter start overlaps the call)."""
        self.x509.prepare()
        return self.source.fetch_current(cert.secret_arn, cert.role_arn, cert.external_id)

    def _prepare(
        self,
        cert: CertConfig,
        state: State,
        dry_run: bool,
        windows: Optional[InstallWindows],
        defer: Optional[Defer] = None,
    ) -> Union[Outcome, Candidate]:
        """Steps 1-4 for one certificate: an outcome when done, or a candidate to install."""
        cstate = state.cert(cert.name)
        cstate.secret_arn = cert.secret_arn
        now = self.clock()
        try:
            live = self.live_dir_for(cert)
            if not dry_run:
                self.healer.heal_record(cert, cstate, live)  # (0)
            version_id = self.source.current_version_id(
                cert.secret_arn, cert.role_arn, cert.external_id
            )  # (1)
            if self._is_current(cert, cstate, live, version_id):
                if cstate.reload_pending and not dry_run:
                    return self._reload_candidate(cert, cstate, live, version_id)
                if not dry_run and not proven(cstate):
                    self.healer.served_now(cert, cstate, live.read(CERT_FILE))
                record_success(cstate, now, version_id)
                cstate.pending = None
                return Outcome(
                    cert.name, Status.CURRENT, f"{cert.name}: current ({version_id})", version_id
                )
            if cstate.held_version_id == version_id:
                if cstate.reload_pending and not dry_run and intact(cstate, live):
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
                return refused_again(cert, cstate, now, version_id)
            installed_not_after = installed_expiry(live, cstate, self.x509)
            allowed, why = install_allowed(
                windows,
                datetime.fromtimestamp(now, timezone.utc),
                installed_not_after,
                self.config.agent.urgent_before_expiry_days,
                installed_valid=installed_not_after is not None,
            )
            waiting = not_yet_valid(cert, cstate, now, version_id) or put_off(
                cert, cstate, now, version_id, installed_not_after, defer, dry_run
            )
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
            value = self._fetch_new(cert)  # (2)
            if moved_back(cstate, live, value.version_id):
                log.info(
                    "%s: AWSCURRENT moved back to version %s, which this host installed before: "
                    "installing it even if it expires earlier",
                    cert.name,
                    value.version_id,
                    extra=cert_fields(cert.name),
                )
                installed_not_after = None
            try:
                bundle = self.x509.validate(  # (3)
                    value.secret_string,
                    cert.policy,
                    datetime.fromtimestamp(now, timezone.utc),
                    installed_not_after,
                )
            except NotYetValid as early:
                if early.not_before.timestamp() - now > NOT_BEFORE_PENDING_S:
                    raise  # not skew nor a fresh issuance: a BundleError, reported below
                return pending_until(
                    cert, cstate, now, value, early, installed_not_after, self.x509
                )
        except SourceError as exc:
            return record_failure(
                cert, cstate, now, f"{cert.name} ({cert.secret_arn}): {exc}", exc.transient
            )
        except BundleError as exc:  # the worker's failure is transient, the bundle's is not
            transient = isinstance(exc, X509WorkerError)
            return record_failure(
                cert, cstate, now, f"{cert.name} ({cert.secret_arn}): {exc}", transient
            )
        except StoreError as exc:  # the live directory itself is unreadable: this cert only
            return record_failure(cert, cstate, now, f"{cert.name}: {exc}", True)
        if cstate.rejected is not None and cstate.rejected.fingerprint == bundle_id(bundle):
            return refused_again(cert, cstate, now, value.version_id)
        if same_bytes(live, bundle):  # (4)
            installed = cstate.installed
            if installed is None or not active_is(live, installed.store_version):
                return self._resume(cert, value.version_id, bundle, live, dry_run)
            installed.version_id = value.version_id
            record_success(cstate, now, value.version_id)
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
            record_success(cstate, now, value.version_id)
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
        if not active_is(live, installed.store_version):
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

    def _reload_candidate(
        self, cert: CertConfig, cstate: CertState, live: LiveDir, version_id: str
    ) -> Candidate:
        """The installed files, to reload and verify (nothing is published; a failure keeps
        them: they are what is installed)."""
        installed = cstate.installed
        bundle = self.x509.installed_bundle(live.read_all())
        return Candidate(
            cert,
            installed.version_id if installed else version_id,
            bundle,
            live,
            self.compat_for(cert),
            resume=True,
            reload_only=True,
        )

    def _save_before_install(self, state: State) -> Optional[str]:
        """Save state before anything is installed; the reason when it cannot be written."""
        try:
            self.state_file.save(state)
        except StoreError as exc:
            return str(exc)
        return None

    def _died_late(self, state: State) -> List[str]:
        """httpd died in the rest of a grace that ended early: undo that install as step 7
        would have (roll back, start httpd, refuse the bundle) and record it; the names."""
        now = self.clock()
        names = []
        for cand in self.installer.fail_watched():
            self._log_outcome(record_late_death(cand, state.cert(cand.cert.name), now))
            names.append(cand.cert.name)
        return names

    # --- logging ---------------------------------------------------------------------------

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


def _deferred(name: str) -> Outcome:
    return Outcome(
        name,
        Status.DEFERRED,
        f"{name}: not checked in this pass: it reached its deadline (AWS answering slowly?); "
        "checked in the next one",
    )


def _mark_reload_pending(state: State, names: AbstractSet[str]) -> None:
    for name in names:
        cstate = state.certs.get(name)
        if cstate is not None and cstate.installed is not None:
            cstate.reload_pending = True


def _in_process() -> X509:
    """bundle.InProcess, imported only when no worker is passed (one-shot commands, tests)."""
    from certpull.bundle import InProcess  # noqa: PLC0415 - cryptography stays out of `run`

    return InProcess()
