"""daemon.AgentLoop's fleet side with a fake clock and a stepping mailbox (tests/unit/test_daemon.py's
harness): `check-now` requests, the pass results it waits for, the control server's lifecycle, the
adaptive poll's first and next checks, versions a safety poll finds deferred for the waves, and the
fleet view published after each pass.
"""

from __future__ import annotations

import random
from datetime import datetime
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import pytest

from certpull.cadence import DAY_S, HOUR_S, RotationFacts
from certpull.config import Config
from certpull.control import CheckResult, ControlError, PassResults
from certpull.daemon import AgentLoop
from certpull.errors import StoreError
from certpull.interfaces import Defer
from certpull.notify import Notifier
from certpull.outcome import Outcome, PassReport, Status
from certpull.state import Installed, State
from certpull.windows import InstallWindows
from tests.unit.test_daemon import Clock, FakeAgent, FakeDrift, SteppingMailbox, make_config

NEW = "v2"


class FleetAgent(FakeAgent):
    """FakeAgent that honours ``defer`` for names whose AWSCURRENT moved (``moved``), and notes
    what the pass results said when each pass began."""

    def __init__(self, config: Config, log: List[str], results: Callable[[], PassResults]) -> None:
        super().__init__(config, log)
        self.moved: Dict[str, str] = {}  # name -> the new AWSCURRENT version id
        self.defers: List[Optional[Defer]] = []
        self.marks: List[int] = []
        self._results = results

    def sync(  # type: ignore[override]
        self,
        names: Sequence[str],
        windows: Optional[InstallWindows] = None,
        defer: Optional[Defer] = None,
        deadline: Optional[float] = None,
        start_httpd: Optional[Callable[[], bool]] = None,
    ) -> PassReport:
        self.log.append(f"sync {','.join(names)}")
        self.passes.append(list(names))
        self.defers.append(defer)
        self.marks.append(self._results().mark())
        outcomes = []
        for name in names:
            version = self.moved.get(name)
            if version is None:
                outcomes.append(Outcome(name, Status.CURRENT, f"{name}: current", "v1"))
                continue
            at = defer(name, version, self._not_after(name)) if defer else None
            if at is not None:
                outcomes.append(Outcome(name, Status.PENDING, f"{name}: deferred", version))
                continue
            del self.moved[name]
            self.state.cert(name).installed = installed(
                version, not_after="2027-06-01T00:00:00+00:00"
            )
            outcomes.append(
                Outcome(name, Status.INSTALLED, f"{name}: installed {version}", version)
            )
        return PassReport(outcomes)

    def _not_after(self, name: str) -> Optional[datetime]:
        cert = self.state.certs.get(name)
        if cert is None or cert.installed is None:
            return None
        return datetime.fromisoformat(cert.installed.not_after)


def installed(version: str, not_after: str = "2027-06-01T00:00:00+00:00") -> Installed:
    return Installed(
        version_id=version,
        store_version="..x",
        serial="01",
        fingerprint_sha256="ab",
        subject="CN=a",
        not_after=not_after,
    )


class FakeControl:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.started = self.stopped = 0

    def start(self) -> None:
        if self.fail:
            raise ControlError("cannot listen on /run/certpull/control.sock: Permission denied")
        self.started += 1

    def stop(self) -> None:
        self.stopped += 1


class FleetWorld:
    def __init__(
        self,
        config: Config,
        max_waits: int = 20,
        facts: Optional[Mapping[str, RotationFacts]] = None,
        control: Optional[FakeControl] = None,
        state: Optional[State] = None,
        host_splay_s: float = 0.0,
    ) -> None:
        self.clock = Clock()
        self.log: List[str] = []
        self.mailbox = SteppingMailbox(self.clock, max_waits)
        self.control = control or FakeControl()
        self.control_args: List[Tuple[Config, Callable[[str], None]]] = []
        self.published: List[Tuple[float, State]] = []
        self.facts = dict(facts or {})
        self.agents: List[FleetAgent] = []
        self.initial_state = state or State()
        self.next_config = config

        def make_agent(cfg: Config) -> FleetAgent:
            agent = FleetAgent(cfg, self.log, lambda: self.loop.results)
            agent.state = self.initial_state
            self.agents.append(agent)
            return agent

        def make_control(
            cfg: Config,
            trigger: Callable[[str], None],
            results: PassResults,
            certs: Callable[[], Mapping[str, str]],
        ) -> FakeControl:
            self.control_args.append((cfg, trigger))
            return self.control

        def publish(cfg: Config, state: State) -> List[str]:
            self.published.append((self.clock.wall, state))
            return []

        self.loop = AgentLoop(
            config,
            make_agent=make_agent,
            load=lambda path: self.next_config,
            notifier=Notifier(backend=lambda message: True, environ={}),
            make_event_queue=lambda cfg: None,  # type: ignore[arg-type,return-value]
            make_drift_watcher=lambda cfg, on_change: FakeDrift(),
            mailbox=self.mailbox,
            rng=random.Random(7),
            monotonic=lambda: self.clock.mono,
            wall=lambda: self.clock.wall,
            make_control=make_control,
            rotation_facts=lambda arn: self.facts.get(arn.rsplit(":", 1)[-1]),
            read_state=lambda cfg: self.agent.state,
            publish=publish,
            host_splay_s=lambda max_s: host_splay_s,
        )

    @property
    def agent(self) -> FleetAgent:
        return self.agents[-1]

    def pass_times(self) -> List[float]:
        """Wall times of the passes (each pass publishes once)."""
        return [t for t, _ in self.published]


