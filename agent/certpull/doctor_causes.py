"""`certpull doctor`: an AWS failure (error code and message text) -> its cause, in one function.

AWS says why it refused a call in the error's message, in a documented shape ("User: ARN is not
authorized to perform: ACTION on resource: ARN because no resource-based policy allows the ACTION
action", "... with an explicit deny in an identity-based policy"; see IAM's "Troubleshooting access
denied error messages"), and Secrets Manager, KMS, STS and SQS add their own texts ("Access to KMS
is not allowed", "The ciphertext refers to a customer master key that does not exist...",
"Signature expired: ... is now earlier than ..."). ``classify`` is the only place that reads those
texts; doctor_fixes.py turns its ``Cause`` into what to change. Pure: strings in, a value out.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Optional, Tuple


class Kind(str, enum.Enum):
    """What went wrong, in terms of what the operator must change."""

    ACCESS_DENIED = "access_denied"  # an IAM policy refused the action (see Cause.policy)
    KMS_DENIED = "kms_denied"  # the secret's KMS key may not be used by this principal
    AWS_MANAGED_KEY_CROSS_ACCOUNT = "aws_managed_key_cross_account"
    KMS_KEY_CHANGED = "kms_key_changed"  # AWSCURRENT is encrypted with a previous key
    KMS_KEY_UNUSABLE = "kms_key_unusable"  # disabled, pending deletion, or gone
    DECRYPTION_FAILED = "decryption_failed"
    NOT_FOUND = "not_found"  # no such secret / queue (or not in this region or account)
    SCHEDULED_FOR_DELETION = "scheduled_for_deletion"
    CREDENTIALS_MISSING = "credentials_missing"
    CREDENTIALS_INVALID = "credentials_invalid"
    CREDENTIALS_EXPIRED = "credentials_expired"
    CLOCK_SKEW = "clock_skew"
    SIGNATURE_MISMATCH = "signature_mismatch"
    THROTTLED = "throttled"
    UNREACHABLE = "unreachable"
    SERVICE_ERROR = "service_error"
    OTHER = "other"

    def __str__(self) -> str:
        return self.value


class Policy(str, enum.Enum):
    """The policy type an access-denied message names."""

    IDENTITY = "identity-based policy"
    RESOURCE = "resource-based policy"
    TRUST = "role trust policy"
    SCP = "service control policy"
    RCP = "resource control policy"
    BOUNDARY = "permissions boundary"
    SESSION = "session policy"
    VPC_ENDPOINT = "VPC endpoint policy"

    def __str__(self) -> str:
        return self.value


# Transport failures have no AWS error code; the adapter names them with these codes.
NO_CREDENTIALS = "NoCredentials"
TRANSPORT_CODES = frozenset(
    {"EndpointConnectionError", "ConnectTimeout", "ReadTimeout", "ConnectionClosed", "ProxyError"}
)


@dataclass(frozen=True)
class AwsFailure:
    """One failed AWS call as the doctor saw it: the error code, its message, the HTTP status."""

    code: str
    message: str = ""
    status: int = 0
    operation: str = ""  # e.g. "GetSecretValue"


@dataclass(frozen=True)
class Cause:
    """Why a call failed. ``policy`` is None when the message does not say which policy denied."""

    kind: Kind
    summary: str  # one line, in words
    code: str = ""
    message: str = ""
    policy: Optional[Policy] = None
    explicit: bool = False  # an explicit Deny (remove it) rather than a missing Allow (add one)
    principal: Optional[str] = None  # as the message names them
    action: Optional[str] = None
    resource: Optional[str] = None

    @property
    def transient(self) -> bool:
        """Worth retrying later without changing anything."""
        return self.kind in (Kind.THROTTLED, Kind.UNREACHABLE, Kind.SERVICE_ERROR)


_DENIAL = re.compile(
    r"(?:User|Principal): (?P<principal>\S+) is not authorized to perform: "
    r"(?P<action>[A-Za-z0-9-]+:[A-Za-z0-9*]+)"
    r"(?: on resource: (?P<resource>\S+?))?"
    r"(?:\s+(?:because no (?P<implicit>[A-Za-z -]+?) allows? the \S+ action"
    r"|because the (?P<trust>role trust policy) (?:does not allow|allows) the \S+ action"
    r"|(?:with an explicit deny|due to an explicit deny) in (?:a |an |the )?(?P<explicit>[A-Za-z -]+)))?"
    r"[.\s]*$",
    re.IGNORECASE,
)
_POLICY_NAMES: Tuple[Tuple[str, Policy], ...] = (
    ("identity-based", Policy.IDENTITY),
    ("resource-based", Policy.RESOURCE),
    ("trust", Policy.TRUST),
    ("service control", Policy.SCP),
    ("resource control", Policy.RCP),
    ("permissions boundary", Policy.BOUNDARY),
    ("session", Policy.SESSION),
    ("vpc endpoint", Policy.VPC_ENDPOINT),
)
_THROTTLING = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "SlowDown",
        "AWS.SimpleQueueService.RequestThrottled",
        "LimitExceededException",
    }
)
_INVALID_CREDENTIALS = frozenset(
    {"UnrecognizedClientException", "InvalidClientTokenId", "InvalidAccessKeyId", "AuthFailure"}
)
_EXPIRED_CREDENTIALS = frozenset({"ExpiredToken", "ExpiredTokenException", "TokenRefreshRequired"})
_SIGNATURE = frozenset(
    {"InvalidSignatureException", "SignatureDoesNotMatch", "IncompleteSignature"}
)
_SKEW_CODES = frozenset({"RequestTimeTooSkewed", "RequestExpired", "RequestInTheFuture"})
_NOT_FOUND = frozenset(
    {
        "ResourceNotFoundException",
        "AWS.SimpleQueueService.NonExistentQueue",
        "QueueDoesNotExist",
        "NoSuchEntity",
    }
)
_SERVER_CODES = frozenset(
    {
        "InternalServiceError",
        "InternalServiceErrorException",
        "InternalFailure",
        "InternalError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "KMSInternalException",
    }
)


def classify(failure: AwsFailure) -> Cause:
    """The cause of one failed AWS call, from its code and the text of its message.

    Order matters: the KMS texts come before the generic access denial (Secrets Manager reports a
    KMS refusal as AccessDeniedException), the clock before other signature errors.
    """
    code, message, status = failure.code, " ".join(failure.message.split()), failure.status
    low = message.lower()

    def cause(kind: Kind, summary: str, **extra: object) -> Cause:
        return Cause(kind, summary, code, message, **extra)  # type: ignore[arg-type]

    if code == NO_CREDENTIALS:
        return cause(Kind.CREDENTIALS_MISSING, "no AWS credentials were found")
    if code in TRANSPORT_CODES:
        return cause(Kind.UNREACHABLE, f"the AWS endpoint could not be reached ({message or code})")
    if "default kms service key" in low or (
        "aws/secretsmanager" in low and "different" in low and "account" in low
    ):
        return cause(
            Kind.AWS_MANAGED_KEY_CROSS_ACCOUNT,
            "the secret is encrypted with the AWS managed key aws/secretsmanager, which another "
            "account cannot use",
        )
    if "access to kms is not allowed" in low:
        if "not encrypted with the current kms key" in low:
            return cause(
                Kind.KMS_KEY_CHANGED,
                "this version of the secret is encrypted with a KMS key that is no longer the "
                "secret's key",
            )
        return cause(
            Kind.KMS_DENIED, "Secrets Manager may not use the secret's KMS key for this principal"
        )
    if "ciphertext refers to a customer master key that does not exist" in low:
        return cause(
            Kind.KMS_DENIED,
            "KMS refused the secret's key: it does not exist in this region, or its key policy "
            "does not allow this principal",
        )
    if code in ("KMSDisabledException", "DisabledException", "KMS.DisabledException") or (
        "kms" in low and "is disabled" in low
    ):
        return cause(Kind.KMS_KEY_UNUSABLE, "the secret's KMS key is disabled")
    if code in ("KMSInvalidStateException", "KMSInvalidStateFault", "KMS.InvalidStateException"):
        return cause(
            Kind.KMS_KEY_UNUSABLE,
            "the secret's KMS key is not usable (pending deletion, or pending import)",
        )
    if code in ("KMS.NotFoundException", "NotFoundException"):
        return cause(Kind.KMS_KEY_UNUSABLE, "the KMS key does not exist")
    if code in ("KMSAccessDeniedException", "KMS.AccessDeniedException"):
        return cause(Kind.KMS_DENIED, "KMS refused to let this principal use the key")
    if code == "DecryptionFailure":
        return cause(
            Kind.DECRYPTION_FAILED,
            "Secrets Manager could not decrypt the secret with its KMS key",
        )
    if code in _SKEW_CODES or (
        code in _SIGNATURE and ("signature expired" in low or "not yet current" in low)
    ):
        return cause(
            Kind.CLOCK_SKEW, "AWS refused the request's signature time: this host's clock is off"
        )
    if code in _SIGNATURE:
        return cause(
            Kind.SIGNATURE_MISMATCH,
            "AWS refused the request's signature: the secret access key does not match the key id",
        )
    if code in _EXPIRED_CREDENTIALS:
        return cause(Kind.CREDENTIALS_EXPIRED, "the AWS credentials have expired")
    if code in _INVALID_CREDENTIALS:
        return cause(Kind.CREDENTIALS_INVALID, "AWS does not know these credentials")
    if "accessdenied" in code.lower().replace(" ", "") or "is not authorized to perform" in low:
        return _denial(failure, code, message)
    if code == "InvalidRequestException" and "marked" in low and "delet" in low:
        return cause(Kind.SCHEDULED_FOR_DELETION, "the secret is scheduled for deletion")
    if code in _NOT_FOUND:
        return cause(Kind.NOT_FOUND, "AWS has no such resource in this account and region")
    if code in _THROTTLING or status == 429 or "rate exceeded" in low:
        return cause(Kind.THROTTLED, "AWS throttled the request")
    if code in _SERVER_CODES or status >= 500:
        return cause(Kind.SERVICE_ERROR, f"AWS failed to answer ({code or status})")
    return cause(
        Kind.OTHER, f"AWS answered {code}: {message}" if message else f"AWS answered {code}"
    )


def _denial(failure: AwsFailure, code: str, message: str) -> Cause:
    """An access denial: who, what, on which resource, and which policy type (when AWS says)."""
    match = _DENIAL.search(message)
    if match is None:  # e.g. SQS's "Access to the resource https://sqs... is denied."
        return Cause(Kind.ACCESS_DENIED, "access denied", code, message)
    named = match.group("implicit") or match.group("trust") or match.group("explicit") or ""
    policy = next((p for text, p in _POLICY_NAMES if text in named.lower()), None)
    explicit = bool(match.group("explicit"))
    action = match.group("action")
    if policy is None:
        why = "the message does not say which policy"
    elif explicit:
        why = f"an explicit Deny in a {policy}"
    else:
        why = f"no {policy} allows it"
    return Cause(
        Kind.ACCESS_DENIED,
        f"{action} was denied: {why}",
        code,
        message,
        policy=policy,
        explicit=explicit,
        principal=match.group("principal"),
        action=action,
        resource=(match.group("resource") or "").rstrip(".") or None,
    )
