"""`certpull doctor`: what to change for a cause, where, with the real ARNs filled in.

``fixes_for`` turns a classified AWS failure (doctor_causes.Cause) plus who called (``Caller``) and
what was asked (``Target``) into ``Fix`` values: the policy statement to add and the place it goes
(the caller's identity policy in the host's account, the secret's resource policy or the KMS key
policy in the owner's account, a role's trust policy), and the commands to apply it. The host's
role usually cannot read resource, key or queue policies, so where AWS does not say which policy
denied, the fix is inferred from the denial and says so. ``queue_senders`` reads a queue policy when
it is readable. Pure: no AWS call, no I/O.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any, Dict, List, Mapping, Optional, Tuple

from certpull.doctor_causes import AwsFailure, Cause, Kind, Policy, classify
from certpull.doctor_policy import (
    SECRET_READ_ACTIONS,
    Caller,
    Target,
    allow,
    key_policy_statement,
    kms_identity_statement,
    policy_suffix,
    secret_resource_statement,
    trust_statement,
)
from certpull.doctor_report import Check, Fix, failed

_INFERRED = "the denial: AWS did not say which policy, and the host cannot read the {what}"


# --- where each statement goes ---------------------------------------------------------------


def identity_fix(
    caller: Caller, statement: Mapping[str, Any], inferred_from: Optional[str] = None
) -> Fix:
    """Add ``statement`` to the caller's own policy (for an instance profile: host.yaml's role)."""
    verb = "put-user-policy --user-name" if caller.kind == "user" else "put-role-policy --role-name"
    return Fix(
        where=f"add this statement to the identity policy of {caller.describe()}",
        statement=statement,
        commands=(
            f"aws iam {verb} {caller.name} --policy-name certpull-{policy_suffix(statement)} "
            "--policy-document file://policy.json   "
            '# policy.json: {"Version": "2012-10-17", "Statement": [the statement above]}',
        ),
        inferred_from=inferred_from,
    )


def secret_policy_fix(caller: Caller, target: Target, inferred_from: Optional[str] = None) -> Fix:
    statement = secret_resource_statement(caller.principal)
    arn = target.resource
    return Fix(
        where=f"in account {target.account}, add this statement to the resource policy of the "
        f"secret {arn} (put-resource-policy replaces the whole policy: merge it with the "
        "statements get-resource-policy shows)",
        statement=statement,
        commands=(
            f"aws secretsmanager get-resource-policy --secret-id {arn}",
            f"aws secretsmanager put-resource-policy --secret-id {arn} --block-public-policy "
            "--resource-policy file://policy.json",
        ),
        inferred_from=inferred_from,
    )


def key_policy_fix(caller: Caller, target: Target, inferred_from: Optional[str] = None) -> Fix:
    key = target.kms_key
    key_arn = key.arn if key else "KEY_ARN"
    owner = key.owner if key else target.account
    return Fix(
        where=f"in account {owner}, add this statement to the key policy of {key_arn} "
        "(put-key-policy replaces the whole policy: merge it with what get-key-policy shows)",
        statement=key_policy_statement(caller.principal, target.region, target.resource),
        commands=(
            f"aws kms get-key-policy --key-id {key_arn} --policy-name default",
            f"aws kms put-key-policy --key-id {key_arn} --policy-name default "
            "--policy file://key-policy.json",
        ),
        inferred_from=inferred_from,
    )


def trust_fix(caller: Caller, target: Target, inferred_from: Optional[str] = None) -> Fix:
    role = target.resource
    name = role.rsplit("/", 1)[-1]
    return Fix(
        where=f"in account {target.account}, add this statement to the trust policy of role {role}",
        statement=trust_statement(caller.principal, target.external_id),
        commands=(
            f"aws iam get-role --role-name {name} --query Role.AssumeRolePolicyDocument",
            f"aws iam update-assume-role-policy --role-name {name} "
            "--policy-document file://trust.json",
        ),
        inferred_from=inferred_from,
    )


def _needed_statement(target: Target) -> Dict[str, Any]:
    """The identity statement the agent needs for ``target.action``."""
    if target.action.startswith("kms:"):
        key_arn = target.kms_key.arn if target.kms_key else "KEY_ARN"
        return kms_identity_statement(key_arn, target.region, target.resource)
    if target.service == "secretsmanager":
        return allow(list(SECRET_READ_ACTIONS), target.resource)
    if target.service == "sqs":
        return allow(["sqs:ReceiveMessage", "sqs:DeleteMessage"], target.resource)
    return allow([target.action], target.resource)


def _resource_fix(caller: Caller, target: Target, inferred_from: Optional[str] = None) -> Fix:
    action = target.action
    if action.startswith("kms:"):
        return key_policy_fix(caller, target, inferred_from)
    if action == "sts:AssumeRole":
        return trust_fix(caller, target, inferred_from)
    if target.service == "secretsmanager":
        return secret_policy_fix(caller, target, inferred_from)
    return Fix(
        where=f"in account {target.account}, allow {action} for {caller.principal} in the "
        f"policy of {target.resource}",
        inferred_from=inferred_from,
    )


def _explicit_deny_fix(cause: Cause, caller: Caller, target: Target) -> Fix:
    action = cause.action or target.action
    where = {
        Policy.IDENTITY: f"the policies attached to {caller.describe()}",
        Policy.RESOURCE: f"the resource policy of {target.resource} (account {target.account})",
        Policy.TRUST: f"the trust policy of role {target.resource}",
        Policy.SCP: "your AWS Organization's service control policies (management account)",
        Policy.RCP: "your AWS Organization's resource control policies (management account)",
        Policy.BOUNDARY: f"the permissions boundary of {caller.describe()}",
        Policy.SESSION: "the session policy these credentials were issued with",
        Policy.VPC_ENDPOINT: f"the VPC endpoint policy of {target.service} in this host's VPC",
    }[cause.policy or Policy.IDENTITY]
    return Fix(
        where=f"remove or narrow the Deny of {action} on {cause.resource or target.resource} in "
        f"{where}: an explicit Deny wins over every Allow"
    )


def _denied_fixes(cause: Cause, caller: Caller, target: Target) -> Tuple[Fix, ...]:
    """Access denied: the policy AWS named, or inferred from who asked whom.

    The action is the one AWS names: a GetSecretValue refused for kms:Decrypt is a key matter.
    """
    if cause.action and cause.action != target.action:
        target = replace(target, action=cause.action)
    if cause.explicit:
        return (_explicit_deny_fix(cause, caller, target),)
    policy = cause.policy
    needed = _needed_statement(target)
    if policy is Policy.IDENTITY:
        return (identity_fix(caller, needed),)
    if policy in (Policy.RESOURCE, Policy.TRUST):
        return (_resource_fix(caller, target),)
    if policy is Policy.BOUNDARY:
        return (
            Fix(
                where=f"the permissions boundary of {caller.describe()} must allow this too",
                statement=needed,
                commands=(
                    f"aws iam get-role --role-name {caller.name} --query Role.PermissionsBoundary",
                ),
            ),
        )
    if policy is Policy.VPC_ENDPOINT:
        return (
            Fix(
                where=f"the VPC endpoint policy of com.amazonaws.{target.region}.{target.service} "
                'in this host\'s VPC must allow this statement (with "Principal": "*")',
                statement=needed,
                commands=(
                    "aws ec2 describe-vpc-endpoints --filters "
                    f"Name=service-name,Values=com.amazonaws.{target.region}.{target.service}",
                ),
            ),
        )
    if policy in (Policy.SCP, Policy.RCP):
        return (
            Fix(
                where=f"an AWS Organizations policy ({policy}) blocks {target.action}: ask the "
                "organization's administrators (management account) to allow it for "
                f"{caller.principal}"
            ),
        )
    if policy is Policy.SESSION:
        return (
            Fix(
                where="the session policy these credentials were issued with must allow this "
                "statement",
                statement=needed,
            ),
        )
    # AWS did not name the policy: infer from the accounts involved.
    cross = caller.account is not None and target.account not in (None, caller.account)
    if target.action == "sts:AssumeRole":
        inferred = _INFERRED.format(what="role's trust policy")
        return (
            identity_fix(caller, allow(["sts:AssumeRole"], target.resource), inferred),
            trust_fix(caller, target, inferred),
        )
    if cross:
        inferred = _INFERRED.format(what="resource policy") + (
            "; another account's resource needs an Allow on both sides"
        )
        return (identity_fix(caller, needed, inferred), _resource_fix(caller, target, inferred))
    return (
        identity_fix(
            caller, needed, "the denial: in the resource's own account the identity policy decides"
        ),
    )


def _key_fixes(caller: Caller, target: Target, inferred_from: str) -> Tuple[Fix, ...]:
    """The secret's customer managed key refused this caller: key policy and identity policy."""
    key = target.kms_key
    key_arn = key.arn if key else "KEY_ARN"
    identity = identity_fix(
        caller, kms_identity_statement(key_arn, target.region, target.resource), inferred_from
    )
    owner = key.owner if key else target.account
    if caller.account is not None and owner == caller.account:
        return (
            identity,
            Fix(
                where=f"the key policy of {key_arn} must let IAM policies of account {owner} "
                "grant it (the default key policy's statement with Principal "
                f"arn:aws:iam::{owner}:root does) or name {caller.principal} itself",
                inferred_from=inferred_from,
            ),
        )
    return (key_policy_fix(caller, target, inferred_from), identity)


