"""certpull.bundle: every rejection with its reason, every accepted encoding, canonical output."""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import List

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from certpull.bundle import leaf_info, validate
from certpull.bundle_data import CertBundle
from certpull.bundle_names import certificate_covers, covers
from certpull.config import BundlePolicy
from certpull.errors import BundleError
from certpull.layout import KEY_FILE
from tests.bad_secrets import (
    DEFAULT_POLICY,
    BadCase,
    ValidCase,
    bad_secret_cases,
    custom_leaf,
    valid_secret_cases,
)
from tests.pki import Pki, make_leaf, now

UTC = dt.timezone.utc

# Built once at collection: parametrize needs the ids, and RSA key generation dominates otherwise.
PKI = Pki()
BAD_CASES = bad_secret_cases(PKI)
VALID_CASES = valid_secret_cases(PKI)


def _key_bodies(text: str, public: str = "") -> List[str]:
    """Base64 lines of every private key block in ``text``: what must never leak.

    An EC key's last line can be all public point, which the certificate legitimately holds at
    the same base64 alignment; lines found in the certificates' base64 are therefore not secret.
    """
    text = text.replace("\\r", "\r").replace("\\n", "\n") + public
    certs = "".join(
        "".join(m.group(1).split())
        for m in re.finditer(r"-----BEGIN CERTIFICATE-----(.*?)-----END", text, re.S)
    )
    lines: List[str] = []
    for match in re.finditer(r"-----BEGIN [A-Z ]*PRIVATE KEY-----(.*?)-----END", text, re.S):
        lines += [ln.strip() for ln in match.group(1).split("\n")]
    return [ln for ln in lines if len(ln) >= 16 and ":" not in ln and ln not in certs]


def test_the_bad_table_is_big_and_distinct() -> None:
    assert len(BAD_CASES) >= 30
    assert len({c.id for c in BAD_CASES}) == len(BAD_CASES)


@pytest.mark.parametrize("case", BAD_CASES, ids=[c.id for c in BAD_CASES])
def test_rejects_bad_secret(case: BadCase) -> None:
    with pytest.raises(BundleError) as caught:
        validate(case.secret_string, case.policy, now(), case.installed_not_after)
    message = str(caught.value)
    assert case.message in message
    assert "\n" not in message
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__ or caught.value.__context__ is None
    for line in _key_bodies(case.secret_string):
        assert line not in message
        assert line not in repr(caught.value)


@pytest.mark.parametrize("case", VALID_CASES, ids=[c.id for c in VALID_CASES])
def test_accepts_valid_secret(case: ValidCase) -> None:
    bundle = validate(case.secret_string, case.policy, now(), case.installed_not_after)
    leaf_pem = case.leaf.cert.public_bytes(serialization.Encoding.PEM)
    assert bundle.cert_pem == leaf_pem
    assert bundle.leaf.key_type == case.key_type
    chain = x509.load_pem_x509_certificates(bundle.chain_pem) if bundle.chain_pem else []
    assert len(chain) == case.chain_len
    assert bundle.fullchain_pem == bundle.cert_pem + bundle.chain_pem
    key = serialization.load_pem_private_key(bundle.key_pem, password=None)
    assert _spki(key.public_key()) == _spki(case.leaf.cert.public_key())


