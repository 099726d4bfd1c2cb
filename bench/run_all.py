"""Run every bench with small counts (a few minutes in all) and print one summary.

Each bench runs as its own process with the flags below; its output goes to --out DIR (one .log
each) and its last JSON line feeds the summary. The API-call counts feed the cost model. For the
full counts, run the benches one by one (see docs/performance.md).

    .venv/bin/python bench/run_all.py [--out /tmp/certpull-bench] [--only load,crash,...]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

BENCH = Path(__file__).resolve().parent

# name -> (script, small flags)
BENCHES: List[Tuple[str, str, List[str]]] = [
    ("reload", "bench_reload.py", ["-n", "10"]),
    ("load", "bench_load.py", ["--rotations", "10", "--baseline", "10"]),
    ("crash", "bench_crash.py", ["--sync-kills", "20", "--run-kills", "20"]),
    (
        "faults",
        "bench_faults.py",
        [
            "--outage",
            "10",
            "--max-backoff",
            "20",
            "--kinds",
            "throttling,connection-reset,access-denied",
        ],
    ),
    (
        "footprint",
        "bench_footprint.py",
        ["--polls", "1000", "--status-runs", "10", "--ready-runs", "3"],
    ),
    ("idle", "bench_idle.py", ["--window", "30"]),
    ("memory", "bench_memory.py", ["--repeat", "1", "--no-tracemalloc"]),
    ("api_calls", "bench_api_calls.py", ["--minutes", "0.5", "--sim-days", "60"]),
    ("event_latency", "bench_event_latency.py", ["-n", "5"]),
]


def last_json(text: str) -> Optional[Dict[str, Any]]:
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict):
                return doc
    return None


def machine() -> str:
    mem_kib = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    nproc = subprocess.run(["nproc"], capture_output=True, text=True, check=False).stdout.strip()
    return (
        f"{nproc} CPUs, {mem_kib / 1024 / 1024:.1f} GiB RAM, Linux {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="/tmp/certpull-bench")
    parser.add_argument("--only", help="comma-separated bench names")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    only = set(args.only.split(",")) if args.only else None
    summary: List[str] = [f"machine: {machine()}"]
    failed = []
    for name, script, flags in BENCHES:
        if only and name not in only:
            continue
        if not (BENCH / script).exists():
            summary.append(f"{name:<14} skipped ({script} not found)")
            continue
        started = time.monotonic()
        print(f"== {name}: {script} {' '.join(flags)}", file=sys.stderr, flush=True)
        done = subprocess.run(
            [sys.executable, str(BENCH / script), *flags],
            capture_output=True,
            text=True,
            check=False,
        )
        elapsed = time.monotonic() - started
        (out / f"{name}.log").write_text(done.stdout + "\n--- stderr ---\n" + done.stderr)
        lines = [line for line in done.stdout.splitlines() if line and not line.startswith("{")]
        status = "ok" if done.returncode == 0 else f"exit {done.returncode}"
        if done.returncode != 0:
            failed.append(name)
        summary.append(f"{name:<14} {status}, {elapsed:.0f} s")
        summary.extend(f"    {line}" for line in lines[-8:])
    api_log = out / "api_calls.log"
    if (only is None or "cost_model" in only) and api_log.exists():
        done = subprocess.run(
            [sys.executable, str(BENCH / "cost_model.py"), "--api-calls", str(api_log)],
            capture_output=True,
            text=True,
            check=False,
        )
        (out / "cost_model.log").write_text(done.stdout + done.stderr)
        summary.append(f"{'cost_model':<14} {'ok' if done.returncode == 0 else 'failed'}")
        summary.extend(
            f"    {line}" for line in done.stdout.splitlines() if not line.startswith("{")
        )
    print("\n".join(summary))
    print(f"logs in {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
