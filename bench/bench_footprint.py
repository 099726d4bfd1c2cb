"""Footprint of the agent: `certpull status` wall time, RSS growth over many polls, cold start to READY.

status      `certpull -c CONF status` as a subprocess, --status-runs times, against a host with
            installed certificates and a state.json; median / p90 / max wall time, against the
            baseline `python -c pass` of the same interpreter measured in the same run (goal: at
            most 4x), and whether boto3 (or botocore) was imported on that path (must not).
polls       a child process builds the real Agent (boto3 client to moto's server on 127.0.0.1,
            real files) and runs --polls passes over --certs certificates whose secrets do not
            change (one DescribeSecret per certificate per pass, state.json saved every pass);
            RSS (VmRSS) after --warmup passes and at the end: growth (goal < 1 MiB).
ready       `certpull run` started --ready-runs times with a test NOTIFY_SOCKET and a certificate
            installed: seconds from exec to READY=1 (median / max; goal 250 ms), then SIGTERM.
            Also, interleaved in the same run, the time to import alone what `run` imports
            today, only what READY needs (config, store, state, notify, schedule: the floor if
            boto3, cryptography and watchdog were imported after READY), and nothing.

`--rpm PATH` runs `status` and `run` from that package, unpacked, with its launcher on a CPython
3.9 with its shebang's flags (AL2023's `/usr/bin/python3 -IOO`), and the baseline with the same
interpreter and flags;
otherwise the checkout on this interpreter (`python -m certpull`).

  .venv/bin/python bench/bench_footprint.py [--polls 10000] [--certs 3] [--status-runs 30]
      [--ready-runs 10] [--rpm dist/certpull-*.rpm]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "agent"), str(ROOT)]

from common import Runtime  # noqa: E402

from tests.crash_harness import certpull_env, standalone_site  # noqa: E402
from tests.daemon_proc import NotifySocket  # noqa: E402
from tests.site import Site  # noqa: E402

MIB = 1024 * 1024

# Runs in the child: N passes of the real Agent, RSS at checkpoints, one JSON line per checkpoint.
POLL_CHILD = """
import json, sys
from pathlib import Path
from certpull.config import load_config
from certpull.wiring import build_agent