def _spki(public_key: object) -> bytes:
    return public_key.public_bytes(  # type: ignore[attr-defined,no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_files_are_canonical_pem() -> None:
    leaf = PKI.leaf()
    secret = PKI.secret(
        leaf,
        CERTIFICATE_PEM=leaf.pem.replace("\n", "\r\n"),
        CERTIFICATE_CHAIN_PEM=PKI.chain_pem(include_root=True),
        PRIVATE_KEY_PEM=leaf.key_pem("sec1"),
    )
    bundle = validate(json.dumps(secret), DEFAULT_POLICY, now())
    files = bundle.files()
    assert tuple(files) == ("cert.pem", "chain.pem", "fullchain.pem", "privkey.pem")
    assert files[KEY_FILE] == bundle.key_pem
    assert files["fullchain.pem"] == files["cert.pem"] + files["chain.pem"]
    assert files["chain.pem"] == PKI.intermediate.pem.encode()  # root dropped
    assert bundle.key_pem.startswith(b"-----BEGIN PRIVATE KEY-----\n")  # PKCS#8, unencrypted
    for content in files.values():
        assert b"\r" not in content
        assert content.endswith(b"-----\n")
    assert bundle.certificate_arn == secret["CERTIFICATE_ARN"]


def test_include_root_keeps_root_last() -> None:
    secret = PKI.secret_string(CERTIFICATE_CHAIN_PEM=PKI.chain_pem(include_root=True))
    bundle = validate(secret, BundlePolicy(server_name="www.example.com", include_root=True), now())
    assert bundle.chain_pem == (PKI.intermediate.pem + PKI.root.pem).encode()


def test_leaf_info_fields() -> None:
    leaf = PKI.leaf(key_kind="rsa", key_size=2048)
    bundle = validate(PKI.secret_string(leaf), DEFAULT_POLICY, now())
    info = bundle.leaf
    assert info.serial == format(leaf.cert.serial_number, "x")
    assert info.fingerprint_sha256 == leaf.cert.fingerprint(hashes.SHA256()).hex()
    assert re.fullmatch(r"[0-9a-f]{64}", info.fingerprint_sha256)
    assert info.subject == "CN=www.example.com"
    assert info.issuer == "CN=certpull test intermediate"
    assert info.names == ("www.example.com", "127.0.0.1")
    assert info.not_before == leaf.cert.not_valid_before_utc
    assert info.not_after == leaf.cert.not_valid_after_utc
    assert info.not_after.tzinfo is not None
    assert info.key_type == "RSA-2048"
    assert leaf_info(bundle.cert_pem) == info
    assert leaf_info(bundle.fullchain_pem) == info  # the first certificate is the leaf


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "cert.pem holds no PEM data"),
        (b"\xff\xfe", "cert.pem is not ASCII PEM text"),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "cannot be parsed"),
        (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "holds no certificate"),
    ],
    ids=["empty", "binary", "bad-der", "no-certificate"],
)
def test_leaf_info_rejects_unparsable(content: bytes, message: str) -> None:
    with pytest.raises(BundleError, match=re.escape(message)):
        leaf_info(content)


def test_repr_and_str_hide_the_key() -> None:
    leaf = PKI.leaf()
    bundle = validate(PKI.secret_string(leaf), DEFAULT_POLICY, now())
    bodies = _key_bodies(bundle.key_pem.decode() + leaf.key_pem(), public=leaf.pem)
    assert bodies
    for text in (repr(bundle), str(bundle), repr(bundle.leaf)):
        assert "PRIVATE KEY" not in text
        for line in bodies:
            assert line not in text


def test_error_messages_never_carry_the_key_of_the_secret() -> None:
    """Every rejection of a secret whose key is well-formed, scanned for every key body line."""
    checked = 0
    for case in BAD_CASES:
        bodies = _key_bodies(case.secret_string)
        try:
            validate(case.secret_string, case.policy, now(), case.installed_not_after)
        except BundleError as exc:
            text = f"{exc} {exc!r} {exc.args}"
            assert not [line for line in bodies if line in text], case.id
            checked += bool(bodies)
    assert checked >= 25


def test_downgrade_refused_then_allowed() -> None:
    installed = now() + dt.timedelta(days=200)
    secret = PKI.secret_string(PKI.leaf(days=90))
    with pytest.raises(BundleError) as caught:
        validate(secret, DEFAULT_POLICY, now(), installed_not_after=installed)
    assert installed.strftime("%Y-%m-%dT%H:%M:%SZ") in str(caught.value)  # names both dates
    assert "allow_downgrade" in str(caught.value)
    allowed = BundlePolicy(server_name="www.example.com", allow_downgrade=True)
    assert validate(secret, allowed, now(), installed_not_after=installed).cert_pem


@pytest.mark.parametrize(
    ("offset", "accepted"),
    [
        (dt.timedelta(0), True),
        (dt.timedelta(seconds=-1), False),
        (dt.timedelta(days=30), True),
        (dt.timedelta(days=30, seconds=1), False),
    ],
    ids=["at-not-before", "just-before", "at-not-after", "just-after"],
)
def test_validity_bounds_are_inclusive(offset: dt.timedelta, accepted: bool) -> None:
    start = now() - dt.timedelta(days=1)
    leaf = PKI.leaf(not_before=start, days=30)
    secret = PKI.secret_string(leaf)
    if accepted:
        assert validate(secret, DEFAULT_POLICY, start + offset).leaf.not_before == start
    else:
        with pytest.raises(BundleError):
            validate(secret, DEFAULT_POLICY, start + offset)


@pytest.mark.parametrize(
    "value",
    [b'{"CERTIFICATE_PEM": ""}', None, 42],
    ids=["bytes", "none", "int"],
)
def test_rejects_a_secret_that_is_not_text(value: object) -> None:
    with pytest.raises(BundleError, match=r"SecretString|SecretBinary"):
        validate(value, DEFAULT_POLICY, now())  # type: ignore[arg-type]


def test_naive_now_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        validate(PKI.secret_string(), DEFAULT_POLICY, dt.datetime.now())


