"""AWS API calls of `certpull run`, counted at the proxy, scaled to calls per certificate per day.

Two runs of the real daemon against moto, each idle (no secret changes) for `--minutes`:

* poll mode, `poll_interval_s = --poll-interval`: every call is a check, so the bench measures
  calls per check and scales by checks per day at the production interval (300 s by default):
  `per day = calls_per_check * 86400 / poll_interval_s`.
* event mode, `reconcile_interval_s = --reconcile-interval`: reconcile checks scale the same way
  at the production reconcile interval (3600 s); SQS long polls are per host, not per
  certificate: `ReceiveMessage per day = 86400 / measured seconds per long poll`. Then one
  rotation is published and the calls it costs are counted (what a rotation adds on top).

GetSecretValue (the billed, decrypting call) must be 0 while nothing changes; the bench exits 1
otherwise. The last line is JSON for the cost model.

    .venv/bin/python bench/bench_api_calls.py [--minutes 1] [--certs 1]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from typing import Any, Dict, List, Tuple

from common import BenchHost, label_updated

from certpull.config import AgentConfig
from certpull.event_queue import MAX_WAIT_S

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=1.0, help="idle window per mode")
    parser.add_argument("--certs", type=int, default=1)
    parser.add_argument("--poll-interval", type=float, default=2.0, help="seconds, poll mode")
    parser.add_argument("--reconcile-interval", type=float, default=5.0, help="s, event mode")
    args = parser.parse_args()
    production = AgentConfig()
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
            },
            sort_keys=True,
        )
    )
    if unchanged:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
