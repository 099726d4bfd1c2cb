"""`certpull doctor`'s AWS checks against moto's server: each cause has a failing and a passing case.

Two servers: moto with IAM enforcement in its own process (tests/iam_moto.py) for the denials moto
really produces (identity policies, unknown keys, a role to assume), and the session's shared moto
behind tests/aws_proxy.py, which answers with AWS's documented error responses where moto has no
equivalent (resource and key policies, KMS, the clock, throttling) and with canned answers for
another account's secret, which moto cannot read by ARN.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

import pytest

from certpull.doctor_report import Check, Result
from tests.aws_local import LocalAws
from tests.aws_proxy import AwsProxy, Fault
from tests.doctor_kit import by_id, make_doctor, write_config
from tests.iam_moto import OWNER, EnforcingMoto, allow
from tests.pki import Pki

pytestmark = pytest.mark.integration

KEY = f"arn:aws:kms:us-east-1:{OWNER}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
OWNER_SECRET = f"arn:aws:secretsmanager:us-east-1:{OWNER}:secret:www-tls-AbCdEf"
HOST_ROLE_SESSION = "arn:aws:sts::123456789012:assumed-role/certpull-web1/i-0abc"
HOST_ROLE = "arn:aws:iam::123456789012:role/certpull-web1"


@pytest.fixture(scope="module")
def enforcing() -> Iterator[EnforcingMoto]:
    server = EnforcingMoto().start()
    try:
        yield server
    finally:
        server.stop()


def aws_checks(report: Any) -> Dict[str, Check]:
    return by_id(report)


def assert_fix_has(check: Check, *fragments: str) -> None:
    text = json.dumps([fix.to_dict() for fix in check.fixes])
    for fragment in fragments:
        assert fragment in text, (fragment, text)


# --- identity policies, enforced by moto ----------------------------------------------------------


def test_get_secret_value_denied_by_the_identity_policy(
    enforcing: EnforcingMoto, tmp_path: Path, pki: Pki
) -> None:
    arn = enforcing.client("secretsmanager").create_secret(
        Name=f"www-{uuid.uuid4().hex[:6]}", SecretString=pki.secret_string()
    )["ARN"]
    web = enforcing.user(allow(["secretsmanager:DescribeSecret"]))
    user_arn = enforcing.user_arn(web)
    config = write_config(
        tmp_path / "certpull.conf", enforcing.endpoint_url, {"www": {"secret_arn": arn}}
    )
    report = make_doctor(config, credentials=web).run()
    checks = by_id(report)
    assert checks["identity"].result is Result.PASSED and user_arn in checks["identity"].detail
    assert checks["www.describe"].result is Result.PASSED
    get = checks["www.get_value"]
    assert get.result is Result.FAILED and get.cause == "access_denied"
    assert dict(get.facts)["principal"] == user_arn
    assert dict(get.facts)["action"].startswith("secretsmanager:GetSecretValue")
    (fix,) = (
        get.fixes
    )  # moto's message names no policy: same account -> the identity policy, inferred
    assert fix.inferred_from is not None
    assert fix.statement == {
        "Effect": "Allow",
        "Action": ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"],
        "Resource": arn,
    }
    assert fix.commands[0].startswith(
        f"aws iam put-user-policy --user-name {user_arn.rsplit('/', 1)[1]}"
    )
    assert checks["www.content"].result is Result.NOT_APPLICABLE
    assert report.exit_code == 1


def test_the_same_user_with_get_secret_value_passes(
    enforcing: EnforcingMoto, tmp_path: Path, pki: Pki
) -> None:
    arn = enforcing.client("secretsmanager").create_secret(
        Name=f"www-{uuid.uuid4().hex[:6]}", SecretString=pki.secret_string()
    )["ARN"]
    # moto matches Secrets Manager actions against resource "*" only (AWS: the secret's ARN)
    web = enforcing.user(allow(["secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue"]))
    config = write_config(
        tmp_path / "certpull.conf", enforcing.endpoint_url, {"www": {"secret_arn": arn}}
    )
    checks = by_id(make_doctor(config, credentials=web).run())
    for check_id in ("identity", "www.describe", "www.kms_key", "www.get_value", "www.content"):
        assert checks[check_id].result is Result.PASSED, checks[check_id]
    assert "not installed yet" in checks["www.content"].detail


def test_unknown_access_key_fails_identity_and_skips_the_secrets(
    enforcing: EnforcingMoto, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path / "certpull.conf", enforcing.endpoint_url, {"www": {"secret_arn": OWNER_SECRET}}
    )
    bogus = {"aws_access_key_id": "AKIAIOSFODNN7EXAMPLE", "aws_secret_access_key": "x" * 40}
    report = make_doctor(config, credentials=bogus).run()
    checks = by_id(report)
    assert checks["identity"].result is Result.FAILED
    assert checks["identity"].cause == "credentials_invalid"
    assert dict(checks["identity"].facts)["AWS said"].startswith("InvalidClientTokenId")
    assert checks["www.aws"].result is Result.NOT_APPLICABLE
    assert "www.describe" not in checks


def test_cross_account_through_an_assumed_role_passes(
    enforcing: EnforcingMoto, tmp_path: Path, pki: Pki
) -> None:
    arn = enforcing.client("secretsmanager", enforcing.owner()).create_secret(
        Name=f"www-{uuid.uuid4().hex[:6]}", SecretString=pki.secret_string()
    )["ARN"]
    assert f":{OWNER}:" in arn
    web = enforcing.user(allow(["sts:AssumeRole"], f"arn:aws:iam::{OWNER}:role/*"))
    reader = enforcing.owner_role(
        enforcing.user_arn(web),
        allow(["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]),
        external_id="fleet-7",
    )
    config = write_config(
        tmp_path / "certpull.conf",
        enforcing.endpoint_url,
        {"www": {"secret_arn": arn, "role_arn": reader, "external_id": "fleet-7"}},
    )
    checks = by_id(make_doctor(config, credentials=web).run())
    assumed = checks["www.assume_role"]
    assert assumed.result is Result.PASSED
    assert assumed.detail.startswith(
        f"arn:aws:sts::{OWNER}:assumed-role/{reader.rsplit('/', 1)[1]}/certpull-"
    )
    assert "external_id" in assumed.detail
    for check_id in ("www.describe", "www.kms_key", "www.get_value", "www.content"):
        assert checks[check_id].result is Result.PASSED, checks[check_id]


def test_reader_role_without_get_secret_value_names_the_reader_role(
    enforcing: EnforcingMoto, tmp_path: Path, pki: Pki
) -> None:
    arn = enforcing.client("secretsmanager", enforcing.owner()).create_secret(
        Name=f"www-{uuid.uuid4().hex[:6]}", SecretString=pki.secret_string()
    )["ARN"]
    web = enforcing.user(allow(["sts:AssumeRole"], f"arn:aws:iam::{OWNER}:role/*"))
    reader = enforcing.owner_role(enforcing.user_arn(web), allow(["secretsmanager:DescribeSecret"]))
    config = write_config(
        tmp_path / "certpull.conf",
        enforcing.endpoint_url,
        {"www": {"secret_arn": arn, "role_arn": reader}},
    )
    get = by_id(make_doctor(config, credentials=web).run())["www.get_value"]
    assert get.result is Result.FAILED and get.cause == "access_denied"
    (fix,) = get.fixes
    assert f"role {reader.rsplit('/', 1)[1]} (account {OWNER})" in fix.where


def test_assume_role_denied_infers_the_identity_and_the_trust_policy(
    enforcing: EnforcingMoto, tmp_path: Path
) -> None:
    web = enforcing.user(allow(["secretsmanager:DescribeSecret"]))
    reader = f"arn:aws:iam::{OWNER}:role/certpull-reader"
    config = write_config(
        tmp_path / "certpull.conf",
        enforcing.endpoint_url,
        {"www": {"secret_arn": OWNER_SECRET, "role_arn": reader, "external_id": "fleet-7"}},
    )
    report = make_doctor(config, credentials=web).run()
    checks = by_id(report)
    assumed = checks["www.assume_role"]
    assert assumed.result is Result.FAILED and assumed.cause == "access_denied"
    identity, trust = assumed.fixes
    assert identity.statement == {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": reader}
    assert trust.statement is not None
    assert trust.statement["Principal"] == {"AWS": enforcing.user_arn(web)}
    assert trust.statement["Condition"] == {"StringEquals": {"sts:ExternalId": "fleet-7"}}
    assert identity.inferred_from and trust.inferred_from
    assert checks["www.secret"].result is Result.NOT_APPLICABLE


def test_receive_denied_and_queue_policy_not_readable(
    enforcing: EnforcingMoto, tmp_path: Path, pki: Pki
) -> None:
    arn = enforcing.client("secretsmanager").create_secret(
        Name=f"www-{uuid.uuid4().hex[:6]}", SecretString=pki.secret_string()
    )["ARN"]
    url = enforcing.client("sqs").create_queue(QueueName=f"certpull-{uuid.uuid4().hex[:6]}")[
        "QueueUrl"
    ]
    web = enforcing.user(allow(["secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue"]))
    config = write_config(
        tmp_path / "certpull.conf",
        enforcing.endpoint_url,
        {"www": {"secret_arn": arn}},
        events_queue_url=url,
    )
    checks = by_id(make_doctor(config, credentials=web).run())
    receive = checks["events.receive"]
    assert receive.result is Result.FAILED and receive.cause == "access_denied"
    queue_arn = f"arn:aws:sqs:us-east-1:123456789012:{url.rsplit('/', 1)[1]}"
    (fix,) = receive.fixes
    assert fix.statement == {
        "Effect": "Allow",
        "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage"],
        "Resource": queue_arn,
    }
    policy = checks["events.policy"]
    assert policy.result is Result.NOT_APPLICABLE and "may not read" in policy.detail


# --- AWS's documented answers, injected through the proxy ----------------------------------------


@pytest.fixture
def caller(local_aws: LocalAws) -> str:
    return str(local_aws.client("sts").get_caller_identity()["Arn"])


def shared_config(tmp_path: Path, proxy: AwsProxy, secret_arn: str, **agent: str) -> Any:
    return write_config(
        tmp_path / "certpull.conf", proxy.endpoint_url, {"www": {"secret_arn": secret_arn}}, **agent
    )


def described(arn: str, key_id: Optional[str]) -> Fault:
    """DescribeSecret of another account's secret, as AWS answers it (moto cannot read it by ARN)."""
    body: Dict[str, Any] = {
        "ARN": arn,
        "Name": "www-tls",
        "VersionIdsToStages": {"v1": ["AWSCURRENT"]},
    }
    if key_id:
        body["KmsKeyId"] = key_id
    return Fault("DescribeSecret", status=200, body=json.dumps(body))


