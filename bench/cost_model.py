"""What a fleet of certpull hosts costs and how hard it pushes the AWS quotas: MODELLED figures.

Takes the calls one host makes per day (measured by bench/bench_api_calls.py; pass its JSON line
with --api-calls FILE, or give the numbers as flags) and prints, for 1k / 10k / 100k hosts and
each mode, API calls per day, $/day, and the peak share of each quota during a fleet-wide
rotation and a fleet restart; for the doorbell, the modelled time until the first wave is reached.

Modes:
  poll      DescribeSecret every poll_interval_s (300 s, jittered); GetSecretValue only on change.
  events    SQS rotation events (one long poll per host per 20 s) + a check every
            reconcile_interval_s (3600 s).
  doorbell  The recommended mode. Secret Label Updated -> EventBridge -> SSM Automation runbook ->
            Run Command `certpull check-now` in waves (canary, soak, then FleetMaxConcurrency at
            a time); the adaptive safety poll (certpull.cadence) checks rarely (6 h) except around
            a scheduled rotation (every 600 s in the watch) and as expiry nears; a fleet restart
            spreads first checks over restart_splay_s (300 s).

Pricing (us-east-1 list prices; flags override):
  Secrets Manager  $0.05 per 10,000 API calls (DescribeSecret and GetSecretValue alike)   [DESIGN.md]
  KMS              $0.03 per 10,000 requests; one Decrypt per GetSecretValue with a customer
                   managed key (--kms customer, the default), free with aws/secretsmanager  [DESIGN.md]
  SQS (events)     $0.40 per million requests (ReceiveMessage, DeleteMessage)                [DESIGN.md]
  Run Command      no charge for EC2 instances                                              [assumed]
  Automation       $0.002 per step (3 steps per rotation), free tier ignored                [assumed]
  EventBridge      AWS service events to targets: free; forwarded to another account's bus:
                   $1.00 per million events                                                 [assumed]
  Not included: $0.40 per secret per month.
Quotas (assumed defaults; they vary by region and account, check Service Quotas):
  GetSecretValue + DescribeSecret  10,000 requests/s combined, per account per region
  KMS Decrypt                      10,000 requests/s shared by every caller in the account/region
  Automation                       100 concurrently running executions per account (documented
                                   default; adaptive concurrency raises it to 500); one execution
                                   per rotated secret and consuming account
  Run Command                      no documented cap on concurrent invocations was found; the
                                   model sizes MaxConcurrency so that Secrets Manager and KMS
                                   stay under 20 %
Peaks: steady calls are spread evenly (rate = calls per day / 86400). A rotation of a secret
shared by H hosts: poll, every host fetches within one poll interval (H / interval GetSecretValue
on top of the checks); events, within event_splay_s (H / splay DescribeSecret and GetSecretValue
each); doorbell, every host polls every rotation_poll_interval_s during the watch (H / 600 s) and
the wave runs C = FleetMaxConcurrency hosts at once, each invocation lasting D = overhead + mean
host splay + the pass (Little's law: C / D checks/s, 2 Secrets Manager calls and 1 KMS Decrypt
each). A fleet restart: every host checks within startup_splay_s (poll, events) or, healthy hosts,
within restart_splay_s (doorbell; certpull.cadence.first_check).
Doorbell latency (p99, seconds, summed as if each step hit its p99 at once):
  Secrets Manager -> EventBridge (native event)  10   [assumed: delivered without CloudTrail,
                                                       "near real time"; CloudTrail-based events
                                                       take tens of seconds and are not used]
  cross-account bus hop                           1   [assumed; EventBridge bus-to-target latency
                                                       was measured sub-second after Feb 2023:
                                                       medium.com/postnl-engineering, "Improved
                                                       EventBridge Latency"]
  EventBridge -> Automation step running          15  [assumed]
  aws:runCommand -> SSM agent runs check-now      10  [assumed]
  check-now -> new leaf served                    1.2 [MEASURED: bench_event_latency.py p99,
                                                       1,163 ms, splay 0] + the host splay

    .venv/bin/python bench/cost_model.py [--api-calls api_calls.jsonl] [--certs 3] [--kms customer]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "agent"))

from certpull.cadence import (
    DAY_S,
    CadenceConfig,
    RotationFacts,
    next_check,
)
from certpull.fleet_loop import DEFER_MARGIN_S

FLEETS = (1_000, 10_000, 100_000)
MODES = ("poll", "events", "doorbell")
RECOMMENDED = "doorbell"
GOAL_USD_PER_DAY_100K = 30.0
GOAL_FIRST_WAVE_P99_S = 60.0
GOAL_QUOTA_SHARE = 0.20

# Measured with `bench/bench_api_calls.py --minutes 1` (see docs/performance.md): one DescribeSecret
# per certificate per check and no GetSecretValue while nothing changes; one rotation costs one
# DescribeSecret and one GetSecretValue per certificate (plus, in event mode, the long poll that
# returns it and one DeleteMessage).
DEFAULT_POLL_INTERVAL_S = 300.0
DEFAULT_RECONCILE_INTERVAL_S = 3600.0
DEFAULT_DESCRIBE_PER_CHECK = 1.0
DEFAULT_SQS_WAIT_S = 20.0


@dataclass(frozen=True)
class Prices:
    sm_per_call: float = 0.05 / 10_000
    kms_per_request: float = 0.03 / 10_000
    sqs_per_request: float = 0.40 / 1_000_000
    automation_per_step: float = 0.002
    forwarded_event: float = 1.00 / 1_000_000


@dataclass(frozen=True)
class Quotas:
    secrets_manager_rps: float = 10_000.0
    kms_decrypt_rps: float = 10_000.0
    automation_concurrent: float = 100.0


@dataclass(frozen=True)
class Latency:
    """Doorbell steps, p99 seconds (see the module docstring for sources)."""

    secret_event_s: float = 10.0
    forward_s: float = 1.0
    automation_start_s: float = 15.0
    run_command_dispatch_s: float = 10.0
    host_check_s: float = 1.2

    def first_wave_reached_s(self, cross_account: bool) -> float:
        hop = self.forward_s if cross_account else 0.0
        return self.secret_event_s + hop + self.automation_start_s + self.run_command_dispatch_s


@dataclass(frozen=True)
class HostCalls:
    """Calls one host makes per day, by API (per-cert figures times certificates per host)."""

    describe: float
    get: float
    sqs: float


@dataclass(frozen=True)
class Inputs:
    certs: int
    poll_interval_s: float
    reconcile_interval_s: float
    describe_per_check: float
    sqs_wait_s: float
    rotation_days: float
    event_splay_s: float
    startup_splay_s: float
    kms_customer_key: bool
    hosts_per_secret: Optional[int]  # None: every host of the fleet shares each secret
    adaptive_checks_per_day: float  # per certificate, doorbell mode (certpull.cadence)
    adaptive_source: str
    restart_splay_s: float = 300.0
    rotation_poll_interval_s: float = 600.0
    wave_concurrency_pct: float = 10.0  # FleetMaxConcurrency
    wave_concurrency_max: int = 10_000
    canary_hosts: int = 10
    soak_s: float = 600.0
    host_splay_s: float = 30.0  # the per-host splay before a doorbell check (`host_splay_s`)
    invocation_overhead_s: float = 1.0  # SSM agent starts the script, certpull starts [assumed]
    consumer_accounts: int = 1
    automation_steps: int = 3
    secrets_rotating_at_once: int = 1


def simulate_adaptive_checks_per_day(rotation_days: float, days: float = 360.0) -> float:
    """Checks per certificate per day of certpull.cadence with a doorbell on: a secret rotated every
    `rotation_days` at a random time of the day its NextRotationDate ends (pure simulation)."""
    config = CadenceConfig()
    rng = random.Random(20261129)
    period = rotation_days * DAY_S
    rotations = [
        period * (k + 1) - rng.uniform(0, DAY_S) for k in range(int(days / rotation_days) + 2)
    ]
    now, checks = 0.0, 0
    while now < days * DAY_S:
        checks += 1
        k = next(i for i, at in enumerate(rotations) if at > now)
        facts = RotationFacts(
            rotation_enabled=True,
            next_rotation_at=period * (k + 1),
            period_s=period,
            window_s=DAY_S,
        )
        now += next_check(now, facts, now + 365 * DAY_S, True, config).jittered(rng)
    return checks / days


def host_calls(inputs: Inputs, mode: str) -> HostCalls:
    rotations = inputs.certs / inputs.rotation_days  # per host per day
    if mode == "poll":
        checks = inputs.certs * DAY_S / inputs.poll_interval_s
    elif mode == "events":
        checks = inputs.certs * DAY_S / inputs.reconcile_interval_s
    else:
        checks = inputs.certs * inputs.adaptive_checks_per_day
    describe = checks * inputs.describe_per_check + rotations  # + the check each rotation triggers
    sqs = DAY_S / inputs.sqs_wait_s + rotations if mode == "events" else 0.0
    return HostCalls(describe=describe, get=rotations, sqs=sqs)


def wave(inputs: Inputs, sharing: int) -> Dict[str, float]:
    """The runbook's second wave for one secret shared by `sharing` hosts."""
    concurrency = min(
        sharing,
        inputs.wave_concurrency_max,
        max(1, math.ceil(sharing * inputs.wave_concurrency_pct / 100)),
    )
    duration = inputs.invocation_overhead_s + inputs.host_splay_s / 2 + Latency().host_check_s
    rate = concurrency / duration  # hosts per second (Little's law)
    return {
        "concurrency": concurrency,
        "invocation_s": duration,
        "hosts_per_s": rate,
        "fleet_wave_s": sharing / rate,
    }


