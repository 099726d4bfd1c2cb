"""Scheduler: jittered polling, coalescing triggers, per-cert backoff. Pure: numbers in, numbers out."""

from __future__ import annotations

import random
import statistics

import pytest

from certpull.schedule import Backoff, Scheduler, ScheduleSnapshot


def make(seed: int = 1, **kwargs: float) -> Scheduler:
    params = {"interval_s": 300.0, "initial_splay_s": 30.0, "max_backoff_s": 900.0}
    params.update(kwargs)
    return Scheduler(random.Random(seed), **params)


def snap(s: Scheduler, name: str) -> ScheduleSnapshot:
    result = s.snapshot(name)
    assert result is not None
    return result


def test_first_check_is_spread_over_the_initial_splay() -> None:
    firsts = []
    for seed in range(200):
        s = make(seed)
        s.add("www", now=1000.0)
        snap = s.snapshot("www")
        assert snap is not None
        firsts.append(snap.next_check - 1000.0)
    assert all(0.0 <= f <= 30.0 for f in firsts)
    assert max(firsts) - min(firsts) > 20.0  # actually spread, not constant


def test_nothing_due_before_first_check_then_due_once() -> None:
    s = make(initial_splay_s=0.0)
    s.add("www", now=0.0)
    assert s.due(now=0.0) == ["www"]
    assert s.due(now=0.0) == []  # running until recorded
    s.record_success("www", now=1.0)
    snap = s.snapshot("www")
    assert snap is not None and not snap.running


def test_regular_gap_has_mean_interval_and_spans_the_interval() -> None:
    s = make(seed=7, initial_splay_s=0.0)
    s.add("www", now=0.0)
    gaps = []
    now = 0.0
    for _ in range(2000):
        assert s.due(now) == ["www"]
        s.record_success("www", now)
        nxt = s.next_wakeup(now)
        gaps.append(nxt - now)
        now = nxt
    assert min(gaps) >= 150.0 and max(gaps) <= 450.0
    assert abs(statistics.mean(gaps) - 300.0) < 10.0
    assert max(gaps) - min(gaps) > 250.0  # a lockstep fleet is spread within one cycle


def test_lockstep_fleet_spreads_after_one_cycle() -> None:
    hosts = [make(seed) for seed in range(500)]
    next_checks = []
    for s in hosts:
        s.add("www", now=0.0)
        s.due(now=30.0)
        s.record_success("www", now=30.0)  # every host checked at the same second
        snap = s.snapshot("www")
        assert snap is not None
        next_checks.append(snap.next_check)
    # bucket the next checks per minute over the 150..450 s band: every minute gets calls
    buckets = {int(t // 60) for t in next_checks}
    assert buckets >= {3, 4, 5, 6}


@pytest.mark.parametrize(
    ("failures", "ceiling"),
    [(1, 5.0), (2, 10.0), (3, 20.0), (4, 40.0), (8, 640.0), (9, 900.0), (30, 900.0), (5000, 900.0)],
)
def test_backoff_ceiling_doubles_up_to_cap(failures: int, ceiling: float) -> None:
    assert Backoff(random.Random(0), base_s=5.0, cap_s=900.0).ceiling(failures) == ceiling


def test_backoff_delays_are_equal_jitter_within_the_upper_half_of_the_ceiling() -> None:
    delays = {n: [] for n in range(1, 12)}  # type: ignore[var-annotated]
    for seed in range(300):
        b = Backoff(random.Random(seed), base_s=5.0, cap_s=900.0)
        for n in range(1, 12):
            delays[n].append(b.next_delay())
    for n, ds in delays.items():
        ceiling = min(900.0, 5.0 * 2 ** (n - 1))
        assert all(ceiling / 2 <= d <= ceiling for d in ds)
    assert 600.0 < statistics.mean(delays[11]) < 750.0  # capped ceiling, spread over its upper half
    assert min(delays[11]) < 500.0 and max(delays[11]) > 800.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"base_s": 1.0}, "at least 5"),
        ({"base_s": 10.0, "cap_s": 5.0}, "shorter than its base"),
    ],
)
def test_backoff_rejects_bad_settings(kwargs: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError, match=message):
        Backoff(random.Random(0), **kwargs)


def test_failure_backs_off_and_success_resets() -> None:
    s = make(initial_splay_s=0.0)
    s.add("www", now=0.0)
    now = 0.0
    for n in range(1, 6):
        assert s.due(now) == ["www"]
        delay = s.record_failure("www", now)
        snap = s.snapshot("www")
        assert snap is not None
        assert snap.consecutive_failures == n
        assert snap.backoff_until == now + delay
        assert s.due(now + delay - 0.001) == []
        now += delay
    s.due(now)
    s.record_success("www", now)
    snap = s.snapshot("www")
    assert snap is not None
    assert snap.consecutive_failures == 0 and snap.backoff_until is None
    assert snap.next_check >= now + 150.0


def test_one_failing_cert_does_not_delay_the_others() -> None:
    s = make(initial_splay_s=0.0)
    s.add("bad", now=0.0)
    s.add("good", now=0.0)
    assert sorted(s.due(0.0)) == ["bad", "good"]
    s.record_success("good", 0.0)
    s.record_failure("bad", 0.0)
    good_next = snap(s, "good").next_check
    now = 0.0
    for _ in range(10):
        now = s.next_wakeup(now)
        for name in s.due(now):
            assert name == "bad" or now >= good_next
            if name == "bad":
                s.record_failure(name, now)
            else:
                s.record_success(name, now)
    assert snap(s, "bad").consecutive_failures >= 6
    assert snap(s, "good").consecutive_failures == 0


