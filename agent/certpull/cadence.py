"""The adaptive safety poll: how long a certificate may go unchecked, from what AWS and the leaf say.

Pure: plain numbers (wall-clock epoch seconds) and a ``random.Random`` in, seconds out; nothing
here reads a clock or calls AWS, so schedule tests drive it over simulated weeks.

With a doorbell (SSM Run Command asking the agent to check) or SQS rotation events, a change is
announced, and polling is only the safety net for an announcement that was lost. Checking every
few minutes is then money spent for nothing most of the month, yet some moments deserve a closer
look. ``next_check`` returns the longest the agent may wait before the next DescribeSecret:

1. Base: ``safety_poll_interval_s`` (6 h) when something rings, ``poll_interval_s`` (300 s) when
   nothing does (then polling is the only way to learn of a change, and the rules below can only
   shorten it).
2. Rotation watch. DescribeSecret's ``NextRotationDate`` is the *latest* time the next rotation
   occurs (it may occur up to a rotation window earlier: ``RotationRules.Duration``, or the rest of
   the UTC day for a schedule in days). From ``rotation_lead_s`` before that window opens until
   ``rotation_grace_s`` after ``NextRotationDate``, check every ``rotation_poll_interval_s``
   (600 s) on average; before the watch, never sleep past its opening. Without ``NextRotationDate``, the
   expected time is ``LastRotatedDate`` (else ``LastChangedDate``) plus the schedule's period.
   A rotation overdue past the grace is no longer watched (the next DescribeSecret brings the
   new date).
3. Expiry watch. Within ``expiry_watch_days`` of the installed leaf's notAfter, wait at most
   ``expiry_poll_interval_s`` (1 h) on average, and never more than a quarter of the time left
   (floored at ``min_interval_s``); once expired, every ``rotation_poll_interval_s``. So a version published
   while every doorbell is lost is still installed before the old leaf expires, unless it comes
   within minutes of expiry.

Each interval is a mean, jittered as the scheduler does: ``Cadence.jittered`` draws the wait
uniformly in ``[delay * (1 - jitter), delay * (1 + jitter)]`` (jitter 0.5: a check every 6 h on
average, at most 9 h apart), so checks per day are ``86400 / delay``. Deadlines are hard: the wait
never passes ``latest_s`` (the opening of a rotation watch, a quarter of the time left before
notAfter).

``poll_install_at`` keeps the waves meaningful: with a doorbell on, a new version that a safety
poll finds (rather than the doorbell) is installed only once it is ``poll_install_delay_s`` (1 h)
old by its ``LastChangedDate``, so the runbook's canary wave and soak decide where it lands first;
a leaf about to expire (``urgent_before_expiry_days``) is replaced at once. With every doorbell
lost, a scheduled rotation is therefore installed within ``poll_install_delay_s`` plus the watch's
worst gap (900 s).

``first_check`` spreads the checks after a start: a host with nothing installed, or with a leaf
about to expire, checks within ``startup_splay_s`` (10 s); a healthy host within
``restart_splay_s`` (300 s), so a fleet restarted at once does not spend its Secrets Manager quota
in ten seconds.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping, Optional

DAY_S = 86400.0
HOUR_S = 3600.0

IDLE = "idle"
POLL = "poll"
ROTATION_DUE = "rotation due"
EXPIRY_NEAR = "expiry near"
EXPIRED = "expired"

_DURATION = re.compile(r"^\s*(\d+)\s*h\s*$")
_RATE = re.compile(r"^\s*rate\(\s*(\d+)\s+(hour|hours|day|days)\s*\)\s*$")


@dataclass(frozen=True)
class RotationFacts:
    """What DescribeSecret says about a secret's rotation (epoch seconds; None when absent)."""

    rotation_enabled: bool = False
    next_rotation_at: Optional[float] = None  # the latest time the next rotation occurs
    last_rotated_at: Optional[float] = None
    last_changed_at: Optional[float] = None
    period_s: Optional[float] = None  # AutomaticallyAfterDays, or a rate() schedule
    window_s: float = DAY_S  # how long before next_rotation_at the rotation may start

    def expected_rotation_at(self) -> Optional[float]:
        """The latest time the next rotation occurs, as DescribeSecret says or as its schedule implies."""
        if not self.rotation_enabled:
            return None
        if self.next_rotation_at is not None:
            return self.next_rotation_at
        last = self.last_rotated_at if self.last_rotated_at is not None else self.last_changed_at
        if last is not None and self.period_s:
            return last + self.period_s
        return None