def fleet_row(
    inputs: Inputs, mode: str, hosts: int, prices: Prices, quotas: Quotas, latency: Latency
) -> Dict[str, Any]:
    calls = host_calls(inputs, mode)
    sm_calls = hosts * (calls.describe + calls.get)
    kms_calls = hosts * calls.get if inputs.kms_customer_key else 0.0
    sqs_calls = hosts * calls.sqs
    sharing = min(hosts, inputs.hosts_per_secret or hosts)
    secrets = max(inputs.certs, math.ceil(hosts * inputs.certs / sharing))
    rotated_per_day = secrets / inputs.rotation_days
    automation_steps = 0.0
    forwarded = 0.0
    if mode == "doorbell":
        automation_steps = rotated_per_day * inputs.automation_steps * inputs.consumer_accounts
        forwarded = (
            rotated_per_day * inputs.consumer_accounts if inputs.consumer_accounts > 1 else 0.0
        )
    cost = (
        sm_calls * prices.sm_per_call
        + kms_calls * prices.kms_per_request
        + sqs_calls * prices.sqs_per_request
        + automation_steps * prices.automation_per_step
        + forwarded * prices.forwarded_event
    )
    steady_rps = sm_calls / DAY_S
    extra: Dict[str, Any] = {}
    if mode == "poll":
        rotation_sm_rps = steady_rps + sharing / inputs.poll_interval_s
        rotation_kms_rps = sharing / inputs.poll_interval_s
        restart_rps = (
            hosts * inputs.certs * inputs.describe_per_check / max(inputs.startup_splay_s, 1)
        )
    elif mode == "events":
        window = max(inputs.event_splay_s, 1e-3)
        rotation_sm_rps = steady_rps + 2 * sharing / window
        rotation_kms_rps = sharing / window
        restart_rps = (
            hosts * inputs.certs * inputs.describe_per_check / max(inputs.startup_splay_s, 1)
        )
    else:
        shape = wave(inputs, sharing)
        watch_rps = sharing / inputs.rotation_poll_interval_s
        rotation_sm_rps = steady_rps + watch_rps + 2 * shape["hosts_per_s"]
        rotation_kms_rps = shape["hosts_per_s"]
        restart_rps = (
            hosts * inputs.certs * inputs.describe_per_check / max(inputs.restart_splay_s, 1)
        )
        cross = inputs.consumer_accounts > 1
        reached = latency.first_wave_reached_s(cross)
        extra = {
            "wave_concurrency": shape["concurrency"],
            "wave_invocation_s": round(shape["invocation_s"], 1),
            "first_wave_reached_p99_s": round(reached, 1),
            "first_wave_installed_p99_s": round(
                reached + inputs.host_splay_s + latency.host_check_s, 1
            ),
            "fleet_done_s": round(
                reached + inputs.soak_s + latency.run_command_dispatch_s + shape["fleet_wave_s"], 0
            ),
            # one execution per rotated secret in each consuming account (each has its own quota)
            "automation_quota_pct": round(
                100 * inputs.secrets_rotating_at_once / quotas.automation_concurrent, 1
            ),
        }
    if not inputs.kms_customer_key:
        rotation_kms_rps = 0.0
    row: Dict[str, Any] = {
        "mode": mode,
        "hosts": hosts,
        "sm_calls_per_day": round(sm_calls),
        "kms_decrypts_per_day": round(kms_calls),
        "sqs_requests_per_day": round(sqs_calls),
        "automation_steps_per_day": round(automation_steps, 2),
        "usd_per_day": round(cost, 2),
        "steady_sm_rps": round(steady_rps, 1),
        "rotation_peak_sm_rps": round(rotation_sm_rps, 1),
        "rotation_peak_kms_rps": round(rotation_kms_rps, 1),
        "restart_peak_sm_rps": round(restart_rps, 1),
        "sm_quota_used_at_rotation_pct": round(
            100 * rotation_sm_rps / quotas.secrets_manager_rps, 1
        ),
        "kms_quota_used_at_rotation_pct": round(100 * rotation_kms_rps / quotas.kms_decrypt_rps, 1),
        "sm_quota_used_at_restart_pct": round(100 * restart_rps / quotas.secrets_manager_rps, 1),
    }
    row.update(extra)
    return row


