"""Crash consistency at full counts: SIGKILL `certpull sync` and `certpull run` during real installs.

Same harness as the CI test (tests/crash_harness.py): a moto server behind the counting proxy, a
private Apache on 127.0.0.1, a pool of leaves rotated through a secret. Each round puts a new
version, starts the command, SIGKILLs it at a random instant (half aimed at the milliseconds of
staging and switching, half anywhere from the AWS calls to the verify), then checks the live set
(one complete version, key matches certificate, fullchain = cert + chain, key 0600, no readable key
in any hidden dir) and that httpd is up serving a published leaf. Every ``--recover-every`` rounds
the next start runs unkilled and must converge (exit 0 / READY, AWSCURRENT installed, served and
recorded, no debris); every other round starts from the previous kill's debris.

    .venv/bin/python bench/bench_crash.py [--sync-kills 1000] [--run-kills 1000] [--recover-every 10] [--seed N]

Prints one summary line per command and a JSON line; exits 1 when any problem was found.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "agent"), str(ROOT)]

from tests.crash_harness import CrashHarness, CrashReport, standalone_site  # noqa: E402


def run_command(command: str, kills: int, recover_every: int, seed: int) -> CrashReport:
    with standalone_site() as site:
        harness = CrashHarness(site, random.Random(seed))
        harness.prepare()

        def progress(done: int) -> None:
            if done % 50 == 0:
                print(f"  {command}: {done}/{kills} kills", file=sys.stderr, flush=True)

        return harness.kill_rounds(command, kills, recover_every, seed, progress)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sync-kills", type=int, default=1000)
    parser.add_argument("--run-kills", type=int, default=1000)
    parser.add_argument("--recover-every", type=int, default=10)
    parser.add_argument("--seed", type=int, default=time.time_ns() % 1_000_000)
    args = parser.parse_args()
    reports = []
    for command, kills in (("sync", args.sync_kills), ("run", args.run_kills)):
        if kills > 0:
            report = run_command(command, kills, args.recover_every, args.seed)
            reports.append(report)
            print(report.summary(), flush=True)
            for problem in report.problems[:20]:
                print(f"  PROBLEM {problem}")
    print(
        json.dumps(
            {
                "bench": "crash",
                "seed": args.seed,
                "results": [
                    {
                        "command": r.command,
                        "kills": r.kills,
                        "recoveries": r.recoveries,
                        "problems": len(r.problems),
                        "inside_install": r.inside_install(),
                        "where": dict(r.where),
                        "old_leaf_served_after_kill": r.served_old_after_kill,
                        "state_tmp_files_left": r.state_tmp_files_left,
                        "elapsed_s": round(r.elapsed_s, 1),
                    }
                    for r in reports
                ],
            }
        )
    )
    return 1 if any(r.problems for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
