"""Getting a certificate and its key out of ACM Private CA or ACM, through injected boto3 clients.

Every failure raises ``IssuingError`` (nothing is swallowed): the step fails, Secrets Manager
records a failed rotation, and AWSCURRENT keeps the certificate that works.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from botocore.exceptions import BotoCoreError, ClientError, WaiterError
from botocore.waiter import WaiterModel, create_waiter_with_client
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from certpull.rotation.csr import build_csr
from certpull.rotation.errors import IssuingError
from certpull.rotation.keys import PrivateKey, generate_private_key, private_key_pem, reusable_key
from certpull.rotation.settings import (
    AcmSettings,
    PcaSettings,
    Settings,
    ca_region,
    ca_signing_algorithm,
    certificate_names,
)

log = logging.getLogger(__name__)

ClientFactory = Callable[[str, str], Any]  # (service, region) -> boto3 client

_ACM_WAITERS = WaiterModel(
    {
        "version": 2,
        "waiters": {
            # ACM's own CertificateValidated waiter watches domain validation, which private
            # certificates do not have; their Status is what moves.
            "PrivateCertificateIssued": {
                "operation": "DescribeCertificate",
                "delay": 1,
                "maxAttempts": 60,
                "acceptors": [
                    {
                        "matcher": "path",
                        "argument": "Certificate.Status",
                        "expected": "ISSUED",
                        "state": "success",
                    },
                    {
                        "matcher": "path",
                        "argument": "Certificate.Status",
                        "expected": "PENDING_VALIDATION",
                        "state": "retry",
                    },
                    {
                        "matcher": "path",
                        "argument": "Certificate.Status",
                        "expected": "FAILED",
                        "state": "failure",
                    },
                ],
            }
        },
    }
)


@dataclass(frozen=True)
class IssuedCertificate:
    """What a rotation stores: leaf, chain (issuers, leaf excluded), unencrypted PKCS#8 key, ARN."""

    certificate_pem: str
    chain_pem: str
    private_key_pem: str = field(repr=False)
    certificate_arn: str = ""

    def fields(self) -> Dict[str, str]:
        return {
            "CERTIFICATE_PEM": self.certificate_pem,
            "CERTIFICATE_CHAIN_PEM": self.chain_pem,
            "PRIVATE_KEY_PEM": self.private_key_pem,
            "CERTIFICATE_ARN": self.certificate_arn,
        }


class PcaIssuer:
    """CERTIFICATE_TYPE=ACM_PCA_ISSUED.

    1. Ask the CA for its status and KeyAlgorithm; refuse a CA that is not ACTIVE and a
       SIGNING_ALGORITHM of the wrong family, before anything is issued.
    2. The key: the stored one when REUSE_KEY is set and it still fits the settings, else a new one.
    3. A CSR with CN=COMMON_NAME and subjectAltName = COMMON_NAME + SUBJECT_ALTERNATIVE_NAMES.
    4. IssueCertificate; the idempotency token is derived from the rotation token and the public
       key, so a retried call cannot come back with a certificate for another key.
    5. Wait until the certificate is issued, then GetCertificate.
    6. The certificate must carry our public key.
    """

    def __init__(self, client: Any, wait_delay_s: int = 1, wait_max_attempts: int = 60) -> None:
        self._client = client
        self._wait = {"Delay": wait_delay_s, "MaxAttempts": wait_max_attempts}

    def issue(
        self, settings: PcaSettings, current: Mapping[str, Any], token: str
    ) -> IssuedCertificate:
        ca = _call(  # (1)
            "DescribeCertificateAuthority",
            self._client.describe_certificate_authority,
            CertificateAuthorityArn=settings.ca_arn,
        )["CertificateAuthority"]
        if ca.get("Status") != "ACTIVE":
            raise IssuingError(f"the CA in CA_ARN is {ca.get('Status')}, not ACTIVE")
        key_algorithm = ca.get("CertificateAuthorityConfiguration", {}).get("KeyAlgorithm", "")
        signing_algorithm = ca_signing_algorithm(settings, key_algorithm)
        key = self._key(settings, current)  # (2)
        csr = build_csr(  # (3)
            key, settings.common_name, certificate_names(settings), settings.csr_hash
        )
        spki = _spki(key)
        certificate_arn: str = _call(  # (4)
            "IssueCertificate",
            self._client.issue_certificate,
            CertificateAuthorityArn=settings.ca_arn,
            Csr=csr,
            SigningAlgorithm=signing_algorithm,
            TemplateArn=settings.template_arn,
            Validity={"Type": "DAYS", "Value": settings.validity_days},
            IdempotencyToken=hashlib.sha256(token.encode() + spki).hexdigest()[:36],
        )["CertificateArn"]
        log.info("issued %s from %s", certificate_arn, settings.ca_arn)
        try:  # (5)
            self._client.get_waiter("certificate_issued").wait(
                CertificateAuthorityArn=settings.ca_arn,
                CertificateArn=certificate_arn,
                WaiterConfig=self._wait,
            )
        except WaiterError as exc:
            raise IssuingError(f"{certificate_arn} was not issued: {exc}") from exc
        got = _call(
            "GetCertificate",
            self._client.get_certificate,
            CertificateAuthorityArn=settings.ca_arn,
            CertificateArn=certificate_arn,
        )
        certificate_pem = _pem_text(got.get("Certificate", ""))
        if _spki_of_certificate(certificate_pem) != spki:  # (6)
            raise IssuingError(f"{certificate_arn} does not carry the key of this rotation")
        return IssuedCertificate(
            certificate_pem=certificate_pem,
            chain_pem=_pem_text(got.get("CertificateChain", "")),
            private_key_pem=private_key_pem(key),
            certificate_arn=certificate_arn,
        )

    def _key(self, settings: PcaSettings, current: Mapping[str, Any]) -> PrivateKey:
        if settings.reuse_key:
            key = reusable_key(current.get("PRIVATE_KEY_PEM"), settings.key)
            if key is not None:
                return key
            log.info(
                "REUSE_KEY is set but the stored key is not %s; making a new one",
                settings.key.describe(),
            )
        return generate_private_key(settings.key)


