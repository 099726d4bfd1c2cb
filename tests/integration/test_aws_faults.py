"""AWS faults between the agent and Secrets Manager, injected by the proxy in front of moto or made
for real in moto: the installed certificate stays installed and served, calls stay bounded, and the
agent recovers once the fault clears.

The CI-sized version: one failing pass per fault kind (in process, real boto3 over HTTP, botocore's
standard retries with ``max_attempts = 3``), then a healthy pass that installs; and one `certpull run`
outage that must back off. `bench/bench_faults.py` measures long outages and recovery times.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import pytest

from certpull.config import load_config
from certpull.outcome import Outcome, Status
from certpull.wiring import build_agent
from tests.apache import ApacheFactory
from tests.aws_local import LocalAws
from tests.aws_proxy import AwsProxy, Fault
from tests.daemon_proc import Daemon
from tests.pki import Issued, Pki
from tests.site import Site, contains_key_material

pytestmark = pytest.mark.integration

MAX_ATTEMPTS = 2
# max_attempts counts the first call too (aws.py passes it as botocore's total_max_attempts)
CALLS_PER_OPERATION = MAX_ATTEMPTS
READ_TIMEOUT_S = 0.5
SLOW_S = 1.5  # longer than the read timeout


def _schedule_deletion(site: Site) -> None:
    site.aws.client("secretsmanager").delete_secret(
        SecretId=site.secret_arn, RecoveryWindowInDays=7
    )


def _restore(site: Site) -> None:
    site.aws.client("secretsmanager").restore_secret(SecretId=site.secret_arn)


@dataclass(frozen=True)
class AwsFault:
    id: str
    faults: Tuple[Fault, ...]
    transient: bool
    says: str  # part of the one-line reason the operator sees
    max_calls: Dict[str, int]  # calls one failing pass may make, per operation
    break_it: Optional[Callable[[Site], None]] = None  # a real change in moto
    heal: Optional[Callable[[Site], None]] = None


AWS_FAULTS = [
    AwsFault(
        "throttling",
        (Fault("DescribeSecret", 400, "ThrottlingException"),),
        True,
        "ThrottlingException",
        {"DescribeSecret": CALLS_PER_OPERATION, "GetSecretValue": 0},
    ),
    AwsFault(
        "http-500-everywhere",
        (Fault("*", 500, "InternalServiceError"),),
        True,
        "InternalServiceError",
        {"DescribeSecret": CALLS_PER_OPERATION, "GetSecretValue": 0},
    ),
    AwsFault(
        "http-503-on-get-secret-value",
        (Fault("GetSecretValue", 503, "ServiceUnavailable"),),
        True,
        "ServiceUnavailable",
        {"DescribeSecret": 1, "GetSecretValue": CALLS_PER_OPERATION},
    ),
    AwsFault(
        "slower-than-read-timeout",
        (Fault("DescribeSecret", delay_s=SLOW_S),),
        True,
        "timed out",
        {"DescribeSecret": CALLS_PER_OPERATION, "GetSecretValue": 0},
    ),
    AwsFault(
        "connection-reset",
        (Fault("DescribeSecret", reset=True),),
        True,
        "connection",
        {"DescribeSecret": CALLS_PER_OPERATION, "GetSecretValue": 0},
    ),
    AwsFault(
        "access-denied",
        (Fault("DescribeSecret", 400, "AccessDeniedException"),),
        False,
        "access denied",
        {"DescribeSecret": 1, "GetSecretValue": 0},
    ),
    AwsFault(
        "kms-decryption-failure",
        (Fault("GetSecretValue", 400, "DecryptionFailure"),),
        False,
        "cannot decrypt",
        {"DescribeSecret": 1, "GetSecretValue": 1},
    ),
    AwsFault(
        "kms-key-disabled",
        (Fault("GetSecretValue", 400, "KMSDisabledException"),),
        False,
        "KMS key is disabled",
        {"DescribeSecret": 1, "GetSecretValue": 1},
    ),
    AwsFault(
        "secret-deleted",
        (Fault("*", 400, "ResourceNotFoundException"),),
        False,
        "secret not found",
        {"DescribeSecret": 1, "GetSecretValue": 0},
    ),
    AwsFault(
        "secret-scheduled-for-deletion",
        (),
        False,
        "scheduled for deletion",
        {"DescribeSecret": 1, "GetSecretValue": 0},
        break_it=_schedule_deletion,
        heal=_restore,
    ),
]


@dataclass
class FaultSite:
    site: Site
    leaves: List[Issued]
    turn: int = 0
    served_checks: int = field(default=0)

    def next_leaf(self) -> Issued:
        self.turn += 1
        return self.leaves[self.turn % len(self.leaves)]

    def agent_pass(self) -> List[Outcome]:
        config = load_config(str(self.site.config_path), lambda p: Path(p).read_text())
        return list(build_agent(config).sync().outcomes)


@pytest.fixture(scope="module")
def fault_site(
    tmp_path_factory: pytest.TempPathFactory, local_aws: LocalAws, apache_session: ApacheFactory
) -> Iterator[FaultSite]:
    proxy = AwsProxy(local_aws.endpoint_url).start()
    pki = Pki()
    site = Site(tmp_path_factory.mktemp("aws-faults"), local_aws, proxy, apache_session.new(), pki)
    site.cert_options["allow_downgrade"] = "yes"
    site.agent_options.update(
        {"max_attempts": str(MAX_ATTEMPTS), "read_timeout_s": str(READ_TIMEOUT_S)}
    )
    leaves = [pki.leaf(slot=i) for i in range(3)]
    site.create_secret(leaves[0])
    assert site.certpull("sync").returncode == 0
    site.apache.start()
    try:
        yield FaultSite(site, leaves)
    finally:
        proxy.stop()


@pytest.mark.parametrize("case", AWS_FAULTS, ids=lambda c: c.id)
def test_fault_keeps_the_certificate_and_bounds_calls_then_recovers(
    fault_site: FaultSite, case: AwsFault
) -> None:
    site, proxy = fault_site.site, fault_site.site.proxy
    files, reloads, served = site.live_bytes(), site.reloads(), site.served_der()
    new_leaf = fault_site.next_leaf()
    site.put(new_leaf)
    if case.break_it:
        case.break_it(site)
    for fault in case.faults:
        proxy.inject(fault)
    proxy.reset_counts()
    try:
        [outcome] = fault_site.agent_pass()
        time.sleep(SLOW_S if case.id.startswith("slower") else 0.0)  # let delayed calls land
        calls = {op: proxy.count(op) for op in case.max_calls}
    finally:
        proxy.clear_faults()
    assert outcome.status == Status.FAILED, outcome.message
    assert outcome.transient is case.transient, outcome.message
    assert case.says in outcome.message, outcome.message
    assert "\n" not in outcome.message
    assert not contains_key_material(
        outcome.message, [leaf.key_pem() for leaf in fault_site.leaves]
    )
    for op, bound in case.max_calls.items():
        assert 0 < calls[op] <= bound if bound else calls[op] == 0, (op, calls)
    # Nothing lost: same files, no reload, the old certificate still served, status WARNING.
    assert site.live_bytes() == files
    assert site.reloads() == reloads
    assert site.served_der() == served
    code, status = site.status_json()
    assert code == 1, status
    # Recovery: the fault clears, the next pass installs the new version.
    if case.heal:
        case.heal(site)
    [outcome] = fault_site.agent_pass()
    assert outcome.status == Status.INSTALLED, outcome.message
    assert site.served_der() == new_leaf.der
    assert site.status_json()[0] == 0


OUTAGE_S = 8.0
CALLS_PER_CHECK = 1  # max_attempts = 1


def test_run_backs_off_during_an_outage_and_recovers(fault_site: FaultSite) -> None:
    """`certpull run` polling every second: throttled for OUTAGE_S, it keeps serving the old leaf,
    backs off (full jitter, checks at least 1 s apart, so at most OUTAGE_S + 1 checks of
    CALLS_PER_CHECK calls), and installs the new version once the throttling stops."""
    site, proxy = fault_site.site, fault_site.site.proxy
    site.agent_options.update(
        {
            "poll_interval_s": "1",
            "startup_splay_s": "0",
            "max_backoff_s": "5",
            "max_attempts": "1",
        }
    )
    site.write_config()
    old_der = site.served_der()
    daemon = Daemon(site)
    try:
        daemon.wait_ready()
        proxy.inject(Fault("DescribeSecret", 400, "ThrottlingException"))
        new_leaf = fault_site.next_leaf()
        site.put(new_leaf)
        proxy.reset_counts()
        outage_end = time.monotonic() + OUTAGE_S
        served_during: List[bytes] = []
        while time.monotonic() < outage_end:
            served_during.append(site.served_der())
            time.sleep(0.5)
        calls = proxy.count("DescribeSecret")
        proxy.clear_faults()
        cleared = time.monotonic()
        daemon.wait_for(
            "the new leaf to be served",
            lambda: site.serves(new_leaf.der),
            timeout_s=30,
        )
        recovered_s = time.monotonic() - cleared
        assert daemon.stop() == 0
    finally:
        daemon.stop()
        proxy.clear_faults()
    print(
        f"\nrun outage {OUTAGE_S:g} s: {calls} DescribeSecret calls, "
        f"recovered {recovered_s:.1f} s after the fault cleared"
    )
    assert set(served_during) == {old_der}, "the old certificate was not served throughout"
    assert 1 <= calls <= (OUTAGE_S + 1) * CALLS_PER_CHECK, calls
    assert proxy.count("GetSecretValue") >= 1  # only after the throttling stopped