def doorbell(**agent: str) -> Config:
    return make_config(names=("a",), doorbell="yes", **agent)


# --- check-now --------------------------------------------------------------------------------


def test_check_now_runs_a_pass_at_once_without_event_splay_and_its_result_answers() -> None:
    world = FleetWorld(doorbell(event_splay_s="600"), max_waits=6)
    asked: List[int] = []

    def ring() -> None:
        asked.append(world.loop.results.mark())
        world.agent.moved["a"] = NEW
        world.loop.mailbox.post_check_now("a")

    rung_at: List[float] = []
    world.mailbox.actions[3] = lambda: (rung_at.append(world.clock.wall), ring())
    world.loop.run()
    assert len(world.agent.passes) == 2  # the first check, then the one check-now asked for
    assert world.pass_times()[1] == rung_at[0]  # no event splay, no wait for the safety poll
    assert world.agent.defers[1] is None  # asked for: nothing deferred
    result = world.loop.results.wait("a", after=asked[0], deadline=0.0)
    assert result is not None and result.status == "installed" and result.version_id == NEW


def test_pass_results_are_started_before_and_finished_after_each_pass() -> None:
    world = FleetWorld(doorbell(), max_waits=2)
    world.loop.run()
    (mark,) = world.agent.marks
    assert mark == 1  # started() ran before sync
    result = world.loop.results.wait("a", after=0, deadline=0.0)
    assert result is not None and result.status == "current"  # finished() ran after it
    assert world.loop.results.wait("a", after=1, deadline=0.0) is None


def test_check_now_is_not_held_up_by_a_later_trigger() -> None:
    # a notBefore a day away left a trigger pending: check-now still checks at once
    world = FleetWorld(doorbell(), max_waits=6)
    world.mailbox.actions[2] = lambda: world.loop.scheduler.trigger(
        "a", world.clock.mono + DAY_S, 0
    )
    world.mailbox.actions[3] = lambda: world.loop.mailbox.post_check_now("a")
    world.loop.run()
    assert len(world.agent.passes) == 2


def test_the_pass_that_was_running_when_check_now_asked_does_not_answer_it() -> None:
    world = FleetWorld(doorbell(), max_waits=4)
    marks_at_ask: List[int] = []

    def ask_during_the_pass(names: Sequence[str], **kwargs: object) -> PassReport:
        if not marks_at_ask:
            marks_at_ask.append(world.loop.results.mark())  # the running pass has started
            world.loop.mailbox.post_check_now("a")
        return FleetAgent.sync(world.agent, names, **kwargs)  # type: ignore[arg-type]

    world.agent.sync = ask_during_the_pass  # type: ignore[method-assign]
    world.loop.run()
    assert len(world.agent.passes) == 2  # the trigger kept during the first pass ran after it
    answer = world.loop.results.wait("a", after=marks_at_ask[0], deadline=0.0)
    assert answer is not None
    assert world.agent.marks == [1, 2]


# --- the control server's lifecycle -------------------------------------------------------------


def test_the_control_server_starts_before_ready_and_stops_at_the_end() -> None:
    world = FleetWorld(doorbell(), max_waits=2)
    assert world.loop.run() == 0
    assert (world.control.started, world.control.stopped) == (1, 1)
    cfg, trigger = world.control_args[0]
    assert cfg is world.loop.config and trigger == world.loop.mailbox.post_check_now


def test_a_control_socket_that_cannot_be_served_leaves_the_agent_polling(
    caplog: pytest.LogCaptureFixture,
) -> None:
    world = FleetWorld(
        make_config(names=("a",), poll_interval_s="60"),
        max_waits=30,
        control=FakeControl(fail=True),
    )
    assert world.loop.run() == 0
    assert len(world.agent.passes) >= 2 and world.control.stopped == 0
    assert "control socket: cannot listen on /run/certpull/control.sock" in caplog.text


