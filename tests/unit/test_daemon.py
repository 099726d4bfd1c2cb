"""daemon.AgentLoop's logic with a fake clock, a stepping mailbox, a fake agent and a real Notifier
whose datagrams go to a list: startup order, sleep computation, install windows, drift re-checks,
config reloads, failures and backoff, systemd's STATUS, a clean stop. No processes, no sockets,
no sleeping: the mailbox's wait advances the fake clock.
"""

from __future__ import annotations

import contextlib
import random
import textwrap
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Union

import pytest

from certpull.config import Config, parse_config
from certpull.daemon import DRIFT_RECHECK_S, HEARTBEAT_S, MAX_SLEEP_S, AgentLoop, drift_paths
from certpull.errors import ConfigError, StoreError
from certpull.interfaces import Defer
from certpull.liveness import Liveness
from certpull.notify import Notifier
from certpull.outcome import Outcome, PassReport, Status
from certpull.state import Installed, State
from certpull.triggers import Mailbox
from certpull.windows import InstallWindows

ARN = "arn:aws:secretsmanager:us-east-1:111122223333:secret:"


def make_config(names: Sequence[str] = ("a", "b"), **agent: str) -> Config:
    agent_lines = "\n".join(f"{k} = {v}" for k, v in {"startup_splay_s": "0", **agent}.items())
    certs = "\n".join(f"[cert:{n}]\nsecret_arn = {ARN}{n}\n" for n in names)
    text = f"[agent]\nlive_dir = /nonexistent/live\nstate_dir = /nonexistent/state\n{agent_lines}\n\n{certs}"
    return parse_config(textwrap.dedent(text), "/etc/certpull/certpull.conf")


TUESDAY_13_59_UTC = 1_790_085_540.0  # 2026-09-22 13:59:00 UTC


class Clock:
    def __init__(self, wall: float = TUESDAY_13_59_UTC) -> None:
        self.mono = 1000.0
        self.wall = wall

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


class FakeAgent:
    """The pass, scripted: each name answers the next status of its script (then CURRENT)."""

    def __init__(self, config: Config, log: List[str]) -> None:
        self.config = config
        self.log = log
        self.script: Dict[str, List[Union[Status, Exception]]] = {}
        self.passes: List[List[str]] = []
        self.windows_seen: List[Optional[InstallWindows]] = []
        self.drifted_names: Dict[str, bool] = {}
        self.repair_result = True
        self.state = State()
        self.deadlines: List[Optional[float]] = []
        self.missing: List[str] = []
        self.httpd_down = True
        self.watch: Optional[object] = None  # what take_watch hands to the next agent
        self.watch_s: Optional[float] = None  # the rest of a reload's liveness grace
        self.died_late: List[str] = []  # what watch_reload reports once the grace is looked at

    def not_installed(self) -> List[str]:
        return list(self.missing)

    def httpd_stopped(self) -> bool:
        return self.httpd_down

    def recover(self, certs: object = None, reload: bool = True) -> List[str]:
        self.log.append("recover" if reload else "recover (no reload)")
        return ["a: cannot recover /x: disk on fire"] if self.config.names == ("broken",) else []

    def sync(
        self,
        names: Sequence[str],
        windows: Optional[InstallWindows] = None,
        defer: Optional[Defer] = None,
        deadline: Optional[float] = None,
        start_httpd: Optional[Callable[[], bool]] = None,
    ) -> PassReport:
        self.log.append(f"sync {','.join(names)}")
        self.deadlines.append(deadline)
        self.passes.append(list(names))
        self.windows_seen.append(windows)
        outcomes = []
        for name in names:
            queue = self.script.get(name) or []
            answer = queue.pop(0) if queue else Status.CURRENT
            if isinstance(answer, Exception):
                raise answer
            outcomes.append(Outcome(name, answer, f"{name}: {answer}"))
            cstate = self.state.cert(name)  # what the real pass records
            if answer is Status.FAILED:
                cstate.last_error = f"{name}: {answer}"
            elif answer is not Status.DEFERRED:
                cstate.last_error = None
                cstate.installed = Installed(f"{name}-v1", f"{name}-v1", "01", "ab", f"CN={name}")
        return PassReport(outcomes)

    def drifted(self, name: str) -> bool:
        return self.drifted_names.get(name, False)

    def repair(self, name: str) -> bool:
        self.log.append(f"repair {name}")
        return self.repair_result

    def update_state(self, change: Callable[[State], None]) -> None:
        change(self.state)

    def watching_s(self) -> Optional[float]:
        return self.watch_s

    def take_watch(self) -> Optional[object]:
        watch, self.watch = self.watch, None
        return watch

    def keep_watch(self, watch: Optional[object]) -> None:
        self.watch = watch if watch is not None else self.watch

    def watch_reload(self) -> List[str]:
        if self.watch_s is None:
            return []
        self.log.append("watch")
        self.watch_s = None
        names, self.died_late = self.died_late, []
        return names