class AcmIssuer:
    """CERTIFICATE_TYPE=ACM_ISSUED.

    1. The certificate: the one in CERTIFICATE_ARN while it is an ISSUED ACM certificate from
       CA_ARN for the same names; otherwise request one (once: the idempotency token comes from
       the rotation token) and wait until it is issued.
    2. ENVIRONMENT=TEST and the certificate already existed: RenewCertificate, and wait until its
       serial number changes. Otherwise ACM renews it on its own and this exports what it holds.
    3. ExportCertificate with a random passphrase; store the decrypted key as PKCS#8.
    """

    def __init__(
        self,
        client: Any,
        sleep: Callable[[float], None] = time.sleep,
        wait_delay_s: int = 1,
        wait_max_attempts: int = 60,
        new_passphrase: Callable[[], bytes] = lambda: secrets.token_hex(16).encode(),
    ) -> None:
        self._client = client
        self._sleep = sleep
        self._delay_s = wait_delay_s
        self._attempts = wait_max_attempts
        self._new_passphrase = new_passphrase

    def issue(
        self, settings: AcmSettings, current: Mapping[str, Any], token: str
    ) -> IssuedCertificate:
        arn = self._existing(settings, current.get("CERTIFICATE_ARN"))  # (1)
        if arn is None:
            arn = self._request(settings, token)
        elif settings.renew_every_rotation:  # (2)
            self._renew(arn)
        return self._export(arn)  # (3)

    def _existing(self, settings: AcmSettings, arn: object) -> Optional[str]:
        if not isinstance(arn, str) or ":acm:" not in arn:
            return None
        try:
            described = self._client.describe_certificate(CertificateArn=arn)["Certificate"]
        except ClientError as exc:
            if _code(exc) == "ResourceNotFoundException":
                log.info("CERTIFICATE_ARN %s no longer exists; requesting a new one", arn)
                return None
            raise IssuingError(f"DescribeCertificate failed: {_reason(exc)}") from exc
        same = (
            described.get("Status") == "ISSUED"
            and described.get("CertificateAuthorityArn") == settings.ca_arn
            and described.get("DomainName") == settings.common_name
            and set(described.get("SubjectAlternativeNames", []))
            == set(certificate_names(settings))
        )
        if not same:
            log.info("%s does not match the settings or is not ISSUED; requesting a new one", arn)
            return None
        return arn

    def _request(self, settings: AcmSettings, token: str) -> str:
        arn: str = _call(
            "RequestCertificate",
            self._client.request_certificate,
            DomainName=settings.common_name,
            SubjectAlternativeNames=list(certificate_names(settings)),
            CertificateAuthorityArn=settings.ca_arn,
            IdempotencyToken=hashlib.sha256(token.encode()).hexdigest()[:32],
        )["CertificateArn"]
        log.info("requested %s from %s", arn, settings.ca_arn)
        waiter = create_waiter_with_client("PrivateCertificateIssued", _ACM_WAITERS, self._client)
        try:
            waiter.wait(
                CertificateArn=arn,
                WaiterConfig={"Delay": self._delay_s, "MaxAttempts": self._attempts},
            )
        except WaiterError as exc:
            raise IssuingError(f"{arn} was not issued: {exc}") from exc
        return arn

    def _renew(self, arn: str) -> None:
        """RenewCertificate, then poll until the serial number differs (RenewalStatus alone may
        still say SUCCESS from the previous renewal)."""
        before = self._describe(arn).get("Serial")
        _call("RenewCertificate", self._client.renew_certificate, CertificateArn=arn)
        for _ in range(self._attempts):
            described = self._describe(arn)
            if described.get("RenewalSummary", {}).get("RenewalStatus") == "FAILED":
                reason = described["RenewalSummary"].get("RenewalStatusReason", "no reason given")
                raise IssuingError(f"renewing {arn} failed: {reason}")
            if described.get("Serial") != before and described.get("Status") == "ISSUED":
                log.info("renewed %s", arn)
                return
            self._sleep(self._delay_s)
        raise IssuingError(f"renewing {arn} did not finish after {self._attempts} checks")

    def _describe(self, arn: str) -> Dict[str, Any]:
        described: Dict[str, Any] = _call(
            "DescribeCertificate", self._client.describe_certificate, CertificateArn=arn
        )["Certificate"]
        return described

    def _export(self, arn: str) -> IssuedCertificate:
        passphrase = self._new_passphrase()
        exported = _call(
            "ExportCertificate",
            self._client.export_certificate,
            CertificateArn=arn,
            Passphrase=passphrase,
        )
        key = _decrypt(exported.get("PrivateKey", ""), passphrase)
        if key is None:
            raise IssuingError(
                f"ExportCertificate returned a key for {arn} that cannot be decrypted"
            )
        certificate_pem = _pem_text(exported.get("Certificate", ""))
        if _spki_of_certificate(certificate_pem) != _spki(key):
            raise IssuingError(f"ExportCertificate returned a key that does not match {arn}")
        return IssuedCertificate(
            certificate_pem=certificate_pem,
            chain_pem=_pem_text(exported.get("CertificateChain", "")),
            private_key_pem=private_key_pem(key),
            certificate_arn=arn,
        )


