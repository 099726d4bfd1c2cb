"""The daemon on a real host (issue 10), with test_daemon's fake clock, agent and notifier: a
fresh host's first install before READY, the pass deadline and its deferred certificates, the
watchdog lease of a pass, and STATUS= over every certificate from state.json."""

from __future__ import annotations

from typing import List, Optional, Sequence

import pytest

from certpull.daemon import FIRST_INSTALL_BOUND_S, FIRST_PROOF_DELAY_S, PASS_DEADLINE_S
from certpull.outcome import Outcome, PassReport, Status
from certpull.windows import InstallWindows
from tests.unit.test_daemon import World, make_config


def test_a_fresh_host_installs_before_ready_and_only_what_is_missing() -> None:
    world = World(make_config(), max_waits=2)
    world.agents[0].missing = ["b"]
    world.loop.run()
    assert world.log[:4] == ["recover (no reload)", "sync b", "STATUS", "READY"]
    assert world.agent.deadlines[0] == 1000.0 + FIRST_INSTALL_BOUND_S
    ready = [m for m in world.sent if m.startswith("READY=1")]
    assert ready == [
        "READY=1\nSTATUS=2 certificate(s): 1 OK, 1 not installed yet; next check in 0 s"
    ]


def test_after_a_first_install_before_ready_the_files_are_checked_again_soon() -> None:
    """httpd starts on them after READY: a second look (with its handshake) proves them served
    within seconds, not at the next poll (status says "not proven served" until then)."""
    world = World(make_config(names=("www",), poll_interval_s="300"), max_waits=3)
    world.agents[0].missing = ["www"]
    passes: List[float] = []
    original = world.agents[0].sync

    def timed(
        names: Sequence[str], windows: Optional[InstallWindows] = None, **kw: object
    ) -> PassReport:
        passes.append(world.clock.mono)
        return original(names, windows)

    world.agents[0].sync = timed  # type: ignore[method-assign]
    world.loop.run()
    assert len(passes) >= 2
    assert passes[1] - passes[0] == pytest.approx(FIRST_PROOF_DELAY_S, abs=0.1)


def test_with_every_certificate_installed_ready_comes_before_any_pass() -> None:
    world = World(make_config(), max_waits=2)
    world.loop.run()
    assert world.log.index("READY") < world.log.index("sync a,b")


def test_ready_sent_before_the_loop_is_not_sent_again_and_holds_no_first_install() -> None:
    """startup.py sent READY=1 (every file was in place when it looked, httpd may be starting on
    them): the loop sends STATUS= only, and files gone since are its first pass's, not a first
    install held before a READY=1 that is already out."""
    world = World(make_config(), max_waits=2, ready_sent=True)
    world.agents[0].missing = ["b"]
    world.loop.run()
    assert not [m for m in world.sent if m.startswith("READY=1")]
    assert world.log[:3] == ["recover (no reload)", "STATUS", "sync a,b"]
    assert world.liveness.ready_sent  # the liveness thread never sends a late one either
    assert world.statuses()[0] == "2 certificate(s), polling every 300 s"  # the mode, as READY's


def test_with_httpd_running_a_missing_certificate_does_not_hold_ready() -> None:
    """A restart after the live dir was wiped: httpd runs, and reloading it before READY would
    wait for the agent's own start job (httpd is ordered after it)."""
    world = World(make_config(), max_waits=2)
    world.agents[0].missing = ["b"]
    world.agents[0].httpd_down = False
    world.loop.run()
    assert world.log.index("READY") < world.log.index("sync a,b")


def test_a_first_install_slower_than_the_bound_gets_ready_from_the_liveness_thread() -> None:
    world = World(make_config(names=("www",)), max_waits=2)
    world.agents[0].missing = ["www"]
    original = world.agents[0].sync

    def slow(
        names: Sequence[str], windows: Optional[InstallWindows] = None, **kw: object
    ) -> PassReport:
        world.clock.advance(FIRST_INSTALL_BOUND_S + 5)  # AWS answers slowly
        world.liveness.tick()  # the thread looks meanwhile
        starts = kw["start_httpd"]
        assert callable(starts) and starts()  # READY is out: httpd's own start already failed
        return original(names, windows)

    world.agents[0].sync = slow  # type: ignore[method-assign]
    world.loop.run()
    ready = [m for m in world.sent if m.startswith("READY=1")]
    assert ready == ["READY=1\nSTATUS=first install of www is late"]  # once, from the thread