def managed_key_fixes(caller: Caller, target: Target) -> Tuple[Fix, ...]:
    """The secret uses aws/secretsmanager but is read from another account."""
    arn = target.resource
    owner = target.account
    return (
        Fix(
            where=f"in account {owner}, encrypt the secret with a customer managed key "
            "(packaging/cloudformation/secret-owner.yaml with CreateKmsKey=true makes one with "
            "this statement in its key policy), then rotate so AWSCURRENT is encrypted with it",
            statement=key_policy_statement(caller.principal, target.region, arn),
            commands=(
                f"aws kms create-key --region {target.region} --description 'certpull secrets'",
                f"aws secretsmanager update-secret --secret-id {arn} --kms-key-id KEY_ARN",
                f"aws secretsmanager rotate-secret --secret-id {arn}",
            ),
        ),
        identity_fix(caller, kms_identity_statement("KEY_ARN", target.region, arn)),
        Fix(
            where=f"or instead read it through a role in account {owner} that may read the "
            "secret (role_arn in the certificate's section; docs/packaging.md, Cross-account B)"
        ),
    )


def fixes_for(cause: Cause, caller: Caller, target: Target) -> Tuple[Fix, ...]:
    """What to change so that ``target.action`` succeeds for ``caller``."""
    kind = cause.kind
    key = target.kms_key
    arn = target.resource
    if kind is Kind.ACCESS_DENIED:
        return _denied_fixes(cause, caller, target)
    if kind is Kind.AWS_MANAGED_KEY_CROSS_ACCOUNT:
        return managed_key_fixes(caller, target)
    if kind in (Kind.KMS_DENIED, Kind.DECRYPTION_FAILED):
        cross = caller.account is not None and target.account not in (None, caller.account)
        if key is not None and key.aws_managed:
            if cross:
                return managed_key_fixes(caller, target)
            return (
                Fix(
                    where="aws/secretsmanager lets every principal of its account use it through "
                    "Secrets Manager, so look for an explicit Deny of kms:Decrypt (identity "
                    "policy, permissions boundary, service control policy)"
                ),
            )
        return _key_fixes(caller, target, _INFERRED.format(what="key policy"))
    if kind is Kind.KMS_KEY_CHANGED:
        return (
            Fix(
                where=f"in account {target.account}, make AWSCURRENT a version encrypted with the "
                "secret's current key: run a rotation (or put a new version)",
                commands=(f"aws secretsmanager rotate-secret --secret-id {arn}",),
            ),
        )
    if kind is Kind.KMS_KEY_UNUSABLE:
        key_arn = key.arn if key else "KEY_ARN"
        return (
            Fix(
                where=f"in account {key.owner if key else target.account}, enable the key (or "
                "cancel its deletion)",
                commands=(
                    f"aws kms describe-key --key-id {key_arn} --query KeyMetadata.KeyState",
                    f"aws kms enable-key --key-id {key_arn}",
                    f"aws kms cancel-key-deletion --key-id {key_arn}",
                ),
            ),
        )
    if kind is Kind.NOT_FOUND:
        return (_not_found_fix(target),)
    if kind is Kind.SCHEDULED_FOR_DELETION:
        return (
            Fix(
                where=f"in account {target.account}, restore the secret",
                commands=(f"aws secretsmanager restore-secret --secret-id {arn}",),
            ),
        )
    return _host_fixes(cause, target)