def test_a_reload_that_moves_the_control_socket_serves_it_anew() -> None:
    world = FleetWorld(doorbell(), max_waits=4)
    world.next_config = doorbell(control_socket="/run/certpull-b/control.sock")
    world.mailbox.actions[2] = world.loop.mailbox.post_reload
    world.loop.run()
    assert (world.control.started, world.control.stopped) == (2, 2)
    assert world.control_args[1][0].agent.control_socket == "/run/certpull-b/control.sock"
    assert world.agent.state.daemon.mode == "doorbell"


def test_a_reload_that_keeps_the_control_socket_keeps_the_server() -> None:
    world = FleetWorld(doorbell(), max_waits=4)
    world.next_config = doorbell(poll_interval_s="120")
    world.mailbox.actions[2] = world.loop.mailbox.post_reload
    world.loop.run()
    assert (world.control.started, world.control.stopped) == (1, 1)


# --- the adaptive poll ------------------------------------------------------------------------


def test_with_the_doorbell_a_healthy_certificate_first_checks_within_restart_splay() -> None:
    state = State()
    state.cert("a").installed = installed("v1")
    world = FleetWorld(doorbell(restart_splay_s="300"), max_waits=40, state=state)
    start = world.clock.wall
    world.loop.run()
    first = world.pass_times()[0] - start
    assert 0 < first <= 300 + 30  # spread over restart_splay_s (the sleep is capped at 30 s)
    assert first > 5  # not the startup splay (0 here)


def test_with_the_doorbell_a_host_with_nothing_installed_checks_at_once() -> None:
    world = FleetWorld(doorbell(restart_splay_s="300"), max_waits=3)
    start = world.clock.wall
    world.loop.run()
    assert world.pass_times()[0] == start


def test_with_the_doorbell_nothing_due_waits_the_safety_interval() -> None:
    world = FleetWorld(doorbell(), max_waits=3)
    world.loop.run()
    snapshot = world.loop.scheduler.snapshot("a")
    assert snapshot is not None
    wait = snapshot.next_check - 1000.0
    assert 3 * HOUR_S <= wait <= 9 * HOUR_S  # 6 h +- 50 %


def test_around_a_scheduled_rotation_the_poll_watches_every_ten_minutes() -> None:
    now = Clock().wall
    facts = RotationFacts(rotation_enabled=True, next_rotation_at=now + 1800)  # in the watch
    world = FleetWorld(doorbell(), max_waits=3, facts={"a": facts})
    world.loop.run()
    snapshot = world.loop.scheduler.snapshot("a")
    assert snapshot is not None and 300 <= snapshot.next_check - 1000.0 <= 900


def test_before_a_rotation_watch_the_poll_never_sleeps_past_its_opening() -> None:
    now = Clock().wall
    opens_in = 2 * HOUR_S
    facts = RotationFacts(
        rotation_enabled=True, next_rotation_at=now + opens_in + DAY_S + HOUR_S, window_s=DAY_S
    )
    world = FleetWorld(doorbell(), max_waits=3, facts={"a": facts})
    world.loop.run()
    snapshot = world.loop.scheduler.snapshot("a")
    assert snapshot is not None and snapshot.next_check - 1000.0 <= opens_in


def test_near_expiry_the_poll_checks_hourly() -> None:
    state = State()
    now = Clock().wall
    expires = datetime.fromtimestamp(now + 10 * DAY_S).astimezone().isoformat()
    state.cert("a").installed = installed("v1", not_after=expires)
    world = FleetWorld(doorbell(restart_splay_s="0"), max_waits=3, state=state)
    world.loop.run()
    snapshot = world.loop.scheduler.snapshot("a")
    assert snapshot is not None and 1800 <= snapshot.next_check - 1000.0 <= 5400


def test_without_the_doorbell_poll_interval_keeps_its_meaning() -> None:
    world = FleetWorld(make_config(names=("a",), poll_interval_s="300"), max_waits=3)
    world.loop.run()
    snapshot = world.loop.scheduler.snapshot("a")
    assert snapshot is not None and 150 <= snapshot.next_check - 1000.0 <= 450
    assert world.agent.defers == [None]  # nothing is ever deferred without the doorbell


# --- versions a safety poll finds -------------------------------------------------------------


