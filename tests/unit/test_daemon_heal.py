"""The daemon checks a pending version again when it becomes valid (issue 12, item 4: a notBefore
slightly ahead is installed then, not at the next regular poll nor after a backoff)."""

from __future__ import annotations

from typing import List, Optional, Sequence

from certpull.outcome import Outcome, PassReport, Status
from certpull.windows import InstallWindows
from tests.unit.test_daemon import World, make_config


def test_a_version_pending_until_its_not_before_is_checked_again_then() -> None:
    world = World(make_config(names=("a",), poll_interval_s="3600"), max_waits=20)
    pass_times: List[float] = []
    valid_from = world.clock.wall + 90

    def sync(
        names: Sequence[str], windows: Optional[InstallWindows] = None, **_: object
    ) -> PassReport:
        pass_times.append(world.clock.wall)
        if len(pass_times) == 1:
            return PassReport([Outcome("a", Status.PENDING, "a: pending", "v2", due_at=valid_from)])
        return PassReport([Outcome("a", Status.INSTALLED, "a: installed", "v2")])

    world.agent.sync = sync  # type: ignore[method-assign]
    world.loop.run()
    assert len(pass_times) >= 2
    assert valid_from <= pass_times[1] <= valid_from + 5  # not an hour later at the next poll
    assert world.loop.scheduler.snapshot("a").consecutive_failures == 0  # type: ignore[union-attr]
