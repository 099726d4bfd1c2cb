"""Minimal PEM handling for the light paths (status, verify) that must not import cryptography."""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Optional

_BEGIN = "-----BEGIN CERTIFICATE-----"
_END = "-----END CERTIFICATE-----"


def first_cert_der(cert_pem: bytes) -> Optional[bytes]:
    """The DER of the first certificate in a PEM text, or None if there is none."""
    text = cert_pem.decode("ascii", "replace")
    if _BEGIN not in text:
        return None
    rest = text.split(_BEGIN, 1)[1]
    if _END not in rest:
        return None
    body = rest.split(_END, 1)[0]
    try:
        return base64.b64decode("".join(body.split()), validate=True)
    except (binascii.Error, ValueError):
        return None


def cert_fingerprint(cert_pem: bytes) -> Optional[str]:
    """Lowercase hex SHA-256 of the first certificate's DER (same as LeafInfo.fingerprint_sha256)."""
    der = first_cert_der(cert_pem)
    return hashlib.sha256(der).hexdigest() if der is not None else None
