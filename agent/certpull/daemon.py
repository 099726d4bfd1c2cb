"""`certpull run`: the long-running agent that keeps every certificate equal to its secret.

Triggers (the jittered schedule, SQS rotation events, `check-now` on the control socket, signals,
drift on disk) become passes of `Agent.sync`; outcomes feed the schedule's backoff, state.json,
systemd's notify socket, the waiting `check-now` callers and the fleet view (``fleet_loop.py``
decides the adaptive poll's waits).

Threads: the main thread owns the scheduler, the agent and every pass. The liveness thread
(liveness.py) sends WATCHDOG=1 while the main loop's lease holds (a pass's lease is its deadline
plus the longest step it may be inside), so one slow AWS call never gets a healthy agent killed.
The SQS poller, the control socket's request threads and the drift watcher's observer only post
requests into the `Mailbox` and wake the main thread through a pipe; signal handlers do the same.
So the scheduler and the agent need no locks, and a SIGTERM that
arrives during an install lets the install finish before the loop stops.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import time
from datetime import datetime, timezone
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Set

from certpull.cadence import RotationFacts
from certpull.config import Config
from certpull.config_files import dropin_dir
from certpull.control import ControlError, PassResults
from certpull.drift import CONFIG_KEY
from certpull.errors import CertpullError, ConfigError
from certpull.event_queue import EventQueue
from certpull.fleet_loop import FleetPlan, Publisher, check_results, regular_interval_s
from certpull.interfaces import Controller, DriftWatch, Passes
from certpull.liveness import IDLE_SLACK_S, Liveness, overrun_bound_s, step_bound_s
from certpull.logs import cert_fields, setup_logging
from certpull.notify import Notifier
from certpull.outcome import PassReport, Status
from certpull.procinfo import boot_id, start_ticks
from certpull.schedule import Scheduler
from certpull.state import State
from certpull.status import status_line
from certpull.triggers import EventPoller, Mailbox, Requests
from certpull.windows import InstallWindows

log = logging.getLogger("certpull")

# Outcomes after which the outcome's version id is the one in place (installed or held back).
_IN_PLACE = (Status.CURRENT, Status.INSTALLED, Status.UNCHANGED, Status.HELD)
HEARTBEAT_S = 30.0  # state.json heartbeat; `status` calls the daemon stuck after 3 missed beats
MAX_SLEEP_S = 60.0
# The drift watcher ignores a certificate's files while a pass runs and for its settle time after
# (0.5 s by default), so a change made then would wait for the next regular check: verify the
# files once more, locally, this long after each successful pass.
DRIFT_RECHECK_S = 1.0
# A pass begins no certificate after this (the rest are deferred to the next pass), so a stalled
# AWS endpoint cannot stretch a pass without bound and the failures seen reach state.json.
PASS_DEADLINE_S = 60.0
# A fresh host (a configured certificate with no files yet): READY=1 waits for the first install
# at most this long, so that httpd, ordered after the agent, starts on the files.
FIRST_INSTALL_BOUND_S = 60.0
# After a first install before READY, the installed files are checked again this long after it
# (httpd, ordered after the agent, has started on them by then), to prove them served.
FIRST_PROOF_DELAY_S = 3.0


ControlFactory = Callable[
    [Config, Callable[[str], None], PassResults, Callable[[], Mapping[str, str]]], Controller
]
"""(config, trigger a check now, the pass results, name -> secret ARN) -> the control server."""


def drift_paths(config: Config) -> Dict[str, List[str]]:
    """What the drift watcher watches: each live dir and its compat links, the config file and
    its drop-in directory (a drop-in edited, added or removed reloads the config too)."""
    paths: Dict[str, List[str]] = {
        cert.name: [config.live_path(cert.name), *(p for p, _ in cert.compat_links)]
        for cert in config.certs
    }
    paths[CONFIG_KEY] = [config.path, dropin_dir(config.path)]
    return paths


class AgentLoop:
    """The main loop of `certpull run`. Collaborators are passed in; `run()` returns the exit code."""

    def __init__(
        self,
        config: Config,
        *,
        make_agent: Callable[[Config], Passes],
        load: Callable[[str], Config],
        notifier: Notifier,
        make_event_queue: Callable[[Config], EventQueue],
        make_drift_watcher: Callable[[Config, Callable[[str], None]], DriftWatch],
        mailbox: Optional[Mailbox] = None,
        liveness: Optional[Liveness] = None,
        rng: Optional[random.Random] = None,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        make_control: Optional[ControlFactory] = None,
        rotation_facts: Callable[[str], Optional[RotationFacts]] = lambda secret_arn: None,
        read_state: Callable[[Config], State] = lambda config: State(),
        publish: Optional[Callable[[Config, State], List[str]]] = None,
        host_splay_s: Callable[[float], float] = lambda max_s: 0.0,
        ready_sent: bool = False,
    ) -> None:
        """The fleet side (all optional): ``make_control`` serves `check-now`;
        ``rotation_facts(secret_arn)`` gives the last DescribeSecret's rotation dates and
        ``read_state(config)`` state.json, for the adaptive poll; ``publish(config, state)``
        writes the fleet view after each pass; ``host_splay_s(max_s)`` is this host's splay.
        ``ready_sent``: READY=1 went out before the loop was built (startup.py found every
        certificate's files in place), so `run` sends only STATUS= and no first install waits."""
        self.config = config
        self._make_agent = make_agent
        self._load = load
        self.notifier = notifier
        self.mailbox = mailbox or Mailbox()
        self._make_event_queue = make_event_queue
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._monotonic = monotonic
        self._wall = wall
        self.agent = make_agent(config)
        self._make_control = make_control
        self._rotation_facts = rotation_facts
        self._read_state = read_state
        self._publish = Publisher(lambda state: publish(self.config, state) if publish else [])
        self._host_splay_s = host_splay_s
        self.results = PassResults()
        self.control: Optional[Controller] = None
        self.fleet = self._plan(config)
        self.scheduler = Scheduler(
            self._rng,
            interval_s=self._interval(config),
            initial_splay_s=config.agent.startup_splay_s,
            max_backoff_s=config.agent.max_backoff_s,
        )
        self.events: Optional[EventPoller] = None
        self.drift = make_drift_watcher(config, self.mailbox.post_drift)
        self.pending: Set[str] = set()
        self.rechecks: Dict[str, float] = {}  # name -> monotonic time of a local drift check
        self.versions: Dict[str, str] = {}  # name -> version id the last pass found in place
        self.summary = "starting"
        self._last_heartbeat = float("-inf")
        self.liveness = liveness or Liveness(notifier, monotonic)
        self._ready_sent_early = ready_sent
        if ready_sent:
            self.liveness.assume_ready()

    @property
    def windows(self) -> Optional[InstallWindows]:
        return self.config.agent.install_window

    # --- lifecycle ---------------------------------------------------------------------------

    def run(self) -> int:
        """1. Recover local state (half-staged dirs, links, compat links): no AWS call, and no
           reload before READY=1 (the first pass reloads for compat links made here).
        2. Schedule each first check (with the doorbell on: ``restart_splay_s`` for a healthy
           certificate), record the daemon in state.json, start the event poller, the drift
           watcher, the liveness thread and the control socket (`check-now`).
        3. A fresh host (some certificate has no files yet, httpd not running): its first pass,
           over those, before READY=1, which the liveness thread sends anyway after
           FIRST_INSTALL_BOUND_S. With every certificate installed, or httpd running, READY=1
           comes before any AWS call.
        4. READY=1 (unless startup.py sent it before the loop was built: then STATUS= only).
           Until SIGTERM: apply requests, run a pass over what is due (bounded by
           PASS_DEADLINE_S; results for `check-now` around it), record the outcomes, schedule
           each next check (the adaptive poll), publish the fleet view and STATUS=, then sleep
           until the next due time or a wake-up (50 ms while a reload's liveness grace runs on,
           looked at each turn); each step renews the watchdog lease.
        5. STOPPING=1, stop the control socket and the threads, record the clean stop; exit 0.
        """
        self._start()  # (1)-(4)
        log.info("certpull run: %s", self._describe_mode())
        try:
            while True:
                self.liveness.beat(step_bound_s(self.config.agent))
                requests = self.mailbox.take()
                if requests.stop:
                    break
                self._apply(requests)
                self._watch_reload()
                self._recheck_drift(self._monotonic())
                asked = set(self.scheduler.triggered(self._monotonic()))
                due = self.scheduler.due(self._monotonic())
                if due:
                    self._pass(due, polled=[name for name in due if name not in asked])
                self._heartbeat()
                sleep = self._sleep_s()
                self.liveness.beat(sleep + IDLE_SLACK_S)
                self.mailbox.wait(sleep)
        finally:
            self.notifier.stopping()  # (5)
            self._stop_control()
            self.liveness.stop()
            if self.events:
                self.events.stop()
            self.drift.stop()
            self._record_daemon(stopped=True)
            self.mailbox.close()
            log.info("certpull run: stopped")
        return 0

    def _start(self) -> None:
        """Steps 1-4 of `run`."""
        for problem in self.agent.recover(reload=False):  # (1) no reload before READY
            log.warning("%s", problem)
        now, state = self._monotonic(), self._state()  # (2)
        for name in self.config.names:
            self.scheduler.add(name, now, self.fleet.first_in_s(name, state, self._wall()))
        self._record_daemon(started=True)
        self._start_events()
        self.drift.start()
        self._start_control()
        self.liveness.start()
        # (3) Only while httpd is down too: a reload or start of httpd before READY would wait
        # for the agent's own start job (httpd is ordered after it), a deadlock until timeout.
        missing = [] if self._ready_sent_early else self.agent.not_installed()
        if missing and self.agent.httpd_stopped():
            bound = now + FIRST_INSTALL_BOUND_S
            self.liveness.ready_by(bound, f"first install of {', '.join(missing)} is late")
            log.info(
                "first install of %s before READY (at most %g s)",
                ", ".join(missing),
                FIRST_INSTALL_BOUND_S,
            )
            self._pass(missing, deadline=bound)
            # httpd starts on the files after READY: check them again shortly, so that a
            # handshake proves them served (status) without waiting for the next poll.
            for name in missing:
                self.scheduler.trigger(name, self._monotonic() + FIRST_PROOF_DELAY_S, 0.0)
        if self._ready_sent_early:  # (4)
            self.notifier.status(self._ready_text())
        elif not self.liveness.ready(self._ready_text()):
            log.info(
                "READY=1 was sent at the %g s bound, before the first install",
                FIRST_INSTALL_BOUND_S,
            )
        for name, cstate in state.certs.items():  # compat links (1) made: their reload, now
            if cstate.reload_pending and name in self.config.names:
                self.scheduler.trigger(name, self._monotonic(), 0.0)

    # --- one iteration -----------------------------------------------------------------------

    def _apply(self, requests: Requests) -> None:
        now = self._monotonic()
        if requests.reload_config or CONFIG_KEY in requests.drift:
            self._reload_config()
        if requests.check_all:
            log.info("SIGUSR1: checking every certificate now")
            self.scheduler.trigger_all(now)
        for name in sorted(requests.triggers):
            if name in self.config.names:
                self.scheduler.trigger(name, now, self.config.agent.event_splay_s)
        for name in sorted(requests.check_now):  # check-now waited its host splay already
            if name in self.config.names:
                self.scheduler.check_now(name, now)
        for name in sorted(requests.drift - {CONFIG_KEY}):
            if name in self.config.names and not self._repair(name):
                self.scheduler.trigger(name, now, 0.0)
        if self.pending and self.windows is not None and self.windows.is_open(self._utc_now()):
            log.info("install window open: installing pending %s", ", ".join(sorted(self.pending)))
            for name in sorted(self.pending):
                self.scheduler.trigger(name, now, 0.0)
            self.pending.clear()

    def _pass(
        self, names: Sequence[str], polled: Sequence[str] = (), deadline: Optional[float] = None
    ) -> None:
        """One pass over ``names``; ``polled`` of them are due by the regular poll (not asked for).
        A certificate not begun by ``deadline`` (default: PASS_DEADLINE_S from now) is deferred."""
        started = self._monotonic()
        deadline = started + PASS_DEADLINE_S if deadline is None else deadline
        self.liveness.beat(deadline - started + overrun_bound_s(self.config.agent))
        self.fleet.forget([name for name in names if name not in polled])
        defer = self.fleet.defer_for(set(polled), self._wall())
        # check-now waits for the result of a pass that starts after it asked
        pass_id = self.results.started(names)
        try:
            with contextlib.ExitStack() as quiet:
                for name in names:
                    quiet.enter_context(self.drift.suppress(name))
                report = self.agent.sync(
                    names,
                    windows=self.windows,
                    defer=defer,
                    deadline=deadline,
                    start_httpd=lambda: self.liveness.ready_sent,
                )
        except CertpullError as exc:
            log.error("pass over %s failed: %s", ", ".join(names), exc)  # noqa: TRY400 - one line
            report = PassReport()
        except Exception:  # a months-long daemon backs off instead of dying on one bad pass
            log.exception("unexpected error in a pass over %s", ", ".join(names))
            report = PassReport()
        now = self._monotonic()
        outcomes = {outcome.name: outcome for outcome in report.outcomes}
        for name in names:
            outcome = outcomes.get(name)
            if outcome is not None and outcome.status is Status.DEFERRED:
                log.warning("%s", outcome.message, extra=cert_fields(name))
                self.scheduler.record_deferred(name, now, polled=name in polled)
                continue
            if outcome is None or outcome.status is Status.FAILED:
                self.scheduler.record_failure(name, now)
            else:
                self.scheduler.record_success(name, now)
                self.rechecks[name] = now + DRIFT_RECHECK_S
            if outcome is not None and outcome.version_id and outcome.status in _IN_PLACE:
                self.versions[name] = outcome.version_id
            if outcome is not None and outcome.due_at is not None:
                delay = max(0.0, outcome.due_at - self._wall())
                self.scheduler.trigger(name, now + delay + 1.0, 0.0)  # e.g. at a notBefore
            # a version a poll found and deferred waits for its time, not for a window
            deferred = name in self.fleet.deferred
            if outcome is not None and outcome.status is Status.PENDING and not deferred:
                self.pending.add(name)
            elif name in self.pending:
                self.pending.discard(name)
        not_reached = {n for n, o in outcomes.items() if o.status is Status.DEFERRED}
        checked = [n for n in names if n not in not_reached]  # a name not reported failed
        self._reschedule([n for n in checked if n in outcomes and outcomes[n].ok], now)
        if any(o.status is Status.INSTALLED for o in report.outcomes):
            self.drift.update()  # first installs create directories worth watching
        self._save_schedule()
        self.notifier.status(self.summary)
        # last: a check-now that has its answer finds state.json and the fleet view up to date
        # (a deferred name is not answered: its waiting check-now gets the next pass's result)
        self.results.finished(pass_id, check_results(checked, outcomes))

    def _watch_reload(self) -> None:
        """The rest of the last reload's liveness grace (install.py ends it early once the new
        leaves are served): a certificate whose reload killed httpd after all was rolled back
        and refused; its pass now records that (FAILED, backoff, STATUS)."""
        for name in self.agent.watch_reload():
            if name in self.config.names:
                self.scheduler.trigger(name, self._monotonic(), 0.0)

    def _recheck_drift(self, now: float) -> None:
        """The watcher's blind spot after a pass: repair what changed meanwhile (no AWS call)."""
        for name, at in sorted(self.rechecks.items()):
            if at > now:
                continue
            del self.rechecks[name]
            if name in self.config.names and self._drifted(name) and not self._repair(name):
                self.scheduler.trigger(name, now, 0.0)

    def _drifted(self, name: str) -> bool:
        """Read-only: does an installed certificate's live dir differ from what was installed?"""
        try:
            return self.agent.drifted(name)
        except CertpullError as exc:
            log.warning("%s: cannot check the live files: %s", name, exc, extra=cert_fields(name))
            return False

    def _repair(self, name: str) -> bool:
        """Drift on disk: restore links locally; False when the files need republishing."""
        try:
            with self.drift.suppress(name):
                return self.agent.repair(name)
        except CertpullError as exc:
            log.error("%s: cannot repair drift: %s", name, exc, extra=cert_fields(name))  # noqa: TRY400
            return False

    def _reload_config(self) -> None:
        """SIGHUP or an edited config file: a broken config is rejected and the old one kept."""
        self.notifier.reloading()
        # Watch a conf.d this edit created *before* reading it: an edit made after the read is
        # then seen, however soon after the outcome is published it comes.
        self.drift.update()
        try:
            new = self._load(self.config.path)
        except ConfigError as exc:
            reason = str(exc)
            log.error("config reload rejected, keeping the running config: %s", reason)  # noqa: TRY400
            self._update_state(lambda state: setattr(state.daemon, "config_error", reason))
            self.notifier.ready(f"config rejected: {reason}")
            return
        now = self._monotonic()
        old_queue = self.config.agent.events_queue_url
        old_control = (self.config.agent.control_socket, self.config.agent.host_splay_s)
        old_arns = {cert.name: cert.secret_arn for cert in self.config.certs}
        self.config = new
        old_agent, self.agent = self.agent, self._make_agent(new)
        self.agent.keep_watch(old_agent.take_watch())  # the rest of a liveness grace goes on
        for problem in self.agent.recover():  # new certificates' live dirs and compat links
            log.warning("%s", problem)
        self.scheduler.sync_names(new.names, now)
        self.scheduler.set_interval(self._interval(new), now)
        deferred, self.fleet = self.fleet.deferred, self._plan(new)
        self.fleet.deferred = {n: t for n, t in deferred.items() if n in new.names}
        self.pending &= set(new.names)
        self.rechecks = {n: t for n, t in self.rechecks.items() if n in new.names}
        self.versions = {
            n: v
            for n, v in self.versions.items()
            if n in new.names and new.cert(n).secret_arn == old_arns.get(n)
        }
        if new.agent.events_queue_url != old_queue:
            if self.events:
                self.events.stop()
                self.events = None
            self._start_events()
        self.drift.update(drift_paths(new))
        if (new.agent.control_socket, new.agent.host_splay_s) != old_control:
            self._stop_control()
            self._start_control()
        setup_logging(new.agent.log_level.upper())
        self._update_state(lambda state: setattr(state.daemon, "config_error", None))
        log.info("config reloaded: %s", self._describe_mode())
        self.notifier.ready(self._ready_text())

    # --- helpers -----------------------------------------------------------------------------

    def _start_events(self) -> None:
        if not self.config.agent.events_queue_url:
            return
        queue = self._make_event_queue(self.config)
        self.events = EventPoller(
            queue,
            lambda: {cert.name: cert.secret_arn for cert in self.config.certs},
            lambda: dict(self.versions),
            self.mailbox,
            self._rng,
        )
        self.events.start()

    def _interval(self, config: Config) -> float:
        return regular_interval_s(config.agent)

    # --- the fleet side: control socket, adaptive poll, fleet view ---------------------------

    def _plan(self, config: Config) -> FleetPlan:
        return FleetPlan(
            config,
            self._rotation_facts,
            self._rng,
            lambda: self._host_splay_s(self.config.agent.host_splay_s),
        )

    def _state(self) -> State:
        try:
            return self._read_state(self.config)
        except CertpullError as exc:
            log.warning("cannot read state for the schedule: %s", exc)
            return State()

    def _start_control(self) -> None:
        """Serve `check-now`; without the socket the agent still polls (check-now then syncs)."""
        if self._make_control is None:
            return
        control = self._make_control(
            self.config,
            self.mailbox.post_check_now,
            self.results,
            lambda: {cert.name: cert.secret_arn for cert in self.config.certs},
        )
        try:
            control.start()
        except ControlError as exc:
            log.error("control socket: %s; check-now will sync on its own", exc)  # noqa: TRY400
            return
        self.control = control

    def _stop_control(self) -> None:
        if self.control is not None:
            self.control.stop()
            self.control = None

    def _reschedule(self, succeeded: Sequence[str], now: float) -> None:
        """The adaptive poll sets each successful check's next one (``FleetPlan.next_in_s``)."""
        if not succeeded:
            return
        state, wall = self._state(), self._wall()
        for name in succeeded:
            self.scheduler.record_success(name, now, self.fleet.next_in_s(name, state, wall))

    def _describe_mode(self) -> str:
        agent = self.config.agent
        mode = (
            f"events from {agent.events_queue_url}, reconcile every {agent.reconcile_interval_s:g} s"
            if agent.events_queue_url
            else f"polling every {agent.poll_interval_s:g} s"
        )
        if agent.doorbell:
            mode = f"doorbell on {agent.control_socket}, safety poll every {agent.safety_poll_interval_s:g} s"
            mode += f" (SQS events from {agent.events_queue_url})" if agent.events_queue_url else ""
        return f"{len(self.config.certs)} certificate(s), {mode}"

    def _ready_text(self) -> str:
        """READY's STATUS=: the summary from state once a pass ran, else the mode."""
        return self.summary if self.summary != "starting" else self._describe_mode()

    def _sleep_s(self) -> float:
        now = self._monotonic()
        sleep = min(self.scheduler.next_wakeup(now) - now, MAX_SLEEP_S, HEARTBEAT_S)
        watchdog = self.notifier.watchdog_interval_s()
        if watchdog:
            sleep = min(sleep, watchdog)
        if self.rechecks:
            sleep = min(sleep, min(self.rechecks.values()) - now)
        watching = self.agent.watching_s()
        if watching is not None:
            sleep = min(sleep, watching)
        if self.pending and self.windows is not None:
            utc = self._utc_now()
            sleep = min(sleep, (self.windows.next_open(utc) - utc).total_seconds() + 0.5)
        return max(0.05, sleep)

    def _utc_now(self) -> datetime:
        return datetime.fromtimestamp(self._wall(), timezone.utc)

    def _to_wall(self, monotonic_t: Optional[float]) -> Optional[float]:
        if monotonic_t is None:
            return None
        return self._wall() + (monotonic_t - self._monotonic())

    def _heartbeat(self) -> None:
        if self._monotonic() - self._last_heartbeat >= HEARTBEAT_S:
            self._record_daemon()

    def _record_daemon(self, started: bool = False, stopped: bool = False) -> None:
        wall = self._wall()

        def change(state: State) -> None:
            daemon = state.daemon
            if started:
                daemon.pid, daemon.started_at, daemon.stopped_at = os.getpid(), wall, None
                daemon.start_ticks, daemon.boot_id = start_ticks(daemon.pid), boot_id()
                daemon.config_error = None
            daemon.heartbeat_at = wall
            daemon.heartbeat_interval_s = HEARTBEAT_S
            daemon.mode = "events" if self.config.agent.events_queue_url else "poll"
            daemon.mode = "doorbell" if self.config.agent.doorbell else daemon.mode
            if stopped:
                daemon.stopped_at = wall

        self._update_state(change)
        self._last_heartbeat = self._monotonic()

    def _save_schedule(self) -> None:
        """The schedule into state.json; the summary (STATUS=) from every certificate's record."""
        wall = self._wall()
        saved: List[State] = []
        now = self._monotonic()

        def change(state: State) -> None:
            saved.append(state)
            self.summary = status_line(
                self.config.names, state, self.scheduler.next_wakeup(now) - now
            )
            for name in self.config.names:
                snapshot = self.scheduler.snapshot(name)
                if snapshot is None:
                    continue
                cstate = state.cert(name)
                cstate.next_check_at = self._to_wall(snapshot.next_check)
                cstate.backoff_until = self._to_wall(snapshot.backoff_until)
            state.daemon.heartbeat_at = wall

        self._update_state(change)
        self._last_heartbeat = self._monotonic()
        if saved:
            self._publish(saved[-1])  # the fleet view: SSM inventory, Prometheus textfile

    def _update_state(self, change: Callable[[State], None]) -> None:
        try:
            self.agent.update_state(change)
        except CertpullError as exc:
            log.error("cannot update state: %s", exc)  # noqa: TRY400 - one line
