"""Secrets Manager as the source of certificate bundles, with every error classified.

The cheap DescribeSecret call tells which version is AWSCURRENT; GetSecretValue (which costs a KMS
decrypt and is billed) runs only when that moved. Errors become SourceError with `transient` set by
one function, `classify`, so the scheduler can back off and retry what may heal (throttling, 5xx,
timeouts, lost connections) and report at once what will not (access denied, missing secret, KMS
refusal, secret scheduled for deletion, binary secret).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from certpull.errors import SourceError

CURRENT = "AWSCURRENT"

_TRANSIENT_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "LimitExceededException",
        "InternalServiceError",
        "InternalServiceErrorException",
        "InternalFailure",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
        "ExpiredToken",
        "ExpiredTokenException",
        "RequestExpired",
        "IDPCommunicationError",
        "KMSInternalException",
    }
)
_EXPLAINED_CODES = {
    "AccessDeniedException": "access denied (check the host role's policy, the secret's resource policy and the KMS key policy)",
    "AccessDenied": "access denied when assuming the role (check its trust policy)",
    "ResourceNotFoundException": "secret not found",
    "DecryptionFailure": "Secrets Manager cannot decrypt the secret with its KMS key (check the key policy and kms:ViaService)",
    "KMSAccessDeniedException": "access denied to the secret's KMS key",
    "KMSDisabledException": "the secret's KMS key is disabled",
    "KMSInvalidStateException": "the secret's KMS key is not usable (pending deletion or disabled)",
    "UnrecognizedClientException": "the AWS credentials are not valid",
    "InvalidSignatureException": "the AWS request signature was rejected (check the clock)",
}


def classify(exc: Exception, action: str) -> SourceError:
    """The one place that decides whether an AWS failure is worth retrying."""
    if isinstance(exc, SourceError):
        return exc
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        message = str(error.get("Message", "")).splitlines()[0] if error.get("Message") else ""
        transient = code in _TRANSIENT_CODES or status >= 500 or status == 429
        if code == "InvalidRequestException" and "deletion" in message.lower():
            return SourceError(f"{action}: the secret is scheduled for deletion", False, code)
        explained = _EXPLAINED_CODES.get(code)
        text = explained or (f"{code}: {message}" if message else code)
        return SourceError(f"{action}: {text}", transient, code)
    if isinstance(exc, (ConnectTimeoutError, ReadTimeoutError)):
        return SourceError(f"{action}: timed out ({exc})", True, "Timeout")
    if isinstance(exc, (EndpointConnectionError, ConnectionClosedError)):
        return SourceError(f"{action}: connection failed ({exc})", True, "Connection")
    if isinstance(exc, NoCredentialsError):
        # On EC2 this is usually the instance metadata service not answering yet: retry.
        return SourceError(f"{action}: no AWS credentials found", True, "NoCredentials")
    if isinstance(exc, BotoCoreError):
        return SourceError(f"{action}: {exc}", True, type(exc).__name__)
    if isinstance(exc, OSError):
        return SourceError(f"{action}: {exc}", True, "OSError")
    raise exc


@dataclass(frozen=True)
class SecretValue:
    version_id: str
    secret_string: str

    def __repr__(self) -> str:  # the string holds a private key
        return f"SecretValue(version_id={self.version_id!r}, secret_string=<{len(self.secret_string)} chars>)"

    __str__ = __repr__


ClientFactory = Callable[[str, Optional[str], Optional[str]], Any]
"""(region, role_arn, external_id) -> a Secrets Manager client."""


class SecretSource:
    """Reads one secret's AWSCURRENT version through an injected client factory."""

    def __init__(
        self,
        client_factory: ClientFactory,
        on_describe: Optional[Callable[[str, Mapping[str, Any]], None]] = None,
    ) -> None:
        """``on_describe(secret_arn, response)`` sees each DescribeSecret answer (the daemon's
        adaptive poll reads the rotation dates from it; no extra call)."""
        self._client_factory = client_factory
        self._on_describe = on_describe

    def _client(self, secret_arn: str, role_arn: Optional[str], external_id: Optional[str]) -> Any:
        region = secret_arn.split(":")[3]
        return self._client_factory(region, role_arn, external_id)

    def current_version_id(
        self, secret_arn: str, role_arn: Optional[str] = None, external_id: Optional[str] = None
    ) -> str:
        """The version id labelled AWSCURRENT (DescribeSecret: no decrypt, no payload)."""
        try:
            response = self._client(secret_arn, role_arn, external_id).describe_secret(
                SecretId=secret_arn
            )
        except Exception as exc:
            raise classify(exc, "DescribeSecret") from None
        if self._on_describe is not None:
            self._on_describe(secret_arn, response)
        if response.get("DeletedDate"):
            raise SourceError(
                "DescribeSecret: the secret is scheduled for deletion", False, "Deleted"
            )
        for version_id, stages in (response.get("VersionIdsToStages") or {}).items():
            if CURRENT in stages:
                return str(version_id)
        raise SourceError(
            "DescribeSecret: the secret has no AWSCURRENT version", False, "NoCurrent"
        )

    def fetch_current(
        self, secret_arn: str, role_arn: Optional[str] = None, external_id: Optional[str] = None
    ) -> SecretValue:
        """GetSecretValue of AWSCURRENT; a binary-only secret is refused (the format is JSON text)."""
        try:
            response = self._client(secret_arn, role_arn, external_id).get_secret_value(
                SecretId=secret_arn, VersionStage=CURRENT
            )
        except Exception as exc:
            raise classify(exc, "GetSecretValue") from None
        secret_string = response.get("SecretString")
        if secret_string is None:
            raise SourceError(
                "GetSecretValue: the secret holds binary data, not the JSON text of a certificate bundle",
                False,
                "Binary",
            )
        return SecretValue(version_id=str(response["VersionId"]), secret_string=secret_string)
