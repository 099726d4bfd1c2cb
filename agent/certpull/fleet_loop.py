"""The daemon's fleet side: when to check (the adaptive safety poll), when a version a poll found
may be installed, what a pass tells `check-now`, and publishing the fleet view.

The run loop (``daemon.py``) calls a ``FleetPlan`` at three points and keeps the rest itself:

- at start, ``first_in_s``: with the doorbell on, a healthy certificate's first check is spread
  over ``restart_splay_s`` (``cadence.first_check``), so a restarted fleet does not spend its
  Secrets Manager quota in ten seconds; otherwise the scheduler's ``startup_splay_s``;
- around each pass, ``defer`` (handed to ``Agent.sync``): with the doorbell on, a new version that a
  regular poll (not the doorbell, an event or an operator) finds is installed only once it is
  ``poll_install_delay_s`` old (``cadence.poll_install_at``), plus this host's splay, so the
  runbook's canary wave decides where it lands first;
- after each pass, ``next_in_s`` for each certificate that succeeded: ``cadence.next_check`` from
  the rotation dates the pass's DescribeSecret returned (``RotationBook``) and the installed leaf's
  notAfter, jittered; never past a deferred install.
"""

from __future__ import annotations

import logging
import random
import threading
from datetime import datetime
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Set

from certpull import cadence
from certpull.config import AgentConfig, Config
from certpull.control import CheckResult
from certpull.interfaces import Defer
from certpull.outcome import Outcome, Status
from certpull.state import State, parse_time

log = logging.getLogger("certpull")

DEFER_MARGIN_S = 1.0  # check this long after the install time, so the check finds it passed


class RotationBook:
    """What the last DescribeSecret of each secret said about its rotation. Thread-safe.

    ``record`` is the ``on_describe`` hook of ``source.SecretSource``: it runs inside the pass's
    own DescribeSecret, so the facts cost no extra call.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._facts: Dict[str, cadence.RotationFacts] = {}

    def record(self, secret_arn: str, response: Mapping[str, Any]) -> None:
        facts = cadence.facts_from_describe(response)
        with self._lock:
            self._facts[secret_arn] = facts

    def get(self, secret_arn: str) -> Optional[cadence.RotationFacts]:
        with self._lock:
            return self._facts.get(secret_arn)


def cadence_config(agent: AgentConfig) -> cadence.CadenceConfig:
    """The adaptive poll's intervals from `[agent]`. Without a doorbell the base interval is
    ``poll_interval_s`` (``reconcile_interval_s`` with SQS events), as it always was."""
    base = agent.reconcile_interval_s if agent.events_queue_url else agent.poll_interval_s
    return cadence.CadenceConfig(
        poll_interval_s=base,
        safety_poll_interval_s=agent.safety_poll_interval_s,
        rotation_poll_interval_s=agent.rotation_poll_interval_s,
        rotation_lead_s=agent.rotation_lead_s,
        rotation_grace_s=agent.rotation_grace_s,
        poll_install_delay_s=agent.poll_install_delay_s,
        expiry_watch_days=agent.expiry_watch_days,
        expiry_poll_interval_s=agent.expiry_poll_interval_s,
        min_interval_s=min(60.0, base),
        startup_splay_s=agent.startup_splay_s,
        restart_splay_s=agent.restart_splay_s,
        urgent_before_expiry_days=agent.urgent_before_expiry_days,
    )


def regular_interval_s(agent: AgentConfig) -> float:
    """The scheduler's own interval (before the adaptive poll shortens a wait)."""
    if agent.doorbell:
        return agent.safety_poll_interval_s
    return agent.reconcile_interval_s if agent.events_queue_url else agent.poll_interval_s


def not_after_of(state: State, name: str) -> Optional[float]:
    """The installed leaf's notAfter (epoch s) from state.json; None when nothing is installed."""
    cert = state.certs.get(name)
    installed = cert.installed if cert is not None else None
    if installed is None or not installed.not_after:
        return None
    parsed = parse_time(installed.not_after)
    return parsed.timestamp() if parsed is not None else None