def goals(rows: Sequence[Dict[str, Any]]) -> List[str]:
    """The issue's goals for the recommended mode at 100,000 hosts: PASS/FAIL lines."""
    (row,) = [r for r in rows if r["mode"] == RECOMMENDED and r["hosts"] == max(FLEETS)] or [None]
    if row is None:
        return []
    shares = [
        row["sm_quota_used_at_rotation_pct"],
        row["kms_quota_used_at_rotation_pct"],
        row["sm_quota_used_at_restart_pct"],
        row.get("automation_quota_pct", 0.0),
    ]
    checks = [
        (
            f"<= ${GOAL_USD_PER_DAY_100K:g}/day at 100k hosts",
            row["usd_per_day"] <= GOAL_USD_PER_DAY_100K,
            f"${row['usd_per_day']:.2f}",
        ),
        (
            f"first wave reached <= {GOAL_FIRST_WAVE_P99_S:g} s p99",
            row["first_wave_reached_p99_s"] <= GOAL_FIRST_WAVE_P99_S,
            f"{row['first_wave_reached_p99_s']:g} s",
        ),
        (
            f"no quota above {100 * GOAL_QUOTA_SHARE:g} %",
            max(shares) <= 100 * GOAL_QUOTA_SHARE,
            f"max {max(shares):g} %",
        ),
    ]
    return [
        f"goal {'PASS' if ok else 'FAIL'}: {name} (modelled {value})" for name, ok, value in checks
    ]


