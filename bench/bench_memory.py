"""Where the agent's memory goes: RSS by stage, by import, by allocating module and by mapped file.

stages     a child interpreter walks through what `certpull run` does, in order, and reports VmRSS
           (RssAnon, RssFile) after each stage:
             python      the bare interpreter
             imports     certpull.wiring imported (botocore, cryptography, watchdog come with it)
             agent       build_agent(config) as build_daemon builds it (clients are created at
                         their first call; X.509 work in worker processes)
             first pass  one pass over --certs certificates, all current (a DescribeSecret each)
             rotation    a pass that installs a new version of one (GetSecretValue, validate, publish)
             events      the SQS client as build_daemon builds it (its own AwsClients on the
                         agent's botocore session), one receive in a thread, as the event poller does
             gc          gc.collect()
           --variant (repeatable, a or a+b) applies prototypes of bench/prototypes/variants.py; each
           configuration runs --repeat times in fresh children, medians; deltas against the
           unmodified agent of the same run. Two rows are not the agent but the long-lived parent
           of a design with worker processes, measured the same way: `slim-parent` keeps what a
           parent that runs every pass in a worker needs (config, schedule, notify, drift with
           watchdog, state, events; botocore for one SQS client), `check-parent` also checks
           (DescribeSecret, state.json) itself and leaves only installs to a worker (no
           cryptography in the parent).
imports    RSS added by importing each group of modules alone in a fresh interpreter.
tracemalloc  after the events stage: live Python allocations grouped by the first frame outside the
           standard library (which module asked for them), and by top-level package.
maps       the file-backed part of RSS per mapped file (shared libraries, extension modules).

`--rpm PATH` runs the children on that package, unpacked, with a CPython 3.9 and only the tree's
agent/ and site-packages/ on sys.path (its launcher's layout); otherwise the checkout on this
interpreter.

    .venv/bin/python bench/bench_memory.py [--certs 3] [--repeat 3] [--rpm dist/certpull-*.rpm]
        [--variant malloc-trim --variant check-parent ...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "agent"), str(ROOT), str(ROOT / "bench")]

os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
)
for _name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "HTTP_PROXY", "HTTPS_PROXY"):
    os.environ.pop(_name, None)

from prototypes.variants import env_for  # noqa: E402

from tests.aws_local import LocalAws  # noqa: E402
from tests.pki import Pki  # noqa: E402
from tests.rpm_build import LIB, extract_rpm, find_python39, launcher_flags  # noqa: E402

MIB = 1024.0

# argv: config, variants (comma-separated), queue url, tracemalloc (0/1), maps (0/1).
# Prints one JSON line per stage; before "rotation" it prints ROTATE and waits for a line on stdin.
CHILD = r"""
import gc, json, os, sys, threading
sys.dont_write_bytecode = True
config_path, variants, queue_url = sys.argv[1], [v for v in sys.argv[2].split(",") if v], sys.argv[3]
traced, maps = sys.argv[4] == "1", sys.argv[5] == "1"
if traced:
    import tracemalloc
    tracemalloc.start(12)

def mem():
    out = {}
    for line in open("/proc/self/status"):
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0])
    return out

def stage(name, **extra):
    print(json.dumps({"stage": name, **mem(), **extra}), flush=True)

stage("python")
from prototypes import variants as proto
proto.apply([v for v in variants if v not in ("slim-parent", "check-parent")])
if "check-parent" in variants:
    # The parent of a design that checks in-process and installs in a worker: no cryptography.
    import certpull.config, certpull.schedule, certpull.notify, certpull.drift, certpull.state
    import certpull.event_queue, certpull.events, certpull.logs, certpull.store, certpull.source
    from certpull.aws import AwsClients
    stage("imports")
    config = certpull.config.load_config(config_path, lambda p: open(p).read())
    clients = AwsClients(endpoint_url=config.agent.endpoint_url)
    source = certpull.source.SecretSource(clients.secretsmanager)
    state_file = certpull.state.StateFile(config.agent.state_dir)
    stage("agent")
    def check():
        with state_file.lock():
            state = state_file.load()
            for cert in config.certs:
                source.current_version_id(cert.secret_arn)
            state_file.save(state)
    check()
    stage("first pass")
    print("ROTATE", flush=True); sys.stdin.readline()
    check()  # the install itself would run in the worker process
    stage("rotation")
    queue = certpull.event_queue.EventQueue(clients.sqs("us-east-1"), queue_url, wait_s=0)
