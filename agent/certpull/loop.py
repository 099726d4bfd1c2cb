"""`certpull run`: the long-running agent that keeps every certificate equal to its secret.

Triggers (the jittered schedule, SQS rotation events, signals, drift on disk) become passes of
`Agent.sync`; outcomes feed the schedule's backoff, state.json and systemd's notify socket.

Threads: the main thread owns the scheduler, the agent and every pass. The SQS poller and the
watchdog observer only post requests into the `Mailbox` and wake the main thread through a pipe;
signal handlers do the same. So the scheduler and the agent need no locks, and a SIGTERM that
arrives during an install lets the install finish before the loop stops.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import select
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import FrameType
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Set

from certpull.config import Config, load_config
from certpull.daemon import FAILED, INSTALLED, PENDING, Agent, PassReport, build_agent
from certpull.drift import CONFIG_KEY, DriftWatcher
from certpull.errors import CertpullError, ConfigError, SourceError
from certpull.event_queue import EventQueue
from certpull.events import match_certs, parse_message
from certpull.logs import setup_logging
from certpull.notify import Notifier
from certpull.schedule import Backoff, Scheduler
from certpull.state import State
from certpull.windows import InstallWindows, parse_windows

log = logging.getLogger("certpull")

HEARTBEAT_S = 30.0  # state.json heartbeat; `status` calls the daemon stuck after 3 missed beats
MAX_SLEEP_S = 60.0
EVENT_BACKOFF_BASE_S = 5.0
EVENT_BACKOFF_CAP_S = 300.0
# The drift watcher ignores a certificate's files while a pass runs and for its settle time after
# (0.5 s by default), so a change made then would wait for the next regular check: verify the
# files once more, locally, this long after each successful pass.
DRIFT_RECHECK_S = 1.0


@dataclass
class Requests:
    """What arrived since the main loop last looked."""

    stop: bool = False
    reload_config: bool = False
    check_all: bool = False
    triggers: Set[str] = field(default_factory=set)
    drift: Set[str] = field(default_factory=set)


class Mailbox:
    """Requests from signal handlers and threads to the main loop, with a self-pipe to wake it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests = Requests()
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)

    def close(self) -> None:
        for fd in (self._read_fd, self._write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self._write_fd, b"x")

    # Signal handlers run in the main thread between bytecodes, possibly while it holds the lock
    # in take(): they only set a flag (a plain attribute store) and write to the pipe.
    def post_stop(self) -> None:
        self._requests.stop = True
        self._wake()

    def post_reload(self) -> None:
        self._requests.reload_config = True
        self._wake()

    def post_check_all(self) -> None:
        self._requests.check_all = True
        self._wake()

    def post_trigger(self, name: str) -> None:
        with self._lock:
            self._requests.triggers.add(name)
        self._wake()

    def post_drift(self, key: str) -> None:
        with self._lock:
            self._requests.drift.add(key)
        self._wake()

    def take(self) -> Requests:
        with self._lock:
            taken, self._requests = self._requests, Requests(stop=self._requests.stop)
        return taken

    def wait(self, timeout_s: float) -> None:
        """Sleep until woken or `timeout_s` passed; drain the pipe."""
        select.select([self._read_fd], [], [], max(0.0, timeout_s))  # PEP 475: EINTR retried
        with contextlib.suppress(BlockingIOError):
            while os.read(self._read_fd, 4096):
                pass