def facts_from_describe(response: Mapping[str, Any]) -> RotationFacts:
    """A DescribeSecret response (boto3 datetimes or epoch numbers) -> ``RotationFacts``."""
    rules = response.get("RotationRules")
    rules = rules if isinstance(rules, Mapping) else {}
    period_s: Optional[float] = None
    window_s = DAY_S
    days = rules.get("AutomaticallyAfterDays")
    if isinstance(days, (int, float)) and days > 0:
        period_s = float(days) * DAY_S
    rate = _RATE.match(str(rules.get("ScheduleExpression") or ""))
    if rate:
        unit_s = HOUR_S if rate.group(2).startswith("hour") else DAY_S
        period_s = int(rate.group(1)) * unit_s
        if unit_s == HOUR_S:
            window_s = HOUR_S  # AWS closes an hours-based window after one hour by default
    duration = _DURATION.match(str(rules.get("Duration") or ""))
    if duration:
        window_s = int(duration.group(1)) * HOUR_S
    return RotationFacts(
        rotation_enabled=bool(response.get("RotationEnabled")),
        next_rotation_at=_epoch(response.get("NextRotationDate")),
        last_rotated_at=_epoch(response.get("LastRotatedDate")),
        last_changed_at=_epoch(response.get("LastChangedDate")),
        period_s=period_s,
        window_s=window_s,
    )


@dataclass(frozen=True)
class CadenceConfig:
    """The intervals of the adaptive poll: the `[agent]` keys of the same names
    (``fleet_loop.cadence_config`` builds it from an `AgentConfig`)."""

    poll_interval_s: float = 300.0
    safety_poll_interval_s: float = 6 * HOUR_S
    rotation_poll_interval_s: float = 600.0
    rotation_lead_s: float = HOUR_S
    rotation_grace_s: float = 2 * HOUR_S
    poll_install_delay_s: float = HOUR_S
    expiry_watch_days: float = 14.0
    expiry_poll_interval_s: float = HOUR_S
    min_interval_s: float = 60.0
    startup_splay_s: float = 10.0
    restart_splay_s: float = 300.0
    urgent_before_expiry_days: float = 7.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        for name in (
            "poll_interval_s",
            "safety_poll_interval_s",
            "rotation_poll_interval_s",
            "expiry_poll_interval_s",
            "min_interval_s",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name):g}")
        if not 0.0 <= self.jitter < 1.0:
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter:g}")


@dataclass(frozen=True)
class Cadence:
    """The mean wait before the next check, a hard deadline, and which rule set the wait."""

    delay_s: float
    latest_s: float
    reason: str

    def jittered(self, rng: random.Random, jitter: float = 0.5) -> float:
        """The actual wait: uniform in ``delay * [1 - jitter, 1 + jitter]``, never past ``latest_s``."""
        return min(
            self.latest_s, rng.uniform(self.delay_s * (1.0 - jitter), self.delay_s * (1.0 + jitter))
        )

    def worst_s(self, jitter: float = 0.5) -> float:
        """The longest wait ``jittered`` can return."""
        return min(self.latest_s, self.delay_s * (1.0 + jitter))


def next_check(
    now: float,
    facts: Optional[RotationFacts],
    not_after: Optional[float],
    signals_on: bool,
    config: CadenceConfig,
) -> Cadence:
    """The wait after a successful check at ``now`` (steps as in the module docstring)."""
    base = config.safety_poll_interval_s if signals_on else config.poll_interval_s  # (1)
    delay, reason = base, IDLE if signals_on else POLL
    latest = float("inf")
    expected = facts.expected_rotation_at() if facts is not None else None
    if expected is not None and facts is not None:  # (2)
        watch_start = expected - facts.window_s - config.rotation_lead_s
        watch_end = expected + config.rotation_grace_s
        if now < watch_start:
            latest = max(config.min_interval_s, watch_start - now)
        elif now <= watch_end and config.rotation_poll_interval_s < delay:
            delay, reason = config.rotation_poll_interval_s, ROTATION_DUE
    if not_after is not None:  # (3)
        left = not_after - now
        if left <= 0:
            if config.rotation_poll_interval_s < delay:
                delay, reason = config.rotation_poll_interval_s, EXPIRED
        elif left <= config.expiry_watch_days * DAY_S:
            latest = min(latest, max(config.min_interval_s, left / 4.0))
            if config.expiry_poll_interval_s < delay:
                delay, reason = config.expiry_poll_interval_s, EXPIRY_NEAR
    return Cadence(delay_s=delay, latest_s=latest, reason=reason)


def poll_install_at(
    now: float,
    facts: Optional[RotationFacts],
    not_after: Optional[float],
    signals_on: bool,
    config: CadenceConfig,
) -> Optional[float]:
    """When a version found by a safety poll may be installed (epoch s); None: now."""
    if not signals_on or facts is None or facts.last_changed_at is None:
        return None
    if not_after is not None and not_after - now <= config.urgent_before_expiry_days * DAY_S:
        return None
    at = facts.last_changed_at + config.poll_install_delay_s
    return at if at > now else None


def first_check(
    installed: bool,
    not_after: Optional[float],
    now: float,
    config: CadenceConfig,
    rng: random.Random,
) -> float:
    """Seconds after a start until a certificate's first check."""
    urgent = not_after is not None and not_after - now <= config.urgent_before_expiry_days * DAY_S
    splay = config.startup_splay_s if not installed or urgent else config.restart_splay_s
    return rng.uniform(0.0, max(0.0, splay))


def _epoch(value: Any) -> Optional[float]:
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
        return float(aware.timestamp())
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None
