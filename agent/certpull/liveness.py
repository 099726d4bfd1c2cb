"""Proof of life for systemd's watchdog, from a thread that one slow call cannot block.

The main loop grants itself leases: "alive, and the next beat comes within ``budget_s``" (a
pass's lease is its deadline plus the longest step it may still be inside). A small daemon
thread sends WATCHDOG=1 every half WatchdogSec while the lease holds, so a pass waiting on a
stalled AWS endpoint (each call bounded by its timeouts) is not taken for a hang. A loop stuck
past its lease stops the pings, and systemd kills and restarts the agent after WatchdogSec; a
stopped process (SIGSTOP) stops this thread too.

The thread also bounds readiness on a fresh host: ``ready_by(at, status)`` sends READY=1 at
``at`` unless the loop sent it first (`ready`), so a slow first install never holds boot longer.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Optional

from certpull.config import AgentConfig
from certpull.notify import Notifier

log = logging.getLogger(__name__)

IDLE_TICK_S = 1.0  # how often the thread looks when only a deferred READY is waiting


# Lease slack for quick local work between waits (drift repair, a config reload's recovery).
IDLE_SLACK_S = 10.0


class Liveness:
    """Leases from the main loop -> WATCHDOG=1 from a thread; the first READY=1, bounded."""

    def __init__(self, notifier: Notifier, clock: Callable[[], float] = time.monotonic) -> None:
        self._notifier = notifier
        self._clock = clock
        self._lock = threading.Lock()
        self._lease_until = float("-inf")
        self._ready_sent = False
        self._ready_at: Optional[float] = None
        self._ready_status: Optional[str] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # --- the main loop's side --------------------------------------------------------------

    def beat(self, budget_s: float) -> None:
        """The loop is alive and beats again within ``budget_s`` (or it is hung)."""
        with self._lock:
            self._lease_until = self._clock() + max(0.0, budget_s)

    def ready(self, status: Optional[str] = None) -> bool:
        """The first READY=1 from the loop; False when the thread already sent it (late)."""
        with self._lock:
            if self._ready_sent:
                return False
            self._ready_sent = True
            self._ready_at = None
        self._notifier.ready(status)
        return True

    def assume_ready(self) -> None:
        """READY=1 went out before the loop began (startup.py): never send it again."""
        with self._lock:
            self._ready_sent, self._ready_at = True, None

    def ready_by(self, at: float, status: str) -> None:
        """Send READY=1 at monotonic time ``at`` if the loop has not sent it by then."""
        with self._lock:
            if not self._ready_sent:
                self._ready_at, self._ready_status = at, status

    @property
    def ready_sent(self) -> bool:
        """READY=1 is out: systemd starts what is ordered after the agent (httpd at boot)."""
        with self._lock:
            return self._ready_sent

    # --- the thread ------------------------------------------------------------------------

    def tick(self) -> float:
        """One look: WATCHDOG=1 while the lease holds, a due deferred READY=1; the next wait."""
        now = self._clock()
        with self._lock:
            alive = now < self._lease_until
            late_ready = (
                self._ready_at is not None and now >= self._ready_at and not self._ready_sent
            )
            if late_ready:
                self._ready_sent, self._ready_at = True, None
            status = self._ready_status
        if late_ready:
            log.warning("no certificate installed yet; READY=1 anyway, so that boot goes on")
            self._notifier.ready(status)
        if alive:
            self._notifier.watchdog()
        elif self._notifier.watchdog_interval_s() is not None:
            log.debug("watchdog lease expired %.1f s ago: not pinging", now - self._lease_until)
        interval = self._notifier.watchdog_interval_s() or IDLE_TICK_S
        with self._lock:
            if self._ready_at is not None:
                interval = min(interval, max(0.05, self._ready_at - now))
        return min(interval, IDLE_TICK_S * 10)

    def start(self) -> None:
        """Start the thread, when systemd asked for a watchdog or a READY is deferred."""
        if self._thread is not None or not self._notifier.enabled:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="certpull-liveness", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        wait = 0.0
        while not self._stop.wait(wait):
            try:
                wait = self.tick()
            except Exception:  # never let the thread die quietly: the watchdog would fire
                log.exception("liveness thread")
                wait = IDLE_TICK_S


def call_bound_s(agent: AgentConfig) -> float:
    """The longest one AWS call may take: every attempt's timeouts plus the retry backoff
    (botocore's standard mode waits at most 2**attempt s, capped at 20 s, between them)."""
    backoff = sum(min(20.0, 2.0**i) for i in range(1, agent.max_attempts))
    return agent.max_attempts * (agent.connect_timeout_s + agent.read_timeout_s) + backoff


def step_bound_s(agent: AgentConfig) -> float:
    """The longest local step: config test, reload, start and a second reload, two verifies."""
    return 4 * agent.command_timeout_s + 2 * agent.verify_timeout_s + IDLE_SLACK_S


def overrun_bound_s(agent: AgentConfig) -> float:
    """How far a pass may run past its deadline: the certificate it is inside (AssumeRole,
    DescribeSecret, GetSecretValue, and two X.509 worker calls: the installed leaf, the new
    bundle) and the install step after it."""
    return 3 * call_bound_s(agent) + 2 * agent.command_timeout_s + step_bound_s(agent)