elif "slim-parent" in variants:
    import certpull.config, certpull.schedule, certpull.notify, certpull.drift, certpull.state
    import certpull.event_queue, certpull.events, certpull.logs
    stage("imports")
    from certpull.aws import AwsClients
    config = certpull.config.load_config(config_path, lambda p: open(p).read())
    stage("agent")
    stage("first pass")
    print("ROTATE", flush=True); sys.stdin.readline()
    stage("rotation")
    queue = certpull.event_queue.EventQueue(AwsClients(endpoint_url=config.agent.endpoint_url).sqs("us-east-1"), queue_url, wait_s=0)
else:
    import botocore.session
    import certpull.wiring
    from certpull.config import load_config
    from certpull.wiring import build_agent
    stage("imports")
    config = load_config(config_path, lambda p: open(p).read())
    session = botocore.session.get_session()  # as build_daemon: one for the agent and the queue
    agent = build_agent(config, session=session, x509_worker=True)  # as build_daemon
    stage("agent")
    report = agent.sync()
    assert report.ok, [o.message for o in report.outcomes]
    proto.after_pass()
    stage("first pass")
    print("ROTATE", flush=True); sys.stdin.readline()
    report = agent.sync()
    assert report.ok and any(o.status == "installed" for o in report.outcomes), [o.message for o in report.outcomes]
    proto.after_pass()
    stage("rotation")
    import certpull.aws
    from certpull.event_queue import EventQueue
    clients = certpull.aws.AwsClients(endpoint_url=config.agent.endpoint_url, session=session)
    queue = EventQueue(clients.sqs("us-east-1"), queue_url, wait_s=0)
worker = threading.Thread(target=queue.receive)
worker.start(); worker.join()
stage("events", boto3="boto3" in sys.modules, cryptography="cryptography" in sys.modules)
gc.collect()
stage("gc")
if traced:
    snapshot = tracemalloc.take_snapshot()
    stdlib = os.path.dirname(os.__file__)
    owners, packages = {}, {}
    for trace in snapshot.traces:
        owner = None
        for frame in reversed(trace.traceback):   # most recent first
            name = frame.filename
            if ("site-packages" in name or "/certpull/" in name) and "tracemalloc" not in name:
                owner = name
                break
        if owner is None:
            owner = "stdlib/interpreter: " + os.path.basename(trace.traceback[-1].filename)
            package = "stdlib/interpreter"
        else:
            tail = owner.split("site-packages/")[-1] if "site-packages/" in owner else "certpull/" + owner.split("/certpull/")[-1]
            package = tail.split("/")[0].replace(".py", "")
            owner = tail
        owners[owner] = owners.get(owner, 0) + trace.size
        packages[package] = packages.get(package, 0) + trace.size
    top = sorted(owners.items(), key=lambda kv: -kv[1])[:25]
    print(json.dumps({"tracemalloc_total": sum(packages.values()), "packages": packages, "top": top}), flush=True)
if maps:
    files = {}
    current = None
    for line in open("/proc/self/smaps"):
        parts = line.split()
        if parts and "-" in parts[0] and len(parts) >= 5 and ":" not in parts[0]:
            current = parts[5] if len(parts) > 5 else "[anon]"
        elif parts and parts[0] == "Rss:" and current and current.startswith("/"):
            files[current] = files.get(current, 0) + int(parts[1])
    print(json.dumps({"maps": sorted(files.items(), key=lambda kv: -kv[1])[:15]}), flush=True)