def denied(operation: str, message: str, code: str = "AccessDeniedException") -> Fault:
    return Fault(operation, status=400, code=code, message=message)


def local_secret(local_aws: LocalAws, pki: Pki, **kwargs: Any) -> str:
    return str(
        local_aws.client("secretsmanager").create_secret(
            Name=f"www-{uuid.uuid4().hex[:8]}", SecretString=pki.secret_string(), **kwargs
        )["ARN"]
    )


def test_documented_identity_denial_is_not_inferred(
    local_aws: LocalAws, aws_proxy: AwsProxy, tmp_path: Path, pki: Pki, caller: str
) -> None:
    arn = local_secret(local_aws, pki)
    aws_proxy.inject(
        denied(
            "GetSecretValue",
            f"User: {caller} is not authorized to perform: secretsmanager:GetSecretValue on "
            f"resource: {arn} because no identity-based policy allows the "
            "secretsmanager:GetSecretValue action",
        )
    )
    get = by_id(make_doctor(shared_config(tmp_path, aws_proxy, arn)).run())["www.get_value"]
    (fix,) = get.fixes
    assert fix.inferred_from is None and "identity policy" in fix.where


def test_resource_policy_denial_across_accounts(aws_proxy: AwsProxy, tmp_path: Path) -> None:
    aws_proxy.inject(described(OWNER_SECRET, KEY))
    aws_proxy.inject(
        denied(
            "GetSecretValue",
            f"User: {HOST_ROLE_SESSION} is not authorized to perform: secretsmanager:GetSecretValue "
            f"on resource: {OWNER_SECRET} because no resource-based policy allows the "
            "secretsmanager:GetSecretValue action",
        )
    )
    report = make_doctor(shared_config(tmp_path, aws_proxy, OWNER_SECRET)).run()
    get = by_id(report)["www.get_value"]
    assert get.result is Result.FAILED and get.cause == "access_denied"
    assert dict(get.facts)["principal"] == HOST_ROLE_SESSION
    (fix,) = get.fixes
    assert fix.inferred_from is None
    assert fix.where.startswith(f"in account {OWNER}, add this statement to the resource policy")
    assert fix.statement is not None and fix.statement["Principal"] == {"AWS": HOST_ROLE}
    assert (
        f"aws secretsmanager put-resource-policy --secret-id {OWNER_SECRET} --block-public-policy"
        in fix.commands[1]
    )


