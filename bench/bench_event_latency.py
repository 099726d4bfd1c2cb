"""Event -> new leaf served: how long a rotation takes to reach clients in event mode.

Runs `certpull run` (event mode, event_splay_s = 0, reconcile once an hour so polling plays no
part) against moto's server and a private Apache. Each round puts a new certificate into the
secret, publishes a `Secret Label Updated` event through an EventBridge rule into the agent's
SQS queue, and times from `put_events` to the first fresh TLS handshake that returns the new leaf
(a fresh handshake every 2 ms: moto and the proxy run in this process and a loop without a pause
would starve them of the GIL). Also shows when GetSecretValue answered (seen at the proxy), which
splits the time into "agent picked the event up" and "installed, reloaded, served".

Each round waits for the agent's pass to end before the next: after the reload the agent watches
httpd for `alive_grace_s` (2 s) to catch a reload that kills it, and an event arriving then waits
for that pass (the split above shows it when rounds overlap).

    .venv/bin/python bench/bench_event_latency.py [-n 30]
"""

from __future__ import annotations

import argparse
import time
from typing import Callable, List

from common import BenchHost, label_updated, summary_ms

from certpull.httpd import wait_until_served


def passes_beyond(host: BenchHost, count: int) -> Callable[[], bool]:
    return lambda: host.passes() > count


def pause() -> None:
    time.sleep(0.002)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--rotations", type=int, default=30, help="rounds (default 30)")
    args = parser.parse_args()
    with BenchHost(events=True, agent_options={"reconcile_interval_s": "3600"}) as host:
        assert host.bus is not None and host.apache is not None and host.proxy is not None
        daemon = host.start_daemon()
        served: List[float] = []
        fetched: List[float] = []
        for i in range(args.rotations):
            leaf = host.next_leaf()
            version = host.site.put(leaf)
            event = label_updated(host.site, version)
            host.proxy.reset_counts()
            started_wall, started = time.time(), time.monotonic()
            passes = host.passes()
            host.bus.put_event(event)
            wait_until_served(host.apache.target(), leaf.der, 30.0, sleep=lambda _s: pause())
            served.append(time.monotonic() - started)
            daemon.wait_for("the pass to end", passes_beyond(host, passes), 30)
            gets = [t for t, op, _ in list(host.proxy.log) if op == "GetSecretValue"]
            if len(gets) != 1:
                raise SystemExit(f"round {i}: {len(gets)} GetSecretValue calls, expected 1")
            fetched.append(gets[0] - started_wall)
        if daemon.stop() != 0:
            raise SystemExit(f"certpull run did not exit 0:\n{daemon.log()}")
    print(f"event mode, splay 0, {args.rotations} rotations (moto + private Apache, loopback)")
    print(summary_ms("put_events -> GetSecretValue done", fetched))
    print(summary_ms("put_events -> new leaf served", served))


if __name__ == "__main__":
    main()
