"""AWS API calls of `certpull run`, counted at the proxy, scaled to calls per certificate per day.

Two runs of the real daemon against moto, each idle (no secret changes) for `--minutes`:

* poll mode, `poll_interval_s = --poll-interval`: every call is a check, so the bench measures
  calls per check and scales by checks per day at the production interval (300 s by default):
  `per day = calls_per_check * 86400 / poll_interval_s`.
* event mode, `reconcile_interval_s = --reconcile-interval`: reconcile checks scale the same way
  at the production reconcile interval (3600 s); SQS long polls are per host, not per
  certificate: `ReceiveMessage per day = 86400 / measured seconds per long poll`. Then one
  rotation is published and the calls it costs are counted (what a rotation adds on top).

* adaptive safety poll (``doorbell = yes``): the daemon's own ``fleet_loop.FleetPlan`` (built from
  the shipped ``[agent]`` defaults, as ``certpull run`` builds it) and the Scheduler decide when to
  check, on a simulated clock over ``--sim-days`` (120); each check is a real DescribeSecret to moto
  through the proxy (the agent's call), parsed by ``cadence.facts_from_describe``, and a changed
  AWSCURRENT a real GetSecretValue once ``FleetPlan``'s ``defer`` lets it install
  (``poll_install_delay_s`` after LastChangedDate, plus the host splay). The secret rotates every ``--rotation-days`` (30) at
  a random time in the window ending at its NextRotationDate, and every doorbell is lost: the
  delays it reports are the safety net's worst case. moto dates its NextRotationDate by the real
  clock; the bench shifts them by the simulated time at which the schedule was set.

GetSecretValue (the billed, decrypting call) must be 0 while nothing changes; the bench exits 1
otherwise. The last line is JSON for the cost model.

    .venv/bin/python bench/bench_api_calls.py [--minutes 1] [--certs 1] [--sim-days 60]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import time
import uuid
from collections import Counter
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional, Tuple

import boto3
from common import AwsProxy, BenchHost, LocalAws, label_updated

from certpull.cadence import DAY_S as CADENCE_DAY_S
from certpull.cadence import RotationFacts, facts_from_describe, next_check
from certpull.config import AgentConfig, parse_config
from certpull.event_queue import MAX_WAIT_S
from certpull.fleet_loop import FleetPlan, not_after_of
from certpull.schedule import Scheduler
from certpull.splay import host_splay_s
from certpull.state import Installed, State

DAY_S = 86400.0
SM_CHECK = "DescribeSecret"  # one per certificate per check (AWSCURRENT's version id, no payload)


def idle(host: BenchHost, window_s: float) -> Tuple[Dict[str, int], List[float]]:
    """Calls per operation during `window_s` of idling after the first pass, and the times at
    which ReceiveMessage calls returned."""
    assert host.proxy is not None
    host.start_daemon()
    host.proxy.reset_counts()
    time.sleep(window_s)
    log = list(host.proxy.log)
    return dict(Counter(op for _, op, _ in log)), [t for t, op, _ in log if op == "ReceiveMessage"]


def long_poll_s(window_s: float, returned: List[float]) -> Tuple[float, str]:
    """Seconds per idle long poll: measured between returns, or the SQS wait if too few."""
    if len(returned) >= 2:
        return (returned[-1] - returned[0]) / (len(returned) - 1), "measured"
    if returned:
        return window_s / len(returned), "window / calls"
    return float(MAX_WAIT_S), "assumed (window shorter than one long poll)"


def poll_mode(args: argparse.Namespace, production: AgentConfig) -> Dict[str, Any]:
    options = {"poll_interval_s": str(args.poll_interval)}
    with BenchHost(certs=args.certs, agent_options=options) as host:
        calls, _ = idle(host, args.minutes * 60)
    checks = calls.get(SM_CHECK, 0) / args.certs
    per_check = {op: n / args.certs / max(checks, 1) for op, n in calls.items()}
    checks_per_day = DAY_S / production.poll_interval_s
    return {
        "interval_s": args.poll_interval,
        "window_s": args.minutes * 60,
        "calls": calls,
        "checks_per_cert": checks,
        "calls_per_cert_per_check": per_check,
        "production_poll_interval_s": production.poll_interval_s,
        "per_cert_per_day": {op: round(v * checks_per_day, 1) for op, v in per_check.items()},
        "get_secret_value_when_unchanged": calls.get("GetSecretValue", 0),
    }


def event_mode(args: argparse.Namespace, production: AgentConfig) -> Dict[str, Any]:
    options = {"reconcile_interval_s": str(args.reconcile_interval)}
    with BenchHost(certs=args.certs, events=True, agent_options=options) as host:
        assert host.proxy is not None and host.bus is not None
        window_s = args.minutes * 60
        calls, returned = idle(host, window_s)
        checks = calls.get(SM_CHECK, 0) / args.certs
        sm_per_check = {
            op: n / args.certs / max(checks, 1)
            for op, n in calls.items()
            if op in (SM_CHECK, "GetSecretValue")
        }
        # one rotation: the calls it adds (the long poll that returns it, the check, the fetch,
        # the delete, the next long poll it starts are counted once it is served)
        host.proxy.reset_counts()
        leaf = host.next_leaf()
        version = host.site.put(leaf)
        passes = host.passes()
        host.bus.put_event(label_updated(host.site, version))
        assert host.daemon is not None
        host.daemon.wait_for("the rotation's pass", lambda: host.passes() > passes, 60)
        rotation = dict(Counter(op for _, op, _ in list(host.proxy.log)))
    seconds_per_poll, how = long_poll_s(window_s, returned)
    reconciles_per_day = DAY_S / production.reconcile_interval_s
    return {
        "reconcile_interval_s": args.reconcile_interval,
        "window_s": window_s,
        "calls": calls,
        "seconds_per_long_poll": round(seconds_per_poll, 1),
        "seconds_per_long_poll_from": how,
        "sqs_wait_s": MAX_WAIT_S,
        "reconcile_checks_per_cert": checks,
        "production_reconcile_interval_s": production.reconcile_interval_s,
        "per_cert_per_day": {
            op: round(v * reconciles_per_day, 1) for op, v in sm_per_check.items()
        },
        "per_host_per_day": {"ReceiveMessage": round(DAY_S / seconds_per_poll, 1)},
        "per_rotation": rotation,
        "get_secret_value_when_unchanged": calls.get("GetSecretValue", 0),
    }


def _shifted(facts: RotationFacts, offset_s: float) -> RotationFacts:
    """moto's dates (real clock) moved onto the simulated clock."""

    def shift(value: Optional[float]) -> Optional[float]:
        return None if value is None else value + offset_s

    return dataclasses.replace(
        facts,
        next_rotation_at=shift(facts.next_rotation_at),
        last_rotated_at=shift(facts.last_rotated_at),
        last_changed_at=shift(facts.last_changed_at),
    )


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat()


