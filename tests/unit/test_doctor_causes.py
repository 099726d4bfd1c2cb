"""doctor_causes.classify: AWS's documented error answers -> causes, as one table.

Message texts are AWS's own: IAM's "Troubleshooting access denied error messages" (one example per
policy type), Secrets Manager's KMS refusals as the AWS knowledge center article on cross-account
secrets lists them ("Access to KMS is not allowed", "...not encrypted with the current KMS key",
"You can't access a secret from a different AWS account if you encrypt the secret with the default
KMS service key."), KMS's "The ciphertext refers to a customer master key that does not exist...",
SigV4's "Signature expired: ... is now earlier than ... (... - 5 min.)", and moto's own
(message without the policy clause) for the identity denial it really enforces.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import pytest

from certpull.doctor_causes import AwsFailure, Kind, Policy, classify

SECRET = "arn:aws:secretsmanager:us-east-1:111122223333:secret:www-tls-AbCdEf"
ROLE_SESSION = "arn:aws:sts::444455556666:assumed-role/certpull-web1-InstanceRole-X/i-0abc"
KEY = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"


class Row(NamedTuple):
    code: str
    message: str
    kind: Kind
    policy: Optional[Policy] = None
    explicit: bool = False
    action: Optional[str] = None
    resource: Optional[str] = None
    status: int = 400


ROWS = {
    "identity policy, implicit": Row(
        "AccessDeniedException",
        f"User: {ROLE_SESSION} is not authorized to perform: secretsmanager:GetSecretValue on "
        f"resource: {SECRET} because no identity-based policy allows the "
        "secretsmanager:GetSecretValue action",
        Kind.ACCESS_DENIED,
        Policy.IDENTITY,
        False,
        "secretsmanager:GetSecretValue",
        SECRET,
    ),
    "identity policy, explicit": Row(
        "AccessDeniedException",
        f"User: {ROLE_SESSION} is not authorized to perform: secretsmanager:DescribeSecret on "
        f"resource: {SECRET} with an explicit deny in an identity-based policy",
        Kind.ACCESS_DENIED,
        Policy.IDENTITY,
        True,
        "secretsmanager:DescribeSecret",
        SECRET,
    ),
    "resource policy, implicit (no resource in the text)": Row(
        "AccessDeniedException",
        "User: arn:aws:iam::123456789012:user/JohnDoe is not authorized to perform: "
        "secretsmanager:GetSecretValue because no resource-based policy allows the "
        "secretsmanager:GetSecretValue action",
        Kind.ACCESS_DENIED,
        Policy.RESOURCE,
        False,
        "secretsmanager:GetSecretValue",
    ),
    "resource policy, explicit": Row(
        "AccessDeniedException",
        "User: arn:aws:iam::123456789012:user/JohnDoe is not authorized to perform: "
        "secretsmanager:GetSecretValue on resource: "
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:* with an explicit deny in a "
        "resource-based policy",
        Kind.ACCESS_DENIED,
        Policy.RESOURCE,
        True,
        "secretsmanager:GetSecretValue",
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:*",
    ),
    "KMS key policy (kms:Decrypt, resource-based)": Row(
        "AccessDeniedException",
        f"User: {ROLE_SESSION} is not authorized to perform: kms:Decrypt on resource: {KEY} "
        "because no resource-based policy allows the kms:Decrypt action",
        Kind.ACCESS_DENIED,
        Policy.RESOURCE,
        False,
        "kms:Decrypt",
        KEY,
    ),
    "service control policy": Row(
        "AccessDeniedException",
        "User: arn:aws:iam::777788889999:user/JohnDoe is not authorized to perform: "
        "codecommit:ListRepositories with an explicit deny in a service control policy",
        Kind.ACCESS_DENIED,
        Policy.SCP,
        True,
        "codecommit:ListRepositories",
    ),
    "permissions boundary": Row(
        "AccessDenied",
        "User: arn:aws:iam::123456789012:user/JohnDoe is not authorized to perform: "
        "codedeploy:ListDeployments on resource: "
        "arn:aws:codedeploy:us-east-1:123456789012:deploymentgroup:* because no permissions "
        "boundary allows the codedeploy:ListDeployments action",
        Kind.ACCESS_DENIED,
        Policy.BOUNDARY,
        False,
        "codedeploy:ListDeployments",
        "arn:aws:codedeploy:us-east-1:123456789012:deploymentgroup:*",
    ),
    "session policy (AWS writes 'sessions policy')": Row(
        "AccessDenied",
        "User: arn:aws:iam::123456789012:user/JohnDoe is not authorized to perform: "
        "codedeploy:ListDeployments on resource: "
        "arn:aws:codedeploy:us-east-1:123456789012:deploymentgroup:* with an explicit deny in a "
        "sessions policy",
        Kind.ACCESS_DENIED,
        Policy.SESSION,
        True,
        "codedeploy:ListDeployments",
        "arn:aws:codedeploy:us-east-1:123456789012:deploymentgroup:*",
    ),
    "VPC endpoint policy": Row(
        "AccessDeniedException",
        "User: arn:aws:iam::123456789012:user/JohnDoe is not authorized to perform: "
        "codecommit:ListRepositories because no VPC endpoint policy allows the "
        "codecommit:ListRepositories action",
        Kind.ACCESS_DENIED,
        Policy.VPC_ENDPOINT,
        False,
        "codecommit:ListRepositories",
    ),
    "role trust policy": Row(
        "AccessDenied",
        "User: arn:aws:iam::777788889999:user/JohnDoe is not authorized to perform: "
        "sts:AssumeRole with an explicit deny in the role trust policy",
        Kind.ACCESS_DENIED,
        Policy.TRUST,
        True,
        "sts:AssumeRole",
    ),
    "AssumeRole without a policy clause": Row(
        "AccessDenied",
        f"User: {ROLE_SESSION} is not authorized to perform: sts:AssumeRole on resource: "
        "arn:aws:iam::111122223333:role/certpull-reader",
        Kind.ACCESS_DENIED,
        None,
        False,
        "sts:AssumeRole",
        "arn:aws:iam::111122223333:role/certpull-reader",
    ),
    "moto's identity denial (no resource, no clause)": Row(
        "AccessDenied",
        "User: arn:aws:iam::123456789012:user/web is not authorized to perform: "
        "secretsmanager:GetSecretValue",
        Kind.ACCESS_DENIED,
        None,
        False,
        "secretsmanager:GetSecretValue",
        status=403,
    ),
    "SQS's own denial text": Row(
        "AccessDenied",
        "Access to the resource https://sqs.us-east-1.amazonaws.com/444455556666/certpull-web1 "
        "is denied.",
        Kind.ACCESS_DENIED,
        status=403,
    ),
    "KMS refused through Secrets Manager": Row(
        "AccessDeniedException", "Access to KMS is not allowed", Kind.KMS_DENIED
    ),
    "AWSCURRENT encrypted with an older key": Row(
        "AccessDeniedException",
        "Access to KMS is not allowed. This version of secret is not encrypted with the current "
        "KMS key.",
        Kind.KMS_KEY_CHANGED,
    ),
    "AWS managed key from another account": Row(
        "InvalidRequestException",
        "You can't access a secret from a different AWS account if you encrypt the secret with "
        "the default KMS service key.",
        Kind.AWS_MANAGED_KEY_CROSS_ACCOUNT,
    ),
    "KMS: key not there or not allowed": Row(
        "AccessDeniedException",
        "The ciphertext refers to a customer master key that does not exist, does not exist in "
        "this region, or you are not allowed to access.",
        Kind.KMS_DENIED,
    ),
    "KMS key disabled": Row("KMSDisabledException", f"{KEY} is disabled.", Kind.KMS_KEY_UNUSABLE),
    "KMS key pending deletion": Row(
        "KMSInvalidStateException", f"{KEY} is pending deletion.", Kind.KMS_KEY_UNUSABLE
    ),
    "Secrets Manager cannot decrypt": Row(
        "DecryptionFailure",
        "Secrets Manager can't decrypt the protected secret text using the provided KMS key.",
        Kind.DECRYPTION_FAILED,
    ),
    "missing secret": Row(
        "ResourceNotFoundException",
        "Secrets Manager can't find the specified secret.",
        Kind.NOT_FOUND,
    ),
    "missing queue": Row(
        "AWS.SimpleQueueService.NonExistentQueue",
        "The specified queue does not exist.",
        Kind.NOT_FOUND,
    ),
    "secret scheduled for deletion": Row(
        "InvalidRequestException",
        "You can't perform this operation on the secret because it was marked for deletion.",
        Kind.SCHEDULED_FOR_DELETION,
    ),
    "secret scheduled for deletion (moto's text)": Row(
        "InvalidRequestException",
        "You tried to perform the operation on a secret that's currently marked deleted.",
        Kind.SCHEDULED_FOR_DELETION,
    ),
    "unknown access key (STS)": Row(
        "InvalidClientTokenId",
        "The security token included in the request is invalid.",
        Kind.CREDENTIALS_INVALID,
        status=403,
    ),
    "unknown access key (Secrets Manager)": Row(
        "UnrecognizedClientException",
        "The security token included in the request is invalid.",
        Kind.CREDENTIALS_INVALID,
    ),
    "expired session token": Row(
        "ExpiredTokenException",
        "The security token included in the request is expired",
        Kind.CREDENTIALS_EXPIRED,
    ),
    "signature too old: the clock": Row(
        "InvalidSignatureException",
        "Signature expired: 20261201T220858Z is now earlier than 20261202T132108Z "
        "(20261202T132608Z - 5 min.)",
        Kind.CLOCK_SKEW,
    ),
    "signature in the future: the clock (STS)": Row(
        "SignatureDoesNotMatch",
        "Signature not yet current: 20261202T170509Z is still later than 20261202T170312Z "
        "(20261202T165812Z + 5 min.)",
        Kind.CLOCK_SKEW,
        status=403,
    ),
    "wrong secret access key": Row(
        "SignatureDoesNotMatch",
        "The request signature we calculated does not match the signature you provided. Check "
        "your AWS Secret Access Key and signing method.",
        Kind.SIGNATURE_MISMATCH,
        status=403,
    ),
    "throttled": Row("ThrottlingException", "Rate exceeded", Kind.THROTTLED),
    "throttled by status only": Row("SlowDownPlease", "", Kind.THROTTLED, status=429),
    "endpoint unreachable": Row(
        "EndpointConnectionError",
        'Could not connect to the endpoint URL: "https://secretsmanager.us-east-1.amazonaws.com/"',
        Kind.UNREACHABLE,
        status=0,
    ),
    "read timeout": Row("ReadTimeout", "Read timeout on endpoint URL", Kind.UNREACHABLE, status=0),
    "no credentials": Row(
        "NoCredentials", "Unable to locate credentials", Kind.CREDENTIALS_MISSING, status=0
    ),
    "server error": Row("InternalServiceError", "", Kind.SERVICE_ERROR, status=500),
    "anything else": Row("ValidationException", "1 validation error detected", Kind.OTHER),
}


@pytest.mark.parametrize("row", ROWS.values(), ids=list(ROWS))
def test_classify(row: Row) -> None:
    cause = classify(AwsFailure(row.code, row.message, row.status, "Op"))
    assert cause.kind is row.kind
    assert cause.policy is row.policy
    assert cause.explicit is row.explicit
    assert cause.action == row.action
    assert cause.resource == row.resource
    assert cause.code == row.code and cause.message == " ".join(row.message.split())
    assert cause.summary and "\n" not in cause.summary


def test_the_denied_principal_is_the_one_aws_names() -> None:
    cause = classify(AwsFailure("AccessDeniedException", ROWS["identity policy, implicit"].message))
    assert cause.principal == ROLE_SESSION


def test_only_throttling_unreachable_and_server_errors_are_transient() -> None:
    transient = {
        name
        for name, row in ROWS.items()
        if classify(AwsFailure(row.code, row.message, row.status)).transient
    }
    assert transient == {
        "throttled",
        "throttled by status only",
        "endpoint unreachable",
        "read timeout",
        "server error",
    }