def _not_found_fix(target: Target) -> Fix:
    if target.service == "sqs":
        return Fix(
            where=f"check {target.config_hint or 'events_queue_url'}: the queue "
            f"{target.queue_url or target.resource} does not exist (host.yaml's output "
            "EventsQueueUrl is the right value)",
            commands=(f"aws sqs get-queue-url --queue-name {target.resource.rsplit(':', 1)[-1]}",),
        )
    return Fix(
        where=f"check {target.config_hint or 'secret_arn'}: use the secret's full ARN (with its "
        f"6-character suffix); Secrets Manager in {target.region}, account {target.account}, "
        "has no such secret",
        commands=(
            f"aws secretsmanager describe-secret --secret-id {target.resource} "
            f"--region {target.region}",
        ),
    )


def _host_fixes(cause: Cause, target: Target) -> Tuple[Fix, ...]:
    """Causes fixed on the host (credentials, clock, network) or by waiting."""
    kind = cause.kind
    endpoint = target.endpoint_url or f"https://{target.service}.{target.region}.amazonaws.com"
    text = {
        Kind.CREDENTIALS_MISSING: "give the host credentials: attach an instance profile whose "
        "role has the statements certpull needs (packaging/cloudformation/host.yaml makes both); "
        "certpull reads the standard chain (environment, ~/.aws, instance metadata)",
        Kind.CREDENTIALS_INVALID: "these credentials are unknown to AWS (deleted or deactivated "
        "access key, or another partition): replace them, or remove them so that the instance "
        "profile is used",
        Kind.CREDENTIALS_EXPIRED: "these temporary credentials expired: refresh them (instance "
        "profile and role credentials renew themselves; a session token set by hand does not)",
        Kind.CLOCK_SKEW: "set this host's clock right (AWS accepts signatures up to 5 minutes "
        "off): enable chronyd (on EC2 it uses the Amazon Time Sync Service, 169.254.169.123)",
        Kind.SIGNATURE_MISMATCH: "the secret access key does not belong to the access key id: "
        "replace the pair",
        Kind.THROTTLED: "nothing to change if it passes on a second run; for a large fleet raise "
        "event_splay_s (see certpull.conf)",
        Kind.UNREACHABLE: f"allow outbound HTTPS to {endpoint} (a NAT gateway, or the VPC "
        f"interface endpoint com.amazonaws.{target.region}.{target.service}, or HTTPS_PROXY for "
        "the unit)",
        Kind.SERVICE_ERROR: "AWS failed on its side: run doctor again later",
    }.get(kind, "see AWS's answer above")
    commands: Tuple[str, ...] = ()
    if kind is Kind.CLOCK_SKEW:
        commands = ("chronyc tracking", "sudo systemctl enable --now chronyd")
    if kind is Kind.CREDENTIALS_MISSING:
        commands = (
            "aws ec2 associate-iam-instance-profile --instance-id INSTANCE_ID "
            "--iam-instance-profile Name=PROFILE",
        )
    return (Fix(where=text, commands=commands),)


