"""`certpull doctor`: every link from the host's credentials to the certificate httpd serves, checked.

Read-only: no install, no reload, nothing deleted from the queue. The AWS calls are the agent's own
(doctor_aws.py), their failures are classified in one place (doctor_causes.py) and turned into fixes
with the real ARNs (doctor_fixes.py); the host checks are doctor_host.py's. This module decides, for
each check, whether it passed, failed or does not apply here, in the order an operator fixes
things: credentials, identity, each secret, events, the clock, then httpd and the files.
"""

from __future__ import annotations

import contextlib
import time
from datetime import datetime, timezone
from typing import Callable, List, Optional, Sequence

from certpull.bundle import leaf_info, validate
from certpull.config import CertConfig, Config
from certpull.doctor_aws import Answer, AwsProbe
from certpull.doctor_causes import AwsFailure, Kind, classify
from certpull.doctor_events import event_checks
from certpull.doctor_fixes import aws_failed, fixes_for, managed_key_fixes
from certpull.doctor_host import HostChecks
from certpull.doctor_policy import Caller, KmsKey, Target
from certpull.doctor_report import Check, Fix, Report, failed, not_applicable, passed
from certpull.errors import BundleError, StoreError
from certpull.interfaces import StateStore
from certpull.layout import CERT_FILE
from certpull.pem import cert_fingerprint
from certpull.state import parse_time

SIGNATURE_WINDOW_S = 300.0  # AWS refuses SigV4 requests signed more than 5 minutes off its clock
MAX_SKEW_S = 60.0  # beyond this, fresh certificates look not yet valid for that long
_BROKEN_CREDENTIALS = (
    Kind.CREDENTIALS_MISSING,
    Kind.CREDENTIALS_INVALID,
    Kind.CREDENTIALS_EXPIRED,
    Kind.SIGNATURE_MISMATCH,
    Kind.CLOCK_SKEW,
)
_SOURCES = {
    "env": "environment variables (AWS_ACCESS_KEY_ID...)",
    "iam-role": "the instance profile, through the instance metadata service",
    "assume-role": "a role in the AWS config file (assume-role)",
    "shared-credentials-file": "the shared credentials file (~/.aws/credentials)",
    "config-file": "the AWS config file (~/.aws/config)",
    "container-role": "the container credentials endpoint",
    "sso": "IAM Identity Center (SSO)",
    "custom-process": "a credential_process",
    "assume-role-with-web-identity": "a web identity token (AWS_WEB_IDENTITY_TOKEN_FILE)",
    "explicit": "credentials given to the client",
}
_SHELL_SOURCES = ("env", "shared-credentials-file", "config-file", "assume-role", "sso")


