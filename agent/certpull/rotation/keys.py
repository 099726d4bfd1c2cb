"""Pure: leaf private keys — generate one per ``KeySpec``, serialise as unencrypted PKCS#8, and tell
whether a stored key may be reused. Key bytes never reach a message or a repr from here."""

from __future__ import annotations

from typing import Callable, Dict, Optional, Union

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from certpull.rotation.settings import KeySpec

PrivateKey = Union[rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey]

_CURVES: Dict[str, Callable[[], ec.EllipticCurve]] = {
    "secp256r1": ec.SECP256R1,
    "secp384r1": ec.SECP384R1,
    "secp521r1": ec.SECP521R1,
}


def generate_private_key(spec: KeySpec) -> PrivateKey:
    """A fresh key: RSA with exponent 65537, or EC on the named curve."""
    if spec.algorithm == "RSA":
        return rsa.generate_private_key(public_exponent=65537, key_size=spec.rsa_bits)
    return ec.generate_private_key(_CURVES[spec.curve]())


def private_key_pem(key: PrivateKey) -> str:
    """Unencrypted PKCS#8 PEM, the form the secret's PRIVATE_KEY_PEM holds."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")


def reusable_key(pem: object, spec: KeySpec) -> Optional[PrivateKey]:
    """The stored key if it parses and is what ``spec`` asks for; otherwise None (make a new one)."""
    if not isinstance(pem, str) or not pem.strip():
        return None
    key = _load(pem)
    if isinstance(key, rsa.RSAPrivateKey) and spec.algorithm == "RSA":
        return key if key.key_size == spec.rsa_bits else None
    if isinstance(key, ec.EllipticCurvePrivateKey) and spec.algorithm == "EC":
        return key if key.curve.name == spec.curve else None
    return None


def _load(pem: str) -> object:
    try:
        return serialization.load_pem_private_key(pem.encode("ascii"), password=None)
    except (ValueError, TypeError, UnicodeEncodeError):
        return None