def queue_senders(policy_text: Optional[str]) -> List[str]:
    """Who a queue policy lets send: each Allow of sqs:SendMessage as "PRINCIPAL (from SOURCE)".

    An empty list means nothing outside the queue's own account may send to it, so neither an SNS
    topic nor an EventBridge rule can deliver rotation events.
    """
    if not policy_text:
        return []
    try:
        document = json.loads(policy_text)
    except ValueError:
        return []
    statements = document.get("Statement", []) if isinstance(document, dict) else []
    if isinstance(statements, dict):
        statements = [statements]
    senders = []
    for statement in statements:
        if not isinstance(statement, dict) or statement.get("Effect") != "Allow":
            continue
        actions = statement.get("Action", [])
        actions = [actions] if isinstance(actions, str) else actions
        if not any(a.lower() in ("sqs:sendmessage", "sqs:*", "*") for a in actions):
            continue
        principal = statement.get("Principal", "*")
        if isinstance(principal, dict):
            values = principal.get("Service") or principal.get("AWS") or "*"
            principal = ", ".join(values) if isinstance(values, list) else str(values)
        sources = _source_arns(statement.get("Condition") or {})
        senders.append(f"{principal} (from {', '.join(sources)})" if sources else str(principal))
    return senders


def _source_arns(condition: Mapping[str, Any]) -> List[str]:
    found: List[str] = []
    for operator in condition.values():
        if not isinstance(operator, dict):
            continue
        for key_name, value in operator.items():
            if key_name.lower() == "aws:sourcearn":
                found.extend(value if isinstance(value, list) else [value])
    return found


def aws_failed(
    id_: str, title: str, cert: Optional[str], failure: AwsFailure, caller: Caller, target: Target
) -> Check:
    """A failed AWS call: the cause in words, who asked for what, AWS's own words, the fixes."""
    cause = classify(failure)
    if cause.principal:  # the principal AWS evaluated is the one the fix must name
        caller = Caller(cause.principal)
    facts: List[Tuple[str, str]] = [
        ("principal", cause.principal or caller.arn or "unknown (sts:GetCallerIdentity failed)"),
        ("action", f"{cause.action or target.action} on {cause.resource or target.resource}"),
        ("AWS said", f"{failure.code}: {failure.message}" if failure.message else failure.code),
    ]
    return failed(
        id_,
        title,
        cause.summary,
        cert,
        cause=cause.kind.value,
        facts=tuple(facts),
        fixes=fixes_for(cause, caller, target),
    )
