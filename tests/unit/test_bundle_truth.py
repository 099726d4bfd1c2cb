"""Validation completed (issue 12, item 4): every accepted key type pairs with its certificate in
OpenSSL (RSA-PSS is refused before disk: written as PKCS#8 rsaEncryption it no longer pairs),
messages name the real reason (SHA-1, duplicates), `Bag Attributes` preambles are accepted, a
chain that expires before its leaf is a warning, and a notBefore in the future is its own error
(the agent makes it pending, not a failure)."""

from __future__ import annotations

import datetime as dt
import json
import re
import ssl
from pathlib import Path
from typing import Dict, Optional

import pytest

from certpull.bundle import validate
from certpull.bundle_data import NotYetValid
from certpull.errors import BundleError
from tests.bad_secrets import DEFAULT_POLICY
from tests.pki import ACCEPTED_KEYS, Pki, make_ca, make_leaf, now, openssl_leaf, pkcs12_text

PKI = Pki()
NOW = now()


def refused(doc: Dict[str, object], at: Optional[dt.datetime] = None) -> str:
    with pytest.raises(BundleError) as caught:
        validate(json.dumps(doc), DEFAULT_POLICY, at or NOW)
    return str(caught.value)


def soon() -> dt.datetime:
    """A moment every openssl-made certificate is valid at (openssl starts them now)."""
    return now() + dt.timedelta(minutes=1)


def pairs_in_openssl(cert_pem: bytes, key_pem: bytes, tmp_path: Path) -> bool:
    (tmp_path / "c.pem").write_bytes(cert_pem)
    (tmp_path / "k.pem").write_bytes(key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(str(tmp_path / "c.pem"), str(tmp_path / "k.pem"))
    except ssl.SSLError:
        return False
    return True


@pytest.mark.parametrize(
    ("kind", "size", "fmt"),
    ACCEPTED_KEYS,
)
def test_every_accepted_key_is_written_in_a_form_openssl_pairs_with_its_leaf(
    tmp_path: Path, kind: str, size: int, fmt: str
) -> None:
    leaf = PKI.leaf(key_kind=kind, key_size=size, slot=40)
    bundle = validate(
        PKI.secret_string(leaf, PRIVATE_KEY_PEM=leaf.key_pem(fmt)), DEFAULT_POLICY, NOW
    )
    assert pairs_in_openssl(bundle.cert_pem, bundle.key_pem, tmp_path)


def test_an_rsa_pss_leaf_is_refused_before_anything_is_written(
    tmp_path: Path, real_subprocess: None
) -> None:
    cert, key = openssl_leaf(PKI.intermediate, tmp_path / "pss", algorithm="RSA-PSS")
    assert pairs_in_openssl(cert.encode(), key.encode(), tmp_path)  # as issued, it pairs
    message = refused(PKI.secret(None, CERTIFICATE_PEM=cert, PRIVATE_KEY_PEM=key), soon())
    assert "RSA-PSS" in message and "CERTIFICATE_PEM" in message


def test_ed25519_is_refused_by_name() -> None:
    leaf = PKI.leaf(key_kind="ed25519", slot=41)
    assert "unsupported Ed25519 key" in refused(PKI.secret(leaf))


def test_a_sha1_signature_is_named_as_such(tmp_path: Path, real_subprocess: None) -> None:
    cert, key = openssl_leaf(PKI.intermediate, tmp_path / "sha1", digest="sha1")
    message = refused(PKI.secret(None, CERTIFICATE_PEM=cert, PRIVATE_KEY_PEM=key), soon())
    assert "SHA-1" in message and "does not verify with the key" not in message


@pytest.mark.parametrize(
    ("chain", "twice"),
    [
        ("II", "certpull test intermediate"),
        ("IIR", "certpull test intermediate"),
        ("IRR", "certpull test root"),
    ],
)
def test_a_duplicate_in_the_chain_is_named_as_such(chain: str, twice: str) -> None:
    pems = {"I": PKI.intermediate.pem, "R": PKI.root.pem}
    message = refused(PKI.secret(None, CERTIFICATE_CHAIN_PEM="".join(pems[c] for c in chain)))
    assert f"'CN={twice}' twice" in message, message
    assert "missing intermediate" not in message and "wrong order" not in message


def test_bag_attributes_preambles_are_accepted(tmp_path: Path, real_subprocess: None) -> None:
    leaf = PKI.leaf(slot=42)
    text = pkcs12_text(leaf.pem, leaf.key_pem(), PKI.chain_pem(include_root=True), tmp_path)
    assert text.count("Bag Attributes") >= 3
    parts = re.findall(r".*?-----END [A-Z ]+-----\n", text, re.DOTALL)
    key = next(p for p in parts if "PRIVATE KEY" in p)
    certs = [p for p in parts if "CERTIFICATE" in p]
    mine = next(p for p in certs if "localKeyID" in p)
    chain = "".join(p for p in certs if p is not mine)
    bundle = validate(
        PKI.secret_string(
            None, CERTIFICATE_PEM=mine, CERTIFICATE_CHAIN_PEM=chain, PRIVATE_KEY_PEM=key
        ),
        DEFAULT_POLICY,
        NOW,
    )
    assert bundle.cert_pem.decode() == leaf.pem and b"Bag Attributes" not in bundle.fullchain_pem
    garbage = "Bag Attributes\nthis is not a preamble line\n" + leaf.pem
    assert "has text before its first PEM block" in refused(
        PKI.secret(leaf, CERTIFICATE_PEM=garbage)
    )


def test_a_chain_that_expires_before_its_leaf_is_installable_with_a_warning() -> None:
    short = make_ca("short-lived intermediate", issuer=PKI.root, slot=8, days=30)
    leaf = make_leaf(short, slot=43, days=90)
    bundle = validate(
        PKI.secret_string(leaf, CERTIFICATE_CHAIN_PEM=short.pem + PKI.root.pem), DEFAULT_POLICY, NOW
    )
    assert bundle.chain_expiring == "CN=short-lived intermediate"
    assert bundle.chain_not_after is not None and bundle.chain_not_after < bundle.leaf.not_after
    (warning,) = bundle.warnings
    assert "CN=short-lived intermediate" in warning and "before the certificate" in warning


def test_a_not_before_in_the_future_is_its_own_error_with_the_time() -> None:
    start = NOW + dt.timedelta(minutes=3)
    leaf = PKI.leaf(slot=44, not_before=start)
    with pytest.raises(NotYetValid) as caught:
        validate(PKI.secret_string(leaf), DEFAULT_POLICY, NOW)
    assert caught.value.not_before == start
    assert "is not valid until" in str(caught.value)