def inputs_from_api_calls(doc: Dict[str, Any], base: Inputs) -> Inputs:
    """Calls per check, the long-poll length and the adaptive poll's checks/day from the bench."""
    poll = doc.get("poll", {})
    events = doc.get("events", {})
    adaptive = doc.get("adaptive", {})
    per_check = poll.get("calls_per_cert_per_check", {}).get("DescribeSecret")
    wait = events.get("seconds_per_long_poll")
    checks = adaptive.get("checks_per_cert_per_day")
    return replace(
        base,
        describe_per_check=float(per_check) if per_check else base.describe_per_check,
        # a long poll lasts at most 20 s (SQS's maximum wait); a short window can overstate it
        sqs_wait_s=min(float(wait), DEFAULT_SQS_WAIT_S)
        if wait and wait != float("inf")
        else base.sqs_wait_s,
        adaptive_checks_per_day=float(checks) if checks else base.adaptive_checks_per_day,
        adaptive_source=(
            f"measured: bench_api_calls.py, {adaptive.get('sim_days')} simulated days against moto"
            if checks
            else base.adaptive_source
        ),
    )


def read_api_calls(path: str) -> Dict[str, Any]:
    """The last JSON line with "bench": "api_calls" in a file ("-" for stdin)."""
    handle = sys.stdin if path == "-" else open(path, encoding="utf-8")  # noqa: SIM115
    try:
        found: Optional[Dict[str, Any]] = None
        for raw in handle:
            line = raw.strip()
            if line.startswith("{"):
                doc = json.loads(line)
                if doc.get("bench") == "api_calls":
                    found = doc
    finally:
        if handle is not sys.stdin:
            handle.close()
    if found is None:
        raise SystemExit(f"{path}: no JSON line from bench_api_calls.py")
    return found


