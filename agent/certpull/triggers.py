"""What wakes the daemon: requests from signal handlers and threads, and SQS rotation events.

The `Mailbox` collects requests (stop, reload the config, check all, check one, check one now,
drift) and wakes the main loop through a self-pipe; the `EventPoller` thread long-polls the SQS
queue and posts a check for each configured secret an event names. Neither runs a pass: the main loop does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import select
import signal
import threading
from dataclasses import dataclass, field
from types import FrameType
from typing import Callable, Mapping, Optional, Set

from certpull.errors import SourceError
from certpull.event_queue import EventQueue
from certpull.events import match_certs, parse_message
from certpull.logs import cert_fields
from certpull.schedule import Backoff

log = logging.getLogger("certpull")

EVENT_BACKOFF_BASE_S = 5.0
EVENT_BACKOFF_CAP_S = 300.0


@dataclass
class Requests:
    """What arrived since the main loop last looked."""

    stop: bool = False
    reload_config: bool = False
    check_all: bool = False
    triggers: Set[str] = field(default_factory=set)
    drift: Set[str] = field(default_factory=set)
    check_now: Set[str] = field(default_factory=set)  # `certpull check-now`: no splay


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

    def post_check_now(self, name: str) -> None:
        with self._lock:
            self._requests.check_now.add(name)
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


def install_signal_handlers(mailbox: Mailbox) -> None:
    """SIGTERM/SIGINT stop, SIGHUP reloads the config, SIGUSR1 checks every certificate: each
    only posts to ``mailbox``, so a signal that arrives before the loop runs waits for it."""

    def on_term(signum: int, frame: Optional[FrameType]) -> None:
        mailbox.post_stop()

    def on_hup(signum: int, frame: Optional[FrameType]) -> None:
        mailbox.post_reload()

    def on_usr1(signum: int, frame: Optional[FrameType]) -> None:
        mailbox.post_check_all()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGHUP, on_hup)
    signal.signal(signal.SIGUSR1, on_usr1)


class EventPoller:
    """Long-polls the SQS queue in a thread; posts a trigger for each configured secret named.

    ``certs()`` gives name -> secret ARN; ``installed()`` gives name -> the version id the last
    pass found installed: an event that moved AWSCURRENT to exactly that version is a duplicate
    (EventBridge delivers at least once, CloudTrail and native events both arrive) and costs no
    check. Handled messages are deleted. Malformed or foreign messages are deleted too and logged
    once at debug level. SQS errors back off (equal jitter, up to 5 minutes) and never stop the
    thread.
    """

    def __init__(
        self,
        queue: EventQueue,
        certs: Callable[[], Mapping[str, str]],
        installed: Callable[[], Mapping[str, str]],
        mailbox: Mailbox,
        rng: random.Random,
        wait: Optional[Callable[[float], object]] = None,
    ) -> None:
        """``wait(seconds)`` sleeps between failed polls (default: until ``stop()`` or timeout)."""
        self._queue = queue
        self._certs = certs
        self._installed = installed
        self._mailbox = mailbox
        self._backoff = Backoff(rng, EVENT_BACKOFF_BASE_S, EVENT_BACKOFF_CAP_S)
        self._stop = threading.Event()
        self._wait = wait or self._stop.wait
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
                self._wait(delay)
                continue
            self._backoff.reset()
            if not messages:
                continue
            certs, installed = self._certs(), self._installed()
            for message in messages:
                self._handle(message.body, message.message_id, certs, installed)
            try:
                self._queue.delete(messages)
            except SourceError as exc:
                log.warning(
                    "rotation events: %s (the messages come back and cost one extra check)", exc
                )

    def _handle(
        self,
        body: str,
        message_id: str,
        certs: Mapping[str, str],
        installed: Mapping[str, str],
    ) -> None:
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
            if (
                event.awscurrent_moved
                and event.version_id
                and installed.get(name) == event.version_id
            ):
                log.debug(
                    "rotation event %s: %s already has version %s",
                    event.describe(),
                    name,
                    event.version_id,
                    extra=cert_fields(name),
                )
                continue
            log.info(
                "rotation event %s: checking %s", event.describe(), name, extra=cert_fields(name)
            )
            self._mailbox.post_trigger(name)