def check_results(names: Sequence[str], outcomes: Mapping[str, Outcome]) -> Dict[str, CheckResult]:
    """A pass's outcomes as `check-now` results; a name the pass did not report failed."""
    found: Dict[str, CheckResult] = {}
    for name in names:
        outcome = outcomes.get(name)
        found[name] = (
            CheckResult(name, outcome.status.value, outcome.message, outcome.version_id)
            if outcome is not None
            else CheckResult(
                name, Status.FAILED.value, f"{name}: the pass failed (see the agent's log)"
            )
        )
    return found


class FleetPlan:
    """The adaptive poll and the deferred poll installs for one `Config` (see the module doc)."""

    def __init__(
        self,
        config: Config,
        facts: Callable[[str], Optional[cadence.RotationFacts]],
        rng: random.Random,
        host_splay_s: Callable[[], float] = lambda: 0.0,
    ) -> None:
        """``facts(secret_arn)``: the last DescribeSecret's facts; ``host_splay_s()``: this host's
        fixed splay (``splay.host_splay_s`` of its instance id), looked up only when needed."""
        self.config = config
        self.cadence = cadence_config(config.agent)
        self._facts = facts
        self._rng = rng
        self._host_splay_s = host_splay_s
        self.deferred: Dict[str, float] = {}  # name -> epoch s its polled version may install

    @property
    def doorbell(self) -> bool:
        return self.config.agent.doorbell

    def first_in_s(self, name: str, state: State, wall: float) -> Optional[float]:
        """Seconds until ``name``'s first check; None: the scheduler's startup splay."""
        if not self.doorbell:
            return None
        cert = state.certs.get(name)
        installed = cert is not None and cert.installed is not None
        return cadence.first_check(
            installed, not_after_of(state, name), wall, self.cadence, self._rng
        )

    def defer_for(self, polled: Set[str], wall: float) -> Optional[Defer]:
        """The ``defer`` callback of a pass whose ``polled`` names are due by the regular poll
        (None when nothing may be deferred: no doorbell, or every name was asked for)."""
        if not self.doorbell or not polled:
            return None
        for name in polled:
            self.deferred.pop(name, None)

        def defer(
            name: str, version_id: str, installed_not_after: Optional[datetime]
        ) -> Optional[float]:
            if name not in polled:
                return None
            not_after = installed_not_after.timestamp() if installed_not_after else None
            facts = self._facts(self.config.cert(name).secret_arn)
            at = cadence.poll_install_at(wall, facts, not_after, True, self.cadence)
            if at is None:
                return None
            at += self._host_splay_s()
            self.deferred[name] = at
            return at

        return defer

    def next_in_s(self, name: str, state: State, wall: float) -> float:
        """The wait after a successful check of ``name`` at ``wall`` (already jittered)."""
        facts = self._facts(self.config.cert(name).secret_arn)
        plan = cadence.next_check(
            wall, facts, not_after_of(state, name), self.doorbell, self.cadence
        )
        wait = plan.jittered(self._rng, self.cadence.jitter)
        at = self.deferred.get(name)
        if at is not None:
            if at + DEFER_MARGIN_S <= wall:
                del self.deferred[name]
            else:
                wait = min(wait, at + DEFER_MARGIN_S - wall)
        return max(0.0, wait)

    def forget(self, names: Sequence[str]) -> None:
        """A pass that was asked for (doorbell, event, operator) settles what a poll deferred."""
        for name in names:
            self.deferred.pop(name, None)


class Publisher:
    """Publishes the fleet view after each pass; logs a failure once until it changes."""

    def __init__(self, publish: Callable[[State], List[str]]) -> None:
        self._publish = publish
        self._last: List[str] = []

    def __call__(self, state: State) -> None:
        try:
            problems = self._publish(state)
        except Exception as exc:  # the fleet view never stops a pass
            problems = [f"fleet view: {type(exc).__name__}: {exc}"]
        if problems != self._last:
            for problem in problems:
                log.warning("%s", problem)
        self._last = problems
