"""certpull's rotation settings against the AWS sample's settings table (tests/sample_lambda.py).

Every combination the sample allows for ACM_PCA_ISSUED is read unchanged: KEY_ALGORITHM TYPE_RSA
with KEY_SIZE 2048 / 4096, TYPE_EC with EC_CURVE SECP256R1 / SECP384R1 / SECP521R1 (and the
KEY_SIZE the sample required but ignored for EC), each with SIGNING_ALGORITHM RSA / ECDSA and
SIGNING_HASH sha256 / sha384 / sha512. SIGNING_ALGORITHM is the CA's signature family, so it is
independent of the leaf's key type and must match the CA's key; what the sample could store but
ACM PCA refuses is refused here with a message naming the key.
"""

from __future__ import annotations

from typing import Dict

import pytest

from certpull.errors import ConfigError
from certpull.rotation.settings import KeySpec, PcaSettings, ca_signing_algorithm, parse_settings
from tests.sample_lambda import sample_settings

CA = "arn:aws:acm-pca:us-east-1:123456789012:certificate-authority/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"

KEYS = {  # the sample's key settings -> the key certpull generates
    "rsa-2048": ({"key_algorithm": "TYPE_RSA", "key_size": 2048}, KeySpec("RSA", rsa_bits=2048)),
    "rsa-4096": ({"key_algorithm": "TYPE_RSA", "key_size": "4096"}, KeySpec("RSA", rsa_bits=4096)),
    "ec-p256": (
        {"key_algorithm": "TYPE_EC", "key_size": 256, "ec_curve": "SECP256R1"},
        KeySpec("EC", curve="secp256r1"),
    ),
    "ec-p384": (
        {"key_algorithm": "TYPE_EC", "key_size": 2048, "ec_curve": "SECP384R1"},  # KEY_SIZE ignored
        KeySpec("EC", curve="secp384r1"),
    ),
    "ec-p521": (
        {"key_algorithm": "TYPE_EC", "key_size": 521, "ec_curve": "SECP521R1"},
        KeySpec("EC", curve="secp521r1"),
    ),
}
CA_KEYS = {"RSA": "RSA_2048", "ECDSA": "EC_prime256v1"}  # a CA key of each signature family
OTHER = {"RSA": "ECDSA", "ECDSA": "RSA"}


@pytest.mark.parametrize("signing_hash", ["sha256", "sha384", "sha512"])
@pytest.mark.parametrize("family", ["RSA", "ECDSA"])
@pytest.mark.parametrize("key", sorted(KEYS))
def test_every_combination_the_sample_allows(key: str, family: str, signing_hash: str) -> None:
    key_settings, spec = KEYS[key]
    doc = sample_settings(CA, signing_algorithm=family, signing_hash=signing_hash, **key_settings)
    settings = parse_settings(doc)
    assert isinstance(settings, PcaSettings)
    assert settings.key == spec
    assert settings.csr_hash == settings.ca_hash == signing_hash.upper()  # both, as the sample
    assert settings.ca_signature_family == family
    assert settings.subject_alternative_names == ()
    assert ca_signing_algorithm(settings, CA_KEYS[family]) == f"{signing_hash.upper()}WITH{family}"
    with pytest.raises(ConfigError) as caught:  # ACM PCA signs with the CA's key
        ca_signing_algorithm(settings, CA_KEYS[OTHER[family]])
    assert str(caught.value) == (
        f"SIGNING_ALGORITHM: {signing_hash.upper()}WITH{family} cannot be used with a CA whose "
        f"key is {CA_KEYS[OTHER[family]]}; use {signing_hash.upper()}WITH{OTHER[family]}"
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"key_algorithm": "TYPE_DSA"},
            "KEY_ALGORITHM: TYPE_DSA is not supported by ACM Private CA",
        ),
        (
            {"key_algorithm": "TYPE_ED25519"},
            "KEY_ALGORITHM: TYPE_ED25519 is not supported by ACM Private CA",
        ),
        ({"key_algorithm": "TYPE_ED448"}, "KEY_ALGORITHM: TYPE_ED448 is not supported by ACM"),
        ({"key_size": 1024}, "KEY_SIZE: 1024 is not supported for TYPE_RSA; use one of 2048"),
        ({"key_size": 8192}, "KEY_SIZE: 8192 is not supported for TYPE_RSA"),
        (
            {"key_algorithm": "TYPE_EC", "ec_curve": "SECP256K1"},
            "EC_CURVE: 'SECP256K1' is not supported by ACM Private CA",
        ),
        (
            {"key_algorithm": "TYPE_EC", "ec_curve": "BrainpoolP256R1"},
            "EC_CURVE: 'BrainpoolP256R1' is not supported",
        ),
        ({"signing_algorithm": "DSA"}, "SIGNING_ALGORITHM: DSA is not supported; use RSA or ECDSA"),
        ({"signing_hash": "sha1"}, "SIGNING_HASH: 'sha1' is not supported"),
        ({"signing_hash": "md5"}, "SIGNING_HASH: 'md5' is not supported"),
        ({"SIGNING_HASH": None}, "SIGNING_HASH: is missing from the secret's JSON"),
        ({"KEY_SIZE": None}, "KEY_SIZE: is missing from the secret's JSON (TYPE_RSA needs it)"),
    ],
)
def test_what_the_sample_could_store_but_acm_pca_refuses(
    overrides: Dict[str, object], message: str
) -> None:
    args = {k: v for k, v in overrides.items() if k.islower()}
    doc = sample_settings(CA, **args)  # type: ignore[arg-type]
    for key, value in overrides.items():
        if key.isupper() and value is None:
            del doc[key]
    with pytest.raises(ConfigError) as caught:
        parse_settings(doc)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_sample_spellings_the_sample_itself_mishandled_are_read_as_meant() -> None:
    """The sample turned 'SHA256' (upper case) and a string VALIDITY into a failed, swallowed
    IssueCertificate; certpull reads them as what they say."""
    settings = parse_settings(sample_settings(CA, signing_hash="SHA256", validity="90"))  # type: ignore[arg-type]
    assert isinstance(settings, PcaSettings)
    assert (settings.csr_hash, settings.validity_days) == ("SHA256", 90)
