"""Certificates issued by (moto's) ACM Private CA validate: the web PKI profile accepts them as issued.

moto's PCA signs real X.509 (RSA CA key, SHA-512, 365 days, the CSR's extensions copied), which is
what the rotation function stores; this proves bundle.validate does not reject that shape.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
from typing import Any, Dict, Iterator, Tuple

import boto3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from moto.server import ThreadedMotoServer

from certpull.bundle import validate
from certpull.config import BundlePolicy
from certpull.errors import BundleError

pytestmark = pytest.mark.integration

ROOT_TEMPLATE = "arn:aws:acm-pca:::template/RootCACertificate/V1"
WWW = BundlePolicy(server_name="www.example.com")


@pytest.fixture(scope="module")
def pca() -> Iterator[Tuple[Any, str]]:
    """An ACTIVE root CA in moto's ACM PCA, reached over HTTP."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        client = boto3.client(
            "acm-pca",
            region_name="us-east-1",
            endpoint_url=f"http://{host}:{port}",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        ca_arn = client.create_certificate_authority(
            CertificateAuthorityConfiguration={
                "KeyAlgorithm": "RSA_2048",
                "SigningAlgorithm": "SHA256WITHRSA",
                "Subject": {"CommonName": "certpull pca root", "Organization": "certpull tests"},
            },
            CertificateAuthorityType="ROOT",
        )["CertificateAuthorityArn"]
        csr = client.get_certificate_authority_csr(CertificateAuthorityArn=ca_arn)["Csr"]
        issued = client.issue_certificate(
            CertificateAuthorityArn=ca_arn,
            Csr=csr.encode(),
            SigningAlgorithm="SHA256WITHRSA",
            TemplateArn=ROOT_TEMPLATE,
            Validity={"Value": 3650, "Type": "DAYS"},
        )
        ca_cert = client.get_certificate(
            CertificateAuthorityArn=ca_arn, CertificateArn=issued["CertificateArn"]
        )["Certificate"]
        client.import_certificate_authority_certificate(
            CertificateAuthorityArn=ca_arn, Certificate=ca_cert.encode()
        )
        yield client, ca_arn
    finally:
        server.stop()


def _issue(pca: Tuple[Any, str], key: Any) -> Dict[str, str]:
    """What the rotation function stores for a leaf issued by the PCA for ``key``."""
    client, ca_arn = pca
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "www.example.com")]))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("www.example.com"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_arn = client.issue_certificate(
        CertificateAuthorityArn=ca_arn,
        Csr=csr.public_bytes(serialization.Encoding.PEM),
        SigningAlgorithm="SHA256WITHRSA",
        Validity={"Value": 90, "Type": "DAYS"},
    )["CertificateArn"]
    got = client.get_certificate(CertificateAuthorityArn=ca_arn, CertificateArn=cert_arn)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return {
        "CERTIFICATE_PEM": got["Certificate"],
        "CERTIFICATE_CHAIN_PEM": got["CertificateChain"],
        "PRIVATE_KEY_PEM": key_pem,
        "CERTIFICATE_ARN": cert_arn,
        "CERTIFICATE_TYPE": "ACM_PCA_ISSUED",
    }


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@pytest.mark.parametrize(
    "key_factory",
    [
        lambda: ec.generate_private_key(ec.SECP256R1()),
        lambda: ec.generate_private_key(ec.SECP384R1()),
        lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
    ],
    ids=["ec-p256", "ec-p384", "rsa-2048"],
)
def test_pca_issued_leaf_validates(pca: Tuple[Any, str], key_factory: Any) -> None:
    secret = _issue(pca, key_factory())
    bundle = validate(json.dumps(secret), WWW, _now())
    assert bundle.cert_pem.decode() == secret["CERTIFICATE_PEM"].strip() + "\n"
    # The PCA root issued the leaf directly: it stays, because mod_ssl refuses an empty chain file.
    assert bundle.chain_pem.decode() == secret["CERTIFICATE_CHAIN_PEM"].strip() + "\n"
    assert bundle.leaf.names == ("www.example.com", "127.0.0.1")
    assert bundle.certificate_arn == secret["CERTIFICATE_ARN"]
    kept = validate(
        json.dumps(secret), BundlePolicy(server_name="127.0.0.1", include_root=True), _now()
    )
    assert kept.chain_pem.decode().strip() == secret["CERTIFICATE_CHAIN_PEM"].strip()


def test_pca_issued_leaf_with_another_key_is_rejected(pca: Tuple[Any, str]) -> None:
    secret = _issue(pca, ec.generate_private_key(ec.SECP256R1()))
    other = ec.generate_private_key(ec.SECP256R1())
    secret["PRIVATE_KEY_PEM"] = other.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    with pytest.raises(BundleError, match="PRIVATE_KEY_PEM does not match CERTIFICATE_PEM"):
        validate(json.dumps(secret), WWW, _now())
