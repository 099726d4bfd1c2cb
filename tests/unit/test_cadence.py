"""The adaptive safety poll as schedule tests over simulated weeks: checks per day, and the worst
delay between AWSCURRENT moving and the host noticing when every doorbell and event is lost."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import List, Optional

import pytest

from certpull.cadence import (
    DAY_S,
    EXPIRED,
    EXPIRY_NEAR,
    HOUR_S,
    IDLE,
    POLL,
    ROTATION_DUE,
    CadenceConfig,
    RotationFacts,
    facts_from_describe,
    first_check,
    next_check,
)

CONFIG = CadenceConfig()
YEAR_S = 365 * DAY_S


@dataclass
class ScheduledSecret:
    """A secret rotated every `period_s`; rotation k happens at a random time in the window that
    ends at its NextRotationDate (AWS's NextRotationDate is the latest time it occurs)."""

    period_s: float = 30 * DAY_S
    window_s: float = DAY_S
    first_due: float = 10 * DAY_S
    seed: int = 1
    rotations: List[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)
        self.rotations = [
            self.first_due + k * self.period_s - rng.uniform(0, self.window_s) for k in range(40)
        ]

    def facts(self, now: float) -> RotationFacts:
        k = next(i for i, at in enumerate(self.rotations) if at > now)
        return RotationFacts(
            rotation_enabled=True,
            next_rotation_at=self.first_due + k * self.period_s,
            last_rotated_at=self.rotations[k - 1] if k else None,
            period_s=self.period_s,
            window_s=self.window_s,
        )


@dataclass
class Run:
    checks: List[float]
    days: float

    @property
    def per_day(self) -> float:
        return len(self.checks) / self.days

    def detection_delays(self, changes: List[float]) -> List[float]:
        """For each change, how long until the first check after it."""
        delays = []
        for at in changes:
            after = [t for t in self.checks if t >= at]
            if after:
                delays.append(after[0] - at)
        return delays


def simulate(
    days: float,
    signals_on: bool,
    secret: Optional[ScheduledSecret] = None,
    not_after: Optional[float] = YEAR_S,
    renew_on_change: bool = True,
    config: CadenceConfig = CONFIG,
    seed: int = 7,
) -> Run:
    """One host checking one certificate with the cadence; a detected rotation installs a leaf
    valid for a year from then. Every doorbell and event is lost: only the poll notices."""
    rng = random.Random(seed)
    now, checks, seen = 0.0, [], 0
    end = days * DAY_S
    while now < end:
        checks.append(now)
        facts = secret.facts(now) if secret else None
        if secret and renew_on_change:
            happened = sum(1 for at in secret.rotations if at <= now)
            if happened > seen:
                seen, not_after = happened, now + YEAR_S
        now += next_check(now, facts, not_after, signals_on, config).jittered(rng, config.jitter)
    return Run(checks, days)


# --- checks per day -----------------------------------------------------------------------------


def test_doorbell_on_a_monthly_rotation_costs_about_seven_checks_a_day() -> None:
    run = simulate(days=8 * 7, signals_on=True, secret=ScheduledSecret())
    # idle: 4 a day (every 6 h); each rotation's watch runs from 1 h before its 24 h window until
    # the rotation (NextRotationDate then moves on): about 13 h at one check per 600 s, 78 checks;
    # two rotations in 56 days.
    assert 6.0 <= run.per_day <= 8.0, run.per_day


def test_doorbell_on_without_rotation_is_four_checks_a_day() -> None:
    run = simulate(days=8 * 7, signals_on=True)
    assert 3.5 <= run.per_day <= 4.5, run.per_day


def test_nothing_rings_keeps_polling_every_five_minutes() -> None:
    run = simulate(days=7, signals_on=False, secret=ScheduledSecret())
    assert 288 * 0.95 <= run.per_day <= 288 * 1.05, run.per_day
    assert max(b - a for a, b in zip(run.checks, run.checks[1:])) <= 1.5 * 300


# --- worst case when every doorbell is lost ------------------------------------------------------


@pytest.mark.parametrize("window_h", [1, 4, 24])
def test_lost_doorbell_scheduled_rotation_is_noticed_within_fifteen_minutes(window_h: int) -> None:
    secret = ScheduledSecret(window_s=window_h * HOUR_S, seed=window_h)
    run = simulate(days=8 * 7, signals_on=True, secret=secret)
    changes = [at for at in secret.rotations if at < run.checks[-1]]
    delays = run.detection_delays(changes)
    assert len(delays) == len(changes) >= 2
    assert max(delays) <= 1.5 * CONFIG.rotation_poll_interval_s, max(delays)


def test_lost_doorbell_unscheduled_change_is_noticed_within_nine_hours() -> None:
    run = simulate(days=8 * 7, signals_on=True)
    rng = random.Random(3)
    changes = [rng.uniform(0, 55 * DAY_S) for _ in range(200)]
    delays = run.detection_delays(changes)
    assert max(delays) <= 1.5 * CONFIG.safety_poll_interval_s
    assert max(delays) > CONFIG.safety_poll_interval_s / 2  # the bound is not vacuous


def test_a_rotation_earlier_than_its_schedule_is_still_caught_by_the_idle_poll() -> None:
    # AWS may rotate "much sooner" than NextRotationDate (rotation turned off and on again).
    secret = ScheduledSecret()
    early = secret.first_due - 5 * DAY_S  # outside any watch
    run = simulate(days=20, signals_on=True, secret=secret)
    (delay,) = run.detection_delays([early])
    assert delay <= 1.5 * CONFIG.safety_poll_interval_s


def test_a_version_published_while_the_leaf_nears_expiry_is_installed_before_it_expires() -> None:
    # Rotation is broken (nothing scheduled, nothing rings); the leaf expires at day 20.
    not_after = 20 * DAY_S
    run = simulate(days=21, signals_on=True, not_after=not_after)
    rng = random.Random(5)
    for _ in range(500):
        published = rng.uniform(0, not_after - HOUR_S)  # up to an hour before expiry
        (delay,) = run.detection_delays([published])
        assert published + delay < not_after
    last_days = [t for t in run.checks if not_after - 2 * DAY_S <= t < not_after - DAY_S]
    assert 20 <= len(last_days) <= 28  # hourly in the expiry watch


def test_an_expired_leaf_is_checked_every_ten_minutes() -> None:
    run = simulate(days=2, signals_on=True, not_after=-DAY_S)
    assert 130 <= run.per_day <= 160  # 86400 / 600 = 144


# --- single decisions ---------------------------------------------------------------------------


def test_the_watch_opens_on_time() -> None:
    facts = RotationFacts(rotation_enabled=True, next_rotation_at=10 * DAY_S, window_s=4 * HOUR_S)
    opening = 10 * DAY_S - 4 * HOUR_S - CONFIG.rotation_lead_s
    before = next_check(opening - 2 * HOUR_S, facts, None, True, CONFIG)
    assert (before.reason, before.worst_s()) == (IDLE, 2 * HOUR_S)  # not the idle 9 h
    just_before = next_check(opening - 10.0, facts, None, True, CONFIG)
    assert just_before.worst_s() == CONFIG.min_interval_s
    inside = next_check(opening + 1.0, facts, None, True, CONFIG)
    assert (inside.reason, inside.delay_s) == (ROTATION_DUE, CONFIG.rotation_poll_interval_s)
    overdue = next_check(10 * DAY_S + CONFIG.rotation_grace_s + 1.0, facts, None, True, CONFIG)
    assert (overdue.reason, overdue.delay_s) == (IDLE, CONFIG.safety_poll_interval_s)


def test_without_next_rotation_date_the_schedule_is_inferred_from_the_last_rotation() -> None:
    facts = RotationFacts(rotation_enabled=True, last_rotated_at=0.0, period_s=30 * DAY_S)
    assert facts.expected_rotation_at() == 30 * DAY_S
    assert next_check(30 * DAY_S - HOUR_S, facts, None, True, CONFIG).reason == ROTATION_DUE
    disabled = RotationFacts(rotation_enabled=False, next_rotation_at=30 * DAY_S)
    assert disabled.expected_rotation_at() is None


def test_the_reasons_name_the_rule() -> None:
    assert next_check(0.0, None, None, False, CONFIG).reason == POLL
    assert next_check(0.0, None, 3 * DAY_S, True, CONFIG).reason == EXPIRY_NEAR
    assert next_check(0.0, None, -1.0, True, CONFIG).reason == EXPIRED


def test_jitter_stays_within_its_bounds_and_averages_the_interval() -> None:
    rng = random.Random(1)
    cadence = next_check(0.0, None, None, True, CONFIG)
    waits = [cadence.jittered(rng) for _ in range(5000)]
    assert min(waits) >= 0.5 * CONFIG.safety_poll_interval_s
    assert max(waits) <= cadence.worst_s() == 1.5 * CONFIG.safety_poll_interval_s
    assert abs(sum(waits) / len(waits) / CONFIG.safety_poll_interval_s - 1) < 0.02


def test_bad_intervals_are_refused() -> None:
    with pytest.raises(ValueError, match="safety_poll_interval_s must be positive"):
        CadenceConfig(safety_poll_interval_s=0)
    with pytest.raises(ValueError, match="jitter"):
        CadenceConfig(jitter=1.0)


# --- DescribeSecret -> facts --------------------------------------------------------------------


def test_facts_from_a_describe_secret_response() -> None:
    next_at = datetime(2026, 12, 1, 23, 59, 59, tzinfo=timezone.utc)
    facts = facts_from_describe(
        {
            "RotationEnabled": True,
            "NextRotationDate": next_at,
            "LastRotatedDate": next_at - timedelta(days=30),
            "LastChangedDate": next_at - timedelta(days=29),
            "RotationRules": {"AutomaticallyAfterDays": 30, "Duration": "3h"},
        }
    )
    assert facts.rotation_enabled
    assert facts.next_rotation_at == next_at.timestamp()
    assert facts.last_rotated_at == (next_at - timedelta(days=30)).timestamp()
    assert facts.period_s == 30 * DAY_S
    assert facts.window_s == 3 * HOUR_S


@pytest.mark.parametrize(
    ("rules", "period_s", "window_s"),
    [
        ({"ScheduleExpression": "rate(10 days)"}, 10 * DAY_S, DAY_S),
        ({"ScheduleExpression": "rate(4 hours)"}, 4 * HOUR_S, HOUR_S),
        ({"ScheduleExpression": "rate(4 hours)", "Duration": "2h"}, 4 * HOUR_S, 2 * HOUR_S),
        ({"ScheduleExpression": "cron(0 8 1 * ? *)", "Duration": "4h"}, None, 4 * HOUR_S),
        ({}, None, DAY_S),
    ],
)
def test_rotation_rules(rules: dict, period_s: Optional[float], window_s: float) -> None:  # type: ignore[type-arg]
    facts = facts_from_describe({"RotationEnabled": True, "RotationRules": rules})
    assert (facts.period_s, facts.window_s) == (period_s, window_s)


def test_facts_without_rotation() -> None:
    facts = facts_from_describe({"Name": "www", "LastChangedDate": 1.5e9, "NextRotationDate": None})
    assert facts == RotationFacts(last_changed_at=1.5e9)
    assert next_check(0.0, facts, None, True, CONFIG).delay_s == CONFIG.safety_poll_interval_s


# --- after a start ------------------------------------------------------------------------------


def test_first_check_is_quick_only_where_it_matters() -> None:
    rng = random.Random(2)
    new_host = [first_check(False, None, 0.0, CONFIG, rng) for _ in range(200)]
    assert max(new_host) <= CONFIG.startup_splay_s
    expiring = [first_check(True, 3 * DAY_S, 0.0, CONFIG, rng) for _ in range(200)]
    assert max(expiring) <= CONFIG.startup_splay_s
    healthy = [first_check(True, YEAR_S, 0.0, CONFIG, rng) for _ in range(200)]
    assert max(healthy) <= CONFIG.restart_splay_s and max(healthy) > CONFIG.startup_splay_s


def test_a_fleet_restart_stays_under_a_fifth_of_the_secrets_manager_quota() -> None:
    rng = random.Random(3)
    per_second = Counter(int(first_check(True, YEAR_S, 0.0, CONFIG, rng)) for _ in range(100_000))
    assert max(per_second.values()) <= 0.2 * 10_000
    assert sum(per_second.values()) == 100_000


# --- a version found by the safety poll waits for the waves -------------------------------------


def test_a_version_the_poll_finds_waits_until_the_rollout_had_its_hour() -> None:
    from certpull.cadence import poll_install_at

    facts = RotationFacts(last_changed_at=1000.0)
    assert poll_install_at(1600.0, facts, YEAR_S, True, CONFIG) == 1000.0 + HOUR_S
    assert poll_install_at(1000.0 + HOUR_S + 1, facts, YEAR_S, True, CONFIG) is None
    assert poll_install_at(1600.0, facts, YEAR_S, False, CONFIG) is None  # no doorbell: at once
    assert poll_install_at(1600.0, facts, 1600.0 + DAY_S, True, CONFIG) is None  # expiring
    assert poll_install_at(1600.0, RotationFacts(), YEAR_S, True, CONFIG) is None  # age unknown


def test_lost_doorbells_still_install_within_the_delay_plus_one_watch_gap() -> None:
    from certpull.cadence import poll_install_at

    secret = ScheduledSecret(seed=11)
    rng = random.Random(4)
    now, installs = 0.0, []
    seen = 0
    deferred_until = None
    while now < 100 * DAY_S:
        happened = [at for at in secret.rotations if at <= now]
        if len(happened) > seen:
            facts_now = RotationFacts(last_changed_at=happened[-1])
            at = poll_install_at(now, facts_now, YEAR_S, True, CONFIG)
            if at is None:
                installs.append(now - happened[-1])
                seen, deferred_until = len(happened), None
            else:
                deferred_until = at
        delay = next_check(now, secret.facts(now), YEAR_S, True, CONFIG).jittered(rng)
        if deferred_until is not None:
            delay = min(delay, max(0.0, deferred_until - now))
        now += max(delay, 1.0)
    assert len(installs) >= 3
    assert max(installs) <= CONFIG.poll_install_delay_s + 1.5 * CONFIG.rotation_poll_interval_s
    assert min(installs) >= CONFIG.poll_install_delay_s  # never before the waves had their hour