def adaptive_mode(args: argparse.Namespace) -> Dict[str, Any]:
    """The adaptive safety poll over simulated days; real DescribeSecret / GetSecretValue calls."""
    rng = random.Random(args.seed)
    with LocalAws() as aws:
        proxy = AwsProxy(aws.endpoint_url).start()
        try:
            setup = aws.client("secretsmanager")
            arn = setup.create_secret(Name=f"www-tls-{uuid.uuid4().hex[:8]}", SecretString="{}")[
                "ARN"
            ]
            agent = boto3.session.Session().client(
                "secretsmanager", region_name="us-east-1", endpoint_url=proxy.endpoint_url
            )
            sim = time.time()  # simulated wall clock, starting now
            mono = 0.0  # the Scheduler's monotonic clock (sim - start)

            def schedule(at_sim: float) -> Tuple[float, float]:
                """(Re)arm rotation in moto; returns (offset, the rotation's simulated time)."""
                setup.rotate_secret(
                    SecretId=arn,
                    RotationRules={"AutomaticallyAfterDays": args.rotation_days},
                    RotateImmediately=False,
                )
                offset = at_sim - time.time()
                due = at_sim + args.rotation_days * CADENCE_DAY_S
                return offset, due - rng.uniform(0, CADENCE_DAY_S)  # rotates within the day

            offset, rotation_at = schedule(sim)
            installed = str(
                agent.get_secret_value(SecretId=arn, VersionStage="AWSCURRENT")["VersionId"]
            )
            known: Dict[str, RotationFacts] = {}
            agent_config = parse_config(
                f"[agent]\ndoorbell = yes\n[cert:www]\nsecret_arn = {arn}\n"
            )
            config = FleetPlan(agent_config, lambda a: None, rng).cadence
            plan = FleetPlan(
                agent_config,
                known.get,
                rng,
                lambda: host_splay_s("i-0123456789abcdef0", agent_config.agent.host_splay_s),
            )
            state = State()

            def install(version: str, at: float) -> None:
                state.cert("www").installed = Installed(
                    version_id=version,
                    store_version="",
                    serial="",
                    fingerprint_sha256="",
                    subject="",
                    not_after=_iso(at + 365 * CADENCE_DAY_S),
                )

            install(installed, sim)
            scheduler = Scheduler(rng, interval_s=agent_config.agent.safety_poll_interval_s)
            scheduler.add("www", mono, first_in_s=0.0)
            proxy.reset_counts()
            start, end = sim, sim + args.sim_days * CADENCE_DAY_S
            checks, delays, install_delays, reasons = 0, [], [], Counter()
            pending_since: Optional[float] = None  # when AWSCURRENT moved unseen
            noticed = False
            while True:
                mono = scheduler.next_wakeup(mono)
                sim = start + mono
                if sim >= end:
                    break
                if sim >= rotation_at:  # the producer rotated meanwhile; its doorbell is lost
                    setup.put_secret_value(SecretId=arn, SecretString=uuid.uuid4().hex)
                    pending_since = rotation_at
                    offset, rotation_at = schedule(rotation_at)
                for name in scheduler.due(mono):
                    defer = plan.defer_for({name}, sim)  # every check is a poll: doorbells lost
                    response = agent.describe_secret(SecretId=arn)  # the agent's check
                    checks += 1
                    known[arn] = _shifted(facts_from_describe(response), offset)
                    current = next(
                        v
                        for v, stages in response["VersionIdsToStages"].items()
                        if "AWSCURRENT" in stages
                    )
                    if current != installed:
                        if pending_since is not None and not noticed:
                            delays.append(sim - pending_since)
                            noticed = True
                        assert defer is not None
                        if defer(name, current, None) is None:
                            agent.get_secret_value(SecretId=arn, VersionStage="AWSCURRENT")
                            installed = current
                            install(current, sim)
                            if pending_since is not None:
                                install_delays.append(sim - pending_since)
                                pending_since, noticed = None, False
                    reason = next_check(
                        sim, known[arn], not_after_of(state, name), True, config
                    ).reason  # why (the wait itself is FleetPlan's)
                    reasons[reason] += 1
                    scheduler.record_success(name, mono, next_in_s=plan.next_in_s(name, state, sim))
            calls = dict(Counter(op for _, op, _ in list(proxy.log)))
        finally:
            proxy.stop()
    return {
        "sim_days": args.sim_days,
        "rotation_days": args.rotation_days,
        "cadence": dataclasses.asdict(config),
        "calls": calls,
        "checks": checks,
        "checks_per_cert_per_day": round(checks / args.sim_days, 2),
        "calls_per_cert_per_check": {op: n / max(checks, 1) for op, n in calls.items()},
        "per_cert_per_day": {op: round(n / args.sim_days, 2) for op, n in calls.items()},
        "check_reasons": dict(reasons),
        "rotations": len(delays),
        "lost_doorbell_detection_s": {
            "max": round(max(delays), 1) if delays else None,
            "all": [round(d, 1) for d in delays],
        },
        "lost_doorbell_install_s": {
            "max": round(max(install_delays), 1) if install_delays else None,
            "all": [round(d, 1) for d in install_delays],
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=1.0, help="idle window per mode")
    parser.add_argument("--certs", type=int, default=1)
    parser.add_argument("--poll-interval", type=float, default=2.0, help="seconds, poll mode")
    parser.add_argument("--reconcile-interval", type=float, default=5.0, help="s, event mode")
    parser.add_argument("--sim-days", type=float, default=120.0, help="adaptive poll: days")
    parser.add_argument("--rotation-days", type=int, default=30, help="adaptive poll: period")
    parser.add_argument("--seed", type=int, default=20261129)
    parser.add_argument(
        "--only-adaptive", action="store_true", help="skip the poll and event runs (seconds)"
    )
    args = parser.parse_args()
    production = AgentConfig()
    adaptive = adaptive_mode(args)
    print(
        f"adaptive poll ({args.sim_days:g} simulated days, rotation every {args.rotation_days} d, "
        f"every doorbell lost): {adaptive['calls']} -> {adaptive['checks_per_cert_per_day']} "
        f"checks/cert/day; reasons {adaptive['check_reasons']}; worst detection "
        f"{adaptive['lost_doorbell_detection_s']['max']} s, worst install "
        f"{adaptive['lost_doorbell_install_s']['max']} s over {adaptive['rotations']} rotations"
    )
    if args.only_adaptive:
        print(json.dumps({"bench": "api_calls", "certs": 1, "adaptive": adaptive}, sort_keys=True))
        return
    poll = poll_mode(args, production)
    events = event_mode(args, production)
    print(f"{args.certs} certificate(s), {args.minutes:g} min idle per mode (moto via the proxy)")
    print(
        f"poll mode   ({args.poll_interval:g} s): {poll['calls']} -> "
        f"{poll['checks_per_cert']:.0f} checks/cert, per check {poll['calls_per_cert_per_check']}"
    )
    print(
        f"  scaled to poll_interval_s={production.poll_interval_s:g}: "
        f"{poll['per_cert_per_day']} per cert per day"
    )
    print(
        f"event mode  ({args.reconcile_interval:g} s reconcile): {events['calls']}; "
        f"one long poll every {events['seconds_per_long_poll']} s "
        f"({events['seconds_per_long_poll_from']})"
    )
    print(
        f"  scaled to reconcile_interval_s={production.reconcile_interval_s:g}: "
        f"{events['per_cert_per_day']} per cert per day, "
        f"+ {events['per_host_per_day']} per host per day"
    )
    print(f"  one rotation costs: {events['per_rotation']}")
    unchanged = poll["get_secret_value_when_unchanged"] + events["get_secret_value_when_unchanged"]
    unchanged += adaptive["calls"].get("GetSecretValue", 0) - adaptive["rotations"]
    print(f"GetSecretValue while nothing changed: {unchanged} (must be 0)")
    print(
        json.dumps(
            {
                "bench": "api_calls",
                "certs": args.certs,
                "scaling": "per_cert_per_day = calls_per_check * 86400 / production interval; "
                "ReceiveMessage per host per day = 86400 / seconds_per_long_poll",
                "poll": poll,
                "events": events,
                "adaptive": adaptive,
            },
            sort_keys=True,
        )
    )
    if unchanged:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
