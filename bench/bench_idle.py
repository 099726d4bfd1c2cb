"""What an idle `certpull run` costs the host: resident memory and CPU seconds per hour.

Starts the real daemon with `--certs` certificates (3 by default) against moto and a private
Apache, waits for its first pass, then samples /proc/PID/status (VmRSS, VmHWM) and /proc/PID/stat
(utime + stime, in clock ticks) every `--sample` seconds over `--window` seconds while nothing
changes. CPU per hour is extrapolated linearly: `cpu_s_per_hour = cpu_s_in_window * 3600 / window`.

Intervals are the production defaults unless given: poll mode checks every 300 s, event mode
long-polls SQS (20 s) and reconciles every 3600 s. A 2-minute window therefore holds about 0-1
poll checks, 4 heartbeats (every 30 s) and, in event mode, 6 long polls.

    .venv/bin/python bench/bench_idle.py [--window 120] [--mode poll|events] [--certs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Dict, List, Tuple

from common import BenchHost

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def memory_kib(pid: int) -> Dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of `pid`, in KiB."""
    found: Dict[str, int] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0])
    return found


def cpu_s(pid: int) -> float:
    """utime + stime of `pid` in seconds (fields 14 and 15 of /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        fields = handle.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def sample(pid: int, window_s: float, every_s: float) -> List[Tuple[float, float, int]]:
    """(seconds since start, cpu seconds, VmRSS KiB) every `every_s` for `window_s`."""
    started = time.monotonic()
    samples = []
    while True:
        now = time.monotonic() - started
        samples.append((now, cpu_s(pid), memory_kib(pid)["VmRSS"]))
        if now >= window_s:
            return samples
        time.sleep(min(every_s, max(0.0, window_s - now)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--window", type=float, default=120.0, help="seconds (default 120)")
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--mode", choices=("poll", "events"), default="poll")
    parser.add_argument("--certs", type=int, default=3)
    parser.add_argument("--poll-interval", type=float, default=300.0)
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after the first pass")
    args = parser.parse_args()
    options = {"poll_interval_s": str(args.poll_interval)}
    with BenchHost(certs=args.certs, events=args.mode == "events", agent_options=options) as host:
        daemon = host.start_daemon()
        pid = daemon.proc.pid
        time.sleep(args.settle)  # let imports and the first pass finish
        assert host.proxy is not None
        host.proxy.reset_counts()
        samples = sample(pid, args.window, args.sample)
        memory = memory_kib(pid)
        thread_count = threads(pid)
        calls = dict(host.proxy.calls)
        if daemon.stop() != 0:
            raise SystemExit(f"certpull run did not exit 0:\n{daemon.log()}")
    window = samples[-1][0] - samples[0][0]
    cpu = samples[-1][1] - samples[0][1]
    rss = [kib for _, _, kib in samples]
    result = {
        "bench": "idle",
        "mode": args.mode,
        "certs": args.certs,
        "window_s": round(window, 1),
        "cpu_s_in_window": round(cpu, 3),
        "cpu_s_per_hour": round(cpu * 3600 / window, 2),
        "cpu_percent_of_one_core": round(100 * cpu / window, 3),
        "rss_kib_first": rss[0],
        "rss_kib_last": rss[-1],
        "rss_kib_median": statistics.median(rss),
        "rss_kib_peak_vmhwm": memory["VmHWM"],
        "threads": thread_count,
        "aws_calls_in_window": calls,
        "clock_ticks_per_s": CLOCK_TICKS,
    }
    print(
        f"idle certpull run, {args.mode} mode, {args.certs} certs, {window:.0f} s window "
        f"({len(samples)} samples, CPU resolution 1/{CLOCK_TICKS} s)"
    )
    print(
        f"  CPU: {cpu:.2f} s in the window -> {result['cpu_s_per_hour']} s per hour "
        f"({result['cpu_percent_of_one_core']} % of one core)"
    )
    print(
        f"  RSS: first {rss[0] / 1024:.1f} MiB, last {rss[-1] / 1024:.1f} MiB, "
        f"median {statistics.median(rss) / 1024:.1f} MiB, peak (VmHWM) {memory['VmHWM'] / 1024:.1f} MiB; "
        f"{thread_count} threads"
    )
    print(f"  AWS calls in the window: {calls}")
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