class FakeDrift:
    def __init__(self, log: Optional[List[str]] = None) -> None:
        self.started = self.stopped = False
        self.updates: List[Optional[Mapping[str, object]]] = []
        self.suppressed: List[str] = []
        self.log = log if log is not None else []

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.stopped = True

    def update(self, paths_to_watch: Optional[Mapping[str, object]] = None) -> None:
        self.updates.append(paths_to_watch)
        self.log.append("drift update")

    @contextlib.contextmanager
    def suppress(self, key: str) -> Iterator[None]:
        self.suppressed.append(key)
        yield


class ManualLiveness(Liveness):
    """The liveness thread, ticked by hand (at each wait of the stepping mailbox)."""

    def start(self) -> None:
        pass


class SteppingMailbox(Mailbox):
    """wait() does not sleep: it advances the clock and runs the next scripted action, if any.
    After the script (or ``max_waits``) it posts stop."""

    def __init__(self, clock: Clock, max_waits: int = 50) -> None:
        super().__init__()
        self.clock = clock
        self.waits: List[float] = []
        self.actions: Dict[int, Callable[[], None]] = {}
        self.max_waits = max_waits
        self.on_wait: Callable[[], None] = lambda: None

    def wait(self, timeout_s: float) -> None:
        self.waits.append(timeout_s)
        self.clock.advance(timeout_s)
        self.on_wait()
        action = self.actions.get(len(self.waits))
        if action is not None:
            action()
        if len(self.waits) >= self.max_waits:
            self.post_stop()


class World:
    def __init__(
        self,
        config: Config,
        max_waits: int = 50,
        watchdog_usec: str = "",
        ready_sent: bool = False,
    ) -> None:
        self.clock = Clock()
        self.log: List[str] = []
        self.sent: List[str] = []
        self.agents: List[FakeAgent] = []
        self.drift = FakeDrift(self.log)
        self.next_config: Union[Config, ConfigError, None] = None
        self.mailbox = SteppingMailbox(self.clock, max_waits)
        env = {"NOTIFY_SOCKET": "/run/notify-test"}
        if watchdog_usec:
            env["WATCHDOG_USEC"] = watchdog_usec

        def send(message: str) -> bool:
            self.sent.append(message)
            self.log.append(message.split("\n", maxsplit=1)[0].split("=", maxsplit=1)[0])
            return True

        def make_agent(cfg: Config) -> FakeAgent:
            agent = FakeAgent(cfg, self.log)
            if self.agents:
                agent.state = self.agents[-1].state
                agent.script = self.agents[-1].script
            self.agents.append(agent)
            return agent

        def load(path: str) -> Config:
            self.log.append("load config")
            if isinstance(self.next_config, ConfigError):
                raise self.next_config
            assert self.next_config is not None
            return self.next_config

        def no_queue(cfg: Config) -> None:
            raise AssertionError("no events configured in these tests")

        notifier = Notifier(backend=send, environ=env)
        self.liveness = ManualLiveness(notifier, lambda: self.clock.mono)
        self.mailbox.on_wait = self.liveness.tick
        self.loop = AgentLoop(
            config,
            make_agent=make_agent,
            load=load,
            notifier=notifier,
            liveness=self.liveness,
            make_event_queue=no_queue,
            make_drift_watcher=lambda cfg, on_change: self.drift,
            read_state=lambda cfg: self.agent.state,
            mailbox=self.mailbox,
            rng=random.Random(7),
            monotonic=lambda: self.clock.mono,
            wall=lambda: self.clock.wall,
            ready_sent=ready_sent,
        )

    @property
    def agent(self) -> FakeAgent:
        return self.agents[-1]

    def statuses(self) -> List[str]:
        """STATUS= lines sent on their own (READY=1 carries one too)."""
        return [m.split("STATUS=", 1)[1] for m in self.sent if m.startswith("STATUS=")]


def test_recovers_then_reports_ready_then_passes_and_stops_cleanly() -> None:
    world = World(make_config(), max_waits=3)
    assert world.loop.run() == 0
    first_sync = world.log.index("sync a,b")
    # no reload before READY: httpd's unit is ordered after certpull's start job
    assert world.log.index("recover (no reload)") < world.log.index("READY") < first_sync
    assert world.log[-1] == "STOPPING"
    assert world.drift.started and world.drift.stopped
    assert world.agent.state.daemon.stopped_at == world.clock.wall
    assert world.agent.state.daemon.mode == "poll"


