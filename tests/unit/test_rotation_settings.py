"""Pure parts of the rotation function: settings parsing, key generation and reuse, the CSR."""

from __future__ import annotations

import ipaddress
from typing import Dict

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from certpull.errors import ConfigError
from certpull.rotation.csr import build_csr
from certpull.rotation.keys import generate_private_key, private_key_pem, reusable_key
from certpull.rotation.settings import (
    AcmSettings,
    KeySpec,
    PcaSettings,
    ca_signing_algorithm,
    certificate_names,
    parse_settings,
)

CA = "arn:aws:acm-pca:us-east-1:123456789012:certificate-authority/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
END_ENTITY = "arn:aws:acm-pca:::template/EndEntityCertificate/V1"

# The documented example secret of the original function, unchanged.
ORIGINAL_PCA = {
    "CA_ARN": CA,
    "COMMON_NAME": "www.example.com",
    "TEMPLATE_ARN": END_ENTITY,
    "KEY_ALGORITHM": "TYPE_RSA",
    "KEY_SIZE": 2048,
    "SIGNING_HASH": "sha256",
    "SIGNING_ALGORITHM": "SHA256WITHRSA",
    "CERTIFICATE_TYPE": "ACM_PCA_ISSUED",
}
ORIGINAL_ACM = {
    "CA_ARN": CA,
    "COMMON_NAME": "www.example.com",
    "ENVIRONMENT": "TEST",
    "CERTIFICATE_TYPE": "ACM_ISSUED",
}


def pca(**overrides: object) -> Dict[str, object]:
    doc: Dict[str, object] = dict(ORIGINAL_PCA)
    doc.update(overrides)
    return {k: v for k, v in doc.items() if v is not None}


def test_original_pca_secret_keeps_working() -> None:
    settings = parse_settings(ORIGINAL_PCA)
    assert settings == PcaSettings(
        ca_arn=CA,
        common_name="www.example.com",
        template_arn=END_ENTITY,
        key=KeySpec("RSA", rsa_bits=2048),
        csr_hash="SHA256",
        ca_hash="SHA256",
        ca_signature_family="RSA",
    )


def test_original_acm_secret_keeps_working() -> None:
    settings = parse_settings(ORIGINAL_ACM)
    assert settings == AcmSettings(ca_arn=CA, common_name="www.example.com", environment="TEST")
    assert isinstance(settings, AcmSettings)
    assert settings.renew_every_rotation
    assert not AcmSettings(CA, "www.example.com", "PROD").renew_every_rotation


