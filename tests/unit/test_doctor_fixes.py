"""doctor_fixes: each cause -> where to change what, with the real ARNs, inferred where AWS is vague."""

from __future__ import annotations

import json
from typing import Optional, Tuple

import pytest

from certpull.doctor_causes import AwsFailure, classify
from certpull.doctor_fixes import fixes_for, queue_senders
from certpull.doctor_policy import Caller, KmsKey, Target
from certpull.doctor_report import Fix

HOST = "444455556666"
OWNER = "111122223333"
SESSION = f"arn:aws:sts::{HOST}:assumed-role/certpull-web1-InstanceRole-X/i-0abc"
ROLE = f"arn:aws:iam::{HOST}:role/certpull-web1-InstanceRole-X"
SECRET = f"arn:aws:secretsmanager:us-east-1:{OWNER}:secret:www-tls-AbCdEf"
SAME_SECRET = f"arn:aws:secretsmanager:us-east-1:{HOST}:secret:www-tls-AbCdEf"
KEY = f"arn:aws:kms:us-east-1:{OWNER}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
READER = f"arn:aws:iam::{OWNER}:role/certpull-reader"


def fixes(
    code: str,
    message: str,
    action: str = "secretsmanager:GetSecretValue",
    resource: str = SECRET,
    key: Optional[KmsKey] = None,
    caller: str = SESSION,
    external_id: Optional[str] = None,
) -> Tuple[Fix, ...]:
    cause = classify(AwsFailure(code, message))
    target = Target(action, resource, "us-east-1", kms_key=key, external_id=external_id)
    return fixes_for(cause, Caller(caller), target)


def denial(action: str, resource: str, clause: str = "") -> str:
    return f"User: {SESSION} is not authorized to perform: {action} on resource: {resource}{clause}"


def test_caller_principal_of_an_assumed_role_session_is_its_role() -> None:
    caller = Caller(SESSION)
    assert caller.principal == ROLE
    assert (caller.account, caller.kind, caller.name) == (
        HOST,
        "role",
        "certpull-web1-InstanceRole-X",
    )
    user = Caller("arn:aws:iam::123456789012:user/web")
    assert (user.principal, user.kind, user.name) == (
        "arn:aws:iam::123456789012:user/web",
        "user",
        "web",
    )
    assert Caller(None).principal == "ROLE_ARN"


@pytest.mark.parametrize(
    ("key_id", "aws_managed", "arn"),
    [
        (None, True, f"arn:aws:kms:us-east-1:{OWNER}:alias/aws/secretsmanager"),
        (
            "alias/aws/secretsmanager",
            True,
            f"arn:aws:kms:us-east-1:{OWNER}:alias/aws/secretsmanager",
        ),
        (KEY, False, KEY),
        ("1234abcd-12ab-34cd-56ef-1234567890ab", False, KEY),
        ("alias/certpull", False, f"arn:aws:kms:us-east-1:{OWNER}:alias/certpull"),
    ],
)
def test_kms_key_from_describe_secret(key_id: Optional[str], aws_managed: bool, arn: str) -> None:
    key = KmsKey(key_id, "us-east-1", OWNER)
    assert key.aws_managed is aws_managed
    assert key.arn == arn


def test_identity_denial_adds_the_read_statement_to_the_role_in_the_host_account() -> None:
    (fix,) = fixes(
        "AccessDeniedException",
        denial(
            "secretsmanager:GetSecretValue",
            SECRET,
            " because no identity-based policy allows the secretsmanager:GetSecretValue action",
        ),
    )
    assert fix.inferred_from is None
    assert f"role certpull-web1-InstanceRole-X (account {HOST})" in fix.where
    assert fix.statement == {
        "Effect": "Allow",
        "Action": ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"],
        "Resource": SECRET,
    }
    assert fix.commands[0].startswith(
        "aws iam put-role-policy --role-name certpull-web1-InstanceRole-X "
        "--policy-name certpull-secretsmanager-getsecretvalue --policy-document file://policy.json"
    )


def test_resource_denial_adds_a_statement_to_the_secret_policy_in_the_owner_account() -> None:
    (fix,) = fixes(
        "AccessDeniedException",
        denial(
            "secretsmanager:GetSecretValue",
            SECRET,
            " because no resource-based policy allows the secretsmanager:GetSecretValue action",
        ),
    )
    assert fix.inferred_from is None
    assert f"in account {OWNER}" in fix.where and "resource policy of the secret" in fix.where
    assert fix.statement is not None and fix.statement["Principal"] == {"AWS": ROLE}
    assert fix.statement["Action"] == [
        "secretsmanager:GetSecretValue",
        "secretsmanager:DescribeSecret",
    ]
    assert any(
        c.startswith(f"aws secretsmanager put-resource-policy --secret-id {SECRET}")
        for c in fix.commands
    )