"""

IMPORT_GROUPS = [
    ("certpull's status path (cli, config, state, status)", "import certpull.cli"),
    ("botocore.session", "import botocore.session"),
    ("boto3 (with botocore, s3transfer)", "import boto3"),
    (
        "cryptography as bundle.py uses it",
        "from cryptography import x509; from cryptography.x509 import verification; "
        "from cryptography.hazmat.primitives import hashes, serialization; "
        "from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa",
    ),
    ("watchdog.observers", "import watchdog.observers"),
    ("urllib3", "import urllib3"),
    ("ssl", "import ssl"),
    ("certpull.wiring (everything `run` imports)", "import certpull.wiring"),
]


class Runtime:
    """Where the children run: the checkout on this interpreter, or an unpacked RPM on a 3.9."""

    def __init__(self, rpm: Optional[str]) -> None:
        self._tmp: Optional[tempfile.TemporaryDirectory[str]] = None
        self.python = sys.executable
        self.paths = [str(ROOT / "agent")]
        self.flags: List[str] = []
        if rpm:
            self.python = find_python39()
            if not self.python:
                raise SystemExit("--rpm needs a CPython 3.9 (set PYTHON39)")
            self._tmp = tempfile.TemporaryDirectory(prefix="certpull-bench-rpm-")
            root = extract_rpm(Path(rpm), Path(self._tmp.name))
            lib = root / LIB.lstrip("/")
            self.paths = [str(lib / "agent"), str(lib / "site-packages")]
            # the launcher's flags, and no interpreter site: only the tree
            self.flags = [*launcher_flags(root), "-S"]
        self.paths.append(str(ROOT / "bench"))  # the prototypes package, last

    def argv(self, code: str, *args: str) -> List[str]:
        prelude = f"import sys; sys.path[0:0] = {self.paths!r}\n"
        return [self.python, *self.flags, "-c", prelude + code, *args]

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()


def make_world(aws: LocalAws, root: Path, certs: int) -> Dict[str, Any]:
    """Secrets, a queue and a config in `root`; returns what the rotation and the children need."""
    pki = Pki()
    sm = aws.client("secretsmanager")
    arns = [
        sm.create_secret(
            Name=f"memory-{i}-{os.urandom(4).hex()}", SecretString=pki.secret_string(pki.leaf())
        )["ARN"]
        for i in range(certs)
    ]
    queue_url = aws.client("sqs").create_queue(QueueName=f"memory-{os.urandom(4).hex()}")[
        "QueueUrl"
    ]
    lines = [
        "[agent]",
        f"endpoint_url = {aws.endpoint_url}",
        f"live_dir = {root / 'live'}",
        f"state_dir = {root / 'state'}",
        f"httpd_pid_file = {root / 'no-httpd.pid'}",
        "reload_command = /bin/true",
        "configtest_command = /bin/true",
        "start_command = /bin/true",
    ]
    for i, arn in enumerate(arns):
        lines += ["", f"[cert:c{i}]", f"secret_arn = {arn}", "server_name = www.example.com"]
    config = root / "certpull.conf"
    config.write_text("\n".join(lines) + "\n")
    return {"pki": pki, "arns": arns, "queue_url": queue_url, "config": config}


def run_child(
    runtime: Runtime,
    aws: LocalAws,
    certs: int,
    variants: List[str],
    traced: bool = False,
    maps: bool = False,
) -> Dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="certpull-memory-") as tmp:
        world = make_world(aws, Path(tmp), certs)
        if not {"slim-parent", "check-parent"} & set(variants):
            # the first pass must install (first-time), so that the measured first pass is "current"
            first = subprocess.run(
                runtime.argv(
                    "from certpull.cli import main; sys.exit(main(sys.argv[1:]))",
                    "-c",
                    str(world["config"]),
                    "sync",
                ),
                capture_output=True,
                text=True,
                check=False,
            )
            if first.returncode != 0:
                raise SystemExit(f"first sync failed: {first.stdout}{first.stderr}")
        env = {**os.environ, **env_for(variants)}
        argv = runtime.argv(
            CHILD,
            str(world["config"]),
            ",".join(variants),
            world["queue_url"],
            "1" if traced else "0",
            "1" if maps else "0",
        )
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert proc.stdin is not None and proc.stdout is not None
        out: Dict[str, Any] = {"stages": {}}
        for line in proc.stdout:
            if line.startswith("ROTATE"):
                pki = world["pki"]
                aws.client("secretsmanager").put_secret_value(
                    SecretId=world["arns"][0], SecretString=pki.secret_string(pki.leaf(slot=1))
                )
                proc.stdin.write("go\n")
                proc.stdin.flush()
                continue
            doc = json.loads(line)
            if "stage" in doc:
                out["stages"][doc.pop("stage")] = doc
            else:
                out.update(doc)
        stderr = proc.stderr.read() if proc.stderr else ""
        if proc.wait() != 0:
            raise SystemExit(f"memory child failed ({variants}):\n{stderr[-3000:]}")
        return out


def import_costs(runtime: Runtime) -> List[Dict[str, Any]]:
    probe = (
        "import sys\n"
        "def rss():\n"
        "    return int(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')).split()[1])\n"
        "before = rss()\n"
        "exec(sys.argv[1])\n"
        "print(rss() - before, rss())\n"
    )
    rows = []
    for label, code in IMPORT_GROUPS:
        values = []
        for _ in range(3):
            done = subprocess.run(
                runtime.argv(probe, code), capture_output=True, text=True, check=False
            )
            if done.returncode != 0:
                raise SystemExit(f"import probe failed for {label}: {done.stderr[-2000:]}")
            values.append([int(x) for x in done.stdout.split()])
        rows.append(
            {
                "group": label,
                "delta_mib": round(statistics.median(v[0] for v in values) / MIB, 2),
                "rss_mib": round(statistics.median(v[1] for v in values) / MIB, 2),
            }
        )
    return rows


# Imported one after the other in one interpreter, in this order: each row is what it adds to
# the rows above it (shared dependencies are counted where they first load).
IMPORT_SEQUENCE = [
    ("certpull's status path (cli, config, state, status)", "import certpull.cli"),
    ("ssl (libssl, libcrypto)", "import ssl"),
    ("urllib3", "import urllib3"),
    ("botocore (session, client)", "import botocore.session, botocore.client"),
    ("boto3 (and s3transfer)", "import boto3"),
    (
        "cryptography as bundle.py uses it",
        "from cryptography import x509; from cryptography.x509 import verification; "
        "from cryptography.hazmat.primitives import hashes, serialization; "
        "from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa",
    ),
    ("watchdog.observers", "import watchdog.observers"),
    ("the rest of certpull.wiring", "import certpull.wiring"),
]


def import_sequence(runtime: Runtime) -> List[Dict[str, Any]]:
    probe = (
        "import json, sys\n"
        "def rss():\n"
        "    return int(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')).split()[1])\n"
        "out = [rss()]\n"
        "for code in json.loads(sys.argv[1]):\n"
        "    exec(code)\n"
        "    out.append(rss())\n"
        "print(json.dumps(out))\n"
    )
    codes = json.dumps([code for _, code in IMPORT_SEQUENCE])
    runs = []
    for _ in range(3):
        done = subprocess.run(
            runtime.argv(probe, codes), capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise SystemExit(f"import sequence failed: {done.stderr[-2000:]}")
        runs.append(json.loads(done.stdout))
    med = [statistics.median(r[i] for r in runs) for i in range(len(IMPORT_SEQUENCE) + 1)]
    rows = [{"group": "the bare interpreter", "delta_mib": round(med[0] / MIB, 2)}]
    for i, (label, _) in enumerate(IMPORT_SEQUENCE, start=1):
        rows.append({"group": label, "delta_mib": round((med[i] - med[i - 1]) / MIB, 2)})
    return rows


def import_times(runtime: Runtime, runs: int = 5) -> List[Dict[str, Any]]:
    """python -X importtime of `import certpull.wiring`: self time summed by top-level package (ms)."""
    per_run: List[Dict[str, float]] = []
    for _ in range(runs):
        argv = runtime.argv("import certpull.wiring")
        done = subprocess.run(
            [argv[0], "-X", "importtime", *argv[1:]], capture_output=True, text=True, check=False
        )
        totals: Dict[str, float] = {}
        for line in done.stderr.splitlines():
            if not line.startswith("import time:") or "self [us]" in line:
                continue
            self_us, _cumulative, name = line.split(":", 1)[1].split("|")
            package = name.strip().split(".")[0]
            totals[package] = totals.get(package, 0.0) + int(self_us) / 1000
        totals["(all)"] = sum(totals.values())
        per_run.append(totals)
    packages = sorted({p for run in per_run for p in run})
    rows = [
        {"package": p, "ms": round(statistics.median(run.get(p, 0.0) for run in per_run), 1)}
        for p in packages
    ]
    return sorted(rows, key=lambda r: -r["ms"])


STAGES = ("python", "imports", "agent", "first pass", "rotation", "events", "gc")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--certs", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rpm", help="run the children on this package's unpacked tree (3.9)")
    parser.add_argument("--variant", action="append", default=[])
    parser.add_argument("--no-tracemalloc", action="store_true")
    args = parser.parse_args()
    runtime = Runtime(args.rpm)
    report: Dict[str, Any] = {"bench": "memory", "certs": args.certs, "rpm": args.rpm}
    try:
        with LocalAws() as aws:
            print(f"memory by stage, {args.certs} certs, medians of {args.repeat} (MiB, VmRSS)")
            configs = [[]] + [v.split("+") for v in args.variant]
            table: Dict[str, Dict[str, float]] = {}
            for variants in configs:
                runs = [run_child(runtime, aws, args.certs, variants) for _ in range(args.repeat)]
                name = "+".join(variants) or "agent as is"
                table[name] = {
                    s: round(statistics.median(r["stages"][s]["VmRSS"] for r in runs) / MIB, 2)
                    for s in STAGES
                }
                table[name]["anon_end"] = round(
                    statistics.median(r["stages"]["gc"]["RssAnon"] for r in runs) / MIB, 2
                )
                table[name]["file_end"] = round(
                    statistics.median(r["stages"]["gc"]["RssFile"] for r in runs) / MIB, 2
                )
                table[name]["boto3"] = runs[0]["stages"]["events"]["boto3"]
            width = max(len(name) for name in table) + 2
            header = "".join(f"{s:>11}" for s in STAGES)
            print(f"  {'':<{width}}{header}   anon   file  vs as-is")
            base = table["agent as is"]["gc"]
            for name, row in table.items():
                cells = "".join(f"{row[s]:>11.1f}" for s in STAGES)
                print(
                    f"  {name:<{width}}{cells} {row['anon_end']:>6.1f} {row['file_end']:>6.1f}"
                    f"  {row['gc'] - base:+.1f}"
                )
            report["stages"] = table
            print("imports, each alone in a fresh interpreter (RSS added / RSS after):")
            report["imports"] = import_costs(runtime)
            for row in report["imports"]:
                print(f"  {row['group']:<52} +{row['delta_mib']:5.1f} MiB  ({row['rss_mib']:.1f})")
            print("imports in run order, one interpreter (RSS each adds to the rows above):")
            report["import_sequence"] = import_sequence(runtime)
            for row in report["import_sequence"]:
                print(f"  {row['group']:<52} {row['delta_mib']:+6.1f} MiB")
            report["import_times"] = import_times(runtime)
            print(
                "python -X importtime, import certpull.wiring: self time by package (median of 5):"
            )
            for row in report["import_times"][:10]:
                print(f"  {row['package']:<30} {row['ms']:7.1f} ms")
            if not args.no_tracemalloc:
                traced = run_child(runtime, aws, args.certs, [], traced=True, maps=True)
                total = traced["tracemalloc_total"] / MIB / MIB
                print(f"tracemalloc after the events stage: {total:.1f} MiB of live Python objects")
                packages = sorted(traced["packages"].items(), key=lambda kv: -kv[1])
                for package, size in packages[:10]:
                    print(f"  {package:<40} {size / MIB / MIB:6.2f} MiB")
                print("  by allocating module (first frame outside the standard library):")
                for owner, size in traced["top"][:20]:
                    print(f"    {owner:<60} {size / MIB / MIB:6.2f} MiB")
                print("file-backed RSS by mapped file (untraced run):")
                untraced = run_child(runtime, aws, args.certs, [], maps=True)
                for path, kib in untraced["maps"][:12]:
                    print(f"  {kib / MIB:6.2f} MiB  {path}")
                report["tracemalloc"] = {"packages": traced["packages"], "top": traced["top"]}
                report["maps"] = untraced["maps"]
    finally:
        runtime.close()
    print(json.dumps(report, default=str))


if __name__ == "__main__":
    main()