class AwsIssuers:
    """Picks the issuer for the settings and builds its client in the CA's region."""

    def __init__(self, client_factory: ClientFactory) -> None:
        self._client_factory = client_factory
        self._clients: Dict[Tuple[str, str], Any] = {}

    def issue(
        self, settings: Settings, current: Mapping[str, Any], token: str
    ) -> IssuedCertificate:
        region = ca_region(settings.ca_arn)
        if isinstance(settings, PcaSettings):
            return PcaIssuer(self._client("acm-pca", region)).issue(settings, current, token)
        return AcmIssuer(self._client("acm", region)).issue(settings, current, token)

    def ca_certificate_pem(self, ca_arn: str) -> str:
        """The certificate of the CA in CA_ARN: the pending chain must lead to it."""
        got = _call(
            "GetCertificateAuthorityCertificate",
            self._client("acm-pca", ca_region(ca_arn)).get_certificate_authority_certificate,
            CertificateAuthorityArn=ca_arn,
        )
        return _pem_text(got.get("Certificate", ""))

    def _client(self, service: str, region: str) -> Any:
        if (service, region) not in self._clients:
            self._clients[(service, region)] = self._client_factory(service, region)
        return self._clients[(service, region)]


# --- helpers --------------------------------------------------------------------------------


def _call(operation: str, method: Callable[..., Any], **kwargs: Any) -> Any:
    """Call AWS; every failure becomes one IssuingError line naming the operation."""
    try:
        return method(**kwargs)
    except ClientError as exc:
        raise IssuingError(f"{operation} failed: {_reason(exc)}") from exc
    except BotoCoreError as exc:
        raise IssuingError(f"{operation} failed: {exc}") from exc


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _reason(exc: ClientError) -> str:
    error = exc.response.get("Error", {})
    message = " ".join(str(error.get("Message", "")).split())[:300]
    return (
        f"{error.get('Code', 'error')}: {message}" if message else str(error.get("Code", "error"))
    )


def _pem_text(text: str) -> str:
    """PEM as stored: LF line endings, one trailing newline ('' stays '')."""
    text = text.replace("\r\n", "\n").strip()
    return text + "\n" if text else ""


def _spki(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _spki_of_certificate(pem: str) -> bytes:
    try:
        certificate = x509.load_pem_x509_certificate(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise IssuingError("the issued certificate cannot be parsed") from None
    return certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _decrypt(pem: str, passphrase: bytes) -> Optional[PrivateKey]:
    """The exported key, decrypted; None if it cannot be (never raises with key bytes around)."""
    try:
        key = serialization.load_pem_private_key(pem.encode("ascii"), password=passphrase)
    except (ValueError, TypeError, UnicodeEncodeError):
        return None
    return key if isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)) else None
