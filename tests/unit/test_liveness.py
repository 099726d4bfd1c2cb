"""liveness.Liveness with a fake clock and a real Notifier whose datagrams go to a list: WATCHDOG=1
only while the main loop's lease holds, and a READY=1 deferred to its bound. The thread itself is
`tick()` in a loop; here `tick()` is called by hand."""

from __future__ import annotations

from typing import List

from certpull.liveness import Liveness
from certpull.notify import Notifier


class World:
    def __init__(self, watchdog_usec: str = "60000000") -> None:
        self.now = 100.0
        self.sent: List[str] = []
        env = {"NOTIFY_SOCKET": "/run/notify-test", "WATCHDOG_USEC": watchdog_usec}
        self.notifier = Notifier(backend=self._send, environ=env)
        self.liveness = Liveness(self.notifier, lambda: self.now)

    def _send(self, message: str) -> bool:
        self.sent.append(message)
        return True

    def ticks_until(self, t: float, step: float = 10.0) -> List[str]:
        """Advance to ``t`` ticking every ``step`` s; what was sent meanwhile."""
        self.sent.clear()
        while self.now < t:
            self.now = min(t, self.now + step)
            self.liveness.tick()
        return list(self.sent)


def test_pings_while_the_lease_holds_though_the_loop_is_inside_one_long_call() -> None:
    world = World()
    world.liveness.beat(200.0)  # a pass: its deadline plus the step it may be inside
    sent = world.ticks_until(290.0)  # 190 s in one AWS call: no beat from the loop meanwhile
    assert sent.count("WATCHDOG=1") == 19  # one per tick: systemd never waits 60 s


def test_a_loop_stuck_past_its_lease_stops_the_pings_so_systemd_kills_it() -> None:
    world = World()
    world.liveness.beat(30.0)
    sent = world.ticks_until(100.0 + 30.0)
    assert sent and set(sent) == {"WATCHDOG=1"}
    assert world.ticks_until(400.0) == []  # hung: nothing until WatchdogSec fires
    world.liveness.beat(30.0)  # the loop came back (had it not been killed)
    assert world.ticks_until(410.0) == ["WATCHDOG=1"]


def test_without_a_watchdog_nothing_is_pinged() -> None:
    world = World(watchdog_usec="")
    world.liveness.beat(100.0)
    assert world.ticks_until(150.0) == []


def test_a_deferred_ready_is_sent_once_at_its_bound_unless_the_loop_was_first() -> None:
    world = World(watchdog_usec="")
    world.liveness.ready_by(160.0, "first install of www is late")
    assert world.ticks_until(159.0, step=1.0) == []
    assert world.ticks_until(161.0, step=1.0) == ["READY=1\nSTATUS=first install of www is late"]
    assert world.liveness.ready_sent
    assert world.liveness.ready("1 certificate(s) OK") is False  # late: not sent twice
    assert world.sent == ["READY=1\nSTATUS=first install of www is late"]


def test_the_loops_ready_cancels_the_deferred_one() -> None:
    world = World(watchdog_usec="")
    world.liveness.ready_by(160.0, "late")
    world.now = 120.0
    assert world.liveness.ready("1 certificate(s): 1 OK") is True
    assert world.ticks_until(200.0) == []
    assert world.sent == []
    assert world.liveness.ready_sent


def test_the_tick_waits_no_longer_than_the_watchdog_or_the_deferred_ready() -> None:
    world = World()  # WatchdogSec=60: a ping at least every 10 s
    assert world.liveness.tick() == 10.0
    world.liveness.ready_by(103.0, "late")
    assert world.liveness.tick() == 3.0