def test_key_policy_denial_from_kms_names_the_key_and_its_conditions() -> None:
    (fix,) = fixes(
        "AccessDeniedException",
        denial(
            "kms:Decrypt", KEY, " because no resource-based policy allows the kms:Decrypt action"
        ),
        key=KmsKey(KEY, "us-east-1", OWNER),
    )
    assert f"in account {OWNER}" in fix.where and f"key policy of {KEY}" in fix.where
    assert fix.statement is not None
    assert fix.statement["Principal"] == {"AWS": ROLE}
    assert fix.statement["Condition"]["StringEquals"] == {
        "kms:ViaService": "secretsmanager.us-east-1.amazonaws.com",
        "kms:EncryptionContext:SecretARN": SECRET,
    }


def test_explicit_deny_asks_to_remove_it_not_to_add_an_allow() -> None:
    (fix,) = fixes(
        "AccessDeniedException",
        denial(
            "secretsmanager:GetSecretValue",
            SECRET,
            " with an explicit deny in a resource-based policy",
        ),
    )
    assert fix.statement is None
    assert fix.where.startswith("remove or narrow the Deny of secretsmanager:GetSecretValue")
    assert f"(account {OWNER})" in fix.where


def test_vague_denial_across_accounts_infers_both_sides() -> None:
    identity, resource = fixes("AccessDenied", denial("secretsmanager:GetSecretValue", SECRET))
    assert identity.inferred_from and resource.inferred_from
    assert "identity policy" in identity.where
    assert f"in account {OWNER}" in resource.where and "resource policy" in resource.where


def test_vague_denial_in_the_same_account_infers_the_identity_policy_only() -> None:
    (fix,) = fixes(
        "AccessDenied", denial("secretsmanager:GetSecretValue", SAME_SECRET), resource=SAME_SECRET
    )
    assert fix.inferred_from and "identity policy" in fix.where
    assert fix.statement is not None and fix.statement["Resource"] == SAME_SECRET


def test_assume_role_denial_infers_identity_and_trust_with_the_external_id() -> None:
    identity, trust = fixes(
        "AccessDenied",
        denial("sts:AssumeRole", READER),
        action="sts:AssumeRole",
        resource=READER,
        external_id="fleet-7",
    )
    assert identity.statement == {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": READER}
    assert f"in account {OWNER}" in trust.where and "trust policy of role" in trust.where
    assert trust.statement == {
        "Effect": "Allow",
        "Principal": {"AWS": ROLE},
        "Action": "sts:AssumeRole",
        "Condition": {"StringEquals": {"sts:ExternalId": "fleet-7"}},
    }
    assert identity.inferred_from and trust.inferred_from


def test_kms_refusal_with_a_customer_key_across_accounts_infers_key_and_identity_policies() -> None:
    key_fix, identity = fixes(
        "AccessDeniedException", "Access to KMS is not allowed", key=KmsKey(KEY, "us-east-1", OWNER)
    )
    assert key_fix.inferred_from and "key policy" in (key_fix.inferred_from or "")
    assert f"in account {OWNER}" in key_fix.where
    assert identity.statement is not None and identity.statement["Resource"] == KEY
    assert identity.statement["Action"] == "kms:Decrypt"


def test_kms_refusal_with_the_aws_managed_key_across_accounts_means_a_customer_key() -> None:
    found = fixes(
        "AccessDeniedException",
        "Access to KMS is not allowed",
        key=KmsKey(None, "us-east-1", OWNER),
    )
    assert f"in account {OWNER}, encrypt the secret with a customer managed key" in found[0].where
    assert (
        f"aws secretsmanager update-secret --secret-id {SECRET} --kms-key-id KEY_ARN"
        in found[0].commands
    )
    assert "role_arn" in found[-1].where


def test_not_found_points_at_the_configured_arn() -> None:
    cause = classify(
        AwsFailure("ResourceNotFoundException", "Secrets Manager can't find the specified secret.")
    )
    target = Target(
        "secretsmanager:DescribeSecret", SECRET, "us-east-1", config_hint="secret_arn in [cert:www]"
    )
    (fix,) = fixes_for(cause, Caller(SESSION), target)
    assert fix.where.startswith("check secret_arn in [cert:www]")
    assert f"account {OWNER}" in fix.where


def test_unreachable_names_the_endpoint_and_the_vpc_endpoint() -> None:
    cause = classify(AwsFailure("EndpointConnectionError", "Could not connect"))
    (fix,) = fixes_for(
        cause, Caller(SESSION), Target("secretsmanager:DescribeSecret", SECRET, "eu-west-1")
    )
    assert "https://secretsmanager.eu-west-1.amazonaws.com" in fix.where
    assert "com.amazonaws.eu-west-1.secretsmanager" in fix.where


def test_queue_senders_reads_service_principals_and_source_arns() -> None:
    topic = "arn:aws:sns:us-east-1:111122223333:certpull-www"
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": "arn:aws:iam::444455556666:root"},
                "Action": "sqs:ReceiveMessage",
            },
            {
                "Effect": "Allow",
                "Principal": {"Service": "sns.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": "arn:aws:sqs:us-east-1:444455556666:q",
                "Condition": {"ArnEquals": {"aws:SourceArn": topic}},
            },
            {"Effect": "Deny", "Principal": "*", "Action": "sqs:SendMessage"},
        ],
    }
    assert queue_senders(json.dumps(policy)) == [f"sns.amazonaws.com (from {topic})"]
    assert queue_senders(None) == []
    assert queue_senders("not json") == []
