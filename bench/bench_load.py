"""Reload under load: a real httpd serving clients while certpull installs rotation after rotation.

A private Apache (event MPM, mod_ssl, mod_http2 with `Protocols h2 http/1.1`) on 127.0.0.1 serves
a static page to three load generators at once:

  keep-alive  wrk, HTTP/1.1 keep-alive connections (-c --ka-conns)
  new-conn    wrk with `Connection: close`: a fresh TCP connection and TLS handshake per request
  h2          h2load, HTTP/2 streams multiplexed over --h2-conns connections, in one-second runs
              (h2load does not reconnect after the GOAWAY a graceful reload sends)
  prober      back-to-back fresh TLS handshakes from Python, noting which leaf each one returns

Phase 1 (--baseline seconds): load only. Phase 2: load while the real Agent (boto3 to moto through
the proxy, the ..data store, `apache2 -k graceful`, verification) installs --rotations new
versions, one every --pace seconds. Reported per phase: requests/s of each generator, failed
requests (wrk socket errors and non-2xx; h2load failed + errored), failed TLS handshakes (prober
errors; wrk connect errors), and for phase 2 the time from the start of each graceful command to
the first fresh handshake that returns the new leaf (p50 / p99), and HTTP/2 errors per reload.

Needs wrk and h2load (Debian: apt-get install wrk nghttp2-client).

    .venv/bin/python bench/bench_load.py [--rotations 100] [--pace 3] [--baseline 30]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "agent"), str(ROOT)]

from certpull.config import load_config  # noqa: E402
from certpull.httpd import fetch_served_leaf  # noqa: E402
from certpull.outcome import Status  # noqa: E402
from certpull.proc import CommandResult, CommandRunner  # noqa: E402
from certpull.wiring import build_agent  # noqa: E402
from tests.crash_harness import standalone_site  # noqa: E402
from tests.site import Site  # noqa: E402

HTTP2_MODULE = "/usr/lib/apache2/modules/mod_http2.so"


class TimedRunner(CommandRunner):
    """A CommandRunner that notes when each graceful reload command starts."""

    def __init__(self, reload_argv: Sequence[str], default_timeout_s: float) -> None:
        super().__init__(default_timeout_s=default_timeout_s)
        self.reload_argv = tuple(reload_argv)
        self.reload_started: List[float] = []

    def run(
        self, argv: Sequence[str], timeout_s: Optional[float] = None, check: bool = True
    ) -> CommandResult:
        if tuple(argv) == self.reload_argv:
            self.reload_started.append(time.monotonic())
        return super().run(argv, timeout_s, check)


class Prober(threading.Thread):
    """Fresh TLS handshakes back to back: (time, leaf DER or b"" on failure)."""

    def __init__(self, site: Site) -> None:
        super().__init__(daemon=True)
        self.site = site
        self.samples: List[Tuple[float, bytes]] = []
        self.errors: List[str] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        target = self.site.apache.target()
        while not self._stop_event.is_set():
            try:
                der = fetch_served_leaf(target, 5.0)
            except Exception as exc:
                self.errors.append(str(exc))
                der = b""
            self.samples.append((time.monotonic(), der))

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def enable_http2(site: Site) -> None:
    site.apache.write_config(["Protocols h2 http/1.1"])
    conf = site.apache.conf_path.read_text()
    conf = conf.replace("TypesConfig", f"LoadModule http2_module {HTTP2_MODULE}\nTypesConfig", 1)
    site.apache.conf_path.write_text(conf)


class H2Load(threading.Thread):
    """h2load in one-second runs for ``seconds``: h2load does not reconnect a connection that got
    GOAWAY (every graceful reload sends one), so short runs keep opening new connections."""

    def __init__(self, url: str, seconds: int, conns: int) -> None:
        super().__init__(daemon=True)
        self.argv = ["h2load", "-c", str(conns), "-m", "8", "-D", "1", url]
        self.seconds = seconds
        self.runs: List[Dict[str, Any]] = []

    def run(self) -> None:
        end = time.monotonic() + self.seconds
        while time.monotonic() < end:
            out = subprocess.run(
                self.argv, capture_output=True, text=True, timeout=60, check=False
            ).stdout
            self.runs.append(parse_h2load(out))

    def result(self) -> Dict[str, Any]:
        self.join()
        total = {
            k: sum(r[k] for r in self.runs)
            for k in ("requests", "succeeded", "failed", "errored", "timeouts")
        }
        return {**total, "rps": round(total["succeeded"] / self.seconds, 1), "runs": len(self.runs)}


def start_load(url: str, seconds: int, args: argparse.Namespace) -> Dict[str, Any]:
    duration = f"{seconds}s"
    commands = {
        "keep-alive": ["wrk", "-t1", f"-c{args.ka_conns}", f"-d{duration}", url],
        "new-conn": [
            "wrk", "-t1", f"-c{args.new_conns}", f"-d{duration}", "-H", "Connection: close", url,
        ],
    }  # fmt: skip
    procs: Dict[str, Any] = {
        name: subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for name, argv in commands.items()
    }
    h2 = H2Load(url, seconds, args.h2_conns)
    h2.start()
    procs["h2"] = h2
    return procs


def parse_wrk(text: str) -> Dict[str, Any]:
    def number(pattern: str) -> float:
        match = re.search(pattern, text)
        return float(match.group(1)) if match else 0.0

    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    connect, read, write, timeout = (int(x) for x in errors.groups()) if errors else (0, 0, 0, 0)
    return {
        "requests": int(number(r"(\d+) requests in")),
        "rps": number(r"Requests/sec:\s+([\d.]+)"),
        "connect_errors": connect,
        "read_errors": read,
        "write_errors": write,
        "timeouts": timeout,
        "non_2xx": int(number(r"Non-2xx or 3xx responses: (\d+)")),
    }


def parse_h2load(text: str) -> Dict[str, Any]:
    rps = re.search(r"finished in [\d.]+\w*, ([\d.]+) req/s", text)
    req = re.search(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
        r"(\d+) errored, (\d+) timeout",
        text,
    )
    total, _started, _done, ok, failed, errored, timeout = (
        (int(x) for x in req.groups()) if req else (0, 0, 0, 0, 0, 0, 0)
    )
    return {
        "requests": total,
        "succeeded": ok,
        "rps": float(rps.group(1)) if rps else 0.0,
        "failed": failed,
        "errored": errored,
        "timeouts": timeout,
    }


def finish_load(procs: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    results = {}
    for name, proc in procs.items():
        if isinstance(proc, H2Load):
            results[name] = proc.result()
        else:
            out, _ = proc.communicate(timeout=600)
            results[name] = parse_wrk(out)
    return results


def failed_requests(load: Dict[str, Dict[str, Any]]) -> Dict[str, int]:
    wrk_failed = {
        name: r["read_errors"]
        + r["write_errors"]
        + r["timeouts"]
        + r["non_2xx"]
        + r["connect_errors"]
        for name, r in load.items()
        if name != "h2"
    }
    return {**wrk_failed, "h2": load["h2"]["failed"] + load["h2"]["errored"]}


def phase(
    site: Site, seconds: int, args: argparse.Namespace, rotate: Optional[Any] = None
) -> Dict[str, Any]:
    url = f"https://127.0.0.1:{site.apache.port}/index.html"
    prober = Prober(site)
    procs = start_load(url, seconds, args)
    prober.start()
    extra = rotate() if rotate else {}
    load = finish_load(procs)
    prober.stop()
    return {
        "seconds": seconds,
        "load": load,
        "failed_requests": failed_requests(load),
        "prober_handshakes": len(prober.samples),
        "prober_failed_handshakes": len(prober.errors),
        "prober_errors_sample": prober.errors[:3],
        "samples": prober.samples,
        **extra,
    }


def reload_latencies(
    reloads: Sequence[Tuple[float, bytes]], samples: Sequence[Tuple[float, bytes]]
) -> List[float]:
    """For each (graceful start, new leaf): seconds until the first fresh handshake returning it."""
    latencies = []
    for started, der in reloads:
        seen = next((t for t, got in samples if t >= started and got == der), None)
        if seen is not None:
            latencies.append(seen - started)
    return latencies


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rotations", type=int, default=100)
    parser.add_argument("--pace", type=float, default=3.0, help="seconds between rotations")
    parser.add_argument(
        "--baseline", type=int, default=30, help="seconds of load without rotations"
    )
    parser.add_argument("--ka-conns", type=int, default=8)
    parser.add_argument("--new-conns", type=int, default=4)
    parser.add_argument("--h2-conns", type=int, default=4)
    args = parser.parse_args()
    for tool in ("wrk", "h2load"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: apt-get install wrk nghttp2-client")
    with standalone_site() as site:
        leaves = [site.pki.leaf(slot=i) for i in range(4)]
        site.cert_options["allow_downgrade"] = "yes"
        enable_http2(site)
        site.create_secret(leaves[0])
        if site.certpull("sync").returncode != 0:
            raise SystemExit("first sync failed")
        site.apache.start()
        config = load_config(str(site.config_path), lambda p: Path(p).read_text())
        runner = TimedRunner(config.agent.reload_command, config.agent.command_timeout_s)
        agent = build_agent(config, runner=runner)

        def rotate() -> Dict[str, Any]:
            reloads: List[Tuple[float, bytes]] = []
            failures: List[str] = []
            started = time.monotonic()
            for i in range(1, args.rotations + 1):
                leaf = leaves[i % len(leaves)]
                site.put(leaf)
                before = len(runner.reload_started)
                [outcome] = agent.sync().outcomes
                if outcome.status != Status.INSTALLED:
                    failures.append(outcome.message)
                elif len(runner.reload_started) > before:
                    reloads.append((runner.reload_started[before], leaf.der))
                time.sleep(max(0.0, started + i * args.pace - time.monotonic()))
            return {"reloads": reloads, "install_failures": failures}

        print(f"phase 1: {args.baseline} s of load, no rotations", file=sys.stderr, flush=True)
        base = phase(site, args.baseline, args)
        seconds = int(args.rotations * args.pace) + 2
        print(f"phase 2: {args.rotations} rotations over ~{seconds} s", file=sys.stderr, flush=True)
        rot = phase(site, seconds, args, rotate)
        httpd_alive = site.apache.is_running()
    latencies = reload_latencies(rot["reloads"], rot["samples"])
    summary = {
        "bench": "load",
        "rotations": args.rotations,
        "reloads": len(rot["reloads"]),
        "install_failures": len(rot["install_failures"]),
        "httpd_alive_at_end": httpd_alive,
        "rps_without_rotations": {n: r["rps"] for n, r in base["load"].items()},
        "rps_with_rotations": {n: r["rps"] for n, r in rot["load"].items()},
        "failed_requests_without": base["failed_requests"],
        "failed_requests_with": rot["failed_requests"],
        "failed_handshakes_without": base["prober_failed_handshakes"]
        + base["load"]["new-conn"]["connect_errors"],
        "failed_handshakes_with": rot["prober_failed_handshakes"]
        + rot["load"]["new-conn"]["connect_errors"],
        "prober_handshakes": {
            "without": base["prober_handshakes"],
            "with": rot["prober_handshakes"],
        },
        "h2_errors_per_reload": round(
            (rot["load"]["h2"]["failed"] + rot["load"]["h2"]["errored"])
            / max(1, len(rot["reloads"])),
            3,
        ),
        "new_leaf_after_reload_ms": {
            "n": len(latencies),
            "p50": round(statistics.median(latencies) * 1000, 1) if latencies else None,
            "p99": round(percentile(latencies, 0.99) * 1000, 1) if latencies else None,
            "max": round(max(latencies) * 1000, 1) if latencies else None,
        },
        "load_with": rot["load"],
        "load_without": base["load"],
        "errors_sample": rot["prober_errors_sample"] + rot["install_failures"][:3],
    }
    print(
        f"rotations installed: {summary['reloads']}/{args.rotations}, install failures "
        f"{summary['install_failures']}, httpd alive: {httpd_alive}"
    )
    for name in ("keep-alive", "new-conn", "h2"):
        print(
            f"{name:<11} req/s without {summary['rps_without_rotations'][name]:>9.1f}  "
            f"with {summary['rps_with_rotations'][name]:>9.1f}   failed requests without "
            f"{summary['failed_requests_without'][name]}, with {summary['failed_requests_with'][name]}"
        )
    print(
        f"failed TLS handshakes: without {summary['failed_handshakes_without']}, with "
        f"{summary['failed_handshakes_with']} (prober handshakes {summary['prober_handshakes']})"
    )
    lat = summary["new_leaf_after_reload_ms"]
    print(
        f"graceful start -> new leaf on fresh handshakes: p50 {lat['p50']} ms, p99 {lat['p99']} ms, "
        f"max {lat['max']} ms (n={lat['n']}); HTTP/2 errors per reload: {summary['h2_errors_per_reload']}"
    )
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
