"""Pure validation core: a Secrets Manager SecretString -> a validated, canonical ``CertBundle``.

Nothing here touches the disk, the network or the clock (``now`` is passed in), so every check
runs before anything is written, and the whole module is unit-testable without I/O. httpd's own
config test does not notice a key that does not match its certificate, and a graceful reload with
one stops httpd: this module is where that, and every other "would break the site" case, is caught.

Steps 1-2 (JSON and PEM parsing) are bundle_parse.py's, step 4's names bundle_names.py's and steps
5-6 (the chain) bundle_chain.py's; the order of the steps and the rest are here. Error
messages are one line, name the configured JSON keys (``PRIVATE_KEY_PEM does not match
CERTIFICATE_PEM``) and never carry key material; exceptions from parsing are never chained.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Mapping, Optional, Tuple

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import PublicKeyAlgorithmOID

from certpull.bundle_chain import (
    MAX_DETAIL_CHARS,
    check_chain_shape,
    check_duplicates,
    check_signature_hashes,
    dn,
    is_self_signed,
    verify_path,
)
from certpull.bundle_data import CertBundle, LeafInfo, NotYetValid, utc_text
from certpull.bundle_names import certificate_covers, common_name, covers_in, san
from certpull.bundle_parse import (
    CERT_LABEL,
    decode_secret,
    load_certificate,
    parse_certificates,
    parse_leaf,
    parse_private_key,
    pem_blocks,
    required_text,
)
from certpull.config import BundlePolicy
from certpull.errors import BundleError
from certpull.layout import CERT_FILE, CHAIN_FILE, FULLCHAIN_FILE, KEY_FILE

_SUPPORTED_CURVES = {"secp256r1": "P256", "secp384r1": "P384", "secp521r1": "P521"}


def validate(
    secret_string: str,
    policy: BundlePolicy,
    now: dt.datetime,
    installed_not_after: Optional[dt.datetime] = None,
) -> CertBundle:
    """Turn a SecretString into a ``CertBundle`` or raise ``BundleError`` with a one-line reason.

    1. Decode: a non-empty str within ``max_secret_bytes`` holding a JSON object whose
       certificate, chain and key fields are non-empty strings.
    2. Parse PEM: CERTIFICATE_PEM is exactly one certificate, the chain one or more, the key one
       unencrypted private key; nothing but whitespace outside the PEM blocks.
    3. The key matches the leaf (public keys compared).
    4. The leaf: not self-signed, a supported and strong enough key (RSA, not RSA-PSS: written
       as PKCS#8 it would no longer pair with its certificate in OpenSSL; EC P-256/384/521),
       valid at ``now`` (NotYetValid before its notBefore), covers ``server_name`` with its
       subjectAltNames; or, without any (the AWS sample's leaves), with its CN when
       ``allow_cn_only``: installable, with a warning (modern clients refuse such leaves).
    5. The chain's shape: no duplicates, no leaf in it, no SHA-1 or MD5 signature below the
       trust anchor, each certificate directly issued by the next.
    6. The chain verifies from the leaf under the web PKI profile, trusting its last certificate.
    7. No downgrade: the leaf does not expire before ``installed_not_after`` unless allowed.
    8. Re-serialise: canonical PEM, PKCS#8 key, the root dropped unless ``include_root`` or
       unless it is the only chain certificate (chain.pem must never be empty for mod_ssl).
       A chain certificate that expires before the leaf is a warning (``CertBundle.warnings``).
    """
    _require_aware(now, "now")
    if installed_not_after is not None:
        _require_aware(installed_not_after, "installed_not_after")
    names = policy.fields
    # (1)
    doc = decode_secret(secret_string, policy)
    cert_text = required_text(doc, names.certificate)
    chain_text = required_text(doc, names.chain)
    key_text = required_text(doc, names.private_key)
    arn = doc.get(names.certificate_arn)
    # (2)
    leaf = parse_leaf(cert_text, names.certificate)
    chain = parse_certificates(chain_text, names.chain)
    key = parse_private_key(key_text, names.private_key)
    # (3)
    if _spki(key.public_key()) != _spki(leaf.public_key()):
        raise BundleError(f"{names.private_key} does not match {names.certificate}")
    # (4)
    info = _leaf_info(leaf, names.certificate)
    warnings = _check_leaf(leaf, info, policy, now)
    # (5)
    check_duplicates(chain, names)
    check_signature_hashes(leaf, chain, names)
    check_chain_shape(leaf, chain, names)
    # (6)
    verify_path(leaf, chain, policy, now)
    # (7)
    if (
        installed_not_after is not None
        and info.not_after < installed_not_after
        and not policy.allow_downgrade
    ):
        raise BundleError(
            f"{names.certificate} expires {utc_text(info.not_after)}, before the installed "
            f"certificate ({utc_text(installed_not_after)}); set allow_downgrade to install it"
        )
    # (8) A root issuing the leaf directly stays: mod_ssl refuses an empty SSLCertificateChainFile.
    if len(chain) > 1 and is_self_signed(chain[-1]) and not policy.include_root:
        chain = chain[:-1]
    cert_pem = _pem(leaf)
    chain_pem = b"".join(_pem(c) for c in chain)
    first = min(chain, key=lambda c: c.not_valid_after_utc)
    if first.not_valid_after_utc < info.not_after:
        warnings += (
            f"{dn(first.subject)} in {names.chain} expires {utc_text(first.not_valid_after_utc)}, "
            f"before the certificate ({utc_text(info.not_after)}): renew the chain before then",
        )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return CertBundle(
        cert_pem=cert_pem,
        chain_pem=chain_pem,
        fullchain_pem=cert_pem + chain_pem,
        key_pem=key_pem,
        leaf=info,
        certificate_arn=arn if isinstance(arn, str) and arn else None,
        chain_not_after=first.not_valid_after_utc,
        chain_expiring=first.subject.rfc4514_string(),
        warnings=warnings,
    )


def chain_expiry(chain_pem: bytes) -> Tuple[Optional[dt.datetime], str]:
    """(notAfter, subject) of the certificate in ``chain_pem`` that expires first; (None, "")
    for an empty chain. BundleError when it cannot be parsed."""
    try:
        text = chain_pem.decode("ascii")
    except UnicodeDecodeError:
        raise BundleError("chain.pem is not ASCII PEM text") from None
    if not text.strip():
        return None, ""
    certs = [load_certificate(b, "chain.pem") for b in pem_blocks(text, "chain.pem")]
    first = min(certs, key=lambda c: c.not_valid_after_utc)
    return first.not_valid_after_utc, first.subject.rfc4514_string()


def installed_bundle(files: Mapping[str, bytes]) -> CertBundle:
    """The CertBundle of files certpull installed (validated when they were), to reload and
    verify them again without fetching the secret. BundleError when they are not readable."""
    missing = [n for n in (CERT_FILE, CHAIN_FILE, FULLCHAIN_FILE, KEY_FILE) if n not in files]
    if missing:
        raise BundleError(f"the installed version lacks {', '.join(missing)}")
    chain_not_after, chain_expiring = chain_expiry(files[CHAIN_FILE])
    return CertBundle(
        cert_pem=files[CERT_FILE],
        chain_pem=files[CHAIN_FILE],
        fullchain_pem=files[FULLCHAIN_FILE],
        key_pem=files[KEY_FILE],
        leaf=leaf_info(files[CERT_FILE]),
        chain_not_after=chain_not_after,
        chain_expiring=chain_expiring,
    )


def leaf_info(cert_pem: bytes) -> LeafInfo:
    """``LeafInfo`` of an installed cert.pem (its first certificate); ``BundleError`` if unparsable."""
    try:
        text = cert_pem.decode("ascii")
    except UnicodeDecodeError:
        raise BundleError("cert.pem is not ASCII PEM text") from None
    blocks = [b for b in pem_blocks(text, "cert.pem") if b.label == CERT_LABEL]
    if not blocks:
        raise BundleError("cert.pem holds no certificate")
    return _leaf_info(load_certificate(blocks[0], "cert.pem"), "cert.pem")


def _spki(public_key: Any) -> bytes:
    data: bytes = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return data


# --- (4) the leaf ---------------------------------------------------------------------------


def _leaf_info(cert: x509.Certificate, name: str) -> LeafInfo:
    try:
        dns_names, ips = san(cert)
        return LeafInfo(
            serial=format(cert.serial_number, "x"),
            fingerprint_sha256=cert.fingerprint(hashes.SHA256()).hex(),
            subject=cert.subject.rfc4514_string(),
            issuer=cert.issuer.rfc4514_string(),
            names=tuple(dns_names) + tuple(str(ip) for ip in ips),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            key_type=_key_type(cert.public_key()),
        )
    except (ValueError, UnsupportedAlgorithm, x509.DuplicateExtension):
        pass
    raise BundleError(f"{name} has malformed fields or extensions")


def _key_type(public_key: Any) -> str:
    if isinstance(public_key, rsa.RSAPublicKey):
        return f"RSA-{public_key.key_size}"
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        curve = public_key.curve.name
        return f"EC-{_SUPPORTED_CURVES.get(curve, curve)}"
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    if isinstance(public_key, ed448.Ed448PublicKey):
        return "Ed448"
    if isinstance(public_key, dsa.DSAPublicKey):
        return f"DSA-{public_key.key_size}"
    return type(public_key).__name__


def _check_leaf(
    cert: x509.Certificate, info: LeafInfo, policy: BundlePolicy, now: dt.datetime
) -> Tuple[str, ...]:
    """The leaf's own checks; returns its warnings (a CN-only leaf)."""
    name = policy.fields.certificate
    if is_self_signed(cert):
        raise BundleError(f"{name} is self-signed; it must be issued by a CA")
    public_key = cert.public_key()
    if cert.public_key_algorithm_oid == PublicKeyAlgorithmOID.RSASSA_PSS:
        raise BundleError(
            f"{name} has an RSA-PSS key (rsassaPss), which certpull does not install: "
            "use an ordinary RSA key or EC P-256/P-384/P-521"
        )
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < policy.min_rsa_bits:
            raise BundleError(
                f"{name} has an {info.key_type} key; at least {policy.min_rsa_bits} bits are required"
            )
    elif not (
        isinstance(public_key, ec.EllipticCurvePublicKey)
        and public_key.curve.name in _SUPPORTED_CURVES
    ):
        raise BundleError(
            f"{name} has an unsupported {info.key_type} key; use RSA or EC P-256/P-384/P-521"
        )
    if now < info.not_before:
        raise NotYetValid(f"{name} is not valid until {utc_text(info.not_before)}", info)
    if now > info.not_after:
        raise BundleError(f"{name} expired on {utc_text(info.not_after)}")
    if not info.names:
        return (_check_cn_only(cert, policy),)
    if policy.server_name is not None and not certificate_covers(cert, policy.server_name):
        listed = ", ".join(info.names)[:MAX_DETAIL_CHARS]
        raise BundleError(f"{name} does not cover {policy.server_name} (it names {listed})")
    return ()


def _check_cn_only(cert: x509.Certificate, policy: BundlePolicy) -> str:
    """A leaf without subjectAltName: accepted on its CN (a DNS name, the AWS sample's leaves)
    when ``allow_cn_only`` and the CN covers ``server_name``; the warning that goes with it."""
    name = policy.fields.certificate
    cn = common_name(cert)
    if cn is None:
        raise BundleError(f"{name} has no subjectAltName DNS names or IP addresses")
    if not policy.allow_cn_only:
        raise BundleError(
            f"{name} names {cn} in its CN only, without a subjectAltName, and allow_cn_only = no"
        )
    if policy.server_name is not None and not covers_in([cn], [], policy.server_name):
        raise BundleError(f"{name} does not cover {policy.server_name} (its CN is {cn})")
    return (
        f"{name} names {cn} in its CN only, without a subjectAltName: Go, Chrome and other "
        "modern clients refuse it; reissue it with a subjectAltName (certpull's rotation "
        "function does)"
    )


# --- small helpers --------------------------------------------------------------------------


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _require_aware(moment: dt.datetime, what: str) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime")


class InProcess:
    """``interfaces.X509`` in this process: one-shot commands, tests, and the X.509 worker's own
    side (x509_worker.serve)."""

    def validate(
        self,
        secret_string: str,
        policy: BundlePolicy,
        now: dt.datetime,
        installed_not_after: Optional[dt.datetime] = None,
    ) -> CertBundle:
        return validate(secret_string, policy, now, installed_not_after)

    def installed_bundle(self, files: Mapping[str, bytes]) -> CertBundle:
        return installed_bundle(files)

    def leaf_info(self, cert_pem: bytes) -> LeafInfo:
        return leaf_info(cert_pem)

    def prepare(self) -> None:
        """Nothing to get ready: cryptography is loaded here."""
