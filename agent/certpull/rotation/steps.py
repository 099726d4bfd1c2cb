"""The four Secrets Manager rotation steps, with the AWS rotation template's staging semantics.

Secrets Manager calls the function four times with the same ClientRequestToken (the new version's
id), and may call any step again after a failure or a timeout, so every step is idempotent.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any, Callable, Dict, List, Mapping, Protocol

from botocore.exceptions import ClientError
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from certpull.bundle import validate
from certpull.bundle_names import covers
from certpull.config import BundlePolicy
from certpull.errors import BundleError
from certpull.rotation.errors import RotationError
from certpull.rotation.issuers import IssuedCertificate
from certpull.rotation.settings import Settings, certificate_names, parse_settings

log = logging.getLogger(__name__)

CURRENT = "AWSCURRENT"
PENDING = "AWSPENDING"
STEPS = ("createSecret", "setSecret", "testSecret", "finishSecret")


class Issuers(Protocol):
    """What the steps need from ACM / ACM PCA (``issuers.AwsIssuers`` in production)."""

    def issue(
        self, settings: Settings, current: Mapping[str, Any], token: str
    ) -> IssuedCertificate: ...

    def ca_certificate_pem(self, ca_arn: str) -> str: ...


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Rotation:
    """One secret's rotation steps through an injected Secrets Manager client and issuers."""

    def __init__(
        self,
        secrets_client: Any,
        issuers: Issuers,
        clock: Callable[[], dt.datetime] = _utc_now,
    ) -> None:
        self._sm = secrets_client
        self._issuers = issuers
        self._clock = clock

    def run(self, secret_id: str, token: str, step: str) -> None:
        """Check the version is staged for this step, then run it.

        1. The step is one of the four.
        2. Rotation is enabled and the token is a version of the secret.
        3. The token already AWSCURRENT: the rotation finished; only a leftover AWSPENDING label
           is removed (finishSecret) and nothing else happens.
        4. Otherwise the token must be AWSPENDING.
        5. Run the step.
        """
        if step not in STEPS:  # (1)
            raise RotationError(
                f"unknown rotation step {step!r}; expected one of {', '.join(STEPS)}"
            )
        described = self._sm.describe_secret(SecretId=secret_id)  # (2)
        if not described.get("RotationEnabled"):
            raise RotationError(f"secret {secret_id} is not enabled for rotation")
        versions: Dict[str, List[str]] = described.get("VersionIdsToStages", {})
        if token not in versions:
            raise RotationError(f"version {token} of secret {secret_id} has no stage for rotation")
        stages = versions[token]
        if CURRENT in stages:  # (3)
            log.info("%s: version %s is already %s", step, token, CURRENT)
            if step == "finishSecret" and PENDING in stages:
                self._remove_pending(secret_id, token)
            return
        if PENDING not in stages:  # (4)
            raise RotationError(f"version {token} of secret {secret_id} is not staged {PENDING}")
        log.info("%s: secret %s version %s", step, secret_id, token)
        getattr(self, _METHODS[step])(secret_id, token)  # (5)

    def create_secret(self, secret_id: str, token: str) -> None:
        """Put a new certificate into the AWSPENDING version, unless it already holds one.

        1. Read AWSCURRENT and check its settings (unsupported ones fail here, before issuing).
        2. The pending version already has a value (an earlier, interrupted call): done.
        3. Issue; any issuing error raises, and nothing is written.
        4. Put current's JSON with the four certificate fields replaced, staged AWSPENDING.
        """
        current = self._value(secret_id, stage=CURRENT)  # (1)
        settings = parse_settings(current)
        try:  # (2)
            self._sm.get_secret_value(SecretId=secret_id, VersionId=token, VersionStage=PENDING)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                raise
        else:
            log.info("createSecret: version %s already has a value; reusing it", token)
            return
        issued = self._issuers.issue(settings, current, token)  # (3)
        document = dict(current)  # (4)
        document.update(issued.fields())
        self._sm.put_secret_value(
            SecretId=secret_id,
            ClientRequestToken=token,
            SecretString=json.dumps(document),
            VersionStages=[PENDING],
        )
        log.info("createSecret: stored %s in version %s", issued.certificate_arn, token)

    def set_secret(self, secret_id: str, token: str) -> None:
        """Nothing to set: hosts pull the new version themselves once it is AWSCURRENT."""

    def test_secret(self, secret_id: str, token: str) -> None:
        """Validate the pending bundle as the agent will, before it can become AWSCURRENT.

        1. certpull's bundle validation: key matches, chain verifies, valid now, has SANs.
        2. The leaf covers COMMON_NAME and every SUBJECT_ALTERNATIVE_NAMES entry.
        3. The chain holds the certificate of the CA in CA_ARN.
        """
        secret_string = self._string(secret_id, version_id=token, stage=PENDING)
        policy = BundlePolicy(include_root=True, allow_cn_only=False)  # it issues SANs, always
        bundle = validate(secret_string, policy, self._clock())  # (1)
        settings = parse_settings(json.loads(secret_string))
        missing = [  # (2)
            name
            for name in certificate_names(settings)
            if name not in bundle.leaf.names and not covers(bundle.leaf.names, name)
        ]
        if missing:
            raise BundleError(f"CERTIFICATE_PEM does not cover {', '.join(missing)}")
        ca_der = _der(self._issuers.ca_certificate_pem(settings.ca_arn))  # (3)
        chain = x509.load_pem_x509_certificates(bundle.chain_pem) if bundle.chain_pem else []
        if ca_der not in [_der_of(c) for c in chain]:
            raise BundleError("CERTIFICATE_CHAIN_PEM does not lead to the CA in CA_ARN")
        log.info("testSecret: version %s is a valid bundle for %s", token, settings.common_name)

    def finish_secret(self, secret_id: str, token: str) -> None:
        """Move AWSCURRENT to the token (the old version becomes AWSPREVIOUS), then drop AWSPENDING."""
        versions = self._sm.describe_secret(SecretId=secret_id).get("VersionIdsToStages", {})
        current = next((v for v, stages in versions.items() if CURRENT in stages), None)
        if current != token:
            self._sm.update_secret_version_stage(
                SecretId=secret_id,
                VersionStage=CURRENT,
                MoveToVersionId=token,
                RemoveFromVersionId=current,
            )
            log.info("finishSecret: version %s is now %s", token, CURRENT)
        self._remove_pending(secret_id, token)

    # -- helpers ---------------------------------------------------------------------------------

    def _remove_pending(self, secret_id: str, token: str) -> None:
        self._sm.update_secret_version_stage(
            SecretId=secret_id, VersionStage=PENDING, RemoveFromVersionId=token
        )

    def _string(self, secret_id: str, stage: str, version_id: str = "") -> str:
        kwargs = {"SecretId": secret_id, "VersionStage": stage}
        if version_id:
            kwargs["VersionId"] = version_id
        value = self._sm.get_secret_value(**kwargs).get("SecretString")
        if not isinstance(value, str):
            raise RotationError(f"the {stage} version of secret {secret_id} has no SecretString")
        return value

    def _value(self, secret_id: str, stage: str) -> Dict[str, Any]:
        try:
            document = json.loads(self._string(secret_id, stage=stage))
        except ValueError:
            raise RotationError(f"the {stage} version of secret {secret_id} is not JSON") from None
        if not isinstance(document, dict):
            raise RotationError(f"the {stage} version of secret {secret_id} is not a JSON object")
        return document


_METHODS = {
    "createSecret": "create_secret",
    "setSecret": "set_secret",
    "testSecret": "test_secret",
    "finishSecret": "finish_secret",
}


def _der(pem: str) -> bytes:
    try:
        return _der_of(x509.load_pem_x509_certificate(pem.encode("ascii")))
    except (ValueError, UnicodeEncodeError):
        raise RotationError("the CA certificate of CA_ARN cannot be parsed") from None


def _der_of(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(Encoding.DER)