class EventPoller:
    """Long-polls the SQS queue in a thread; posts a trigger for each configured secret named.

    Handled messages are deleted. Malformed or foreign messages are deleted too and logged once
    at debug level. SQS errors back off (full jitter, up to 5 minutes) and never stop the thread.
    """

    def __init__(
        self,
        queue: EventQueue,
        certs: Callable[[], Mapping[str, str]],
        mailbox: Mailbox,
        rng: random.Random,
    ) -> None:
        self._queue = queue
        self._certs = certs
        self._mailbox = mailbox
        self._backoff = Backoff(rng, EVENT_BACKOFF_BASE_S, EVENT_BACKOFF_CAP_S)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="certpull-events", daemon=True)

    @property
    def queue_url(self) -> str:
        return self._queue.queue_url

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop after the current long poll returns (at most the poll's wait)."""
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                messages = self._queue.receive()
            except SourceError as exc:
                delay = self._backoff.next_delay()
                log.warning("rotation events: %s; retrying in %.0f s", exc, delay)
                self._stop.wait(delay)
                continue
            self._backoff.reset()
            if not messages:
                continue
            certs = self._certs()
            for message in messages:
                self._handle(message.body, message.message_id, certs)
            try:
                self._queue.delete(messages)
            except SourceError as exc:
                log.warning(
                    "rotation events: %s (the messages come back and cost one extra check)", exc
                )

    def _handle(self, body: str, message_id: str, certs: Mapping[str, str]) -> None:
        event = parse_message(body)
        if event is None:
            log.debug(
                "rotation events: ignoring message %s: not a Secrets Manager change", message_id
            )
            return
        names = match_certs(event, certs)
        if not names:
            log.debug("rotation events: ignoring %s: not a configured secret", event.describe())
            return
        if not event.may_change_current:
            log.debug("rotation events: ignoring %s: AWSCURRENT did not move", event.describe())
            return
        for name in names:
            log.info(
                "rotation event %s: checking %s", event.describe(), name, extra={"CERT_NAME": name}
            )
            self._mailbox.post_trigger(name)


def drift_paths(config: Config) -> Dict[str, List[str]]:
    """What the drift watcher watches: each live dir and its compat links, and the config file."""
    paths: Dict[str, List[str]] = {
        cert.name: [
            os.path.join(config.agent.live_dir, cert.name),
            *(p for p, _ in cert.compat_links),
        ]
        for cert in config.certs
    }
    paths[CONFIG_KEY] = [config.path]
    return paths


class AgentLoop:
    """The main loop of `certpull run`. Collaborators are passed in; `run()` returns the exit code."""

    def __init__(
        self,
        config: Config,
        *,
        make_agent: Callable[[Config], Agent] = build_agent,
        load: Callable[[str], Config],
        notifier: Notifier,
        mailbox: Optional[Mailbox] = None,
        make_event_queue: Optional[Callable[[Config], EventQueue]] = None,
        make_drift_watcher: Optional[Callable[[Config, Callable[[str], None]], Any]] = None,
        rng: Optional[random.Random] = None,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._make_agent = make_agent
        self._load = load
        self.notifier = notifier
        self.mailbox = mailbox or Mailbox()
        self._make_event_queue = make_event_queue
        self._make_drift_watcher = make_drift_watcher or _default_drift_watcher
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._monotonic = monotonic
        self._wall = wall
        self.agent = make_agent(config)
        self.windows: Optional[InstallWindows] = parse_windows(config.agent.install_window or "")
        self.scheduler = Scheduler(
            self._rng,
            interval_s=self._interval(config),
            initial_splay_s=config.agent.startup_splay_s,
            max_backoff_s=config.agent.max_backoff_s,
        )
        self.events: Optional[EventPoller] = None
        self.drift: Any = None
        self.pending: Set[str] = set()
        self.rechecks: Dict[str, float] = {}  # name -> monotonic time of a local drift check
        self.summary = "starting"
        self._last_heartbeat = float("-inf")

    # --- lifecycle ---------------------------------------------------------------------------

    def run(self) -> int:
        """1. Recover local state (half-staged dirs, links, compat links): no AWS call.
        2. Record the daemon in state.json, start the event poller and drift watcher; READY=1.
        3. Until SIGTERM: apply requests, run a pass over what is due, record the outcomes,
           STATUS= and WATCHDOG=1, then sleep until the next due time or a wake-up.
        4. STOPPING=1, stop the threads, record the clean stop; exit 0.
        """
        for problem in self.agent.recover():  # (1)
            log.warning("%s", problem)
        now = self._monotonic()
        for name in self.config.names:
            self.scheduler.add(name, now)
        self._record_daemon(started=True)  # (2)
        self._start_events()
        self.drift = self._make_drift_watcher(self.config, self.mailbox.post_drift)
        self.drift.start()
        self.notifier.ready(self._describe_mode())
        log.info("certpull run: %s", self._describe_mode())
        try:
            while True:  # (3)
                requests = self.mailbox.take()
                if requests.stop:
                    break
                self._apply(requests)
                self._recheck_drift(self._monotonic())
                due = self.scheduler.due(self._monotonic())
                if due:
                    self._pass(due)
                self._heartbeat()
                self.notifier.watchdog()
                self.mailbox.wait(self._sleep_s())
        finally:
            self.notifier.stopping()  # (4)
            if self.events:
                self.events.stop()
            if self.drift:
                self.drift.stop()
            self._record_daemon(stopped=True)
            self.mailbox.close()
            log.info("certpull run: stopped")
        return 0

    def install_signal_handlers(self) -> None:
        def on_term(signum: int, frame: Optional[FrameType]) -> None:
            self.mailbox.post_stop()

        def on_hup(signum: int, frame: Optional[FrameType]) -> None:
            self.mailbox.post_reload()

        def on_usr1(signum: int, frame: Optional[FrameType]) -> None:
            self.mailbox.post_check_all()

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        signal.signal(signal.SIGHUP, on_hup)
        signal.signal(signal.SIGUSR1, on_usr1)

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
        for name in sorted(requests.drift - {CONFIG_KEY}):
            if name in self.config.names and not self._repair(name):
                self.scheduler.trigger(name, now, 0.0)
        if self.pending and self.windows is not None and self.windows.is_open(self._utc_now()):
            log.info("install window open: installing pending %s", ", ".join(sorted(self.pending)))
            for name in sorted(self.pending):
                self.scheduler.trigger(name, now, 0.0)
            self.pending.clear()

    def _pass(self, names: Sequence[str]) -> None:
        try:
            with contextlib.ExitStack() as quiet:
                for name in names:
                    quiet.enter_context(self.drift.suppress(name))
                report = self.agent.sync(names, windows=self.windows)
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
            if outcome is None or outcome.status == FAILED:
                self.scheduler.record_failure(name, now)
            else:
                self.scheduler.record_success(name, now)
                self.rechecks[name] = now + DRIFT_RECHECK_S
            if outcome is not None and outcome.status == PENDING:
                self.pending.add(name)
            elif name in self.pending:
                self.pending.discard(name)
        if any(o.status == INSTALLED for o in report.outcomes):
            self.drift.update()  # first installs create directories worth watching
        self.summary = _summarise(self.config.names, outcomes, self.scheduler, now)
        self.notifier.status(self.summary)
        self._save_schedule()

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
            live = self.agent.live_dir_for(self.config.cert(name))
            return live.current() is not None and bool(live.verify_links())
        except CertpullError as exc:
            log.warning("%s: cannot check the live files: %s", name, exc, extra={"CERT_NAME": name})
            return False

    def _repair(self, name: str) -> bool:
        """Drift on disk: restore links locally; False when the files need republishing."""
        try:
            with self.drift.suppress(name):
                return self.agent.repair(name)
        except CertpullError as exc:
            log.error("%s: cannot repair drift: %s", name, exc, extra={"CERT_NAME": name})  # noqa: TRY400
            return False

    def _reload_config(self) -> None:
        """SIGHUP or an edited config file: a broken config is rejected and the old one kept."""
        self.notifier.reloading()
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
        self.config = new
        self.agent = self._make_agent(new)
        self.windows = parse_windows(new.agent.install_window or "")
        self.scheduler.sync_names(new.names, now)
        self.scheduler.set_interval(self._interval(new), now)
        self.pending &= set(new.names)
        self.rechecks = {n: t for n, t in self.rechecks.items() if n in new.names}
        if new.agent.events_queue_url != old_queue:
            if self.events:
                self.events.stop()
                self.events = None
            self._start_events()
        if self.drift:
            self.drift.update(drift_paths(new))
        setup_logging(new.agent.log_level.upper())
        self._update_state(lambda state: setattr(state.daemon, "config_error", None))
        log.info("config reloaded: %s", self._describe_mode())
        self.notifier.ready(self._describe_mode())

    # --- helpers -----------------------------------------------------------------------------

    def _start_events(self) -> None:
        if not self.config.agent.events_queue_url or self._make_event_queue is None:
            return
        queue = self._make_event_queue(self.config)
        self.events = EventPoller(
            queue,
            lambda: {cert.name: cert.secret_arn for cert in self.config.certs},
            self.mailbox,
            self._rng,
        )
        self.events.start()

    def _interval(self, config: Config) -> float:
        agent = config.agent
        return agent.reconcile_interval_s if agent.events_queue_url else agent.poll_interval_s

    def _describe_mode(self) -> str:
        agent = self.config.agent
        mode = (
            f"events from {agent.events_queue_url}, reconcile every {agent.reconcile_interval_s:g} s"
            if agent.events_queue_url
            else f"polling every {agent.poll_interval_s:g} s"
        )
        return f"{len(self.config.certs)} certificate(s), {mode}"

    def _sleep_s(self) -> float:
        now = self._monotonic()
        sleep = min(self.scheduler.next_wakeup(now) - now, MAX_SLEEP_S, HEARTBEAT_S)
        watchdog = self.notifier.watchdog_interval_s()
        if watchdog:
            sleep = min(sleep, watchdog)
        if self.rechecks:
            sleep = min(sleep, min(self.rechecks.values()) - now)
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
                daemon.config_error = None
            daemon.heartbeat_at = wall
            daemon.heartbeat_interval_s = HEARTBEAT_S
            daemon.mode = "events" if self.config.agent.events_queue_url else "poll"
            if stopped:
                daemon.stopped_at = wall

        self._update_state(change)
        self._last_heartbeat = self._monotonic()

    def _save_schedule(self) -> None:
        wall = self._wall()

        def change(state: State) -> None:
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

    def _update_state(self, change: Callable[[State], None]) -> None:
        try:
            self.agent.state_file.update(change)
        except CertpullError as exc:
            log.error("cannot update state: %s", exc)  # noqa: TRY400 - one line


def _summarise(
    names: Sequence[str], outcomes: Mapping[str, Any], scheduler: Scheduler, now: float
) -> str:
    failed = [name for name in names if name in outcomes and outcomes[name].status == FAILED]
    wake = scheduler.next_wakeup(now) - now
    if failed:
        first = outcomes[failed[0]].message
        return f"{len(failed)} of {len(names)} failing ({first}); next check in {wake:.0f} s"
    return f"{len(names)} certificate(s) OK; next check in {wake:.0f} s"


def _default_drift_watcher(config: Config, on_change: Callable[[str], None]) -> DriftWatcher:
    return DriftWatcher(drift_paths(config), on_change)


def run_agent(config: Config, verbose: bool = False) -> int:
    """`certpull run` with the real collaborators."""
    setup_logging("DEBUG" if verbose else config.agent.log_level.upper())

    def make_queue(cfg: Config) -> EventQueue:
        from certpull.aws import AwsClients  # noqa: PLC0415 - only with events configured

        url = cfg.agent.events_queue_url or ""
        region = _queue_region(url)
        clients = AwsClients(
            endpoint_url=cfg.agent.endpoint_url,
            connect_timeout_s=cfg.agent.connect_timeout_s,
            read_timeout_s=cfg.agent.read_timeout_s,
            max_attempts=cfg.agent.max_attempts,
        )
        return EventQueue(clients.sqs(region), url)

    loop = AgentLoop(
        config,
        load=lambda path: load_config(path, _read_text),
        notifier=Notifier(),
        make_event_queue=make_queue,
    )
    loop.install_signal_handlers()
    return loop.run()


def _queue_region(url: str) -> str:
    """`https://sqs.eu-west-1.amazonaws.com/...` -> eu-west-1; other hosts: AWS_REGION or us-east-1."""
    host = url.split("/")[2] if url.count("/") >= 2 else ""
    parts = host.split(".")
    if len(parts) >= 3 and parts[0] == "sqs":
        return parts[1]
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()