def render(rows: Sequence[Dict[str, Any]], inputs: Inputs, quotas: Quotas, latency: Latency) -> str:
    kms = (
        "customer managed key (1 Decrypt per GetSecretValue)"
        if inputs.kms_customer_key
        else "AWS managed key (Decrypt not billed)"
    )
    out: List[str] = [
        "MODELLED figures (not measured on AWS): prices, quotas and latencies as in this script's "
        "docstring; calls per check measured against moto.",
        f"{inputs.certs} cert(s)/host, rotation every {inputs.rotation_days:g} days, "
        f"{'every host shares each secret' if not inputs.hosts_per_secret else f'{inputs.hosts_per_secret} hosts per secret'}; "
        f"KMS: {kms}; quotas: Secrets Manager {quotas.secrets_manager_rps:g} rps, KMS "
        f"{quotas.kms_decrypt_rps:g} rps, Automation {quotas.automation_concurrent:g} executions",
        f"  poll: every {inputs.poll_interval_s:g} s; events: reconcile {inputs.reconcile_interval_s:g} s "
        f"+ {inputs.sqs_wait_s:g} s long polls, splay {inputs.event_splay_s:g} s; startup splay "
        f"{inputs.startup_splay_s:g} s",
        f"  doorbell: adaptive poll {inputs.adaptive_checks_per_day:.2f} checks/cert/day "
        f"({inputs.adaptive_source}); wave {inputs.wave_concurrency_pct:g} % at once (max "
        f"{inputs.wave_concurrency_max}), host splay {inputs.host_splay_s:g} s, soak {inputs.soak_s:g} s; "
        f"restart splay {inputs.restart_splay_s:g} s",
        f"{'mode':<9}{'hosts':>8}{'SM calls/day':>14}{'KMS/day':>10}{'SQS/day':>13}{'$/day':>9}"
        f"{'steady rps':>11}{'rotation rps':>13}{'% SM':>7}{'% KMS':>7}{'restart rps':>12}{'% SM':>7}",
    ]
    for r in rows:
        out.append(
            f"{r['mode']:<9}{r['hosts']:>8}{r['sm_calls_per_day']:>14,}{r['kms_decrypts_per_day']:>10,}"
            f"{r['sqs_requests_per_day']:>13,}{r['usd_per_day']:>9.2f}{r['steady_sm_rps']:>11.1f}"
            f"{r['rotation_peak_sm_rps']:>13.1f}{r['sm_quota_used_at_rotation_pct']:>6.1f}%"
            f"{r['kms_quota_used_at_rotation_pct']:>6.1f}%{r['restart_peak_sm_rps']:>12.1f}"
            f"{r['sm_quota_used_at_restart_pct']:>6.1f}%"
        )
    for r in rows:
        if r["mode"] == "doorbell":
            out.append(
                f"doorbell {r['hosts']:>7} hosts: first wave reached p99 {r['first_wave_reached_p99_s']:g} s, "
                f"installed p99 {r['first_wave_installed_p99_s']:g} s (host splay included); second wave "
                f"{r['wave_concurrency']} at once x {r['wave_invocation_s']:g} s; fleet done after "
                f"~{r['fleet_done_s']:g} s; Automation quota {r['automation_quota_pct']:g} %"
            )
    config = CadenceConfig()
    noticed = 1.5 * config.rotation_poll_interval_s
    installed = max(config.poll_install_delay_s, noticed) + inputs.host_splay_s + DEFER_MARGIN_S
    out.append(
        "doorbell with every doorbell lost (certpull.cadence, as certpull.fleet_loop wires it): "
        f"scheduled rotation noticed within {noticed:g} s (1.5 x rotation_poll_interval_s), "
        f"installed within {installed:g} s (a poll's find waits until poll_install_delay_s "
        f"{config.poll_install_delay_s:g} after LastChangedDate, plus the host splay, at most "
        f"{inputs.host_splay_s:g} s); unscheduled change within "
        f"{1.5 * config.safety_poll_interval_s:g} s (1.5 x safety_poll_interval_s)"
    )
    out.extend(goals(rows))
    return "\n".join(out)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--api-calls", metavar="FILE", help="output of bench_api_calls.py (- = stdin)"
    )
    parser.add_argument("--certs", type=int, default=1, help="certificates per host")
    parser.add_argument("--poll-interval", type=float, default=DEFAULT_POLL_INTERVAL_S)
    parser.add_argument("--reconcile-interval", type=float, default=DEFAULT_RECONCILE_INTERVAL_S)
    parser.add_argument("--describe-per-check", type=float, default=DEFAULT_DESCRIBE_PER_CHECK)
    parser.add_argument(
        "--sqs-wait", type=float, default=DEFAULT_SQS_WAIT_S, help="s per long poll"
    )
    parser.add_argument("--rotation-days", type=float, default=30.0, help="days between rotations")
    parser.add_argument("--event-splay", type=float, default=5.0, help="event_splay_s")
    parser.add_argument("--startup-splay", type=float, default=10.0, help="startup_splay_s")
    parser.add_argument(
        "--restart-splay", type=float, default=300.0, help="restart_splay_s (doorbell)"
    )
    parser.add_argument("--kms", choices=("customer", "aws-managed"), default="customer")
    parser.add_argument(
        "--hosts-per-secret", type=int, help="hosts sharing one secret (default all)"
    )
    parser.add_argument(
        "--wave-pct", type=float, default=10.0, help="FleetMaxConcurrency, %% of hosts"
    )
    parser.add_argument("--wave-max", type=int, default=10_000, help="cap on hosts at once")
    parser.add_argument(
        "--host-splay", type=float, default=30.0, help="host splay before a doorbell check"
    )
    parser.add_argument("--soak", type=float, default=600.0, help="runbook soak, s")
    parser.add_argument(
        "--consumer-accounts", type=int, default=1, help="accounts the event is forwarded to"
    )
    parser.add_argument(
        "--rotating-at-once", type=int, default=1, help="secrets whose rollouts overlap"
    )
    parser.add_argument("--sm-quota", type=float, default=Quotas.secrets_manager_rps)
    parser.add_argument("--kms-quota", type=float, default=Quotas.kms_decrypt_rps)
    parser.add_argument("--automation-quota", type=float, default=Quotas.automation_concurrent)
    parser.add_argument("--event-p99", type=float, default=Latency.secret_event_s)
    parser.add_argument("--automation-start-p99", type=float, default=Latency.automation_start_s)
    parser.add_argument("--dispatch-p99", type=float, default=Latency.run_command_dispatch_s)
    parser.add_argument("--fleets", type=int, nargs="+", default=list(FLEETS))
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args(argv)
    inputs = Inputs(
        certs=args.certs,
        poll_interval_s=args.poll_interval,
        reconcile_interval_s=args.reconcile_interval,
        describe_per_check=args.describe_per_check,
        sqs_wait_s=args.sqs_wait,
        rotation_days=args.rotation_days,
        event_splay_s=args.event_splay,
        startup_splay_s=args.startup_splay,
        kms_customer_key=args.kms == "customer",
        hosts_per_secret=args.hosts_per_secret,
        adaptive_checks_per_day=simulate_adaptive_checks_per_day(args.rotation_days),
        adaptive_source="simulated: certpull.cadence over 360 days",
        restart_splay_s=args.restart_splay,
        wave_concurrency_pct=args.wave_pct,
        wave_concurrency_max=args.wave_max,
        host_splay_s=args.host_splay,
        soak_s=args.soak,
        consumer_accounts=args.consumer_accounts,
        secrets_rotating_at_once=args.rotating_at_once,
    )
    if args.api_calls:
        inputs = inputs_from_api_calls(read_api_calls(args.api_calls), inputs)
    quotas = Quotas(args.sm_quota, args.kms_quota, args.automation_quota)
    latency = Latency(
        secret_event_s=args.event_p99,
        automation_start_s=args.automation_start_p99,
        run_command_dispatch_s=args.dispatch_p99,
    )
    prices = Prices()
    rows = [
        fleet_row(inputs, mode, hosts, prices, quotas, latency)
        for mode in MODES
        for hosts in args.fleets
    ]
    if not args.json:
        print(render(rows, inputs, quotas, latency))
    print(
        json.dumps(
            {
                "bench": "cost_model",
                "modelled": True,
                "inputs": asdict(inputs),
                "prices": asdict(prices),
                "quotas": asdict(quotas),
                "latency_p99_s": asdict(latency),
                "rows": rows,
                "goals": goals(rows),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