def test_httpd_is_not_started_by_a_pass_before_ready() -> None:
    world = World(make_config(names=("www",)), max_waits=2)
    world.agents[0].missing = ["www"]
    asked: List[bool] = []
    original = world.agents[0].sync

    def record(
        names: Sequence[str], windows: Optional[InstallWindows] = None, **kw: object
    ) -> PassReport:
        starts = kw["start_httpd"]
        assert callable(starts)
        asked.append(bool(starts()))
        return original(names, windows)

    world.agents[0].sync = record  # type: ignore[method-assign]
    world.loop.run()
    assert asked[0] is False  # at boot, httpd's start waits for READY: starting it would deadlock


def test_deferred_certificates_are_checked_in_the_next_pass_without_backoff() -> None:
    world = World(make_config(names=("a", "b", "c")), max_waits=3)
    answers = [
        [
            Outcome("a", Status.FAILED, "a: DescribeSecret: Read timeout", transient=True),
            Outcome("b", Status.DEFERRED, "b: not checked"),
            Outcome("c", Status.DEFERRED, "c: not checked"),
        ],
        [Outcome("b", Status.CURRENT, "b: current"), Outcome("c", Status.CURRENT, "c: current")],
    ]
    passes: List[List[str]] = []
    deadlines: List[Optional[float]] = []

    def sync(
        names: Sequence[str], windows: Optional[InstallWindows] = None, **kw: object
    ) -> PassReport:
        passes.append(list(names))
        deadlines.append(kw["deadline"])  # type: ignore[arg-type]
        return PassReport(answers.pop(0) if answers else [])

    world.agent.sync = sync  # type: ignore[method-assign]
    world.loop.run()
    assert passes[:2] == [["a", "b", "c"], ["b", "c"]]
    assert deadlines[0] == 1000.0 + PASS_DEADLINE_S
    for name in ("b", "c"):
        snapshot = world.loop.scheduler.snapshot(name)
        assert snapshot is not None and snapshot.consecutive_failures == 0
    assert world.loop.scheduler.snapshot("a").consecutive_failures == 1  # type: ignore[union-attr]


def test_a_pass_holds_a_watchdog_lease_beyond_its_deadline_by_one_step_at_most() -> None:
    world = World(make_config(names=("a",)), max_waits=2, watchdog_usec="60000000")
    leases: List[float] = []

    def sync(
        names: Sequence[str], windows: Optional[InstallWindows] = None, **kw: object
    ) -> PassReport:
        leases.append(world.liveness._lease_until - world.clock.mono)
        return PassReport([Outcome("a", Status.CURRENT, "a: current")])

    world.agent.sync = sync  # type: ignore[method-assign]
    world.loop.run()
    # shipped timeouts: 3 x (5 + 15) s per call + 6 s backoff, three calls; two X.509 worker
    # calls of 60 s; 4 x 60 s of commands, 2 x 10 s of verify, 10 s slack
    assert leases == [PASS_DEADLINE_S + 3 * 66.0 + 2 * 60.0 + 270.0]


def test_status_says_failing_while_a_certificate_fails_even_in_passes_over_others() -> None:
    world = World(make_config(names=("www", "api"), poll_interval_s="3"), max_waits=12)
    world.agents[0].script = {"api": [Status.FAILED] * 20}
    world.loop.run()
    statuses = world.statuses()
    assert len(statuses) >= 3
    assert all("1 failing (api: failed)" in s for s in statuses), statuses
    assert statuses[0].startswith("2 certificate(s): 1 OK, 1 failing (api: failed)")
