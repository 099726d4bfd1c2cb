"""The plain data of a validated bundle: what the pass, the record and the X.509 worker pass
around. No cryptography here: the daemon holds these while its X.509 work runs in a worker
process (x509_worker.py), so that cryptography is never loaded in the long-lived process."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

from certpull.errors import BundleError
from certpull.layout import CERT_FILE, CHAIN_FILE, FULLCHAIN_FILE, KEY_FILE


@dataclass(frozen=True)
class LeafInfo:
    """What ``status`` and the state file show about a certificate."""

    serial: str  # lowercase hex, no separators
    fingerprint_sha256: str  # lowercase hex of the DER, no separators
    subject: str  # RFC 4514
    issuer: str
    names: Tuple[str, ...]  # SAN DNS names and IP addresses, in certificate order
    not_before: dt.datetime  # timezone-aware UTC
    not_after: dt.datetime
    key_type: str  # e.g. "RSA-2048", "EC-P256"


class NotYetValid(BundleError):
    """The leaf's notBefore is still ahead (clock skew, a certificate issued seconds ago): the
    agent keeps the version pending and installs it then; it is not a failure."""

    def __init__(self, message: str, leaf: LeafInfo) -> None:
        super().__init__(message)
        self.leaf = leaf
        self.not_before = leaf.not_before

    def __reduce__(self) -> Tuple[Any, ...]:
        """Pickled with its leaf: the X.509 worker returns it to the daemon."""
        return (NotYetValid, (str(self), self.leaf))


@dataclass(frozen=True)
class CertBundle:
    """A validated bundle in canonical PEM (LF line endings), ready to be written as four files."""

    cert_pem: bytes  # the leaf
    chain_pem: bytes  # intermediates (+ root only if include_root); b"" if none
    fullchain_pem: bytes  # leaf + chain
    key_pem: bytes = field(repr=False)  # unencrypted PKCS#8
    leaf: LeafInfo
    certificate_arn: Optional[str] = None
    # The chain certificate served with the leaf that expires first (None: no chain served).
    chain_not_after: Optional[dt.datetime] = None
    chain_expiring: str = ""
    warnings: Tuple[str, ...] = ()  # installable, but worth a line in the log and in status

    def files(self) -> Dict[str, bytes]:
        """The live directory's file names mapped to their content."""
        return {
            CERT_FILE: self.cert_pem,
            CHAIN_FILE: self.chain_pem,
            FULLCHAIN_FILE: self.fullchain_pem,
            KEY_FILE: self.key_pem,
        }


def utc_text(moment: dt.datetime) -> str:
    """A moment as messages and the record show it: ``2026-12-02T04:17:27Z``."""
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
