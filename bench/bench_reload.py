"""How long a graceful reload takes, as certpull sees it, on a private Apache httpd.

Alternates two leaves N times and prints median / p90 / max of:
  - graceful command: wall time of `httpd -f CONF -k graceful` (CommandRunner.duration_s)
  - new leaf served: from the start of that command until a fresh TLS handshake returns the new
    leaf (wait_until_served with back-to-back handshakes, no sleep between them)
With --mismatch, each round instead installs a certificate with a key that does not match it and
measures how long after the graceful command returns the main httpd process is gone (AH02565),
which is what Httpd's alive_grace_s must cover.

    .venv/bin/python bench/bench_reload.py [-n 30] [--mismatch]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Sequence

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "agent"), str(ROOT)]

from certpull.httpd import wait_until_served  # noqa: E402
from certpull.proc import CommandRunner  # noqa: E402
from tests.apache import ApacheInstance  # noqa: E402
from tests.pki import Pki  # noqa: E402


def summary(name: str, values_s: Sequence[float]) -> str:
    ms = sorted(v * 1000 for v in values_s)
    p90 = ms[min(len(ms) - 1, round(0.9 * (len(ms) - 1)))]
    return f"{name:<28} n={len(ms):<3} median {statistics.median(ms):7.1f} ms  p90 {p90:7.1f} ms  max {ms[-1]:7.1f} ms"


def bench_switch(rounds: int) -> None:
    pki = Pki()
    leaves = [pki.leaf(slot=0), pki.leaf(slot=1)]
    runner = CommandRunner(default_timeout_s=30)
    with tempfile.TemporaryDirectory(prefix="certpull-bench-") as tmp:
        apache = ApacheInstance(Path(tmp))
        try:
            apache.install_issued(pki, leaves[0])
            apache.start()
            command: List[float] = []
            served: List[float] = []
            for i in range(1, rounds + 1):
                leaf = leaves[i % 2]
                apache.install_issued(pki, leaf)
                started = time.monotonic()
                result = runner.run(apache.reload_argv())
                command.append(result.duration_s)
                wait_until_served(apache.target(), leaf.der, 10.0, sleep=lambda _s: None)
                served.append(time.monotonic() - started)
            print(summary("graceful command", command))
            print(summary("new leaf on new handshakes", served))
        finally:
            apache.stop()


def bench_mismatch(rounds: int) -> None:
    pki = Pki()
    good, other = pki.leaf(slot=0), pki.leaf(slot=1)
    runner = CommandRunner(default_timeout_s=30)
    dead_after: List[float] = []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory(prefix="certpull-bench-") as tmp:
            apache = ApacheInstance(Path(tmp))
            try:
                apache.install_issued(pki, good)
                apache.start()
                apache.install_issued(pki, other, key_of=good)
                runner.run(apache.reload_argv())
                returned = time.monotonic()
                while apache.is_running():
                    if time.monotonic() - returned > 10:
                        raise SystemExit("httpd survived a mismatched key for 10 s")
                    time.sleep(0.0005)
                dead_after.append(time.monotonic() - returned)
            finally:
                apache.stop()
    print(summary("dead after graceful returns", dead_after))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--rounds", type=int, default=30)
    parser.add_argument("--mismatch", action="store_true", help="measure the AH02565 death instead")
    args = parser.parse_args()
    if args.mismatch:
        bench_mismatch(args.rounds)
    else:
        bench_switch(args.rounds)


if __name__ == "__main__":
    main()
