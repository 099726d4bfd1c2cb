"""Event -> new leaf served: how long a rotation takes to reach clients in event mode.

Runs `certpull run` (event mode, event_splay_s = 0, reconcile once an hour so polling plays no
part) against moto's server and a private Apache. Each round puts a new certificate into the
secret, publishes a `Secret Label Updated` event through an EventBridge rule into the agent's
SQS queue, and times from `put_events` to the first fresh TLS handshake that returns the new leaf
(a fresh handshake every 2 ms: moto and the proxy run in this process and a loop without a pause
would starve them of the GIL).

Two modes, both in one run by default (`--mode`):
  spaced        each round waits for the agent's pass to end before the next (the baseline). Also
                shows when GetSecretValue answered (seen at the proxy), which splits the time into
                "agent picked the event up" and "installed, reloaded, served".
  back-to-back  the next rotation is published as soon as the previous one is served, as when
                rotations arrive one after the other: after the reload the agent watches httpd for
                `alive_grace_s` (2 s) to catch a reload that kills it, and an event arriving then
                waits for that pass.
The summary gives p50 / p99 of each and back-to-back's ratio to spaced. `--variant` runs the agent
with prototypes of bench/prototypes/variants.py (e.g. full-grace, the agent before issue 15) after the unmodified agent, all
in the same run; `--rpm PATH` runs an unpacked package on a CPython 3.9 (see bench_idle.py).

    .venv/bin/python bench/bench_event_latency.py [-n 30] [--mode both|spaced|back-to-back]
        [--variant full-grace] [--rpm dist/certpull-*.rpm]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any, Callable, Dict, List

from common import BenchHost, Runtime, label_updated, percentile, summary_ms
from prototypes.variants import env_for

from certpull.httpd import wait_until_served


def passes_beyond(host: BenchHost, count: int) -> Callable[[], bool]:
    return lambda: host.passes() > count


def pause() -> None:
    time.sleep(0.002)


def rotations(host: BenchHost, count: int, back_to_back: bool) -> Dict[str, List[float]]:
    """`count` rotations; seconds from put_events to served (and to GetSecretValue when spaced)."""
    assert host.bus is not None and host.apache is not None and host.proxy is not None
    assert host.daemon is not None
    daemon = host.daemon
    served: List[float] = []
    fetched: List[float] = []
    passes = host.passes()
    host.proxy.reset_counts()
    for i in range(count):
        leaf = host.next_leaf()
        version = host.site.put(leaf)
        event = label_updated(host.site, version)
        if not back_to_back:
            host.proxy.reset_counts()
            passes = host.passes()
        started_wall, started = time.time(), time.monotonic()
        host.bus.put_event(event)
        wait_until_served(host.apache.target(), leaf.der, 30.0, sleep=lambda _s: pause())
        served.append(time.monotonic() - started)
        if back_to_back:
            continue
        daemon.wait_for("the pass to end", passes_beyond(host, passes), 30)
        gets = [t for t, op, _ in list(host.proxy.log) if op == "GetSecretValue"]
        if len(gets) != 1:
            raise SystemExit(f"round {i}: {len(gets)} GetSecretValue calls, expected 1")
        fetched.append(gets[0] - started_wall)
    if back_to_back:
        daemon.wait_for("the last pass to end", passes_beyond(host, passes + count - 1), 30)
        gets = sum(1 for _, op, _ in list(host.proxy.log) if op == "GetSecretValue")
        if gets != count:
            raise SystemExit(f"back-to-back: {gets} GetSecretValue calls for {count} rotations")
    return {"served": served, "fetched": fetched}


def stats(values: List[float]) -> Dict[str, float]:
    ms = [v * 1000 for v in values]
    return {
        "n": len(ms),
        "p50_ms": round(statistics.median(ms), 1),
        "p99_ms": round(percentile(ms, 99), 1),
        "max_ms": round(max(ms), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--rotations", type=int, default=30, help="per mode (default 30)")
    parser.add_argument("--mode", choices=("both", "spaced", "back-to-back"), default="both")
    parser.add_argument("--variant", action="append", default=[])
    parser.add_argument("--rpm", help="run this package's unpacked tree on a CPython 3.9")
    args = parser.parse_args()
    modes = ["spaced", "back-to-back"] if args.mode == "both" else [args.mode]
    runtime = Runtime(args.rpm)
    results: List[Dict[str, Any]] = []
    try:
        print(
            f"event mode, splay 0, {args.rotations} rotations per mode, {runtime.describe()} "
            "(moto + private Apache, loopback)"
        )
        for variants in [[]] + [v.split("+") for v in args.variant]:
            name = "+".join(variants) or "agent as is"
            options = {"reconcile_interval_s": "3600"}
            with BenchHost(events=True, agent_options=options) as host:
                daemon = host.start_daemon(env=env_for(variants), command=runtime.command(variants))
                for mode in modes:
                    got = rotations(host, args.rotations, mode == "back-to-back")
                    row: Dict[str, Any] = {
                        "variant": name,
                        "mode": mode,
                        "served": stats(got["served"]),
                    }
                    print(summary_ms(f"{name}, {mode}: event -> served", got["served"]))
                    if got["fetched"]:
                        row["fetched"] = stats(got["fetched"])
                        print(
                            summary_ms(f"{name}, {mode}: event -> GetSecretValue", got["fetched"])
                        )
                    results.append(row)
                if daemon.stop() != 0:
                    raise SystemExit(f"certpull run did not exit 0:\n{daemon.log()}")
        baseline = next((r for r in results if r["mode"] == "spaced"), results[0])
        which = f"{baseline['variant']}, {baseline['mode']}"
        for row in results:
            p50 = row["served"]["p50_ms"] / baseline["served"]["p50_ms"]
            p99 = row["served"]["p99_ms"] / baseline["served"]["p99_ms"]
            print(
                f"  {row['variant']}, {row['mode']}: p50 {row['served']['p50_ms']:.0f} ms, "
                f"p99 {row['served']['p99_ms']:.0f} ms = {p50:.2f}x / {p99:.2f}x {which} "
                "(goal back-to-back: p50 <= 500 ms, p99 <= 1,500 ms)"
            )
    finally:
        runtime.close()
    print(json.dumps({"bench": "event_latency", "results": results}))


if __name__ == "__main__":
    main()
