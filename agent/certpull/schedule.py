"""When each certificate is checked next: jittered polling, event triggers, per-cert backoff.

Pure logic: the caller passes monotonic time (``time.monotonic()`` floats) and a ``random.Random``;
nothing here reads a clock or sleeps, so tests drive it with plain numbers.

Why this jitter scheme
----------------------
* First check after start: uniform in ``[0, initial_splay_s]``. Quick pickup after a boot or
  an upgrade, yet a fleet restarted at once does not call Secrets Manager in the same second.
* Regular checks: ``interval * uniform(1 - jitter, 1 + jitter)`` with ``jitter = 0.5`` by
  default. The mean gap is exactly the interval, so the call rate per certificate is
  ``1 / interval``; and because every gap is spread over a full interval's width, a fleet
  that starts (or recovers) in lockstep is spread evenly over the interval after one cycle
  instead of drifting apart slowly (a +-10 % jitter needs dozens of cycles). The worst-case
  gap is ``1.5 * interval``; events (``trigger``) give promptness, polling only reconciles.
* Failures: AWS's "equal jitter" backoff. The ceiling doubles per consecutive failure,
  ``min(max_backoff_s, base_backoff_s * 2 ** (n - 1))``, and the delay is uniform in
  ``[ceiling / 2, ceiling]``, so hosts that failed together (an outage, a throttle) retry spread
  out, and never sooner than half the ceiling. Full jitter (``[0, ceiling]``) was measured to
  make a throttled fleet call about 100 times more often than its regular polling in the first
  minutes (bench/bench_faults.py): a throttle must slow a fleet down, not speed it up. The base
  is 30 s (or ``max_backoff_s`` if smaller). Success resets the count.
* Each certificate has its own state: one failing certificate never delays the others.

Contract with the run loop: every name returned by ``due()`` is "running" until the caller
reports ``record_success`` or ``record_failure`` for it; a trigger that arrives while it runs
is kept and runs after the current check, because that check may have read the old version.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional

DEFAULT_INTERVAL_S = 300.0
DEFAULT_RECONCILE_INTERVAL_S = 3600.0
DEFAULT_MAX_BACKOFF_S = 900.0
DEFAULT_BASE_BACKOFF_S = 30.0
DEFAULT_INITIAL_SPLAY_S = 30.0
DEFAULT_JITTER = 0.5
MIN_BASE_BACKOFF_S = 5.0


class Backoff:
    """Exponential backoff with equal jitter; one instance per thing that fails on its own."""

    def __init__(
        self,
        rng: random.Random,
        base_s: float = DEFAULT_BASE_BACKOFF_S,
        cap_s: float = DEFAULT_MAX_BACKOFF_S,
        min_delay_s: float = 1.0,
    ) -> None:
        if base_s < MIN_BASE_BACKOFF_S:
            raise ValueError(
                f"backoff base must be at least {MIN_BASE_BACKOFF_S:g} s, got {base_s:g}"
            )
        if cap_s < base_s:
            raise ValueError(f"max backoff ({cap_s:g} s) is shorter than its base ({base_s:g} s)")
        self._rng = rng
        self.base_s = base_s
        self.cap_s = cap_s
        self.min_delay_s = min(min_delay_s, base_s)
        self.failures = 0

    def ceiling(self, failures: int) -> float:
        """The largest delay after ``failures`` consecutive failures (``failures >= 1``)."""
        exponent = min(max(failures, 1) - 1, 60)  # 2**60 * 5 s is far past any cap
        return float(min(self.cap_s, self.base_s * 2**exponent))

    def next_delay(self) -> float:
        """Count one more failure and return how long to wait before the next attempt."""
        self.failures += 1
        ceiling = self.ceiling(self.failures)
        return max(self.min_delay_s, self._rng.uniform(ceiling / 2, ceiling))

    def reset(self) -> None:
        self.failures = 0


@dataclass(frozen=True)
class ScheduleSnapshot:
    """What ``certpull status`` shows about one certificate's schedule (monotonic seconds).

    Convert to wall time with ``time.time() + (t - time.monotonic())``.
    """

    next_check: float
    consecutive_failures: int
    backoff_until: Optional[float]
    pending_trigger: Optional[float]
    running: bool


@dataclass
class _CertSchedule:
    backoff: Backoff
    next_regular: float
    next_triggered: Optional[float] = None
    backoff_until: Optional[float] = None
    running: bool = False

    def next_check(self) -> float:
        if self.next_triggered is None:
            return self.next_regular
        return min(self.next_regular, self.next_triggered)


class Scheduler:
    """Per-certificate due times. Single-threaded: the run loop owns it."""

    def __init__(
        self,
        rng: random.Random,
        interval_s: float = DEFAULT_INTERVAL_S,
        initial_splay_s: float = DEFAULT_INITIAL_SPLAY_S,
        max_backoff_s: float = DEFAULT_MAX_BACKOFF_S,
        base_backoff_s: float = DEFAULT_BASE_BACKOFF_S,
        jitter: float = DEFAULT_JITTER,
    ) -> None:
        if not 0.0 <= jitter < 1.0:
            raise ValueError(f"jitter must be in [0, 1), got {jitter:g}")
        if initial_splay_s < 0:
            raise ValueError(f"initial splay must not be negative, got {initial_splay_s:g} s")
        base_backoff_s = min(base_backoff_s, max_backoff_s)  # a small cap lowers the base too
        Backoff(rng, base_backoff_s, max_backoff_s)  # validate once, before any cert is added
        self._rng = rng
        self._interval_s = _positive_interval(interval_s)
        self._initial_splay_s = initial_splay_s
        self._max_backoff_s = max_backoff_s
        self._base_backoff_s = base_backoff_s
        self._jitter = jitter
        self._certs: Dict[str, _CertSchedule] = {}

    @property
    def interval_s(self) -> float:
        return self._interval_s

    def names(self) -> List[str]:
        return sorted(self._certs)

    # -- the cert set ------------------------------------------------------------------------

    def add(self, name: str, now: float, first_in_s: Optional[float] = None) -> None:
        """Start scheduling ``name``: first check within ``initial_splay_s``, or after
        ``first_in_s`` (the adaptive poll's ``cadence.first_check``). No-op if known."""
        if name in self._certs:
            return
        if first_in_s is None:
            first_in_s = self._rng.uniform(0.0, self._initial_splay_s)
        first = now + max(0.0, first_in_s)
        backoff = Backoff(self._rng, self._base_backoff_s, self._max_backoff_s)
        self._certs[name] = _CertSchedule(backoff=backoff, next_regular=first)

    def remove(self, name: str) -> None:
        self._certs.pop(name, None)

    def sync_names(self, names: Iterable[str], now: float) -> None:
        """Make the scheduled set equal ``names`` (after SIGHUP); kept names keep their state."""
        wanted = set(names)
        for name in set(self._certs) - wanted:
            self.remove(name)
        for name in sorted(wanted - set(self._certs)):
            self.add(name, now)

    def set_interval(self, interval_s: float, now: float) -> None:
        """Change the polling interval (events on: reconcile interval; SIGHUP).

        A longer interval takes effect at each cert's next reschedule; a shorter one also
        pulls in regular checks that are now further away than the new interval allows.
        """
        self._interval_s = _positive_interval(interval_s)
        latest = now + self._interval_s * (1.0 + self._jitter)
        for cert in self._certs.values():
            if cert.next_regular > latest and cert.backoff_until is None:
                cert.next_regular = now + self._regular_gap()

    # -- what to run -------------------------------------------------------------------------

    def due(self, now: float) -> List[str]:
        """Names whose check is due, in due order; they count as running until recorded."""
        ready = [
            (cert.next_check(), name)
            for name, cert in self._certs.items()
            if not cert.running and cert.next_check() <= now
        ]
        ready.sort()
        for _, name in ready:
            cert = self._certs[name]
            cert.running = True
            cert.next_triggered = None  # this check serves every trigger received so far
        return [name for _, name in ready]

    def next_wakeup(self, now: float) -> float:
        """Monotonic time of the earliest check not yet running (``now + interval`` if none)."""
        times = [cert.next_check() for cert in self._certs.values() if not cert.running]
        if not times:
            return now + self._interval_s
        return max(now, min(times))

    # -- outcomes ----------------------------------------------------------------------------

    def record_success(self, name: str, now: float, next_in_s: Optional[float] = None) -> None:
        """The check passed (installed or already current): reset backoff, next regular check
        after the jittered interval, or after ``next_in_s`` (already jittered, e.g. from
        ``cadence.next_check(...).jittered(rng)``)."""
        cert = self._certs.get(name)
        if cert is None:
            return
        cert.running = False
        cert.backoff.reset()
        cert.backoff_until = None
        gap = self._regular_gap() if next_in_s is None else max(0.0, next_in_s)
        cert.next_regular = now + gap

    def record_failure(self, name: str, now: float) -> float:
        """The check failed: back off with jitter. Returns the delay in seconds."""
        cert = self._certs.get(name)
        if cert is None:
            return 0.0
        cert.running = False
        delay = cert.backoff.next_delay()
        cert.backoff_until = now + delay
        cert.next_regular = now + delay
        return delay

    def record_deferred(self, name: str, now: float, polled: bool = False) -> None:
        """The pass reached its deadline before this check: due again at once, no backoff,
        the way it was due (``polled``: as a regular check, so a poll stays a poll)."""
        cert = self._certs.get(name)
        if cert is None:
            return
        cert.running = False
        if polled:
            cert.next_regular = now
        else:
            cert.next_triggered = now

    # -- triggers ----------------------------------------------------------------------------

    def trigger(self, name: str, now: float, splay_s: float) -> Optional[float]:
        """An event names ``name``: check it after a random splay in ``[0, splay_s]``.

        Coalesces: while a trigger is pending, more triggers change nothing (no later time,
        no second run). A trigger overrides a backoff, since a new version may fix what
        failed. Returns the time the check is due, or None for an unknown name. How to size
        the splay for a fleet: see ``event_queue.py``.
        """
        cert = self._certs.get(name)
        if cert is None:
            return None
        if cert.next_triggered is None:
            cert.next_triggered = now + self._rng.uniform(0.0, max(0.0, splay_s))
        return cert.next_triggered

    def check_now(self, name: str, now: float) -> None:
        """``check-now`` asked (it waited its host splay already): due now, even when a later
        trigger (a notBefore) was pending; no splay, no backoff wait."""
        cert = self._certs.get(name)
        if cert is not None:
            cert.next_triggered = (
                now if cert.next_triggered is None else min(now, cert.next_triggered)
            )

    def triggered(self, now: float) -> List[str]:
        """Names whose pending trigger is due (asked for, rather than due by the regular poll);
        call before ``due()``, which consumes the triggers."""
        return sorted(
            name
            for name, cert in self._certs.items()
            if not cert.running and cert.next_triggered is not None and cert.next_triggered <= now
        )

    def trigger_all(self, now: float) -> None:
        """Check everything now (SIGUSR1): an operator asked, so no splay and no backoff wait."""
        for cert in self._certs.values():
            cert.next_triggered = (
                now if cert.next_triggered is None else min(now, cert.next_triggered)
            )

    def snapshot(self, name: str) -> Optional[ScheduleSnapshot]:
        cert = self._certs.get(name)
        if cert is None:
            return None
        return ScheduleSnapshot(
            next_check=cert.next_check(),
            consecutive_failures=cert.backoff.failures,
            backoff_until=cert.backoff_until,
            pending_trigger=cert.next_triggered,
            running=cert.running,
        )

    def _regular_gap(self) -> float:
        return self._interval_s * self._rng.uniform(1.0 - self._jitter, 1.0 + self._jitter)


def _positive_interval(interval_s: float) -> float:
    if interval_s <= 0:
        raise ValueError(f"polling interval must be positive, got {interval_s:g} s")
    return float(interval_s)
