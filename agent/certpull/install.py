"""Steps 5-8 of a pass: activate the new files, test httpd's config once, reload once, verify what
is served, and roll back what fails. agent.py decides what to install; this module applies it.

Several certificates changed in one pass cost one config test and one graceful reload. A
certificate whose new leaf is not served is rolled back alone, and httpd reloaded once more.

With ``defer_grace`` (the daemon), the reload's liveness grace ends as soon as fresh handshakes
serve every new leaf from a live main process; the rest of it is a ``Watch`` that the caller
checks between passes (``watch_died``) and, if httpd died in it after all, undoes
(``fail_watched``): roll back, start httpd. So a rotation that arrives right after another one
does not wait out the previous reload's grace.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

from certpull.bundle_data import CertBundle
from certpull.compat import CompatLinks
from certpull.config import CertConfig
from certpull.errors import ReloadError, StoreError
from certpull.httpd import GraceWatch, TargetUnreachable, VerifyTarget
from certpull.interfaces import ServedCheck, Server
from certpull.pem import first_cert_der
from certpull.store import LiveDir

log = logging.getLogger("certpull")
# How long to look at a verify target when httpd looks stopped: a refused connection returns at
# once; a live server answers a handshake in milliseconds.
STOPPED_PROBE_S = 0.5


@dataclass
class Candidate:
    """A certificate with a new bundle, moving through install -> reload -> verify in this pass."""

    cert: CertConfig
    version_id: str
    bundle: CertBundle
    live: LiveDir
    compat: CompatLinks
    previous: Optional[str] = None
    store_version: str = ""
    problem: Optional[str] = None
    # The bundle is already active on disk but state.json does not record it: a pass was killed
    # between activating the files and saving state, so httpd may never have been reloaded.
    resume: bool = False
    # Only reload and verify what is installed (a reload that never happened); a failure keeps
    # the files: they are what is installed, there is nothing to roll back to.
    reload_only: bool = False
    # What a handshake proved after the reload: True served, False not, None not checked
    # (no verify target, or httpd not running: the files load when it starts).
    verified: Optional[bool] = None
    # The failure is this bundle's (httpd died on it, its config test fails only with it, it is
    # not served): it is not installed again until the secret moves on.
    bundle_fault: bool = False
    note: Optional[str] = None  # installed, with something to say (no proof it is served)


LATE_DEATH = "httpd stopped within its liveness grace after the graceful reload"


@dataclass
class Watch:
    """The candidates of the last reload whose liveness grace ended early, and the rest of it."""

    candidates: List[Candidate]
    grace: GraceWatch


class Installer:
    """Applies candidates to disk and httpd; every failure ends as ``Candidate.problem``."""

    def __init__(
        self,
        server: Server,
        served_check: ServedCheck,
        verify_timeout_s: float,
        *,
        defer_grace: bool = False,
    ) -> None:
        self.server = server
        self.served_check = served_check
        self.verify_timeout_s = verify_timeout_s
        self.defer_grace = defer_grace
        self.watch: Optional[Watch] = None

    def apply(
        self, candidates: List[Candidate], start_httpd: Optional[Callable[[], bool]] = None
    ) -> None:
        """Steps 5-8 for every candidate: activate, then one config test and one reload.

        httpd stopped: a first install starts it when ``start_httpd()`` says so (the daemon's
        answer: once it is READY, never before, since httpd's start waits for that at boot);
        otherwise the files load when it starts.

        Step 5 also makes the certificate's compat links (an unmodified ssl.conf's paths) point
        into the live directory, before httpd is reloaded; if that fails, the new version is rolled
        back, since httpd would not read it anyway.
        """
        active: List[Candidate] = []
        for cand in candidates:  # (5)
            try:
                if cand.resume:
                    cand.store_version, cand.previous = _active_and_previous(cand.live)
                else:
                    result = cand.live.publish(cand.bundle.files(), label=cand.version_id)
                    cand.previous, cand.store_version = result.previous, result.version
                    if not result.changed:
                        continue
            except StoreError as exc:
                cand.problem = f"cannot install: {exc}"
                continue
            try:
                cand.compat.apply()
            except StoreError as exc:
                self._roll_back([cand], f"cannot make its compat links: {exc}")
                continue
            active.append(cand)
        if active:
            self._reload_and_verify(active, start_httpd)  # (6)-(8)

    def reload_checked(self) -> bool:
        """Config test and graceful reload, unless httpd is known to be stopped (then False)."""
        if self.server.known_stopped():
            return False
        self.server.config_test()
        self._reload()
        return True

    def watching_s(self) -> Optional[float]:
        """Seconds until the rest of an early-ended grace should be looked at; None: none runs."""
        if self.watch is None:
            return None
        return min(self.watch.grace.remaining_s(), self.watch.grace.poll_interval_s)

    def watch_died(self) -> bool:
        """Look once at the rest of the last early-ended grace: True when httpd died in it (the
        watch is kept for ``fail_watched``); a window that is over is forgotten."""
        if self.watch is None:
            return False
        alive = self.watch.grace.poll()
        if alive is True:
            self.watch = None
        return alive is False

    def fail_watched(self) -> List[Candidate]:
        """httpd died after the early end of its grace: roll the watched candidates back and
        start httpd (as a death within the grace would have); they are returned with
        ``problem`` and ``bundle_fault`` set."""
        watch, self.watch = self.watch, None
        if watch is None:
            return []
        for cand in watch.candidates:
            cand.bundle_fault, cand.verified, cand.note = True, None, None
        self._roll_back(watch.candidates, f"graceful reload failed: {LATE_DEATH}")
        self._restore_httpd()
        return watch.candidates

    def verify(self, cert: CertConfig, cert_pem: bytes, timeout_s: Optional[float] = None) -> float:
        """Fresh handshakes to ``cert.verify`` must serve ``cert_pem``'s leaf; seconds waited."""
        if cert.verify is None:
            return 0.0
        host, port = cert.verify
        target = VerifyTarget(host=host, port=port, server_name=cert.server_name)
        der = first_cert_der(cert_pem)
        if der is None:
            raise ReloadError("the installed cert.pem holds no certificate")
        timeout = self.verify_timeout_s if timeout_s is None else timeout_s
        return self.served_check(target, der, timeout)

    def _reload_and_verify(
        self, active: List[Candidate], start_httpd: Optional[Callable[[], bool]] = None
    ) -> None:
        """Steps 6-8: config test, reload, verify; failures roll back and mark `problem`."""
        if self.server.known_stopped():
            first = [cand for cand in active if cand.previous is None]
            if first and start_httpd is not None and start_httpd():
                self._start_for_first_install(active)
                return
            self._check_really_stopped(active)
            log.info("httpd is not running: new files are in place and load when it starts")
            return
        try:
            self.server.config_test()  # (6)
        except ReloadError as exc:
            self._config_test_failed(active, exc)
            return
        try:
            grace = self._reload(self._proof(active) if self.defer_grace else None)  # (7)
        except ReloadError as exc:
            died = self.server.known_stopped()  # the new files stopped httpd (AH02565)
            for cand in active:
                cand.bundle_fault = died
            self._roll_back(active, f"graceful reload failed: {exc}")
            self._restore_httpd()
            return
        failed = []
        for cand in active:  # (8)
            if cand.cert.verify is None:
                continue
            try:
                self.verify(cand.cert, cand.bundle.cert_pem)
            except TargetUnreachable as exc:
                # Nothing answers there: no proof either way. httpd passed its config test and
                # survived the reload with these files, so they stay; rolling back would cost a
                # second reload on every retry, forever, while the target stays dead.
                cand.note = f"installed, but the verify target does not answer ({exc})"
            except ReloadError as exc:
                failed.append(cand)
                cand.verified = False
                cand.bundle_fault = True
                cand.problem = f"verification failed: {exc}"
            else:
                cand.verified = True
        if failed:
            self._roll_back(failed, None)
            self._restore_httpd()
        elif grace is not None:
            self.watch = Watch(list(active), grace)

    def _reload(self, proven: Optional[Callable[[], bool]] = None) -> Optional[GraceWatch]:
        """Graceful reload; a new reload's own grace replaces the rest of an earlier one."""
        self.watch = None
        if proven is None:
            return self.server.graceful_reload()
        return self.server.graceful_reload(proven)

    def _proof(self, active: List[Candidate]) -> Optional[Callable[[], bool]]:
        """One fresh handshake per candidate shows its new leaf; None when one has no verify
        target (then nothing can end the grace early)."""
        if any(cand.cert.verify is None for cand in active):
            return None

        def proven() -> bool:
            for cand in active:
                try:
                    self.verify(cand.cert, cand.bundle.cert_pem, timeout_s=0.0)
                except ReloadError:
                    return False
            return True

        return proven

    def _start_for_first_install(self, active: List[Candidate]) -> None:
        """httpd is down and a certificate arrived for the first time (a fresh host whose httpd
        failed to start without files): start it through its start command, then verify."""
        log.info("httpd is not running; starting it on the first installed certificate")
        try:
            self.server.start()
        except ReloadError as exc:
            for cand in active:
                cand.problem = f"installed, but httpd did not start: {exc}" + self._undo(cand)
            return
        for cand in active:
            if cand.cert.verify is None:
                continue
            try:
                self.verify(cand.cert, cand.bundle.cert_pem)
            except TargetUnreachable as exc:
                cand.note = f"httpd started, but the verify target does not answer ({exc})"
            except ReloadError as exc:
                cand.verified = False
                cand.problem = f"httpd started, but {exc}" + self._undo(cand)
            else:
                cand.verified = True

    def _check_really_stopped(self, active: List[Candidate]) -> None:
        """httpd looks stopped: a verify target that answers TLS means the agent watches the
        wrong httpd (a wrong httpd_pid_file or unit) and would never reload the live one; those
        candidates fail with that, and are rolled back."""
        wrong = []
        for cand in active:
            if cand.cert.verify is None:
                continue
            try:
                self.verify(cand.cert, cand.bundle.cert_pem, timeout_s=STOPPED_PROBE_S)
            except TargetUnreachable:
                continue
            except ReloadError:
                wrong.append(cand)
            else:
                continue  # the new leaf is served already: loaded by whoever runs there
        if wrong:
            host, port = wrong[0].cert.verify or ("", 0)
            self._roll_back(
                wrong,
                f"httpd looks stopped to certpull ({self.server.describe()}), but "
                f"{host}:{port} answers TLS: certpull watches the wrong httpd and cannot reload "
                "it; fix httpd_pid_file or the unit in reload_command",
            )

    def _config_test_failed(self, active: List[Candidate], exc: ReloadError) -> None:
        """Step (6) failed: roll back, then test once more with the previous files, to say
        whether the new files are the cause (they are refused until the secret moves on) or
        httpd's configuration is broken on its own (retried later)."""
        outcomes = {id(cand): self._undo(cand) for cand in active}
        rolled_back = [
            cand for cand in active if cand.previous is not None and not cand.reload_only
        ]
        old_files_fail: Optional[bool] = None
        if rolled_back:
            try:
                self.server.config_test()
            except ReloadError:
                old_files_fail = True
            else:
                old_files_fail = False
        for cand in active:
            if old_files_fail is True:
                reason = (
                    "httpd's config test fails with the previous files too: its configuration is "
                    f"broken, not the new certificate ({exc})"
                )
            elif old_files_fail is False:
                reason = f"httpd's config test fails only with the new files: {exc}"
                cand.bundle_fault = True
            else:
                reason = f"httpd config test failed with the new files: {exc}"
            cand.problem = reason + outcomes[id(cand)]

    def _roll_back(self, cands: List[Candidate], problem: Optional[str]) -> None:
        for cand in cands:
            reason = problem or cand.problem or "failed"
            cand.problem = reason + self._undo(cand)

    def _undo(self, cand: Candidate) -> str:
        """Put the previous version back; what happened, as a suffix of the candidate's problem."""
        if cand.reload_only:
            return " (the installed files are kept)"
        if cand.previous is None:
            # First install: there is nothing older to go back to; keep the files, report it.
            return " (first install: no previous version to roll back to)"
        try:
            cand.live.rollback(discard_current=True)
        except StoreError as exc:
            return f"; rollback failed too: {exc}"
        return "; rolled back to the previous version"

    def _restore_httpd(self) -> None:
        """After a rollback, make httpd serve the old files again: reload it, or start it if the
        bad reload killed it."""
        try:
            if self.server.known_stopped():
                log.warning(
                    "httpd is down after the failed reload; starting it with the previous files"
                )
                self.server.start()
            else:
                self._reload()
        except ReloadError as exc:
            log.error("httpd did not come back after the rollback: %s", exc)  # noqa: TRY400 - one line, no traceback


def _active_and_previous(live: LiveDir) -> Tuple[str, Optional[str]]:
    """The active version dir and the newest complete one before it (None: first install)."""
    active = live.current() or ""
    versions = live.versions()
    older = versions[: versions.index(active)] if active in versions else []
    return active, (older[-1] if older else None)