class Doctor:
    """Runs the checks for the configured certificates; every side effect is a constructor argument."""

    def __init__(
        self,
        config: Config,
        *,
        aws: AwsProbe,
        host: HostChecks,
        state_file: StateStore,
        in_container: Callable[[], bool],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.aws = aws
        self.host = host
        self.state_file = state_file
        self.in_container = in_container
        self.clock = clock

    def run(self, names: Optional[Sequence[str]] = None) -> Report:
        """All checks, in the order an operator fixes things.

        1. Credentials: where the default chain finds them.
        2. IMDSv2, when they come from the instance profile (the hop limit, in a container).
        3. Identity: sts:GetCallerIdentity; its ARN is the principal every fix names.
        4. Each certificate: region, AssumeRole (role_arn), DescribeSecret, the KMS key,
           GetSecretValue with its decrypt, and the content validated as `sync` validates it.
        5. Events: the queue is receivable (nothing consumed); its policy lets a source send.
        6. Clock: the Date of the first AWS answer against this host's clock.
        7. Host: httpd, each certificate's served leaf, compat links and files, the state
           directory, the systemd sandbox and SELinux labels.
        """
        certs = [self.config.cert(n) for n in names] if names else list(self.config.certs)
        region = certs[0].region
        checks: List[Check] = []
        method = self.aws.credential_method()
        checks.append(self._credentials(method))  # (1)
        checks.append(self._imds(method))  # (2)
        identity = self.aws.caller_identity(region)  # (3)
        caller = Caller(str(identity.value["Arn"]) if identity.ok and identity.value else None)
        checks.append(self._identity(identity, caller, certs, region))
        broken = identity.failure is not None and classify(identity.failure).kind in (
            _BROKEN_CREDENTIALS
        )
        for cert in certs:  # (4)
            if broken:
                checks.append(
                    not_applicable(
                        f"{cert.name}.aws",
                        "secret",
                        "not checked: the AWS credentials do not work (see identity)",
                        cert.name,
                    )
                )
                continue
            checks.extend(self._secret_checks(cert, caller))
        if broken:
            checks.append(
                not_applicable(
                    "events", "rotation events", "not checked: the AWS credentials do not work"
                )
            )
        else:
            checks.extend(event_checks(self.config, self.aws, caller))  # (5)
        checks.insert(3, self._clock())  # (6), shown after identity
        checks.extend(self.host.httpd_checks())  # (7)
        for cert in certs:
            checks.extend(self.host.cert_checks(cert))
        checks.extend([self.host.state_dir(), self.host.sandbox(), self.host.selinux_labels()])
        return Report(checks)

    # --- (1)-(3) who calls -----------------------------------------------------------------------

    def _credentials(self, method: Optional[str]) -> Check:
        if method is None:
            cause = classify(AwsFailure("NoCredentials"))
            return failed(
                "credentials",
                "credentials",
                cause.summary + " (environment, ~/.aws, container endpoint, instance metadata)",
                cause=cause.kind.value,
                fixes=fixes_for(cause, Caller(None), Target("sts:GetCallerIdentity", "*", "")),
            )
        source = _SOURCES.get(method, method)
        note = ""
        if method in _SHELL_SOURCES:
            note = "; certpull.service sees neither a login shell's environment nor ~/.aws"
        return passed("credentials", "credentials", f"from {source}{note}")

    def _imds(self, method: Optional[str]) -> Check:
        id_, title = "imds", "IMDSv2"
        if method != "iam-role":
            source = _SOURCES.get(method or "", "nowhere")
            return not_applicable(
                id_, title, f"the credentials come from {source}, not the instance metadata service"
            )
        answer = self.aws.imds_token()
        if answer.problem is None:
            instance = f" (instance {answer.instance_id})" if answer.instance_id else ""
            return passed(id_, title, f"a session token came from {answer.endpoint}{instance}")
        instance_id = answer.instance_id or "INSTANCE_ID"
        if self.in_container():
            fix = Fix(
                "this process runs in a container, one network hop further from the instance "
                "metadata service than the host: raise the instance's IMDSv2 hop limit to 2 "
                "(host.yaml's launch template sets 1, enough for certpull on the host itself)",
                commands=(
                    f"aws ec2 modify-instance-metadata-options --instance-id {instance_id} "
                    "--http-tokens required --http-put-response-hop-limit 2",
                ),
            )
        else:
            fix = Fix(
                "make the instance metadata service answer IMDSv2 token requests: enable its "
                "endpoint, and check that no firewall rule drops 169.254.169.254",
                commands=(
                    f"aws ec2 modify-instance-metadata-options --instance-id {instance_id} "
                    "--http-endpoint enabled --http-tokens required",
                ),
            )
        return failed(
            id_,
            title,
            f"{answer.problem} from {answer.endpoint}: botocore needs an IMDSv2 token for the "
            "instance profile's credentials where IMDSv1 is off",
            fixes=(fix,),
        )

    def _identity(
        self, answer: Answer, caller: Caller, certs: Sequence[CertConfig], region: str
    ) -> Check:
        if answer.failure is None:
            return passed("identity", "identity", f"{caller.arn} (account {caller.account})")
        cause = classify(answer.failure)
        if cause.kind is Kind.UNREACHABLE and not any(c.role_arn for c in certs):
            return not_applicable(
                "identity",
                "identity",
                f"STS in {region} is not reachable; certpull needs it only for role_arn. "
                "The fixes below name the host's role as ROLE_ARN",
            )
        target = Target(
            "sts:GetCallerIdentity", "*", region, endpoint_url=self.config.agent.endpoint_url
        )
        return aws_failed("identity", "identity", None, answer.failure, caller, target)

    # --- (4) each secret -------------------------------------------------------------------------

    def _target(self, cert: CertConfig, action: str, key: Optional[KmsKey] = None) -> Target:
        return Target(
            action,
            cert.secret_arn,
            cert.region,
            config_hint=f"secret_arn in [cert:{cert.name}] of {self.config.path}",
            kms_key=key,
            endpoint_url=self.config.agent.endpoint_url,
        )

    def _secret_checks(self, cert: CertConfig, caller: Caller) -> List[Check]:
        name = cert.name
        checks: List[Check] = []
        reader = caller
        if cert.role_arn:
            assumed = self.aws.assume_role(cert.region, cert.role_arn, cert.external_id)
            if assumed.failure is not None:
                target = Target(
                    "sts:AssumeRole",
                    cert.role_arn,
                    cert.region,
                    config_hint=f"role_arn in [cert:{name}]",
                    external_id=cert.external_id,
                    endpoint_url=self.config.agent.endpoint_url,
                )
                checks.append(
                    aws_failed(
                        f"{name}.assume_role", "AssumeRole", name, assumed.failure, caller, target
                    )
                )
                checks.append(
                    not_applicable(
                        f"{name}.secret", "secret", "not checked: role_arn cannot be assumed", name
                    )
                )
                return checks
            reader = Caller(str((assumed.value or {})["AssumedRoleUser"]["Arn"]))
            sent = " with external_id" if cert.external_id else ""
            checks.append(passed(f"{name}.assume_role", "AssumeRole", f"{reader.arn}{sent}", name))
        else:
            checks.append(
                not_applicable(f"{name}.assume_role", "AssumeRole", "no role_arn set", name)
            )
        described = self.aws.describe_secret(cert.secret_arn, cert.role_arn, cert.external_id)
        checks.insert(0, self._region(cert, described))
        key: Optional[KmsKey] = None
        if described.failure is not None:
            target = self._target(cert, "secretsmanager:DescribeSecret")
            checks.append(
                aws_failed(
                    f"{name}.describe", "DescribeSecret", name, described.failure, reader, target
                )
            )
            checks.append(
                not_applicable(f"{name}.kms_key", "KMS key", "unknown: DescribeSecret failed", name)
            )
        else:
            value = described.value or {}
            key = KmsKey(value.get("KmsKeyId"), cert.region, cert.account)
            checks.append(self._described(cert, value))
            checks.append(self._kms_key(cert, key, reader))
        fetched = self.aws.get_secret_value(cert.secret_arn, cert.role_arn, cert.external_id)
        if fetched.failure is not None:
            target = self._target(cert, "secretsmanager:GetSecretValue", key)
            checks.append(
                aws_failed(
                    f"{name}.get_value", "GetSecretValue", name, fetched.failure, reader, target
                )
            )
            checks.append(
                not_applicable(f"{name}.content", "secret content", "GetSecretValue failed", name)
            )
            return checks
        value = fetched.value or {}
        through = f" (kms:Decrypt with {key.describe()})" if key else ""
        checks.append(
            passed(
                f"{name}.get_value",
                "GetSecretValue",
                f"read AWSCURRENT version {value.get('VersionId')}{through}",
                name,
            )
        )
        checks.append(self._content(cert, value))
        return checks

    def _region(self, cert: CertConfig, described: Answer) -> Check:
        id_, title = f"{cert.name}.region", "region"
        partition = cert.secret_arn.split(":")[1]
        if self.aws.known_region("secretsmanager", partition, cert.region) or described.ok:
            return passed(id_, title, f"{cert.region} (from secret_arn)", cert.name)
        return failed(
            id_,
            title,
            f"{cert.region}, taken from secret_arn, is not a Secrets Manager region of "
            f"partition {partition}",
            cert.name,
            fixes=(
                Fix(
                    f"correct secret_arn in [cert:{cert.name}] of {self.config.path}: "
                    "arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME-SUFFIX"
                ),
            ),
        )

    def _described(self, cert: CertConfig, value: dict) -> Check:  # type: ignore[type-arg]
        id_, title = f"{cert.name}.describe", "DescribeSecret"
        arn = cert.secret_arn
        if value.get("DeletedDate"):
            return failed(
                id_,
                title,
                "the secret is scheduled for deletion",
                cert.name,
                cause=Kind.SCHEDULED_FOR_DELETION.value,
                fixes=(
                    Fix(
                        f"in account {cert.account}, restore it",
                        commands=(f"aws secretsmanager restore-secret --secret-id {arn}",),
                    ),
                ),
            )
        stages = value.get("VersionIdsToStages") or {}
        current = next((v for v, s in stages.items() if "AWSCURRENT" in s), None)
        if current is None:
            return failed(
                id_,
                title,
                "the secret has no AWSCURRENT version: nothing to install",
                cert.name,
                fixes=(
                    Fix(
                        "let its rotation finish (finishSecret moves AWSCURRENT), or store a "
                        "first version",
                        commands=(f"aws secretsmanager rotate-secret --secret-id {arn}",),
                    ),
                ),
            )
        return passed(id_, title, f"AWSCURRENT is version {current}", cert.name)

    def _kms_key(self, cert: CertConfig, key: KmsKey, reader: Caller) -> Check:
        id_, title = f"{cert.name}.kms_key", "KMS key"
        cross = reader.account is not None and reader.account != cert.account
        if key.aws_managed and cross:
            target = self._target(cert, "kms:Decrypt", key)
            return failed(
                id_,
                title,
                f"the secret is encrypted with {key.describe()}, which account "
                f"{reader.account} cannot use: AWS managed keys are never shared across accounts",
                cert.name,
                cause=Kind.AWS_MANAGED_KEY_CROSS_ACCOUNT.value,
                facts=(("principal", str(reader.arn)), ("secret", cert.secret_arn)),
                fixes=managed_key_fixes(reader, target),
            )
        if key.aws_managed:
            return passed(
                id_,
                title,
                f"{key.describe()}: every principal of that account may use it",
                cert.name,
            )
        side = (
            f"its key policy (account {key.owner}) and the identity policy of account "
            f"{reader.account} must both allow kms:Decrypt"
            if cross
            else "its key policy must allow this account's IAM policies or this role"
        )
        return passed(id_, title, f"{key.describe()}; {side} (GetSecretValue proves it)", cert.name)

    def _installed_not_after(self, cert: CertConfig) -> Optional[datetime]:
        """As the pass decides it (agent.Agent): the state's record, else the live cert.pem."""
        with contextlib.suppress(StoreError, OSError, KeyError):
            installed = self.state_file.load().certs[cert.name].installed
            if installed is not None and installed.not_after:
                parsed = parse_time(installed.not_after)
                if parsed is not None:
                    return parsed
        path = f"{self.config.live_path(cert.name)}/{CERT_FILE}"
        with contextlib.suppress(BundleError, OSError), open(path, "rb") as f:
            return leaf_info(f.read()).not_after
        return None

    def _live_fingerprint(self, cert: CertConfig) -> Optional[str]:
        path = f"{self.config.live_path(cert.name)}/{CERT_FILE}"
        with contextlib.suppress(OSError), open(path, "rb") as f:
            return cert_fingerprint(f.read())
        return None

    def _content(self, cert: CertConfig, value: dict) -> Check:  # type: ignore[type-arg]
        """bundle.validate with the certificate's policy, as `sync` runs it; nothing installed."""
        id_, title = f"{cert.name}.content", "secret content"
        version = str(value.get("VersionId"))
        secret_string = value.get("SecretString")
        arn = cert.secret_arn
        fix = Fix(
            "sync keeps the installed certificate until AWSCURRENT holds a bundle it accepts: "
            "correct what the producer stores (the rotation function's log says what it did), or "
            "move AWSCURRENT back to the previous version",
            commands=(
                f"aws secretsmanager list-secret-version-ids --secret-id {arn}",
                f"aws secretsmanager update-secret-version-stage --secret-id {arn} "
                "--version-stage AWSCURRENT --move-to-version-id PREVIOUS_VERSION_ID "
                f"--remove-from-version-id {version}",
            ),
        )
        if secret_string is None:
            return failed(
                id_,
                title,
                f"version {version} holds binary data, not the JSON text of a certificate bundle",
                cert.name,
                fixes=(fix,),
            )
        now = datetime.fromtimestamp(self.clock(), timezone.utc)
        try:
            bundle = validate(secret_string, cert.policy, now, self._installed_not_after(cert))
        except BundleError as exc:
            return failed(id_, title, f"version {version}: {exc}", cert.name, fixes=(fix,))
        leaf = bundle.leaf
        days = (leaf.not_after - now).total_seconds() / 86400
        state = (
            "installed"
            if self._live_fingerprint(cert) == leaf.fingerprint_sha256
            else "not installed yet (`certpull sync` installs it)"
        )
        return passed(
            id_,
            title,
            f"valid: serial {leaf.serial}, {', '.join(leaf.names) or leaf.subject}, expires "
            f"{leaf.not_after:%Y-%m-%d} ({days:.0f} days); {state}",
            cert.name,
        )

    # --- (6) the clock ---------------------------------------------------------------------------

    def _clock(self) -> Check:
        """This host's clock against the Date of the first AWS answer (1 s resolution)."""
        dated = next((a for a in self.aws.answers if a.date is not None), None)
        if dated is None or dated.date is None:
            return not_applicable("clock", "clock", "no AWS answer carried a Date header")
        skew = dated.received_at - (dated.date + 0.5)  # Date is truncated to the second
        against = f"the Date of the {dated.operation} answer"
        if abs(skew) < MAX_SKEW_S:
            off = "within 1 s of" if abs(skew) < 1.5 else f"{skew:+.0f} s from"
            return passed("clock", "clock", f"{off} AWS's clock ({against})")
        direction = "ahead of" if skew > 0 else "behind"
        if abs(skew) >= SIGNATURE_WINDOW_S:
            effect = "AWS refuses every request signed more than 5 minutes off"
        elif skew < 0:
            effect = (
                f"a certificate issued in the last {-skew:.0f} s looks not yet valid here "
                "(sync refuses it), and signatures fail past 5 minutes"
            )
        else:
            effect = (
                f"certificates look expired {skew:.0f} s early, and signatures fail past 5 minutes"
            )
        cause = classify(AwsFailure("RequestTimeTooSkewed"))
        return failed(
            "clock",
            "clock",
            f"this host is {abs(skew):.0f} s {direction} AWS ({against}): {effect}",
            cause=cause.kind.value,
            fixes=fixes_for(cause, Caller(None), Target("sts:GetCallerIdentity", "*", "")),
        )