def test_kms_refusal_with_a_customer_key_infers_the_key_policy(
    aws_proxy: AwsProxy, tmp_path: Path, caller: str
) -> None:
    aws_proxy.inject(described(OWNER_SECRET, KEY))
    aws_proxy.inject(denied("GetSecretValue", "Access to KMS is not allowed"))
    checks = by_id(make_doctor(shared_config(tmp_path, aws_proxy, OWNER_SECRET)).run())
    assert checks["www.kms_key"].result is Result.PASSED and KEY in checks["www.kms_key"].detail
    get = checks["www.get_value"]
    assert get.cause == "kms_denied"
    key_fix, identity = get.fixes
    assert key_fix.inferred_from and identity.inferred_from
    assert key_fix.where.startswith(
        f"in account {OWNER}, add this statement to the key policy of {KEY}"
    )
    assert key_fix.statement is not None and key_fix.statement["Condition"]["StringEquals"] == {
        "kms:ViaService": "secretsmanager.us-east-1.amazonaws.com",
        "kms:EncryptionContext:SecretARN": OWNER_SECRET,
    }
    assert identity.statement is not None and identity.statement["Resource"] == KEY


def test_aws_managed_key_from_another_account(aws_proxy: AwsProxy, tmp_path: Path) -> None:
    aws_proxy.inject(described(OWNER_SECRET, None))
    aws_proxy.inject(
        denied(
            "GetSecretValue",
            "You can't access a secret from a different AWS account if you encrypt the secret "
            "with the default KMS service key.",
            code="InvalidRequestException",
        )
    )
    checks = by_id(make_doctor(shared_config(tmp_path, aws_proxy, OWNER_SECRET)).run())
    kms = checks["www.kms_key"]
    assert kms.result is Result.FAILED and kms.cause == "aws_managed_key_cross_account"
    assert "aws/secretsmanager" in kms.detail and "never shared across accounts" in kms.detail
    assert_fix_has(
        kms, f"update-secret --secret-id {OWNER_SECRET} --kms-key-id KEY_ARN", "rotate-secret"
    )
    assert checks["www.get_value"].cause == "aws_managed_key_cross_account"


