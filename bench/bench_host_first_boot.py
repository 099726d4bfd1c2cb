"""Time from container boot to the first certificate on a fresh host, under a real systemd.

Boots N fresh hosts of the host tier (tests/host: Debian, the RPM installed by rpm, certpull and
apache2 enabled, no certificate yet, the secret in moto) and measures, from the start of
systemd-nspawn:
  - boot finished: `systemctl is-system-running --wait` returns;
  - installed: the agent's first install is in state.json;
  - served: a fresh TLS handshake to the host's httpd returns the secret's leaf
    ("never" when it did not happen within --budget seconds).
Prints one line per boot, medians, and a JSON line last.

    .venv/bin/python bench/bench_host_first_boot.py [-n 5] [--release bookworm] [--startup-splay S]

Needs root and what tests/host needs (scripts/setup.sh installs it); uses the tier's caches.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "agent"), str(ROOT)]

from common import LocalAws  # noqa: E402 - importing common sets the dummy AWS environment

from tests.host.container import close_session, open_session  # noqa: E402
from tests.host.host import Host, build_image  # noqa: E402
from tests.pki import Pki  # noqa: E402


def one_boot(host: Host, agent: Dict[str, str], budget_s: float) -> Dict[str, Optional[float]]:
    host.add_site("www")
    host.write_config(agent)
    host.write_apache()
    host.boot()
    started = host.container.boot_started
    result: Dict[str, Optional[float]] = {"boot finished": time.monotonic() - started}
    installed = served = None
    while time.monotonic() - started < budget_s and (installed is None or served is None):
        now = time.monotonic() - started
        if installed is None and "installed" in (host.state().get("certs", {}).get("www") or {}):
            installed = now
        if served is None and host.serves():
            served = now
        time.sleep(0.1)
    result["installed"] = installed
    result["served"] = served
    return result


def median(values: List[Optional[float]]) -> Optional[float]:
    known = [v for v in values if v is not None]
    return statistics.median(known) if len(known) == len(values) and known else None


def fmt(value: Optional[float]) -> str:
    return "never" if value is None else f"{value:6.2f} s"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=5, help="fresh hosts to boot (default 5)")
    parser.add_argument("--release", default="bookworm", choices=("bookworm", "bullseye"))
    parser.add_argument("--budget", type=float, default=90.0, help="seconds per boot (default 90)")
    parser.add_argument(
        "--startup-splay",
        type=float,
        default=None,
        help="startup_splay_s (default: the shipped 10)",
    )
    args = parser.parse_args()
    agent: Dict[str, str] = {}
    if args.startup_splay is not None:
        agent["startup_splay_s"] = f"{args.startup_splay:g}"
    session = open_session()
    runs: List[Dict[str, Optional[float]]] = []
    try:
        image = build_image(args.release, session)
        with LocalAws() as aws:
            pki = Pki()
            for i in range(1, args.n + 1):
                with Host(image, aws, pki, f"bench{i}") as host:
                    run = one_boot(host, agent, args.budget)
                runs.append(run)
                print(
                    f"boot {i}: " + "  ".join(f"{k} {fmt(v)}" for k, v in run.items()), flush=True
                )
    finally:
        close_session(session)
    medians = {k: median([r[k] for r in runs]) for k in runs[0]} if runs else {}
    print(
        f"median of {len(runs)} ({args.release}): "
        + "  ".join(f"{k} {fmt(v)}" for k, v in medians.items())
    )
    print(
        json.dumps(
            {
                "bench": "host_first_boot",
                "release": args.release,
                "n": len(runs),
                "median_s": medians,
                "runs": runs,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