def test_secret_of_exactly_the_limit_is_accepted() -> None:
    base = PKI.secret_string()
    limit = len(base.encode())
    assert validate(
        base, BundlePolicy(server_name="www.example.com", max_secret_bytes=limit), now()
    )
    with pytest.raises(BundleError, match="more than the"):
        validate(
            base, BundlePolicy(server_name="www.example.com", max_secret_bytes=limit - 1), now()
        )


@pytest.mark.parametrize(
    ("names", "server_name", "expected"),
    [
        (("www.example.com",), "www.example.com", True),
        (("WWW.EXAMPLE.COM",), "www.example.com", True),
        (("www.example.com",), "www.example.com.", True),
        (("www.example.com",), "example.com", False),
        (("*.example.com",), "www.example.com", True),
        (("*.example.com",), "a.b.example.com", False),
        (("*.example.com",), "example.com", False),
        (("*.com",), "example.com", False),
        (("w*.example.com",), "www.example.com", False),
        (("*.*.example.com",), "a.b.example.com", False),
        (("www.example.com",), "*.example.com", False),
        (("127.0.0.1",), "127.0.0.1", True),
        (("127.0.0.1",), "127.0.0.2", False),
        (("::1",), "[::1]", True),
        (("::1",), "0:0:0:0:0:0:0:1", True),
        (("www.example.com",), "127.0.0.1", False),
        (("xn--bcher-kva.example",), "bücher.example", True),
        ((), "www.example.com", False),
    ],
)
def test_covers(names: tuple, server_name: str, expected: bool) -> None:  # type: ignore[type-arg]
    assert covers(names, server_name) is expected


def test_certificate_covers_ignores_the_common_name_and_dns_names_for_ips() -> None:
    no_san = PKI.leaf(san=False, cn="www.example.com")
    assert not certificate_covers(no_san.cert, "www.example.com")
    dns_ip = custom_leaf(
        PKI.intermediate, PKI.leaf().key, names=("127.0.0.1",)
    )  # a DNSName "127.0.0.1"
    assert not certificate_covers(dns_ip.cert, "127.0.0.1")
    assert certificate_covers(PKI.leaf().cert, "127.0.0.1")


def test_unknown_fields_and_arn_types_are_ignored() -> None:
    doc = PKI.secret(CERTIFICATE_ARN=12, COMMON_NAME="www", KEY_SIZE=2048)
    assert validate(json.dumps(doc), DEFAULT_POLICY, now()).certificate_arn is None


def test_leaf_issued_by_root_keeps_the_root_so_chain_pem_is_never_empty() -> None:
    """mod_ssl refuses an empty SSLCertificateChainFile: found by the real-httpd variant test."""
    leaf = make_leaf(PKI.root)
    bundle = validate(
        PKI.secret_string(leaf, CERTIFICATE_CHAIN_PEM=PKI.root.pem), DEFAULT_POLICY, now()
    )
    assert bundle.chain_pem == PKI.root.pem.encode()
    assert bundle.fullchain_pem == bundle.cert_pem + bundle.chain_pem


def test_bundle_is_immutable() -> None:
    bundle = validate(PKI.secret_string(), DEFAULT_POLICY, now())
    with pytest.raises(AttributeError):
        bundle.key_pem = b""  # type: ignore[misc]
    assert isinstance(bundle, CertBundle)


# --- the AWS sample's CN-only leaves (issue 11) --------------------------------------------


@pytest.mark.parametrize(
    "server_name", [None, "www.example.com", "WWW.Example.com."], ids=["unset", "exact", "case-dot"]
)
def test_a_cn_only_leaf_is_installed_with_a_warning_when_its_cn_covers_the_server_name(
    server_name: object,
) -> None:
    leaf = PKI.leaf(san=False)  # what the sample's ACM PCA CSR gives: CN=www.example.com, no SAN
    bundle = validate(
        PKI.secret_string(leaf),
        BundlePolicy(server_name=server_name),
        now(),  # type: ignore[arg-type]
    )
    assert bundle.cert_pem == leaf.pem.encode()
    assert bundle.leaf.names == ()
    (warning,) = bundle.warnings
    assert warning.startswith("CERTIFICATE_PEM names www.example.com in its CN only")
    assert "Go, Chrome" in warning and "\n" not in warning


def test_a_cn_only_wildcard_covers_one_label() -> None:
    leaf = PKI.leaf(san=False, cn="*.example.com")
    assert validate(PKI.secret_string(leaf), BundlePolicy(server_name="www.example.com"), now())
    with pytest.raises(BundleError, match=r"does not cover a.b.example.com \(its CN is"):
        validate(PKI.secret_string(leaf), BundlePolicy(server_name="a.b.example.com"), now())
