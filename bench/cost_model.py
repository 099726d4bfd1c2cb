"""What a fleet of certpull hosts costs and how hard it pushes the Secrets Manager and KMS quotas.

Takes the calls one host makes per day (measured by bench/bench_api_calls.py; pass its JSON line
with --api-calls FILE, or give the numbers as flags) and prints, for 1k / 10k / 100k hosts, in poll
and event mode: API calls per day, $/day, and peak requests/s against the quotas.

Pricing (us-east-1 list prices; flags override):
  Secrets Manager  $0.05 per 10,000 API calls (DescribeSecret and GetSecretValue alike)
  KMS              $0.03 per 10,000 requests. GetSecretValue costs one KMS Decrypt when the secret
                   is encrypted with a customer managed key (--kms customer, the default); with the
                   AWS managed key aws/secretsmanager it is free (--kms aws-managed).
  SQS (events)     $0.40 per million requests (ReceiveMessage, DeleteMessage); free tier ignored.
  Not included: $0.40 per secret per month, EventBridge (AWS service events to targets are free).
Quotas (assumed defaults; they vary by region and account, check Service Quotas):
  GetSecretValue + DescribeSecret  10,000 requests/s combined, per account per region
  KMS Decrypt                      10,000 requests/s shared by every caller of KMS cryptographic
                                   operations in the account and region (some regions have less)
Peaks: steady polling is spread evenly by the jitter (rate = calls per day / 86400). A rotation of a
secret shared by H hosts arrives within one poll interval (poll mode: H / interval requests/s of
GetSecretValue on top of the regular checks) or within event_splay_s (event mode: H / splay
requests/s of DescribeSecret and GetSecretValue each). A fleet restart makes every host check
within startup_splay_s.

    .venv/bin/python bench/cost_model.py [--api-calls api_calls.jsonl] [--certs 3] [--kms customer]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

DAY_S = 86400.0
FLEETS = (1_000, 10_000, 100_000)

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


@dataclass(frozen=True)
class Quotas:
    secrets_manager_rps: float = 10_000.0
    kms_decrypt_rps: float = 10_000.0


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


def host_calls(inputs: Inputs, mode: str) -> HostCalls:
    rotations = inputs.certs / inputs.rotation_days  # per host per day
    interval = inputs.poll_interval_s if mode == "poll" else inputs.reconcile_interval_s
    checks = inputs.certs * DAY_S / interval
    describe = checks * inputs.describe_per_check + rotations
    sqs = 0.0
    if mode == "events":
        sqs = DAY_S / inputs.sqs_wait_s + rotations  # long polls + one DeleteMessage per event
    return HostCalls(describe=describe, get=rotations, sqs=sqs)


def fleet_row(
    inputs: Inputs, mode: str, hosts: int, prices: Prices, quotas: Quotas
) -> Dict[str, Any]:
    calls = host_calls(inputs, mode)
    sm_calls = hosts * (calls.describe + calls.get)
    kms_calls = hosts * calls.get if inputs.kms_customer_key else 0.0
    sqs_calls = hosts * calls.sqs
    cost = (
        sm_calls * prices.sm_per_call
        + kms_calls * prices.kms_per_request
        + sqs_calls * prices.sqs_per_request
    )
    steady_rps = sm_calls / DAY_S
    sharing = min(hosts, inputs.hosts_per_secret or hosts)
    window = inputs.poll_interval_s if mode == "poll" else max(inputs.event_splay_s, 1e-3)
    # poll mode: the DescribeSecret is the regular check, the rotation adds GetSecretValue;
    # event mode: the event adds a check (DescribeSecret) and the fetch (GetSecretValue).
    extra_per_host = 1 if mode == "poll" else 2
    rotation_sm_rps = steady_rps + extra_per_host * sharing / window
    rotation_kms_rps = sharing / window if inputs.kms_customer_key else 0.0
    restart_rps = hosts * inputs.certs * inputs.describe_per_check / max(inputs.startup_splay_s, 1)
    return {
        "mode": mode,
        "hosts": hosts,
        "sm_calls_per_day": round(sm_calls),
        "kms_decrypts_per_day": round(kms_calls),
        "sqs_requests_per_day": round(sqs_calls),
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


def inputs_from_api_calls(doc: Dict[str, Any], base: Inputs) -> Inputs:
    """Take calls per check and the long-poll length from bench_api_calls.py's JSON line."""
    poll = doc.get("poll", {})
    events = doc.get("events", {})
    per_check = poll.get("calls_per_cert_per_check", {}).get("DescribeSecret")
    wait = events.get("seconds_per_long_poll")
    return Inputs(
        **{
            **base.__dict__,
            "describe_per_check": float(per_check) if per_check else base.describe_per_check,
            # a long poll lasts at most 20 s (SQS's maximum wait); a short window can overstate it
            "sqs_wait_s": min(float(wait), DEFAULT_SQS_WAIT_S)
            if wait and wait != float("inf")
            else base.sqs_wait_s,
        }
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


def render(rows: Sequence[Dict[str, Any]], inputs: Inputs, quotas: Quotas) -> str:
    kms = (
        "customer managed key (1 Decrypt per GetSecretValue)"
        if inputs.kms_customer_key
        else ("AWS managed key (Decrypt not billed)")
    )
    out: List[str] = [
        f"{inputs.certs} cert(s)/host, poll {inputs.poll_interval_s:g} s, events: reconcile "
        f"{inputs.reconcile_interval_s:g} s + {inputs.sqs_wait_s:g} s long polls; rotation every "
        f"{inputs.rotation_days:g} days; KMS: {kms}; quotas assumed: Secrets Manager "
        f"{quotas.secrets_manager_rps:g} rps, KMS {quotas.kms_decrypt_rps:g} rps",
        f"{'mode':<7}{'hosts':>8}{'SM calls/day':>14}{'KMS/day':>10}{'SQS/day':>13}{'$/day':>10}"
        f"{'steady rps':>12}{'rotation rps':>14}{'% SM quota':>12}{'% KMS quota':>13}{'restart rps':>13}",
    ]
    for r in rows:
        out.append(
            f"{r['mode']:<7}{r['hosts']:>8}{r['sm_calls_per_day']:>14,}{r['kms_decrypts_per_day']:>10,}"
            f"{r['sqs_requests_per_day']:>13,}{r['usd_per_day']:>10.2f}{r['steady_sm_rps']:>12.1f}"
            f"{r['rotation_peak_sm_rps']:>14.1f}{r['sm_quota_used_at_rotation_pct']:>11.1f}%"
            f"{r['kms_quota_used_at_rotation_pct']:>12.1f}%{r['restart_peak_sm_rps']:>13.1f}"
        )
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
    parser.add_argument("--kms", choices=("customer", "aws-managed"), default="customer")
    parser.add_argument(
        "--hosts-per-secret", type=int, help="hosts sharing one secret (default all)"
    )
    parser.add_argument("--sm-quota", type=float, default=Quotas.secrets_manager_rps)
    parser.add_argument("--kms-quota", type=float, default=Quotas.kms_decrypt_rps)
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
    )
    if args.api_calls:
        inputs = inputs_from_api_calls(read_api_calls(args.api_calls), inputs)
    quotas = Quotas(args.sm_quota, args.kms_quota)
    prices = Prices()
    rows = [
        fleet_row(inputs, mode, hosts, prices, quotas)
        for mode in ("poll", "events")
        for hosts in args.fleets
    ]
    if not args.json:
        print(render(rows, inputs, quotas))
    print(json.dumps({"bench": "cost_model", "inputs": inputs.__dict__, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