def test_a_version_the_safety_poll_finds_waits_for_poll_install_delay_then_installs() -> None:
    now = Clock().wall
    changed = now - 600  # the rotation happened 10 minutes before this host polled
    facts = RotationFacts(rotation_enabled=True, last_changed_at=changed)
    world = FleetWorld(
        doorbell(host_splay_s="30"), max_waits=400, facts={"a": facts}, host_splay_s=12.0
    )
    world.agent.moved["a"] = NEW  # present from the first (polled) check on
    world.loop.run()
    statuses = [s for s in world.log if s.startswith("sync")]
    assert len(statuses) >= 2
    assert world.agent.defers[0] is not None  # the first check was a poll: it may defer
    install_at = changed + 3600 + 12.0
    second = world.pass_times()[1]
    assert install_at <= second <= install_at + 2  # at the delay plus the host splay, not before
    assert world.agent.state.cert("a").installed is not None
    assert world.agent.state.cert("a").installed.version_id == NEW
    assert "a" not in world.loop.pending and "a" not in world.loop.fleet.deferred


def test_the_doorbell_installs_at_once_what_a_safety_poll_deferred() -> None:
    now = Clock().wall
    facts = RotationFacts(rotation_enabled=True, last_changed_at=now)
    world = FleetWorld(doorbell(), max_waits=8, facts={"a": facts})
    world.agent.moved["a"] = NEW
    world.mailbox.actions[4] = lambda: world.loop.mailbox.post_check_now("a")
    world.loop.run()
    assert len(world.agent.passes) == 2
    assert world.agent.state.cert("a").installed is not None  # installed by the doorbell's pass
    assert world.pass_times()[1] - now < 600
    assert "a" not in world.loop.fleet.deferred
    snapshot = world.loop.scheduler.snapshot("a")
    assert (
        snapshot is not None and snapshot.next_check - world.clock.mono > HOUR_S
    )  # no stale check


def test_a_leaf_about_to_expire_installs_what_the_poll_finds_at_once() -> None:
    now = Clock().wall
    state = State()
    expires = datetime.fromtimestamp(now + 2 * DAY_S).astimezone()
    state.cert("a").installed = installed("v1", not_after=expires.isoformat())
    facts = RotationFacts(rotation_enabled=True, last_changed_at=now)
    world = FleetWorld(doorbell(restart_splay_s="0"), max_waits=3, facts={"a": facts}, state=state)
    world.agent.moved["a"] = NEW

    def sync_with_expiry(names: Sequence[str], **kwargs: object) -> PassReport:
        defer = kwargs.get("defer")
        assert defer is not None
        assert defer("a", NEW, expires) is None  # type: ignore[operator]
        return FleetAgent.sync(world.agent, names, **kwargs)  # type: ignore[arg-type]

    world.agents[-1].sync = sync_with_expiry  # type: ignore[method-assign]
    world.loop.run()
    assert world.agent.state.cert("a").installed.version_id == NEW  # type: ignore[union-attr]


# --- the fleet view ---------------------------------------------------------------------------


def test_the_fleet_view_is_published_after_every_pass_with_the_saved_state() -> None:
    world = FleetWorld(make_config(names=("a",), poll_interval_s="60"), max_waits=30)
    world.loop.run()
    assert len(world.published) == len(world.agent.passes) >= 2
    _, state = world.published[-1]
    assert state is world.agent.state and state.cert("a").next_check_at is not None


def test_check_now_gets_its_answer_only_after_the_schedule_and_fleet_view_are_saved() -> None:
    world = FleetWorld(doorbell(), max_waits=2)
    seen: List[Tuple[int, Optional[float]]] = []
    finished = world.loop.results.finished

    def record(pass_id: int, results: Mapping[str, CheckResult]) -> None:
        seen.append((len(world.published), world.agent.state.cert("a").next_check_at))
        finished(pass_id, results)

    world.loop.results.finished = record  # type: ignore[method-assign]
    world.loop.run()
    assert seen and seen[0][0] == 1 and seen[0][1] is not None


def test_a_pass_that_raised_answers_check_now_with_a_failure() -> None:
    world = FleetWorld(doorbell(), max_waits=2)

    def broken(names: Sequence[str], **kwargs: object) -> PassReport:
        raise StoreError("cannot lock /var/lib/certpull/lock")

    world.agent.sync = broken  # type: ignore[method-assign]
    world.loop.run()
    result = world.loop.results.wait("a", after=0, deadline=0.0)
    assert result is not None and not result.ok
    assert result.message == "a: the pass failed (see the agent's log)"


def test_a_certificate_deferred_at_the_deadline_is_not_answered_as_checked() -> None:
    """A pass that reached its deadline before a certificate did not check it: a waiting
    check-now must not get "deferred" as its (successful) answer."""
    world = FleetWorld(doorbell(), max_waits=1)

    def deadline_hit(names: Sequence[str], **kwargs: object) -> PassReport:
        return PassReport([Outcome(n, Status.DEFERRED, f"{n}: not checked") for n in names])

    world.agent.sync = deadline_hit  # type: ignore[method-assign]
    world.loop.run()
    assert world.loop.results.wait("a", after=0, deadline=0.0) is None