@pytest.mark.parametrize(
    ("overrides", "field", "expected"),
    [
        ({"KEY_SIZE": "3072"}, "key", KeySpec("RSA", rsa_bits=3072)),  # numbers as strings
        ({"KEY_ALGORITHM": "RSA"}, "key", KeySpec("RSA", rsa_bits=2048)),  # later sample's name
        ({"KEY_ALGORITHM": "TYPE_EC", "KEY_SIZE": 384}, "key", KeySpec("EC", curve="secp384r1")),
        (
            {"KEY_ALGORITHM": "EC", "KEY_SIZE": None, "EC_CURVE": "SECP256R1"},
            "key",
            KeySpec("EC", curve="secp256r1"),
        ),
        (
            {"KEY_ALGORITHM": "TYPE_EC", "KEY_SIZE": 521, "EC_CURVE": "P-521"},
            "key",
            KeySpec("EC", curve="secp521r1"),
        ),
        (  # EC_CURVE decides; KEY_SIZE (the sample required it for every key) is ignored
            {"KEY_ALGORITHM": "TYPE_EC", "KEY_SIZE": 2048, "EC_CURVE": "SECP384R1"},
            "key",
            KeySpec("EC", curve="secp384r1"),
        ),
        ({"SIGNING_ALGORITHM": "sha384"}, "ca_signature_family", None),  # bare hash: follow the CA
        ({"SIGNING_ALGORITHM": "sha384", "SIGNING_HASH": None}, "csr_hash", "SHA384"),
        ({"SIGNING_HASH": "SHA-512"}, "csr_hash", "SHA512"),
        ({}, "validity_days", 365),
        ({"VALIDITY_DAYS": 90}, "validity_days", 90),
        ({"VALIDITY": "30"}, "validity_days", 30),  # the original's optional name
        ({"REUSE_KEY": "true"}, "reuse_key", True),
        (
            {"SUBJECT_ALTERNATIVE_NAMES": "api.example.com, 10.0.0.1,www.example.com"},
            "subject_alternative_names",
            ("api.example.com", "10.0.0.1"),
        ),
        (
            {"SUBJECT_ALTERNATIVE_NAMES": ["*.Example.com", "::1"]},
            "subject_alternative_names",
            ("*.example.com", "::1"),
        ),
    ],
)
def test_accepted_values(overrides: Dict[str, object], field: str, expected: object) -> None:
    assert getattr(parse_settings(pca(**overrides)), field) == expected


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"CERTIFICATE_TYPE": None}, "CERTIFICATE_TYPE: is missing"),
        ({"CERTIFICATE_TYPE": "IMPORTED"}, "CERTIFICATE_TYPE: 'IMPORTED' is not supported"),
        (
            {"CA_ARN": "arn:aws:acm:us-east-1:123456789012:certificate/x"},
            "CA_ARN: is not an ACM Private CA ARN",
        ),
        ({"COMMON_NAME": ""}, "COMMON_NAME: must be a non-empty string"),
        ({"COMMON_NAME": "x" * 65 + ".com"}, "COMMON_NAME: is longer than 64"),
        (
            {"COMMON_NAME": "bad name.example.com"},
            "COMMON_NAME: 'bad name.example.com' is not a DNS name",
        ),
        (
            {"SUBJECT_ALTERNATIVE_NAMES": ["ok.example.com", "a*b.example.com"]},
            "SUBJECT_ALTERNATIVE_NAMES: 'a*b.example.com'",
        ),
        ({"SUBJECT_ALTERNATIVE_NAMES": 5}, "SUBJECT_ALTERNATIVE_NAMES: must be a list"),
        ({"TEMPLATE_ARN": None}, "TEMPLATE_ARN: is missing"),
        (
            {"TEMPLATE_ARN": "arn:aws:acm-pca:::template/RootCACertificate/V1"},
            "TEMPLATE_ARN: RootCACertificate issues CA certificates",
        ),
        (
            {"KEY_ALGORITHM": "TYPE_DSA"},
            "KEY_ALGORITHM: TYPE_DSA is not supported by ACM Private CA",
        ),
        ({"KEY_ALGORITHM": "ED25519"}, "KEY_ALGORITHM: ED25519 is not supported by ACM Private CA"),
        ({"KEY_ALGORITHM": "TYPE_XYZ"}, "KEY_ALGORITHM: TYPE_XYZ is not a key algorithm"),
        ({"KEY_SIZE": 1024}, "KEY_SIZE: 1024 is not supported for TYPE_RSA"),
        ({"KEY_SIZE": None}, "KEY_SIZE: is missing"),
        ({"KEY_SIZE": True}, "KEY_SIZE: must be a whole number"),
        (
            {"KEY_ALGORITHM": "TYPE_EC", "KEY_SIZE": 2048},
            "KEY_SIZE: 2048 is not supported for TYPE_EC",
        ),
        ({"KEY_ALGORITHM": "TYPE_EC", "KEY_SIZE": None}, "KEY_SIZE: TYPE_EC needs EC_CURVE"),
        (
            {"KEY_ALGORITHM": "TYPE_EC", "EC_CURVE": "secp256k1"},
            "EC_CURVE: 'secp256k1' is not supported",
        ),
        ({"SIGNING_ALGORITHM": "SHA1WITHRSA"}, "SIGNING_ALGORITHM: SHA1WITHRSA is not supported"),
        ({"SIGNING_ALGORITHM": None}, "SIGNING_ALGORITHM: is missing"),
        ({"SIGNING_HASH": "md5"}, "SIGNING_HASH: 'md5' is not supported"),
        ({"VALIDITY_DAYS": 0}, "VALIDITY_DAYS: 0 is out of range"),
        ({"VALIDITY_DAYS": "soon"}, "VALIDITY_DAYS: must be a whole number"),
        ({"REUSE_KEY": "yes"}, "REUSE_KEY: must be true or false"),
    ],
)
def test_rejected_values_name_the_key(overrides: Dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings(pca(**overrides))
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_acm_needs_environment() -> None:
    with pytest.raises(ConfigError, match=r"^ENVIRONMENT: is missing"):
        parse_settings({k: v for k, v in ORIGINAL_ACM.items() if k != "ENVIRONMENT"})


@pytest.mark.parametrize(
    ("signing", "ca_key", "expected"),
    [
        ("SHA256WITHRSA", "RSA_2048", "SHA256WITHRSA"),
        ("SHA384WITHECDSA", "EC_prime256v1", "SHA384WITHECDSA"),
        ("sha512", "EC_secp384r1", "SHA512WITHECDSA"),
        ("sha256", "RSA_4096", "SHA256WITHRSA"),
        (
            "SHA256WITHECDSA",
            "RSA_2048",
            "SIGNING_ALGORITHM: SHA256WITHECDSA cannot be used with a CA whose key is RSA_2048",
        ),
        ("SHA256WITHRSA", "EC_prime256v1", "SIGNING_ALGORITHM: SHA256WITHRSA cannot be used"),
        ("SHA256WITHRSA", "SM2", "CA_ARN: the CA's key algorithm SM2 is not supported"),
    ],
)
def test_signing_algorithm_follows_the_ca_key(signing: str, ca_key: str, expected: str) -> None:
    settings = parse_settings(pca(SIGNING_ALGORITHM=signing))
    assert isinstance(settings, PcaSettings)
    if "WITH" in expected and ":" not in expected:
        assert ca_signing_algorithm(settings, ca_key) == expected
    else:
        with pytest.raises(ConfigError) as caught:
            ca_signing_algorithm(settings, ca_key)
        assert str(caught.value).startswith(expected)


@pytest.mark.parametrize(
    ("spec", "kind", "size"),
    [
        (KeySpec("RSA", rsa_bits=2048), rsa.RSAPrivateKey, 2048),
        (KeySpec("EC", curve="secp256r1"), ec.EllipticCurvePrivateKey, 256),
        (KeySpec("EC", curve="secp384r1"), ec.EllipticCurvePrivateKey, 384),
    ],
)
def test_generated_keys_and_reuse(spec: KeySpec, kind: type, size: int) -> None:
    key = generate_private_key(spec)
    assert isinstance(key, kind)
    assert key.key_size == size
    pem = private_key_pem(key)
    assert pem.startswith("-----BEGIN PRIVATE KEY-----\n")
    again = reusable_key(pem, spec)
    assert again is not None
    assert private_key_pem(again) == pem
    other = (
        KeySpec("EC", curve="secp521r1")
        if spec.algorithm == "RSA"
        else KeySpec("RSA", rsa_bits=2048)
    )
    assert reusable_key(pem, other) is None  # settings changed: make a new key
    assert reusable_key("not a key", spec) is None
    assert reusable_key(None, spec) is None


def test_csr_carries_cn_and_every_name_in_the_san() -> None:
    settings = parse_settings(pca(SUBJECT_ALTERNATIVE_NAMES=["api.example.com", "192.0.2.7"]))
    key = generate_private_key(KeySpec("EC", curve="secp256r1"))
    csr = x509.load_pem_x509_csr(
        build_csr(key, settings.common_name, certificate_names(settings), "SHA384")
    )
    assert csr.is_signature_valid
    assert csr.subject.rfc4514_string() == "CN=www.example.com"
    assert csr.signature_hash_algorithm is not None
    assert csr.signature_hash_algorithm.name == "sha384"
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["www.example.com", "api.example.com"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("192.0.2.7")]