def test_cross_account_with_resource_and_key_policies_in_place_passes(
    aws_proxy: AwsProxy, tmp_path: Path, pki: Pki
) -> None:
    aws_proxy.inject(described(OWNER_SECRET, KEY))
    value = {
        "ARN": OWNER_SECRET,
        "Name": "www-tls",
        "VersionId": "v1",
        "SecretString": pki.secret_string(),
        "VersionStages": ["AWSCURRENT"],
    }
    aws_proxy.inject(Fault("GetSecretValue", status=200, body=json.dumps(value)))
    checks = by_id(make_doctor(shared_config(tmp_path, aws_proxy, OWNER_SECRET)).run())
    for check_id in ("www.describe", "www.kms_key", "www.get_value", "www.content"):
        assert checks[check_id].result is Result.PASSED, checks[check_id]
    assert "must both allow kms:Decrypt" in checks["www.kms_key"].detail


def test_missing_secret(local_aws: LocalAws, aws_proxy: AwsProxy, tmp_path: Path) -> None:
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:no-such-secret-AbCdEf"
    checks = by_id(make_doctor(shared_config(tmp_path, aws_proxy, arn)).run())
    describe = checks["www.describe"]
    assert describe.result is Result.FAILED and describe.cause == "not_found"
    assert describe.fixes[0].where.startswith("check secret_arn in [cert:www] of ")
    assert checks["www.kms_key"].result is Result.NOT_APPLICABLE


