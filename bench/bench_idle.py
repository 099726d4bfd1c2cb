"""What an idle `certpull run` costs the host: resident memory and CPU seconds per hour.

Starts the real daemon with `--certs` certificates (3 by default) against moto and a private
Apache, waits for its first pass, installs `--rotations` new versions of `www` (1 by default: the
figure that counts is the agent after a rotation, with everything a pass loads loaded; an event in
events mode, SIGUSR1 in poll mode), then samples /proc/PID/status (VmRSS, RssAnon, RssFile,
VmHWM) and /proc/PID/stat (utime + stime, with its reaped children's) every `--sample` seconds
over `--window` seconds while nothing changes, and apart the RSS of its live children (the X.509
worker while it lingers after the rotation). CPU per hour is extrapolated linearly:
`cpu_s_in_window * 3600 / window`.

Baselines measured in the same run: the bare interpreter the agent runs on (`python -c` that
sleeps: what any Python process costs), and with `--variant` (repeatable) the unmodified agent,
against which each prototype of bench/prototypes/variants.py is compared. Each configuration runs
`--repeat` times on a fresh host; the figures are medians.

`--rpm PATH` runs the agent from that package, unpacked (rpm2cpio | cpio) and started with its
launcher on a CPython 3.9 (tests/rpm_build.py finds one), as a host runs it; otherwise the checkout
on this interpreter. Intervals are the production defaults unless given: poll mode checks every
300 s, event mode long-polls SQS (20 s) and reconciles every 3600 s.

    .venv/bin/python bench/bench_idle.py [--window 120] [--mode poll|events] [--certs 3]
        [--rotations 1] [--repeat 1] [--rpm dist/certpull-*.rpm] [--before main.rpm]
        [--variant malloc-trim ...]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import time
from typing import Any, Dict, List, Tuple

from common import BenchHost, Runtime, label_updated, memory_kib
from prototypes.variants import env_for

from certpull.httpd import wait_until_served
from certpull.x509_worker import LINGER_S
from tests.proc_tree import tree

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MIB = 1024.0


def cpu_s(pid: int) -> float:
    """utime + stime of `pid` and of its reaped children (the X.509 worker, httpd's commands), in
    seconds (fields 14-17 of /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        fields = handle.read().rpartition(")")[2].split()
    return sum(int(f) for f in fields[11:15]) / CLOCK_TICKS


def children_rss_kib(pid: int) -> int:
    total = 0
    for child in tree(pid)[1:]:  # the lingering X.509 worker, a running command
        with contextlib.suppress(OSError):  # it ended meanwhile
            total += memory_kib(child).get("VmRSS", 0)
    return total


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def sample(pid: int, window_s: float, every_s: float) -> List[Tuple[float, float, int, int]]:
    """(seconds since start, cpu seconds, VmRSS KiB, children's VmRSS KiB) every `every_s` for
    `window_s`."""
    started = time.monotonic()
    samples = []
    while True:
        now = time.monotonic() - started
        samples.append((now, cpu_s(pid), memory_kib(pid)["VmRSS"], children_rss_kib(pid)))
        if now >= window_s:
            return samples
        time.sleep(min(every_s, max(0.0, window_s - now)))


def rotate(host: BenchHost, events: bool) -> None:
    """One new version of `www`, announced (event or SIGUSR1); back once served and the pass ended."""
    assert host.apache is not None and host.daemon is not None
    leaf = host.next_leaf()
    version = host.site.put(leaf)
    passes = host.passes()
    if events:
        assert host.bus is not None
        host.bus.put_event(label_updated(host.site, version))
    else:
        host.daemon.signal(signal.SIGUSR1)
    wait_until_served(host.apache.target(), leaf.der, 30.0)
    host.daemon.wait_for("the rotation's pass", lambda: host.passes() > passes, 30)


def measure_once(args: argparse.Namespace, runtime: Runtime, variants: List[str]) -> Dict[str, Any]:
    options = {"poll_interval_s": str(args.poll_interval)}
    with BenchHost(certs=args.certs, events=args.mode == "events", agent_options=options) as host:
        daemon = host.start_daemon(env=env_for(variants), command=runtime.command(variants))
        pid = daemon.proc.pid
        for _ in range(args.rotations):
            rotate(host, args.mode == "events")
        time.sleep(args.settle)
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
    rss = [kib for _, _, kib, _ in samples]
    kids = [kib for _, _, _, kib in samples]
    return {
        "window_s": round(window, 1),
        "cpu_s_in_window": round(cpu, 3),
        "cpu_s_per_hour": round(cpu * 3600 / window, 2),
        "rss_kib_first": rss[0],
        "rss_kib_last": rss[-1],
        "rss_kib_median": statistics.median(rss),
        "rss_anon_kib": memory.get("RssAnon"),
        "rss_file_kib": memory.get("RssFile"),
        "pss_kib": memory.get("Pss"),
        "rss_kib_peak_vmhwm": memory["VmHWM"],
        "children_rss_kib_median": statistics.median(kids),
        "children_rss_kib_max": max(kids),
        "threads": thread_count,
        "aws_calls_in_window": calls,
    }


def median_of(runs: List[Dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in runs if r.get(key) is not None))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--window", type=float, default=120.0, help="seconds (default 120)")
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--mode", choices=("poll", "events"), default="poll")
    parser.add_argument("--certs", type=int, default=3)
    parser.add_argument("--rotations", type=int, default=1, help="before sampling (default 1)")
    parser.add_argument("--poll-interval", type=float, default=300.0)
    parser.add_argument(
        "--settle",
        type=float,
        default=LINGER_S + 2,
        help="seconds after the last pass (default: the X.509 worker's linger + 2 s, so that the "
        "window shows the steady state, not the end of the worker)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per configuration (median)")
    parser.add_argument("--rpm", help="run this package's unpacked tree on a CPython 3.9")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="a prototype (or a+b) from bench/prototypes/variants.py; repeatable",
    )
    parser.add_argument(
        "--before",
        metavar="RPM",
        help="first measure this package (e.g. built from main) as the baseline, in the same run",
    )
    args = parser.parse_args()
    runtime = Runtime(args.rpm)
    before = Runtime(args.before) if args.before else None
    try:
        configs: List[Tuple[str, Runtime, List[str]]] = []
        if before is not None:
            configs.append(("before: " + os.path.basename(args.before), before, []))
        configs += [("agent as is", runtime, [])]
        configs += [("+".join(v.split("+")), runtime, v.split("+")) for v in args.variant]
        interpreter = runtime.interpreter_rss_kib()
        print(
            f"idle certpull run, {args.mode} mode, {args.certs} certs, {args.rotations} rotation(s) "
            f"before a {args.window:.0f} s window, {runtime.describe()}; medians of {args.repeat} run(s)"
        )
        print(f"  baseline: the bare interpreter holds {interpreter / MIB:.1f} MiB RSS")
        results: List[Dict[str, Any]] = []
        for name, where, variants in configs:
            runs = [measure_once(args, where, variants) for _ in range(args.repeat)]
            rss = median_of(runs, "rss_kib_median")
            summary = {
                "variant": name,
                "rss_mib": round(rss / MIB, 2),
                "rss_anon_mib": round(median_of(runs, "rss_anon_kib") / MIB, 2),
                "rss_file_mib": round(median_of(runs, "rss_file_kib") / MIB, 2),
                "pss_mib": round(median_of(runs, "pss_kib") / MIB, 2),
                "peak_mib": round(median_of(runs, "rss_kib_peak_vmhwm") / MIB, 2),
                "cpu_s_per_hour": round(median_of(runs, "cpu_s_per_hour"), 2),
                "children_rss_mib": round(median_of(runs, "children_rss_kib_median") / MIB, 2),
                "children_rss_mib_max": round(median_of(runs, "children_rss_kib_max") / MIB, 2),
                "threads": runs[0]["threads"],
                "aws_calls_in_window": runs[0]["aws_calls_in_window"],
                "runs_rss_mib": [round(r["rss_kib_median"] / MIB, 2) for r in runs],
            }
            results.append(summary)
            base = results[0]["rss_mib"]
            print(
                f"  {name:<34} RSS {summary['rss_mib']:6.1f} MiB (anon {summary['rss_anon_mib']:.1f}, "
                f"file {summary['rss_file_mib']:.1f}; PSS {summary['pss_mib']:.1f}; peak "
                f"{summary['peak_mib']:.1f}) = {summary['rss_mib'] / (interpreter / MIB):.2f}x the "
                f"interpreter, {summary['rss_mib'] - base:+.1f} MiB vs {results[0]['variant']}; "
                f"CPU {summary['cpu_s_per_hour']} s/h (children included); "
                f"{summary['threads']} threads; children RSS {summary['children_rss_mib']:.1f} "
                f"MiB (max {summary['children_rss_mib_max']:.1f} in the window)"
            )
        mine = next(r for r in results if r["variant"] == "agent as is")
        print(f"  AWS calls in the window: {mine['aws_calls_in_window']}")
        print(
            json.dumps(
                {
                    "bench": "idle",
                    "mode": args.mode,
                    "certs": args.certs,
                    "rotations": args.rotations,
                    "runtime": runtime.describe(),
                    "interpreter_rss_mib": round(interpreter / MIB, 2),
                    "rss_kib_median": mine["rss_mib"] * MIB,
                    "cpu_s_per_hour": mine["cpu_s_per_hour"],
                    "results": results,
                },
                sort_keys=True,
            )
        )
    finally:
        runtime.close()
        if before is not None:
            before.close()


if __name__ == "__main__":
    main()
