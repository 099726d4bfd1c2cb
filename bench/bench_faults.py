"""AWS faults during `certpull run`: certificates lost, calls made during the outage, time to recover.

A real daemon (production settings unless flagged: poll_interval_s 300, max_backoff_s 900,
max_attempts 3) reaches moto through the fault-injecting proxy and keeps a private Apache on
127.0.0.1 in step with a secret. For each fault kind:

  1. Inject the fault (or make it real in moto: deletion scheduled), publish a new version and send
     SIGUSR1 (an operator or a rotation event asking for a check now), so the agent meets the fault.
  2. Hold the fault for --outage seconds, doing a TLS handshake every 0.25 s: a handshake that fails
     or returns an unknown leaf, or live files that change, count as certificates lost.
  3. Clear the fault and time how long until httpd serves the new version (the backoff's pending
     delay decides; SIGUSR1 is not sent again).

Calls during the outage are counted at the proxy and set against what healthy polling would have
made in the same time. One line per fault kind, then a JSON line.

    .venv/bin/python bench/bench_faults.py [--outage 60] [--kinds throttling,...] [--max-backoff 900]
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "agent"), str(ROOT)]

from tests.crash_harness import standalone_site  # noqa: E402
from tests.daemon_proc import Daemon  # noqa: E402
from tests.integration.test_aws_faults import AWS_FAULTS, AwsFault  # noqa: E402
from tests.site import Site  # noqa: E402

SAMPLE_S = 0.25


def served_or_none(site: Site) -> bytes:
    try:
        return site.served_der()
    except Exception:
        return b""


def one_fault(
    site: Site, daemon: Daemon, case: AwsFault, leaf_der: bytes, outage_s: float
) -> Dict[str, Any]:
    proxy = site.proxy
    old = served_or_none(site)
    files = site.live_bytes()
    known = {old, leaf_der}
    if case.break_it:
        case.break_it(site)
    for fault in case.faults:
        proxy.inject(fault)
    proxy.reset_counts()
    daemon.signal(signal.SIGUSR1)  # (1)
    lost_samples = samples = 0
    end = time.monotonic() + outage_s
    while time.monotonic() < end:  # (2)
        served = served_or_none(site)
        samples += 1
        if served != old or site.live_bytes() != files:
            lost_samples += 1
        time.sleep(SAMPLE_S)
    calls = {op: proxy.count(op) for op in ("DescribeSecret", "GetSecretValue")}
    proxy.clear_faults()  # (3)
    if case.heal:
        case.heal(site)
    cleared = time.monotonic()
    recovered_s = None
    deadline = cleared + 1800
    while time.monotonic() < deadline:
        served = served_or_none(site)
        if served == leaf_der:
            recovered_s = time.monotonic() - cleared
            break
        if served not in known:
            lost_samples += 1
        time.sleep(SAMPLE_S)
    return {
        "fault": case.id,
        "outage_s": outage_s,
        "calls_during_outage": calls,
        "lost_samples": lost_samples,
        "samples": samples,
        "recovered_after_s": None if recovered_s is None else round(recovered_s, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--outage", type=float, default=60.0, help="seconds each fault lasts")
    parser.add_argument("--kinds", default=",".join(c.id for c in AWS_FAULTS))
    parser.add_argument("--poll-interval", type=float, default=300.0)
    parser.add_argument("--max-backoff", type=float, default=900.0)
    parser.add_argument("--max-attempts", type=int, default=3)
    parser.add_argument(
        "--read-timeout", type=float, default=1.0, help="s (the slow fault waits 1.5 s)"
    )
    args = parser.parse_args()
    cases = {c.id: c for c in AWS_FAULTS}
    wanted = [cases[k] for k in args.kinds.split(",") if k]
    results: List[Dict[str, Any]] = []
    with standalone_site() as site:
        leaves = [site.pki.leaf(slot=i) for i in range(len(wanted) + 1)]
        site.cert_options["allow_downgrade"] = "yes"
        site.agent_options.update(
            {
                "poll_interval_s": f"{args.poll_interval:g}",
                "max_backoff_s": f"{args.max_backoff:g}",
                "max_attempts": str(args.max_attempts),
                "read_timeout_s": f"{args.read_timeout:g}",
                "startup_splay_s": "0",
            }
        )
        site.create_secret(leaves[0])
        if site.certpull("sync").returncode != 0:
            raise SystemExit("first sync failed")
        site.apache.start()
        daemon = Daemon(site)
        try:
            daemon.wait_ready()
            time.sleep(2)  # the first pass (startup_splay_s = 0) finishes
            for i, case in enumerate(wanted, start=1):
                site.put(leaves[i])
                result = one_fault(site, daemon, case, leaves[i].der, args.outage)
                healthy = args.outage / args.poll_interval
                result["healthy_polling_calls"] = round(healthy, 2)
                results.append(result)
                calls = result["calls_during_outage"]
                print(
                    f"{case.id:<32} lost {result['lost_samples']}/{result['samples']} samples; "
                    f"calls in {args.outage:g} s: DescribeSecret {calls['DescribeSecret']}, "
                    f"GetSecretValue {calls['GetSecretValue']} (healthy polling: {healthy:.2f}); "
                    f"recovered {result['recovered_after_s']} s after the fault cleared",
                    flush=True,
                )
        finally:
            daemon.stop()
    print(
        json.dumps(
            {
                "bench": "faults",
                "settings": {
                    "poll_interval_s": args.poll_interval,
                    "max_backoff_s": args.max_backoff,
                    "max_attempts": args.max_attempts,
                    "read_timeout_s": args.read_timeout,
                },
                "certificates_lost": sum(1 for r in results if r["lost_samples"]),
                "results": results,
            }
        )
    )
    return 1 if any(r["lost_samples"] or r["recovered_after_s"] is None for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
