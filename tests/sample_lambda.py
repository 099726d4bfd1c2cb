"""Secrets in the exact format of the AWS sample's rotation function, made the way it makes them.

The sample is ``Lambda/Function/sm_rotate_secrets.py`` of
github.com/aws-samples/aws-secrets-manager-acm-certificate-rotation (last change 22fafa6,
January 2021), the function of the AWS Security Blog post "Use AWS Secrets Manager to simplify the
management of private certificates" (https://aws.amazon.com/blogs/security/
use-aws-secrets-manager-to-simplify-the-management-of-private-certificates/), deployed with the
repository's Lambda layer (cryptography 3.0). What it does for ``CERTIFICATE_TYPE`` other than
``ACM_ISSUED`` is re-implemented here (its code is not copied), against moto's ACM PCA:

1. createSecret reads AWSCURRENT and requires CA_ARN, COMMON_NAME, TEMPLATE_ARN, KEY_ALGORITHM,
   KEY_SIZE, SIGNING_ALGORITHM and SIGNING_HASH (a missing one fails the Lambda; nothing stored).
   An AWSPENDING version that already has a value is left alone.
2. The key, outside any error handling: when CERTIFICATE_ARN is present, PRIVATE_KEY_PEM is loaded
   and used again (the same key on every renewal); else a new one: TYPE_RSA of int(KEY_SIZE) bits,
   TYPE_EC on the cryptography curve named by EC_CURVE (``SECP384R1``; KEY_SIZE is ignored),
   TYPE_DSA of KEY_SIZE bits, TYPE_ED25519, TYPE_ED448. (cryptography 3.0 took the curve class;
   today's wants an instance, which is the only liberty taken here.)
3. Inside one ``try: ... except Exception: log``, which swallows every error:
   a. the CSR: subject CN=COMMON_NAME and nothing else (no subjectAltName), signed with the hash
      SIGNING_HASH names; for an EC key the hash is wrapped in ``ec.ECDSA(...)``, which
      cryptography refuses ("Algorithm must be a registered hash algorithm"), so a TYPE_EC secret
      never gets past this point;
   b. IssueCertificate: SigningAlgorithm from the table {RSA, ECDSA} x {sha256, sha384, sha512}
      (any other SIGNING_HASH, "SHA256" included, becomes a ValueError object that botocore
      refuses), TemplateArn, Validity VALIDITY (or 365) DAYS;
   c. CERTIFICATE_ARN is put in the dict at once; wait until issued (1 s, 10 tries); GetCertificate;
   d. CERTIFICATE_PEM and CERTIFICATE_CHAIN_PEM exactly as ACM PCA returns them (LF, no trailing
      newline, the chain up to and including the root), PRIVATE_KEY_PEM unencrypted PKCS#8.
4. PutSecretValue(AWSPENDING) with whatever the dict holds after (3): an error there stores the old
   certificate again on a renewal (with the new CERTIFICATE_ARN when only 3c failed), and the bare
   settings, no certificate field at all, on a first rotation.
5. setSecret and testSecret do nothing; finishSecret moves AWSCURRENT to the new version.
6. Secrets Manager itself, not the function, then takes AWSPENDING off the finished version (done
   here in ``rotate``: moto leaves it, and then refuses the next RotateSecret).

Settings exactly as the blog's table lists them come from ``sample_settings``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Dict, Optional, Union

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID

END_ENTITY_TEMPLATE = "arn:aws:acm-pca:::template/EndEntityCertificate/V1"
OUTPUT_FIELDS = ("CERTIFICATE_PEM", "CERTIFICATE_CHAIN_PEM", "PRIVATE_KEY_PEM", "CERTIFICATE_ARN")
REQUIRED_PCA = (  # step (1)
    "CA_ARN",
    "COMMON_NAME",
    "TEMPLATE_ARN",
    "KEY_ALGORITHM",
    "KEY_SIZE",
    "SIGNING_ALGORITHM",
    "SIGNING_HASH",
)
SIGNING_ALGORITHMS = {  # step (3b): the sample's own table
    "RSA": {"sha256": "SHA256WITHRSA", "sha384": "SHA384WITHRSA", "sha512": "SHA512WITHRSA"},
    "ECDSA": {
        "sha256": "SHA256WITHECDSA",
        "sha384": "SHA384WITHECDSA",
        "sha512": "SHA512WITHECDSA",
    },
}

SampleKey = Union[
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    dsa.DSAPrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
]


def sample_settings(
    ca_arn: str,
    common_name: str = "www.example.com",
    *,
    key_algorithm: str = "TYPE_RSA",
    key_size: object = 2048,
    ec_curve: Optional[str] = None,
    signing_algorithm: str = "RSA",
    signing_hash: str = "sha256",
    validity: Optional[int] = None,
    template_arn: str = END_ENTITY_TEMPLATE,
    **extra: object,
) -> Dict[str, object]:
    """A secret as the blog has users create it: settings only, before the first rotation."""
    doc: Dict[str, object] = {
        "CERTIFICATE_TYPE": "ACM_PCA_ISSUED",
        "CA_ARN": ca_arn,
        "COMMON_NAME": common_name,
        "TEMPLATE_ARN": template_arn,
        "KEY_ALGORITHM": key_algorithm,
        "KEY_SIZE": key_size,
        "SIGNING_ALGORITHM": signing_algorithm,
        "SIGNING_HASH": signing_hash,
    }
    if ec_curve is not None:
        doc["EC_CURVE"] = ec_curve
    if validity is not None:
        doc["VALIDITY"] = validity
    doc.update(extra)
    return doc


def settings_of(doc: Dict[str, Any]) -> Dict[str, Any]:
    """The secret without the fields a rotation writes: what must be carried forward unchanged."""
    return {k: v for k, v in doc.items() if k not in OUTPUT_FIELDS}


@dataclass(frozen=True)
class CreateResult:
    """What one createSecret did: ``stored`` is the AWSPENDING JSON, ``swallowed`` the error it hid."""

    stored: Dict[str, Any]
    swallowed: Optional[str] = None


class SampleLambda:
    """The sample's rotation steps through real boto3 clients (Secrets Manager, ACM PCA)."""

    def __init__(self, secrets_client: Any, pca_client: Any) -> None:
        self._sm = secrets_client
        self._pca = pca_client

    def rotate(self, secret_id: str, token: str) -> CreateResult:
        """createSecret then finishSecret for a version Secrets Manager staged AWSPENDING."""
        result = self.create_secret(secret_id, token)
        self.finish_secret(secret_id, token)
        self._sm.update_secret_version_stage(  # (6)
            SecretId=secret_id, VersionStage="AWSPENDING", RemoveFromVersionId=token
        )
        return result

    def create_secret(self, secret_id: str, token: str) -> CreateResult:
        current = self._get(secret_id, "AWSCURRENT")  # (1)
        missing = [field for field in REQUIRED_PCA if field not in current]
        if missing:
            raise KeyError(f"{missing[0]} key is missing from secret JSON")
        try:
            return CreateResult(self._get(secret_id, "AWSPENDING", token))
        except self._sm.exceptions.ResourceNotFoundException:
            pass
        if "CERTIFICATE_ARN" in current:  # (2)
            key: Any = serialization.load_pem_private_key(
                current["PRIVATE_KEY_PEM"].encode(), password=None
            )
        else:
            key = _new_key(current)
        swallowed = None
        try:  # (3)
            self._issue(current, key)
        except Exception as exc:  # every error, swallowed: the sample does exactly this
            swallowed = f"{type(exc).__name__}: {exc}"
        self._sm.put_secret_value(  # (4)
            SecretId=secret_id,
            ClientRequestToken=token,
            SecretString=json.dumps(current),
            VersionStages=["AWSPENDING"],
        )
        return CreateResult(current, swallowed)

    def finish_secret(self, secret_id: str, token: str) -> None:  # (5)
        stages = self._sm.describe_secret(SecretId=secret_id)["VersionIdsToStages"]
        current = next(v for v, labels in stages.items() if "AWSCURRENT" in labels)
        if current != token:
            self._sm.update_secret_version_stage(
                SecretId=secret_id,
                VersionStage="AWSCURRENT",
                MoveToVersionId=token,
                RemoveFromVersionId=current,
            )

    def _issue(self, current: Dict[str, Any], key: SampleKey) -> None:
        csr = _csr(current, key)  # (3a)
        algorithm: Any = _signing_algorithm(current["SIGNING_ALGORITHM"], current["SIGNING_HASH"])
        response = self._pca.issue_certificate(  # (3b)
            CertificateAuthorityArn=current["CA_ARN"],
            Csr=csr.encode(),
            SigningAlgorithm=algorithm,
            TemplateArn=current["TEMPLATE_ARN"],
            Validity={"Value": current.get("VALIDITY", 365), "Type": "DAYS"},
        )
        current["CERTIFICATE_ARN"] = response["CertificateArn"]  # (3c)
        self._pca.get_waiter("certificate_issued").wait(
            CertificateAuthorityArn=current["CA_ARN"],
            CertificateArn=current["CERTIFICATE_ARN"],
            WaiterConfig={"Delay": 1, "MaxAttempts": 10},
        )
        got = self._pca.get_certificate(
            CertificateAuthorityArn=current["CA_ARN"], CertificateArn=current["CERTIFICATE_ARN"]
        )
        current["CERTIFICATE_PEM"] = got["Certificate"]  # (3d)
        current["CERTIFICATE_CHAIN_PEM"] = got["CertificateChain"]
        current["PRIVATE_KEY_PEM"] = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()

    def _get(self, secret_id: str, stage: str, token: Optional[str] = None) -> Dict[str, Any]:
        kwargs = {"SecretId": secret_id, "VersionStage": stage}
        if token:
            kwargs["VersionId"] = token
        doc: Dict[str, Any] = json.loads(self._sm.get_secret_value(**kwargs)["SecretString"])
        return doc