def test_sleep_is_bounded_by_the_next_check_the_heartbeat_and_the_watchdog() -> None:
    world = World(make_config(poll_interval_s="3600"), max_waits=4, watchdog_usec="20000000")
    world.loop.run()
    # after the first pass the next check is ~an hour away: the watchdog (10 s = half of 20 s)
    # and the drift re-check (1 s after a successful pass) bound the sleep
    assert world.mailbox.waits[0] == pytest.approx(DRIFT_RECHECK_S)
    assert world.mailbox.waits[1] == pytest.approx(10.0)
    assert "WATCHDOG" in world.log


def test_without_watchdog_the_sleep_is_capped_by_the_heartbeat() -> None:
    world = World(make_config(poll_interval_s="3600"), max_waits=3)
    world.loop.run()
    assert world.mailbox.waits[1] == pytest.approx(min(HEARTBEAT_S, MAX_SLEEP_S))
    assert "WATCHDOG" not in world.log


def test_a_failed_check_backs_off_and_the_summary_names_it() -> None:
    world = World(make_config(poll_interval_s="3600"), max_waits=2)
    config = world.loop.config
    world.agent.script["a"] = [Status.FAILED]
    world.loop.run()
    snapshot = world.loop.scheduler.snapshot("a")
    assert snapshot is not None and snapshot.consecutive_failures == 1
    # the first pass ran at monotonic 1000 (no startup splay); equal jitter from a 30 s base
    assert snapshot.backoff_until is not None and 15 <= snapshot.backoff_until - 1000.0 <= 30
    assert world.statuses()[0].startswith(
        f"{len(config.names)} certificate(s): {len(config.names) - 1} OK, 1 failing (a: failed)"
    )


def test_an_exception_in_a_pass_counts_as_a_failure_and_the_loop_goes_on() -> None:
    world = World(make_config(names=("a",), poll_interval_s="5"), max_waits=30)
    world.agent.script["a"] = [StoreError("cannot lock /var/lib/certpull")]
    world.loop.run()
    snapshot = world.loop.scheduler.snapshot("a")
    assert snapshot is not None
    assert len(world.agent.passes) >= 2  # it came back after the backoff
    assert snapshot.consecutive_failures == 0  # and the next pass succeeded


def test_a_pending_version_is_installed_when_the_window_opens() -> None:
    # the clock starts at Tuesday 13:59 UTC; the window opens at 14:00, the next poll is ~300 s on
    world = World(make_config(names=("a",), install_window="Tue 14:00-15:00 UTC"), max_waits=6)
    world.agent.script["a"] = [Status.PENDING, Status.INSTALLED]
    pass_times: List[float] = []
    original = world.agent.sync

    def timed_sync(
        names: Sequence[str], windows: Optional[InstallWindows] = None, **_: object
    ) -> PassReport:
        pass_times.append(world.clock.wall)
        return original(names, windows)

    world.agent.sync = timed_sync  # type: ignore[method-assign]
    world.loop.run()
    assert world.agent.windows_seen[0] == InstallWindows.parse("Tue 14:00-15:00 UTC")
    assert len(pass_times) == 2
    opens = TUESDAY_13_59_UTC + 60
    assert opens <= pass_times[1] <= opens + HEARTBEAT_S  # at the opening, not at the next poll
    assert "a" not in world.loop.pending


def test_drift_seen_after_a_pass_is_repaired_locally_without_a_pass() -> None:
    world = World(make_config(names=("a",), poll_interval_s="3600"), max_waits=3)
    world.agent.drifted_names["a"] = True
    world.loop.run()
    assert "repair a" in world.log
    assert world.agent.passes == [["a"]]  # repaired links cost no AWS call


def test_drift_that_links_cannot_repair_triggers_a_pass_at_once() -> None:
    world = World(make_config(names=("a",), poll_interval_s="3600"), max_waits=3)
    world.agent.drifted_names["a"] = True
    world.agent.repair_result = False
    world.loop.run()
    assert world.agent.passes[:2] == [["a"], ["a"]]


def test_a_drift_event_from_the_watcher_repairs_and_suppresses_the_watcher() -> None:
    world = World(make_config(names=("a",), poll_interval_s="3600"), max_waits=4)
    world.mailbox.actions[2] = lambda: world.mailbox.post_drift("a")
    world.loop.run()
    assert "repair a" in world.log
    assert world.drift.suppressed.count("a") >= 2  # the pass and the repair


