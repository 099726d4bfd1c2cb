"""The orchestrator: secret -> validated bundle -> live files -> httpd -> verified, or rolled back.

It owns the order of operations and nothing else: each step is a call into one adapter (source,
store, httpd, state) or the pure core (bundle). One pass handles every selected certificate so that
several changed certificates cost one config test and one graceful reload.
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import pwd
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from certpull.aws import AwsClients
from certpull.bundle import KEY_FILE, BundlePolicy, CertBundle, SecretFields, leaf_info, validate
from certpull.config import CertConfig, Config
from certpull.errors import BundleError, CommandError, ReloadError, SourceError, StoreError
from certpull.httpd import Httpd, VerifyTarget, wait_until_served
from certpull.pem import first_cert_der
from certpull.proc import CommandRunner
from certpull.source import SecretSource
from certpull.state import CertState, Installed, Pending, State, StateFile
from certpull.store import FileOps, LiveDir
from certpull.windows import InstallWindows, install_allowed

log = logging.getLogger("certpull")

CERT_FILE = "cert.pem"

# Outcome statuses of one certificate in one pass.
CURRENT = "current"  # installed == AWSCURRENT, nothing to do
INSTALLED = "installed"  # a new certificate is installed, served and verified
UNCHANGED = "unchanged"  # AWSCURRENT moved but carries the same certificate and key bytes
WOULD_INSTALL = "would-install"  # dry run: this would be installed
HELD = "held"  # the operator rolled this version back; waiting for a new one
PENDING = "pending"  # validated, waiting for the install window
FAILED = "failed"  # nothing changed on disk (or it was rolled back); see message


@dataclass(frozen=True)
class Outcome:
    name: str
    status: str
    message: str
    version_id: Optional[str] = None
    transient: Optional[bool] = None

    @property
    def ok(self) -> bool:
        return self.status != FAILED


@dataclass
class _Candidate:
    """A certificate with a new bundle, moving through install -> reload -> verify in this pass."""

    cert: CertConfig
    version_id: str
    bundle: CertBundle
    live: LiveDir
    previous: Optional[str] = None
    store_version: str = ""
    problem: Optional[str] = None
    # The bundle is already active on disk but state.json does not record it: a pass was killed
    # between activating the files and saving state, so httpd may never have been reloaded.
    resume: bool = False


@dataclass
class PassReport:
    outcomes: List[Outcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(outcome.ok for outcome in self.outcomes)


class Agent:
    """Runs passes over the configured certificates; every side effect is a constructor argument."""

    def __init__(
        self,
        config: Config,
        *,
        source: SecretSource,
        httpd: Httpd,
        state_file: StateFile,
        live_dir_for: Callable[[CertConfig], LiveDir],
        served_check: Callable[[VerifyTarget, bytes, float], float] = wait_until_served,
        clock: Callable[[], float] = time.time,
        log_outcomes: bool = True,
    ) -> None:
        self.config = config
        self.log_outcomes = log_outcomes  # the CLI prints outcomes itself; the daemon logs them
        self.source = source
        self.httpd = httpd
        self.state_file = state_file
        self.live_dir_for = live_dir_for
        self.served_check = served_check
        self.clock = clock

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
            candidates: List[_Candidate] = []
            for cert in certs:
                outcome, candidate = self._prepare(cert, state, dry_run, windows)  # (1)-(4)
                if candidate is not None:
                    candidates.append(candidate)
                elif outcome is not None:
                    report.outcomes.append(outcome)
            if candidates:
                report.outcomes.extend(self._install(candidates, state))  # (5)-(8)
            if not dry_run:
                self.state_file.save(state)  # (9)
        for outcome in report.outcomes:
            self._log_outcome(outcome)
        return report

    def recover(self) -> List[str]:
        """At start: clean half-staged versions, restore links, make compat links. No AWS call."""
        return self.recover_selected(self.config.certs)

    def recover_selected(self, certs: Sequence[CertConfig]) -> List[str]:
        problems = []
        for cert in certs:
            try:
                live = self.live_dir_for(cert)
                removed = live.recover()
                if removed:
                    log.info(
                        "%s: recovered from an interrupted install (removed %s)",
                        cert.name,
                        ", ".join(removed),
                    )
                if live.current() is not None:
                    self._compat_links(cert, live)
            except StoreError as exc:
                problems.append(
                    f"{cert.name}: cannot recover {self.config.agent.live_dir}/{cert.name}: {exc}"
                )
        return problems

    def repair(self, name: str) -> bool:
        """Drift: someone changed the live files. Restore links locally (no AWS call, no reload:
        httpd holds the certificate in memory). False when files themselves were edited: then
        the next check republishes them from the secret."""
        cert = self.config.cert(name)
        live = self.live_dir_for(cert)
        with self.state_file.lock():
            problems = live.verify_links()
            if not problems:
                return True
            log.warning(
                "%s: drift: %s; restoring", name, "; ".join(problems), extra={"CERT_NAME": name}
            )
            live.repair()
            if live.verify_links():
                return False  # edited files: the check that republishes them counts the drift
            if live.current() is not None:
                self._compat_links(cert, live)
            state = self.state_file.load()
            cstate = state.cert(name)
            cstate.drift_count += 1
            cstate.last_drift_at = self.clock()
            self.state_file.save(state)
            return True

    def _compat_links(self, cert: CertConfig, live: LiveDir) -> None:
        if cert.compat_links:
            live.link_compat(dict(cert.compat_links))

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
                outcome = Outcome(name, FAILED, f"{name}: rollback failed: {exc}")
                self._log_outcome(outcome)
                return outcome
            held = cstate.installed.version_id if cstate.installed else None
            try:
                self._reload_checked()
                self._verify(cert, bundle_files[CERT_FILE])
            except ReloadError as exc:
                outcome = Outcome(name, FAILED, f"{name}: rolled back on disk, but {exc}")
            else:
                outcome = Outcome(name, INSTALLED, f"{name}: rolled back to {new_version}")
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
                    Outcome(cert.name, CURRENT, f"{cert.name}: no verify target configured")
                )
                continue
            live = self.live_dir_for(cert)
            try:
                cert_pem = live.read(CERT_FILE)
                waited = self._verify(cert, cert_pem)
            except (StoreError, ReloadError, OSError) as exc:
                outcome = Outcome(cert.name, FAILED, f"{cert.name}: {exc}")
                ok = False
            else:
                outcome = Outcome(
                    cert.name, CURRENT, f"{cert.name}: served certificate matches ({waited:.2f} s)"
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

    # --- steps -------------------------------------------------------------------------------

    def _select(self, names: Optional[Sequence[str]]) -> List[CertConfig]:
        if not names:
            return list(self.config.certs)
        return [self.config.cert(name) for name in names]

    def _prepare(
        self, cert: CertConfig, state: State, dry_run: bool, windows: Optional[InstallWindows]
    ) -> Tuple[Optional[Outcome], Optional[_Candidate]]:
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
                    cert.name, CURRENT, f"{cert.name}: current ({version_id})", version_id
                ), None
            if cstate.held_version_id == version_id:
                cstate.last_check_at = now
                return Outcome(
                    cert.name,
                    HELD,
                    f"{cert.name}: version {version_id} was rolled back by the operator; waiting for a new version",
                    version_id,
                ), None
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
                    PENDING,
                    f"{cert.name}: version {version_id} is pending ({why})",
                    version_id,
                ), None
            value = self.source.fetch_current(
                cert.secret_arn, cert.role_arn, cert.external_id
            )  # (2)
            bundle = validate(  # (3)
                value.secret_string,
                _policy(cert),
                datetime.fromtimestamp(now, timezone.utc),
                installed_not_after,
            )
        except SourceError as exc:
            return self._failure(
                cert, cstate, now, f"{cert.name} ({cert.secret_arn}): {exc}", exc.transient
            ), None
        except BundleError as exc:
            return self._failure(
                cert, cstate, now, f"{cert.name} ({cert.secret_arn}): {exc}", False
            ), None
        except StoreError as exc:  # the live directory itself is unreadable: this cert only
            return self._failure(cert, cstate, now, f"{cert.name}: {exc}", True), None
        if self._same_bytes(live, bundle):  # (4)
            installed = cstate.installed
            if installed is None or installed.store_version != live.current():
                return self._resume(cert, value.version_id, bundle, live, dry_run)
            installed.version_id = value.version_id
            self._record_success(cstate, now, value.version_id)
            return Outcome(
                cert.name,
                UNCHANGED,
                f"{cert.name}: version {value.version_id} carries the installed certificate; nothing to do",
                value.version_id,
            ), None
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
                PENDING,
                f"{cert.name}: version {value.version_id} validated; pending ({why})",
                value.version_id,
            ), None
        if dry_run:
            return Outcome(
                cert.name,
                WOULD_INSTALL,
                f"{cert.name}: would install version {value.version_id} (serial {bundle.leaf.serial}, "
                f"expires {bundle.leaf.not_after:%Y-%m-%d})",
                value.version_id,
            ), None
        return None, _Candidate(cert, value.version_id, bundle, live)

    def _install(self, candidates: List[_Candidate], state: State) -> List[Outcome]:
        """Steps 5-8 for every candidate of this pass: one config test, one reload."""
        active: List[_Candidate] = []
        for cand in candidates:  # (5)
            try:
                if cand.resume:
                    cand.store_version, cand.previous = self._active_and_previous(cand.live)
                    active.append(cand)
                    continue
                result = cand.live.publish(cand.bundle.files(), label=cand.version_id)
                cand.previous, cand.store_version = result.previous, result.version
                if result.changed:
                    active.append(cand)
            except StoreError as exc:
                cand.problem = f"cannot install: {exc}"
        if active:
            self._reload_and_verify(active)  # (6)-(8)
        now = self.clock()
        outcomes = []
        for cand in candidates:
            cstate = state.cert(cand.cert.name)
            if cand.problem:
                outcomes.append(
                    self._failure(cand.cert, cstate, now, f"{cand.cert.name}: {cand.problem}", True)
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
                    cand.cert.name,
                    INSTALLED,
                    f"{cand.cert.name}: installed version {cand.version_id} (serial {cand.bundle.leaf.serial}, "
                    f"expires {cand.bundle.leaf.not_after:%Y-%m-%d}){resumed}",
                    cand.version_id,
                )
            )
        return outcomes

    def _reload_and_verify(self, active: List[_Candidate]) -> None:
        """Steps 6-8: config test, reload, verify; failures roll back and mark `problem`."""
        if self.httpd.pid_file is not None and not self.httpd.is_running():
            log.info("httpd is not running: new files are in place and load when it starts")
            return
        try:
            self.httpd.config_test()  # (6)
        except ReloadError as exc:
            self._roll_back(active, f"httpd config test failed with the new files: {exc}")
            return
        try:
            self.httpd.graceful_reload()  # (7)
        except ReloadError as exc:
            self._roll_back(active, f"graceful reload failed: {exc}")
            self._restore_httpd()
            return
        failed = []
        for cand in active:  # (8)
            try:
                self._verify(cand.cert, cand.bundle.cert_pem)
            except ReloadError as exc:
                failed.append(cand)
                cand.problem = f"verification failed: {exc}"
        if failed:
            self._roll_back(failed, None)
            self._restore_httpd()

    def _roll_back(self, cands: List[_Candidate], problem: Optional[str]) -> None:
        for cand in cands:
            reason = problem or cand.problem or "failed"
            if cand.previous is None:
                # First install: there is nothing older to go back to; keep the files, report it.
                cand.problem = f"{reason} (first install: no previous version to roll back to)"
                continue
            try:
                cand.live.rollback(discard_current=True)
                cand.problem = f"{reason}; rolled back to the previous version"
            except StoreError as exc:
                cand.problem = f"{reason}; rollback failed too: {exc}"

    def _restore_httpd(self) -> None:
        """After a rollback, make httpd serve the old files again: reload it, or start it if the
        bad reload killed it."""
        try:
            if self.httpd.pid_file is not None and not self.httpd.is_running():
                log.warning(
                    "httpd is down after the failed reload; starting it with the previous files"
                )
                self.httpd.start()
            else:
                self.httpd.graceful_reload()
        except ReloadError as exc:
            log.error("httpd did not come back after the rollback: %s", exc)  # noqa: TRY400 - one line, no traceback

    def _reload_checked(self) -> None:
        if self.httpd.pid_file is not None and not self.httpd.is_running():
            return
        self.httpd.config_test()
        self.httpd.graceful_reload()

    def _verify(self, cert: CertConfig, cert_pem: bytes) -> float:
        if cert.verify is None:
            return 0.0
        host, port = cert.verify
        target = VerifyTarget(host=host, port=port, server_name=cert.server_name)
        der = first_cert_der(cert_pem)
        if der is None:
            raise ReloadError("the installed cert.pem holds no certificate")
        return self.served_check(target, der, self.config.agent.verify_timeout_s)

    # --- helpers -------------------------------------------------------------------------------

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
            extra={"CERT_NAME": cert.name},
        )
        cstate.drift_count += 1
        cstate.last_drift_at = self.clock()
        live.repair()
        return not live.verify_links()

    def _resume(
        self, cert: CertConfig, version_id: str, bundle: CertBundle, live: LiveDir, dry_run: bool
    ) -> Tuple[Optional[Outcome], Optional[_Candidate]]:
        """The bundle is active on disk but state.json does not record it: a pass was killed after
        activating it, maybe before the reload. Reload and verify it (steps 6-8), whatever the
        install window: the files on disk already changed."""
        if dry_run:
            return Outcome(
                cert.name,
                WOULD_INSTALL,
                f"{cert.name}: would reload httpd to finish installing version {version_id}",
                version_id,
            ), None
        return None, _Candidate(cert, version_id, bundle, live, resume=True)

    def _active_and_previous(self, live: LiveDir) -> Tuple[str, Optional[str]]:
        """The active version dir and the newest complete one before it (None: first install)."""
        active = live.current() or ""
        versions = live.versions()
        older = versions[: versions.index(active)] if active in versions else []
        return active, (older[-1] if older else None)

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
        return Outcome(cert.name, FAILED, message, transient=transient)

    def _log_outcome(self, outcome: Outcome) -> None:
        if not self.log_outcomes:
            return
        extra: Dict[str, str] = {"CERT_NAME": outcome.name}
        if outcome.version_id:
            extra["VERSION_ID"] = outcome.version_id
        with contextlib.suppress(KeyError):
            extra["SECRET_ARN"] = self.config.cert(outcome.name).secret_arn
        level = logging.ERROR if outcome.status == FAILED else logging.INFO
        if outcome.status in (CURRENT, UNCHANGED):
            level = logging.DEBUG
        log.log(level, "%s", outcome.message, extra=extra)


def _policy(cert: CertConfig) -> BundlePolicy:
    return BundlePolicy(
        server_name=cert.server_name,
        min_rsa_bits=cert.min_rsa_bits,
        allow_downgrade=cert.allow_downgrade,
        include_root=cert.include_root,
        fields=SecretFields(
            certificate=cert.certificate_field,
            chain=cert.chain_field,
            private_key=cert.private_key_field,
            certificate_arn=cert.certificate_arn_field,
        ),
    )


# --- wiring: the real adapters for a configuration ------------------------------------------------


def selinux_restorer(runner: CommandRunner) -> Optional[Callable[[str], None]]:
    """`restorecon -R` on staged dirs where SELinux is on, so httpd may read what it is given."""
    if not os.path.exists("/sys/fs/selinux/enforce") or shutil.which("restorecon") is None:
        return None

    def restore(path: str) -> None:
        try:
            runner.run(["restorecon", "-R", path])
        except CommandError as exc:
            raise StoreError(f"cannot restore SELinux labels on {path}: {exc}") from None

    return restore


def _uid(owner: Optional[str]) -> Optional[int]:
    if owner is None:
        return None
    try:
        return int(owner) if owner.isdigit() else pwd.getpwnam(owner).pw_uid
    except KeyError:
        raise StoreError(f"owner {owner!r} does not exist on this host") from None


def _gid(group: Optional[str]) -> Optional[int]:
    if group is None:
        return None
    try:
        return int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    except KeyError:
        raise StoreError(f"group {group!r} does not exist on this host") from None


def live_dir_factory(
    config: Config,
    label_restorer: Optional[Callable[[str], None]],
    fs: Optional[FileOps] = None,
) -> Callable[[CertConfig], LiveDir]:
    """LiveDirs for the configured certificates; ``fs`` replaces the system calls (fault tests)."""

    def make(cert: CertConfig) -> LiveDir:
        return LiveDir(
            os.path.join(config.agent.live_dir, cert.name),
            file_modes={KEY_FILE: cert.key_mode},
            default_mode=cert.cert_mode,
            keep_versions=cert.keep_versions,
            uid=_uid(cert.owner),
            gid=_gid(cert.group),
            label_restorer=label_restorer,
            fs=fs,
        )

    return make


def build_agent(config: Config, log_outcomes: bool = True) -> Agent:
    """The Agent with real adapters: boto3 clients, subprocesses, files, TLS handshakes."""
    agent_cfg = config.agent
    clients = AwsClients(
        endpoint_url=agent_cfg.endpoint_url,
        connect_timeout_s=agent_cfg.connect_timeout_s,
        read_timeout_s=agent_cfg.read_timeout_s,
        max_attempts=agent_cfg.max_attempts,
    )
    runner = CommandRunner(default_timeout_s=agent_cfg.command_timeout_s)
    httpd = Httpd(
        runner,
        configtest_argv=agent_cfg.configtest_command,
        reload_argv=agent_cfg.reload_command,
        pid_file=agent_cfg.httpd_pid_file,
        start_argv=agent_cfg.start_command,
    )
    return Agent(
        config,
        source=SecretSource(clients.secretsmanager),
        httpd=httpd,
        state_file=StateFile(agent_cfg.state_dir),
        live_dir_for=live_dir_factory(config, selinux_restorer(runner)),
        log_outcomes=log_outcomes,
    )