def test_trigger_runs_after_splay_and_coalesces() -> None:
    s = make(initial_splay_s=0.0)
    s.add("www", now=0.0)
    s.due(0.0)
    s.record_success("www", 0.0)  # next regular check >= 150 s away
    first = s.trigger("www", now=10.0, splay_s=5.0)
    assert first is not None and 10.0 <= first <= 15.0
    # more events inside the splay: same time, not later, no second run
    for t in (10.5, 11.0, first - 0.01):
        assert s.trigger("www", now=t, splay_s=5.0) == first
    assert s.due(first - 0.01) == []
    assert s.due(first) == ["www"]
    s.record_success("www", first)
    assert s.due(first + 20.0) == []  # the coalesced events gave exactly one run


def test_trigger_during_a_running_check_runs_again_afterwards() -> None:
    s = make(initial_splay_s=0.0)
    s.add("www", now=0.0)
    assert s.due(0.0) == ["www"]
    due_at = s.trigger("www", now=1.0, splay_s=5.0)  # arrives while the check runs
    assert due_at is not None
    s.record_success("www", 2.0)
    assert s.due(max(due_at, 2.0)) == ["www"]


def test_trigger_overrides_backoff_and_unknown_name_is_ignored() -> None:
    s = make(initial_splay_s=0.0)
    s.add("www", now=0.0)
    s.due(0.0)
    for _ in range(8):
        s.record_failure("www", 0.0)
    assert s.trigger("nope", now=1.0, splay_s=5.0) is None
    due_at = s.trigger("www", now=1.0, splay_s=0.0)
    assert due_at == 1.0
    assert s.due(1.0) == ["www"]


def test_trigger_all_makes_everything_due_now() -> None:
    s = make()
    for name in ("a", "b", "c"):
        s.add(name, now=0.0)
    s.trigger_all(now=0.0)
    assert s.due(0.0) == ["a", "b", "c"]


def test_next_wakeup_is_earliest_and_ignores_running() -> None:
    s = make(initial_splay_s=0.0)
    assert s.next_wakeup(100.0) == 400.0  # no certs: one interval
    s.add("a", now=0.0)
    s.add("b", now=0.0)
    s.due(0.0)
    s.record_success("a", 0.0)
    a_next = snap(s, "a").next_check
    assert s.next_wakeup(1.0) == a_next  # "b" is running: not a wake-up reason
    assert s.next_wakeup(a_next + 5.0) == a_next + 5.0  # overdue: wake now, never in the past


def test_sync_names_keeps_state_of_kept_names() -> None:
    s = make(initial_splay_s=0.0)
    s.sync_names(["a", "b"], now=0.0)
    s.due(0.0)
    s.record_failure("a", 0.0)
    s.record_success("b", 0.0)
    s.sync_names(["a", "c"], now=10.0)
    assert s.names() == ["a", "c"]
    assert snap(s, "a").consecutive_failures == 1
    assert s.snapshot("b") is None
    assert s.record_failure("b", 11.0) == 0.0  # removed while running: ignored


def test_set_interval_shorter_pulls_far_checks_in_longer_waits() -> None:
    s = make(initial_splay_s=0.0, interval_s=3600.0)
    s.add("www", now=0.0)
    s.due(0.0)
    s.record_success("www", 0.0)
    far = snap(s, "www").next_check
    assert far >= 1800.0
    s.set_interval(300.0, now=10.0)
    near = snap(s, "www").next_check
    assert 10.0 + 150.0 <= near <= 10.0 + 450.0
    s.set_interval(3600.0, now=20.0)
    assert snap(s, "www").next_check == near  # lengthening waits for the next reschedule


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"interval_s": 0.0}, "must be positive"),
        ({"jitter": 1.0}, "jitter"),
        ({"initial_splay_s": -1.0}, "negative"),
        ({"base_backoff_s": 2.0}, "at least 5"),
    ],
)
def test_scheduler_rejects_bad_settings(kwargs: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError, match=message):
        make(**kwargs)


def test_the_adaptive_poll_sets_the_first_and_next_checks() -> None:
    s = make(initial_splay_s=30.0, interval_s=300.0)
    s.add("www", now=0.0, first_in_s=120.0)
    assert snap(s, "www").next_check == 120.0
    assert s.due(119.0) == [] and s.due(120.0) == ["www"]
    s.record_success("www", 120.0, next_in_s=21600.0)
    assert snap(s, "www").next_check == 120.0 + 21600.0
    s.trigger("www", 200.0, 0.0)  # a doorbell still gets through at once
    assert s.due(200.0) == ["www"]
    s.record_success("www", 201.0)  # without next_in_s: the jittered interval again
    assert 201.0 + 150.0 <= snap(s, "www").next_check <= 201.0 + 450.0


def test_a_deferred_poll_stays_a_poll_and_a_deferred_trigger_a_trigger() -> None:
    """The daemon tells polls (which the fleet's hold-back may put off) from requests by
    `triggered`: a check the deadline deferred must come back as what it was."""
    s = make(initial_splay_s=0.0)
    s.add("poll", 0.0)
    s.add("asked", 0.0)
    s.trigger("asked", 0.0, 0.0)
    assert set(s.due(0.0)) == {"poll", "asked"}
    s.record_deferred("poll", 10.0, polled=True)
    s.record_deferred("asked", 10.0, polled=False)
    assert set(s.triggered(10.0)) == {"asked"}
    assert set(s.due(10.0)) == {"poll", "asked"}