def rss():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
conf, polls, warmup = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
agent = build_agent(load_config(conf, lambda p: Path(p).read_text()))
step = max(1, polls // 10)
for i in range(1, polls + 1):
    report = agent.sync()
    if not report.ok:
        raise SystemExit(f"pass {i} failed: {[o.message for o in report.outcomes]}")
    if i == warmup or i % step == 0:
        print(json.dumps({"pass": i, "rss": rss()}), flush=True)
"""


def ms_summary(values_s: Sequence[float]) -> Dict[str, float]:
    ms = sorted(v * 1000 for v in values_s)
    return {
        "n": len(ms),
        "median_ms": round(statistics.median(ms), 1),
        "p90_ms": round(ms[min(len(ms) - 1, round(0.9 * (len(ms) - 1)))], 1),
        "max_ms": round(ms[-1], 1),
    }


def add_certs(site: Site, count: int) -> None:
    """Extra [cert:NAME] sections, each with its own secret, installed but not served by Apache."""
    sm = site.aws.client("secretsmanager")
    extra = []
    for i in range(1, count):
        arn = sm.create_secret(
            Name=f"extra{i}-tls-{os.getpid()}-{time.time_ns()}",
            SecretString=site.pki.secret_string(site.pki.leaf(slot=10 + i)),
        )["ARN"]
        extra.append(f"\n[cert:extra{i}]\nsecret_arn = {arn}\nserver_name = www.example.com\n")
    with open(site.config_path, "a") as handle:
        handle.write("".join(extra))


def certpull_argv(runtime: Runtime, *args: str) -> List[str]:
    """`certpull ARGS` as the runtime starts it: `python -m certpull` or the tree's launcher."""
    return [*(runtime.command([]) or [sys.executable, "-m", "certpull"]), *args]


def children_cpu_s() -> float:
    """User + system CPU seconds of every waited-for child so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def child_argv(runtime: Runtime, code: str, *args: str) -> List[str]:
    """`python -c CODE ARGS` with the runtime's certpull first on sys.path."""
    if runtime.tree is None:
        return [sys.executable, "-c", code, *args]
    lib = runtime.tree / "usr/lib/certpull"
    paths = [str(lib / "agent"), str(lib / "site-packages")]
    prelude = f"import sys; sys.path[0:0] = {paths!r}\n"
    return [runtime.python, *runtime.flags, "-c", prelude + code, *args]


def bench_status(site: Site, runs: int, runtime: Runtime) -> Dict[str, Any]:
    argv = certpull_argv(runtime, "-c", str(site.config_path), "status")
    baseline_argv = [runtime.python, *runtime.flags, "-c", "pass"]
    times: List[float] = []
    baseline: List[float] = []
    cpu: List[float] = []
    baseline_cpu: List[float] = []
    for _ in range(runs):  # interleaved, so both see the same machine load
        started, used = time.monotonic(), children_cpu_s()
        subprocess.run(baseline_argv, capture_output=True, check=True)
        baseline.append(time.monotonic() - started)
        baseline_cpu.append(children_cpu_s() - used)
        started, used = time.monotonic(), children_cpu_s()
        done = subprocess.run(argv, capture_output=True, env=certpull_env(), check=False)
        times.append(time.monotonic() - started)
        cpu.append(children_cpu_s() - used)
        if done.returncode not in (0, 1):
            raise SystemExit(f"status exited {done.returncode}: {done.stdout!r}")
    traced = subprocess.run(
        [argv[0], "-X", "importtime", *argv[1:]],
        capture_output=True,
        text=True,
        env=certpull_env(),
        check=False,
    )
    imported = {
        line.rsplit("|", 1)[-1].strip().split(".")[0] for line in traced.stderr.splitlines()
    }
    summary = ms_summary(times)
    base = ms_summary(baseline)
    return {
        **summary,
        "python_c_pass": base,
        "ratio_to_python_c_pass": round(summary["median_ms"] / base["median_ms"], 2),
        # CPU seconds (user + system) are less sensitive to other load on the machine than wall time
        "cpu_median_ms": round(statistics.median(cpu) * 1000, 1),
        "python_c_pass_cpu_median_ms": round(statistics.median(baseline_cpu) * 1000, 1),
        "cpu_ratio_to_python_c_pass": round(
            statistics.median(cpu) / max(statistics.median(baseline_cpu), 1e-6), 2
        ),
        "imports_boto3": "boto3" in imported,
        "imports_botocore": "botocore" in imported,
        "imports_cryptography": "cryptography" in imported,
    }


# What `certpull run` must import before READY=1 if the adapters were imported after it (config,
# recovery of the live dirs, state, notify, schedule, logs), against what it imports today.
BEFORE_READY = (
    "import certpull.cli, certpull.store, certpull.state, certpull.notify, certpull.schedule"
)
EVERYTHING = "import certpull.cli, certpull.wiring"


def bench_import_floor(runtime: Runtime, runs: int) -> Dict[str, Any]:
    """Wall and CPU time of importing BEFORE_READY, EVERYTHING and nothing (`pass`), interleaved."""
    times: Dict[str, List[float]] = {"pass": [], "before_ready": [], "everything": []}
    cpu: Dict[str, List[float]] = {key: [] for key in times}
    for _ in range(runs):
        for key, code in (
            ("pass", "pass"),
            ("before_ready", BEFORE_READY),
            ("everything", EVERYTHING),
        ):
            started, used = time.monotonic(), children_cpu_s()
            subprocess.run(
                child_argv(runtime, code), capture_output=True, check=True, env=certpull_env()
            )
            times[key].append(time.monotonic() - started)
            cpu[key].append(children_cpu_s() - used)
    return {
        key: {**ms_summary(values), "cpu_median_ms": round(statistics.median(cpu[key]) * 1000, 1)}
        for key, values in times.items()
    }


def bench_polls(site: Site, polls: int, warmup: int, runtime: Runtime) -> Dict[str, Any]:
    site.agent_options.update(
        {
            "endpoint_url": site.aws.endpoint_url,  # straight to moto: the proxy is not measured
            "httpd_pid_file": str(site.root / "no-httpd.pid"),
            "reload_command": "/bin/true",
            "configtest_command": "/bin/true",
        }
    )
    site.cert_options.pop("verify", None)
    site.write_config()
    started = time.monotonic()
    child = subprocess.run(
        child_argv(runtime, POLL_CHILD, str(site.config_path), str(polls), str(warmup)),
        capture_output=True,
        text=True,
        env=certpull_env(),
        check=False,
    )
    elapsed = time.monotonic() - started
    if child.returncode != 0:
        raise SystemExit(f"poll child failed: {child.stderr[-2000:]}")
    points = [json.loads(line) for line in child.stdout.splitlines() if line.startswith("{")]
    warm = next(p["rss"] for p in points if p["pass"] == warmup)
    end = points[-1]["rss"]
    return {
        "polls": polls,
        "warmup": warmup,
        "rss_after_warmup_mib": round(warm / MIB, 2),
        "rss_end_mib": round(end / MIB, 2),
        "growth_mib": round((end - warm) / MIB, 3),
        "checkpoints_mib": [(p["pass"], round(p["rss"] / MIB, 2)) for p in points],
        "seconds": round(elapsed, 1),
    }


def bench_ready(site: Site, runs: int, runtime: Runtime) -> Dict[str, Any]:
    times: List[float] = []
    for i in range(runs):
        sock_path = site.root / f"notify-{i}.sock"
        notify = NotifySocket(sock_path)
        env = certpull_env()
        env["NOTIFY_SOCKET"] = str(sock_path)
        started = time.monotonic()
        proc = subprocess.Popen(
            certpull_argv(runtime, "-c", str(site.config_path), "run"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        try:
            while "READY=1" not in notify.messages:
                if proc.poll() is not None or time.monotonic() - started > 30:
                    raise SystemExit(f"`certpull run` never sent READY=1 (exit {proc.poll()})")
                time.sleep(0.001)
            times.append(time.monotonic() - started)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
            notify.close()
    return ms_summary(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--polls", type=int, default=10_000)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--certs", type=int, default=3)
    parser.add_argument("--status-runs", type=int, default=30)
    parser.add_argument("--ready-runs", type=int, default=10)
    parser.add_argument("--rpm", help="run status and run from this package's tree (3.9)")
    args = parser.parse_args()
    runtime = Runtime(args.rpm)
    print(f"footprint of {runtime.describe()}", flush=True)
    with standalone_site() as site:
        site.create_secret(site.pki.leaf())
        add_certs(site, args.certs)
        if site.certpull("sync").returncode != 0:
            raise SystemExit("first sync failed")
        site.apache.start()
        status = bench_status(site, args.status_runs, runtime)
        base = status["python_c_pass"]
        print(
            f"status wall time: median {status['median_ms']} ms, p90 {status['p90_ms']} ms, "
            f"max {status['max_ms']} ms (n={status['n']}) = {status['ratio_to_python_c_pass']}x "
            f"`python -c pass` (median {base['median_ms']} ms, same interpreter, same run; goal "
            f"<= 4x); CPU {status['cpu_median_ms']} ms = {status['cpu_ratio_to_python_c_pass']}x "
            f"`pass`'s {status['python_c_pass_cpu_median_ms']} ms; imports boto3: {status['imports_boto3']}, botocore: "
            f"{status['imports_botocore']}, cryptography: {status['imports_cryptography']}",
            flush=True,
        )
        ready = bench_ready(site, args.ready_runs, runtime)
        floor = bench_import_floor(runtime, args.ready_runs)
        ready["imports"] = floor
        print(
            f"cold start to READY=1: median {ready['median_ms']} ms, max {ready['max_ms']} ms "
            f"(n={ready['n']}, {args.certs} certs); imports alone, same run (wall / CPU): "
            f"everything `run` imports today {floor['everything']['median_ms']} / "
            f"{floor['everything']['cpu_median_ms']} ms, only what READY needs (lazy adapters) "
            f"{floor['before_ready']['median_ms']} / {floor['before_ready']['cpu_median_ms']} ms, "
            f"`pass` {floor['pass']['median_ms']} / {floor['pass']['cpu_median_ms']} ms",
            flush=True,
        )
        polls = bench_polls(site, args.polls, min(args.warmup, args.polls), runtime)
        print(
            f"RSS over {polls['polls']} polls x {args.certs} certs: {polls['rss_after_warmup_mib']} MiB "
            f"after {polls['warmup']}, {polls['rss_end_mib']} MiB at the end: growth "
            f"{polls['growth_mib']} MiB ({polls['seconds']} s)",
            flush=True,
        )
    print(
        json.dumps(
            {
                "bench": "footprint",
                "certs": args.certs,
                "runtime": runtime.describe(),
                "status": status,
                "ready": ready,
                "polls": polls,
            }
        )
    )
    runtime.close()
    ok = polls["growth_mib"] < 1.0 and not status["imports_boto3"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