def _new_key(current: Dict[str, Any]) -> SampleKey:
    kind = current["KEY_ALGORITHM"]
    if kind == "TYPE_RSA":
        return rsa.generate_private_key(public_exponent=65537, key_size=int(current["KEY_SIZE"]))
    if kind == "TYPE_DSA":
        return dsa.generate_private_key(key_size=int(current["KEY_SIZE"]))
    if kind == "TYPE_ED25519":
        return ed25519.Ed25519PrivateKey.generate()
    if kind == "TYPE_ED448":
        return ed448.Ed448PrivateKey.generate()
    if kind == "TYPE_EC":
        return ec.generate_private_key(getattr(ec, current.get("EC_CURVE", ""))())
    raise ValueError("Unsupported key type")


def _csr(current: Dict[str, Any], key: SampleKey) -> str:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, current["COMMON_NAME"])])
    )
    digest = (
        None
        if isinstance(key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey))
        else getattr(hashes, current["SIGNING_HASH"].upper())()
    )
    algorithm = ec.ECDSA(digest) if isinstance(key, ec.EllipticCurvePrivateKey) else digest
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.PEM).decode()


def _signing_algorithm(family: str, hash_name: str) -> object:
    if hash_name not in ("sha256", "sha384", "sha512"):
        return ValueError("Signing Algorithm not supported")  # returned, not raised, as there
    return SIGNING_ALGORITHMS[family][hash_name]
