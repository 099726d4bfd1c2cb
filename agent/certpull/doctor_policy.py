"""`certpull doctor`: who asked for what (``Caller``, ``Target``, ``KmsKey``), and the IAM policy
statements that allow it, with the real ARNs filled in. Pure: no AWS call, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence

AWS_MANAGED_KEY_ALIAS = "alias/aws/secretsmanager"
SECRET_READ_ACTIONS = ("secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret")


def _arn_parts(arn: Optional[str]) -> List[str]:
    parts = (arn or "").split(":", 5)
    return parts if len(parts) == 6 and parts[0] == "arn" else []


def arn_account(arn: Optional[str]) -> Optional[str]:
    parts = _arn_parts(arn)
    return parts[4] or None if parts else None


@dataclass(frozen=True)
class Caller:
    """Who makes a call: its ARN as sts:GetCallerIdentity or sts:AssumeRole name it."""

    arn: Optional[str]

    @property
    def account(self) -> Optional[str]:
        return arn_account(self.arn)

    @property
    def principal(self) -> str:
        """The ARN a policy's Principal names: an assumed-role session is its role."""
        parts = _arn_parts(self.arn)
        if not parts:
            return "ROLE_ARN"
        resource = parts[5]
        if parts[2] == "sts" and resource.startswith("assumed-role/"):
            role = resource.split("/")[1]
            return f"arn:{parts[1]}:iam::{parts[4]}:role/{role}"
        if parts[2] == "sts" and resource.startswith("user/"):  # moto names users so
            return f"arn:{parts[1]}:iam::{parts[4]}:{resource}"
        return str(self.arn)

    @property
    def kind(self) -> str:
        parts = _arn_parts(self.principal)
        return parts[5].split("/", 1)[0] if parts else "role"

    @property
    def name(self) -> str:
        parts = _arn_parts(self.principal)
        return parts[5].rsplit("/", 1)[-1] if parts else "ROLE_NAME"

    def describe(self) -> str:
        if not _arn_parts(self.arn):
            return "the host's role (unknown: sts:GetCallerIdentity failed)"
        return f"{self.kind} {self.name} (account {self.account})"


@dataclass(frozen=True)
class KmsKey:
    """The key a secret is encrypted with, from DescribeSecret's KmsKeyId (None: aws/secretsmanager)."""

    key_id: Optional[str]
    region: str
    account: str  # the secret's account: a bare key id or alias lives there

    @property
    def aws_managed(self) -> bool:
        return self.key_id is None or self.key_id.endswith(AWS_MANAGED_KEY_ALIAS)

    @property
    def arn(self) -> str:
        """The key's (or alias's) ARN; a bare id or alias is in the secret's account and region."""
        key_id = self.key_id or AWS_MANAGED_KEY_ALIAS
        if key_id.startswith("arn:"):
            return key_id
        prefix = f"arn:aws:kms:{self.region}:{self.account}"
        return f"{prefix}:{key_id}" if key_id.startswith("alias/") else f"{prefix}:key/{key_id}"

    @property
    def owner(self) -> str:
        return arn_account(self.arn) or self.account

    def describe(self) -> str:
        if self.aws_managed:
            return f"the AWS managed key aws/secretsmanager of account {self.account}"
        return f"the customer managed key {self.arn}"


@dataclass(frozen=True)
class Target:
    """What a failed call asked for."""

    action: str  # "secretsmanager:GetSecretValue"
    resource: str  # the secret, queue or role ARN
    region: str
    config_hint: str = ""  # where it is configured, e.g. "secret_arn in [cert:www]"
    kms_key: Optional[KmsKey] = None
    external_id: Optional[str] = None
    queue_url: Optional[str] = None
    endpoint_url: Optional[str] = None

    @property
    def service(self) -> str:
        return self.action.split(":", 1)[0]

    @property
    def account(self) -> Optional[str]:
        return arn_account(self.resource)


# --- statements ------------------------------------------------------------------------------


def allow(actions: Sequence[str], resource: str, **condition: Any) -> Dict[str, Any]:
    """An identity-policy statement."""
    statement: Dict[str, Any] = {
        "Effect": "Allow",
        "Action": actions[0] if len(actions) == 1 else list(actions),
        "Resource": resource,
    }
    if condition:
        statement["Condition"] = condition
    return statement


def secret_resource_statement(principal: str) -> Dict[str, Any]:
    return {
        "Sid": "CertpullHostsRead",
        "Effect": "Allow",
        "Principal": {"AWS": principal},
        "Action": list(SECRET_READ_ACTIONS),
        "Resource": "*",
    }


def _via_secrets_manager(region: str, secret_arn: str) -> Dict[str, Any]:
    return {
        "StringEquals": {
            "kms:ViaService": f"secretsmanager.{region}.amazonaws.com",
            "kms:EncryptionContext:SecretARN": secret_arn,
        }
    }


def key_policy_statement(principal: str, region: str, secret_arn: str) -> Dict[str, Any]:
    """The key policy statement of docs/packaging.md, for one principal and one secret."""
    return {
        "Sid": "CertpullHostsDecryptThroughSecretsManager",
        "Effect": "Allow",
        "Principal": {"AWS": principal},
        "Action": "kms:Decrypt",
        "Resource": "*",
        "Condition": _via_secrets_manager(region, secret_arn),
    }


def kms_identity_statement(key_arn: str, region: str, secret_arn: str) -> Dict[str, Any]:
    return allow(["kms:Decrypt"], key_arn, **_via_secrets_manager(region, secret_arn))


def trust_statement(principal: str, external_id: Optional[str]) -> Dict[str, Any]:
    statement: Dict[str, Any] = {
        "Effect": "Allow",
        "Principal": {"AWS": principal},
        "Action": "sts:AssumeRole",
    }
    if external_id:
        statement["Condition"] = {"StringEquals": {"sts:ExternalId": external_id}}
    return statement


def queue_send_statement(queue_arn: str, source_arn: str) -> Dict[str, Any]:
    return {
        "Sid": "RotationEventsFromTopic",
        "Effect": "Allow",
        "Principal": {"Service": "sns.amazonaws.com"},
        "Action": "sqs:SendMessage",
        "Resource": queue_arn,
        "Condition": {"ArnEquals": {"aws:SourceArn": source_arn}},
    }


def policy_suffix(statement: Mapping[str, Any]) -> str:
    """A name for the inline policy from the statement's first action ("kms-decrypt", ...)."""
    action = statement.get("Action", "")
    first = action[0] if isinstance(action, list) else str(action)
    return first.replace(":", "-").lower() or "fix"