def test_a_rejected_config_reload_keeps_the_running_config_and_says_why() -> None:
    world = World(make_config(), max_waits=3)
    world.next_config = ConfigError("unknown key in [agent]", "/etc/certpull/certpull.conf", 3, "x")
    world.mailbox.actions[1] = world.mailbox.post_reload
    world.loop.run()
    assert world.loop.config.names == ("a", "b")
    assert len(world.agents) == 1
    reason = "/etc/certpull/certpull.conf:3: x: unknown key in [agent]"
    assert world.agent.state.daemon.config_error == reason
    assert any(m.startswith("READY=1") and f"config rejected: {reason}" in m for m in world.sent)
    assert any(m.startswith("RELOADING=1\nMONOTONIC_USEC=") for m in world.sent)


@pytest.mark.parametrize("accepted", [True, False])
def test_a_reload_watches_a_new_conf_d_before_it_reads_the_config(accepted: bool) -> None:
    # An edit of a drop-in in a conf.d created by the edit that triggered this reload must be
    # seen, however soon it comes after the outcome is published: the directory is watched first.
    world = World(make_config(), max_waits=3)
    world.next_config = (
        make_config()
        if accepted
        else ConfigError("unknown key in [agent]", "/etc/certpull/conf.d/50.conf", 2, "x")
    )
    world.mailbox.actions[1] = lambda: world.mailbox.post_drift("config")
    world.loop.run()
    reloading, reading = world.log.index("RELOADING"), world.log.index("load config")
    assert "drift update" in world.log[reloading:reading]
    assert world.agent.state.daemon.config_error == (
        None if accepted else "/etc/certpull/conf.d/50.conf:2: x: unknown key in [agent]"
    )


def test_a_config_reload_adds_and_removes_certificates() -> None:
    world = World(make_config(), max_waits=4)
    world.next_config = make_config(names=("b", "c"))
    world.mailbox.actions[1] = lambda: world.mailbox.post_drift("config")
    world.loop.run()
    assert world.loop.scheduler.names() == ["b", "c"]
    assert ["c"] in world.agent.passes or ["b", "c"] in world.agent.passes
    assert world.drift.updates[-1] == drift_paths(world.next_config)
    assert world.agent.state.daemon.config_error is None


def test_sigusr1_checks_everything_now_and_a_trigger_checks_one() -> None:
    world = World(make_config(poll_interval_s="3600", event_splay_s="0"), max_waits=5)
    world.mailbox.actions[2] = world.mailbox.post_check_all
    world.mailbox.actions[3] = lambda: world.mailbox.post_trigger("b")
    world.loop.run()
    assert world.agent.passes[:3] == [["a", "b"], ["a", "b"], ["b"]]


def test_state_records_the_schedule_and_the_heartbeat() -> None:
    world = World(make_config(names=("a",), poll_interval_s="600"), max_waits=2)
    world.loop.run()
    cstate = world.agent.state.certs["a"]
    assert cstate.next_check_at is not None
    assert 300 <= cstate.next_check_at - world.clock.wall + sum(world.mailbox.waits) <= 900
    assert world.agent.state.daemon.heartbeat_interval_s == HEARTBEAT_S


def test_recovery_problems_do_not_stop_the_start() -> None:
    world = World(make_config(names=("broken",)), max_waits=2)
    assert world.loop.run() == 0
    assert "READY" in world.log


def test_compat_links_made_at_start_are_reloaded_right_after_ready_not_after_the_splay() -> None:
    world = World(make_config(startup_splay_s="600"), max_waits=1)
    world.agent.state.cert("a").reload_pending = True  # recover() made compat links for a
    world.loop.run()
    assert world.log.index("READY") < world.log.index("sync a")
    assert "sync b" not in world.log  # b waits for its splayed first check


def test_the_rest_of_a_liveness_grace_is_watched_soon_and_a_late_death_gets_a_pass() -> None:
    world = World(make_config(names=("a", "b"), poll_interval_s="3600"), max_waits=4)
    original = world.agent.sync

    def sync_then_watch(names: Sequence[str], **kwargs: Any) -> PassReport:
        report = original(names, **kwargs)
        if len(world.agent.passes) == 1:  # the first pass's reload ended its grace early
            world.agent.watch_s, world.agent.died_late = 0.05, ["a"]
        return report

    world.agent.sync = sync_then_watch  # type: ignore[method-assign]
    world.loop.run()
    assert world.mailbox.waits[0] == pytest.approx(0.05)  # not the drift re-check's 1 s
    assert world.log.count("watch") == 1
    assert world.agent.passes[:2] == [["a", "b"], ["a"]]  # a's refusal is recorded by its pass