def test_throttled_describe(
    local_aws: LocalAws, aws_proxy: AwsProxy, tmp_path: Path, pki: Pki
) -> None:
    arn = local_secret(local_aws, pki)
    aws_proxy.inject(denied("DescribeSecret", "Rate exceeded", code="ThrottlingException"))
    describe = by_id(make_doctor(shared_config(tmp_path, aws_proxy, arn)).run())["www.describe"]
    assert describe.result is Result.FAILED and describe.cause == "throttled"


def test_signature_expired_is_the_clock(aws_proxy: AwsProxy, tmp_path: Path) -> None:
    aws_proxy.inject(
        Fault(
            "GetCallerIdentity",
            status=403,
            code="SignatureDoesNotMatch",
            message="Signature expired: 20261201T220858Z is now earlier than 20261202T132108Z "
            "(20261202T132608Z - 5 min.)",
        )
    )
    checks = by_id(make_doctor(shared_config(tmp_path, aws_proxy, OWNER_SECRET)).run())
    identity = checks["identity"]
    assert identity.result is Result.FAILED and identity.cause == "clock_skew"
    assert_fix_has(identity, "chronyd")
    assert checks["www.aws"].result is Result.NOT_APPLICABLE


def test_expired_session_token(aws_proxy: AwsProxy, tmp_path: Path) -> None:
    aws_proxy.inject(
        Fault(
            "GetCallerIdentity",
            status=403,
            code="ExpiredToken",
            message="The security token included in the request is expired",
        )
    )
    identity = by_id(make_doctor(shared_config(tmp_path, aws_proxy, OWNER_SECRET)).run())[
        "identity"
    ]
    assert identity.cause == "credentials_expired"


@pytest.mark.parametrize(
    ("offset_s", "fragment"),
    [(400.0, "ahead of AWS"), (120.0, "look expired 120 s early"), (-120.0, "looks not yet valid")],
)
def test_skewed_clock_fails(
    local_aws: LocalAws,
    aws_proxy: AwsProxy,
    tmp_path: Path,
    pki: Pki,
    offset_s: float,
    fragment: str,
) -> None:
    arn = local_secret(local_aws, pki)
    doctor = make_doctor(
        shared_config(tmp_path, aws_proxy, arn), clock=lambda: time.time() + offset_s
    )
    clock = by_id(doctor.run())["clock"]
    assert clock.result is Result.FAILED and clock.cause == "clock_skew"
    assert fragment in clock.detail
    if abs(offset_s) >= 300:
        assert "refuses every request" in clock.detail


def test_right_clock_passes(
    local_aws: LocalAws, aws_proxy: AwsProxy, tmp_path: Path, pki: Pki
) -> None:
    arn = local_secret(local_aws, pki)
    clock = by_id(make_doctor(shared_config(tmp_path, aws_proxy, arn)).run())["clock"]
    assert clock.result is Result.PASSED and "GetCallerIdentity" in clock.detail


def test_unreachable_endpoint(tmp_path: Path) -> None:
    from tests.apache import free_port

    endpoint = f"http://127.0.0.1:{free_port()}"
    config = write_config(
        tmp_path / "certpull.conf", endpoint, {"www": {"secret_arn": OWNER_SECRET}}
    )
    checks = by_id(make_doctor(config).run())
    assert checks["identity"].result is Result.NOT_APPLICABLE  # no role_arn: the agent needs no STS
    describe = checks["www.describe"]
    assert describe.result is Result.FAILED and describe.cause == "unreachable"
    assert_fix_has(describe, f"allow outbound HTTPS to {endpoint}")
    assert checks["clock"].result is Result.NOT_APPLICABLE


def test_no_credentials(
    tmp_path: Path, aws_proxy: AwsProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    checks = by_id(make_doctor(shared_config(tmp_path, aws_proxy, OWNER_SECRET)).run())
    assert checks["credentials"].result is Result.FAILED
    assert checks["credentials"].cause == "credentials_missing"
    assert_fix_has(checks["credentials"], "host.yaml")
    assert checks["identity"].cause == "credentials_missing"
    assert checks["imds"].result is Result.NOT_APPLICABLE


def test_invalid_content_fails_as_sync_would_and_installs_nothing(
    local_aws: LocalAws, aws_proxy: AwsProxy, tmp_path: Path, pki: Pki
) -> None:
    other = pki.leaf(slot=7)
    body = pki.secret_string(PRIVATE_KEY_PEM=other.key_pem())
    arn = str(
        local_aws.client("secretsmanager").create_secret(
            Name=f"www-{uuid.uuid4().hex[:8]}", SecretString=body
        )["ARN"]
    )
    config = shared_config(tmp_path, aws_proxy, arn)
    report = make_doctor(config).run()
    content = by_id(report)["www.content"]
    assert content.result is Result.FAILED
    assert content.detail.endswith("PRIVATE_KEY_PEM does not match CERTIFICATE_PEM")
    text = json.dumps(report.to_dict())
    assert other.key_pem().splitlines()[1] not in text  # no key material
    assert not (tmp_path / "live").exists()  # nothing installed


# --- events --------------------------------------------------------------------------------------


def queue(local_aws: LocalAws, with_policy: bool) -> Dict[str, str]:
    sqs = local_aws.client("sqs")
    url = sqs.create_queue(QueueName=f"certpull-doctor-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    topic = local_aws.client("sns").create_topic(Name=f"certpull-{uuid.uuid4().hex[:8]}")[
        "TopicArn"
    ]
    if with_policy:
        statement = {
            "Effect": "Allow",
            "Principal": {"Service": "sns.amazonaws.com"},
            "Action": "sqs:SendMessage",
            "Resource": arn,
            "Condition": {"ArnEquals": {"aws:SourceArn": topic}},
        }
        sqs.set_queue_attributes(
            QueueUrl=url,
            Attributes={"Policy": json.dumps({"Version": "2012-10-17", "Statement": [statement]})},
        )
    return {"url": url, "arn": arn, "topic": topic}


def test_events_queue_receivable_and_nothing_consumed(
    local_aws: LocalAws, aws_proxy: AwsProxy, tmp_path: Path, pki: Pki
) -> None:
    q = queue(local_aws, with_policy=True)
    sqs = local_aws.client("sqs")
    sqs.send_message(QueueUrl=q["url"], MessageBody='{"detail-type": "Secret Label Updated"}')
    config = shared_config(
        tmp_path, aws_proxy, local_secret(local_aws, pki), events_queue_url=q["url"]
    )
    checks = by_id(make_doctor(config).run())
    receive, policy = checks["events.receive"], checks["events.policy"]
    assert receive.result is Result.PASSED and "stays in the queue" in receive.detail
    assert policy.result is Result.PASSED and q["topic"] in policy.detail
    # The message is still there, visible at once, received once by the doctor.
    again = sqs.receive_message(
        QueueUrl=q["url"], WaitTimeSeconds=0, AttributeNames=["ApproximateReceiveCount"]
    )["Messages"]
    assert len(again) == 1 and again[0]["Attributes"]["ApproximateReceiveCount"] == "2"


def test_events_queue_without_a_send_policy(
    local_aws: LocalAws, aws_proxy: AwsProxy, tmp_path: Path, pki: Pki
) -> None:
    q = queue(local_aws, with_policy=False)
    config = shared_config(
        tmp_path, aws_proxy, local_secret(local_aws, pki), events_queue_url=q["url"]
    )
    policy = by_id(make_doctor(config).run())["events.policy"]
    assert policy.result is Result.FAILED
    (fix,) = policy.fixes
    assert fix.statement is not None and fix.statement["Resource"] == q["arn"]
    assert fix.statement["Action"] == "sqs:SendMessage"


def test_missing_events_queue(
    local_aws: LocalAws, aws_proxy: AwsProxy, tmp_path: Path, pki: Pki
) -> None:
    url = f"{local_aws.endpoint_url}/123456789012/no-such-queue"
    config = shared_config(tmp_path, aws_proxy, local_secret(local_aws, pki), events_queue_url=url)
    receive = by_id(make_doctor(config).run())["events.receive"]
    assert receive.result is Result.FAILED and receive.cause == "not_found"
    assert "events_queue_url" in receive.fixes[0].where


# --- the instance metadata service (moto's, through the proxy) ------------------------------------


def _moto_has_imdsv2(local_aws: LocalAws) -> bool:
    request = urllib.request.Request(  # noqa: S310 - our own loopback server
        local_aws.endpoint_url + "/latest/api/token",
        method="PUT",
        headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5):  # noqa: S310
            return True
    except urllib.error.HTTPError:
        return False


@pytest.fixture
def imds_credentials(
    local_aws: LocalAws, aws_proxy: AwsProxy, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Credentials from moto's instance metadata service (moto before 5.2, the one Python 3.9
    gets, has no IMDSv2 token endpoint: the proxy answers the token request as IMDS does)."""
    if not _moto_has_imdsv2(local_aws):
        aws_proxy.inject(Fault("IMDS:token", status=200, body="AQAEAtoken=="))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "false")
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", aws_proxy.endpoint_url + "/")


@pytest.mark.usefixtures("imds_credentials")
def test_instance_profile_through_imdsv2(
    local_aws: LocalAws, aws_proxy: AwsProxy, tmp_path: Path, pki: Pki
) -> None:
    config = shared_config(tmp_path, aws_proxy, local_secret(local_aws, pki))
    checks = by_id(make_doctor(config).run())
    assert (
        checks["credentials"].result is Result.PASSED
        and "instance profile" in checks["credentials"].detail
    )
    assert checks["imds"].result is Result.PASSED
    assert checks["imds"].detail.startswith(f"a session token came from {aws_proxy.endpoint_url}/")


@pytest.mark.usefixtures("imds_credentials")
@pytest.mark.parametrize(
    ("container", "fragment"),
    [(True, "--http-put-response-hop-limit 2"), (False, "--http-endpoint enabled")],
)
def test_imdsv2_token_never_answered(
    local_aws: LocalAws,
    aws_proxy: AwsProxy,
    tmp_path: Path,
    pki: Pki,
    container: bool,
    fragment: str,
) -> None:
    config = shared_config(tmp_path, aws_proxy, local_secret(local_aws, pki))
    aws_proxy.clear_faults()
    aws_proxy.inject(Fault("IMDS:token", delay_s=2.0))  # a reply dropped past the hop limit
    doctor = make_doctor(config, in_container=lambda: container, imds_timeout_s=0.5)
    imds = by_id(doctor.run())["imds"]
    assert imds.result is Result.FAILED
    assert_fix_has(imds, fragment)


def test_region_taken_from_the_secret_arn(
    local_aws: LocalAws, aws_proxy: AwsProxy, tmp_path: Path, pki: Pki
) -> None:
    good = by_id(
        make_doctor(shared_config(tmp_path, aws_proxy, local_secret(local_aws, pki))).run()
    )
    assert good["www.region"].result is Result.PASSED and good["www.region"].detail.startswith(
        "us-east-1 "
    )
    typo = "arn:aws:secretsmanager:us-east-9:123456789012:secret:www-tls-AbCdEf"
    (tmp_path / "typo").mkdir()
    checks = by_id(make_doctor(shared_config(tmp_path / "typo", aws_proxy, typo)).run())
    region = checks["www.region"]
    assert region.result is Result.FAILED
    assert (
        "us-east-9, taken from secret_arn, is not a Secrets Manager region of partition aws"
        in region.detail
    )


def test_secret_scheduled_for_deletion(
    local_aws: LocalAws, aws_proxy: AwsProxy, tmp_path: Path, pki: Pki
) -> None:
    arn = local_secret(local_aws, pki)
    local_aws.client("secretsmanager").delete_secret(SecretId=arn, RecoveryWindowInDays=7)
    checks = by_id(make_doctor(shared_config(tmp_path, aws_proxy, arn)).run())
    describe = checks["www.describe"]
    assert describe.result is Result.FAILED and describe.cause == "scheduled_for_deletion"
    assert describe.fixes[0].commands == (f"aws secretsmanager restore-secret --secret-id {arn}",)
    assert checks["www.get_value"].cause == "scheduled_for_deletion"
