"""Pure validation core: a Secrets Manager SecretString -> a validated, canonical ``CertBundle``.

Nothing here touches the disk, the network or the clock (``now`` is passed in), so every check
runs before anything is written, and the whole module is unit-testable without I/O. httpd's own
config test does not notice a key that does not match its certificate, and a graceful reload with
one stops httpd: this module is where that, and every other "would break the site" case, is caught.

Error messages are one line, name the configured JSON keys (``PRIVATE_KEY_PEM does not match
CERTIFICATE_PEM``) and never carry key material; exceptions from parsing are never chained.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509 import verification

from certpull.config import BundlePolicy, SecretFields
from certpull.errors import BundleError

CERT_FILE = "cert.pem"
CHAIN_FILE = "chain.pem"
FULLCHAIN_FILE = "fullchain.pem"
KEY_FILE = "privkey.pem"

_CERT_LABEL = "CERTIFICATE"
_KEY_LABELS = ("PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY")
_ENCRYPTED_KEY_LABEL = "ENCRYPTED PRIVATE KEY"
_EC_PARAMETERS_LABEL = "EC PARAMETERS"  # `openssl ecparam -genkey` writes it before a SEC1 key
_SUPPORTED_CURVES = {"secp256r1": "P256", "secp384r1": "P384", "secp521r1": "P521"}
_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----\n(.*?)\n?-----END \1-----", re.DOTALL)
_TRAILING_BLANKS = re.compile(r"[ \t]+$", re.MULTILINE)
_MAX_DETAIL_CHARS = 200


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


@dataclass(frozen=True)
class CertBundle:
    """A validated bundle in canonical PEM (LF line endings), ready to be written as four files."""

    cert_pem: bytes  # the leaf
    chain_pem: bytes  # intermediates (+ root only if include_root); b"" if none
    fullchain_pem: bytes  # leaf + chain
    key_pem: bytes = field(repr=False)  # unencrypted PKCS#8
    leaf: LeafInfo
    certificate_arn: Optional[str] = None

    def files(self) -> Dict[str, bytes]:
        """The live directory's file names mapped to their content."""
        return {
            CERT_FILE: self.cert_pem,
            CHAIN_FILE: self.chain_pem,
            FULLCHAIN_FILE: self.fullchain_pem,
            KEY_FILE: self.key_pem,
        }


PrivateKey = Union[
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
    dsa.DSAPrivateKey,
]


@dataclass(frozen=True)
class _Block:
    label: str
    body: str

    def pem(self) -> bytes:
        return f"-----BEGIN {self.label}-----\n{self.body}\n-----END {self.label}-----\n".encode()


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
    4. The leaf: not self-signed, a supported and strong enough key, valid at ``now``, has
       subjectAltNames and covers ``server_name``.
    5. The chain's shape: no leaf in it, each certificate directly issued by the next.
    6. The chain verifies from the leaf under the web PKI profile, trusting its last certificate.
    7. No downgrade: the leaf does not expire before ``installed_not_after`` unless allowed.
    8. Re-serialise: canonical PEM, PKCS#8 key, the root dropped unless ``include_root`` or
       unless it is the only chain certificate (chain.pem must never be empty for mod_ssl).
    """
    _require_aware(now, "now")
    if installed_not_after is not None:
        _require_aware(installed_not_after, "installed_not_after")
    names = policy.fields
    # (1)
    doc = _decode(secret_string, policy)
    cert_text = _required_text(doc, names.certificate)
    chain_text = _required_text(doc, names.chain)
    key_text = _required_text(doc, names.private_key)
    arn = doc.get(names.certificate_arn)
    # (2)
    leaf = _parse_leaf(cert_text, names.certificate)
    chain = _parse_certificates(chain_text, names.chain)
    key = _parse_private_key(key_text, names.private_key)
    # (3)
    if _spki(key.public_key()) != _spki(leaf.public_key()):
        raise BundleError(f"{names.private_key} does not match {names.certificate}")
    # (4)
    info = _leaf_info(leaf, names.certificate)
    _check_leaf(leaf, info, policy, now)
    # (5)
    _check_chain_shape(leaf, chain, names)
    # (6)
    _verify_path(leaf, chain, policy, now)
    # (7)
    if (
        installed_not_after is not None
        and info.not_after < installed_not_after
        and not policy.allow_downgrade
    ):
        raise BundleError(
            f"{names.certificate} expires {_when(info.not_after)}, before the installed "
            f"certificate ({_when(installed_not_after)}); set allow_downgrade to install it"
        )
    # (8) A root issuing the leaf directly stays: mod_ssl refuses an empty SSLCertificateChainFile.
    if len(chain) > 1 and _is_self_signed(chain[-1]) and not policy.include_root:
        chain = chain[:-1]
    cert_pem = _pem(leaf)
    chain_pem = b"".join(_pem(c) for c in chain)
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
    )


def leaf_info(cert_pem: bytes) -> LeafInfo:
    """``LeafInfo`` of an installed cert.pem (its first certificate); ``BundleError`` if unparsable."""
    try:
        text = cert_pem.decode("ascii")
    except UnicodeDecodeError:
        raise BundleError("cert.pem is not ASCII PEM text") from None
    blocks = [b for b in _pem_blocks(text, "cert.pem") if b.label == _CERT_LABEL]
    if not blocks:
        raise BundleError("cert.pem holds no certificate")
    return _leaf_info(_load_certificate(blocks[0], "cert.pem"), "cert.pem")


def covers(names: Iterable[str], server_name: str) -> bool:
    """Whether LeafInfo-style ``names`` cover ``server_name`` (RFC 6125; IP-looking names are IPs)."""
    dns_names: List[str] = []
    ips: List[Union[ipaddress.IPv4Address, ipaddress.IPv6Address]] = []
    for name in names:
        ip = _ip_or_none(name)
        if ip is None:
            dns_names.append(name)
        else:
            ips.append(ip)
    return _covers(dns_names, ips, server_name)


def certificate_covers(cert: x509.Certificate, server_name: str) -> bool:
    """Whether the certificate's subjectAltName covers ``server_name``; the CN is ignored."""
    dns_names, ips = _san(cert)
    return _covers(dns_names, ips, server_name)


# --- (1) decoding ---------------------------------------------------------------------------


def _decode(secret_string: object, policy: BundlePolicy) -> Dict[str, Any]:
    if isinstance(secret_string, (bytes, bytearray)):
        raise BundleError("the secret is binary (SecretBinary); a JSON SecretString is needed")
    if not isinstance(secret_string, str):
        raise BundleError(f"the secret is a {type(secret_string).__name__}, not a SecretString")
    if not secret_string.strip():
        raise BundleError("SecretString is empty")
    size = len(secret_string.encode("utf-8", "surrogatepass"))
    if size > policy.max_secret_bytes:
        raise BundleError(
            f"SecretString is {size} bytes, more than the {policy.max_secret_bytes}-byte limit"
        )
    failure = None
    try:
        doc = json.loads(secret_string, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as exc:  # its message holds a position, never the content
        failure = f"SecretString is not JSON ({exc.msg}, line {exc.lineno} column {exc.colno})"
    except _DuplicateKeyError as exc:
        failure = f"SecretString has the key {exc.key[:60]!r} more than once"
    except (ValueError, RecursionError):
        failure = "SecretString is not JSON"
    if failure is not None:
        raise BundleError(failure)
    if not isinstance(doc, dict):
        raise BundleError(
            f"SecretString is {_a_json_type(doc)}, not an object with "
            f"{policy.fields.certificate}, {policy.fields.chain} and {policy.fields.private_key}"
        )
    return doc


class _DuplicateKeyError(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _no_duplicate_keys(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    doc: Dict[str, Any] = {}
    for key, value in pairs:
        if key in doc:
            raise _DuplicateKeyError(key)
        doc[key] = value
    return doc


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _a_json_type(value: object) -> str:
    kind = _json_type(value)
    return "JSON null" if kind == "null" else f"a JSON {kind}"


def _required_text(doc: Dict[str, Any], name: str) -> str:
    if name not in doc:
        near = [k for k in doc if isinstance(k, str) and k.lower() == name.lower()]
        hint = f" (found {near[0]}; key names are case-sensitive)" if near else ""
        raise BundleError(f"SecretString has no {name} field{hint}")
    value = doc[name]
    if not isinstance(value, str):
        raise BundleError(f"{name} is {_a_json_type(value)}, not a PEM string")
    if not value.strip():
        raise BundleError(f"{name} is empty")
    return value


# --- (2) PEM parsing ------------------------------------------------------------------------


def _pem_blocks(text: str, name: str) -> List[_Block]:
    """Split PEM text into blocks, refusing anything but whitespace around and between them."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _TRAILING_BLANKS.sub("", text)
    blocks: List[_Block] = []
    position = 0
    for match in _PEM_BLOCK.finditer(text):
        _check_gap(text[position : match.start()], name, after_last=False, first=not blocks)
        blocks.append(_Block(match.group(1), match.group(2).strip("\n")))
        position = match.end()
    if not blocks:
        if "\\n" in text:
            raise BundleError(f"{name} holds literal \\n sequences instead of line breaks")
        if "-----BEGIN" in text:
            raise BundleError(f"{name} has a PEM block without its END line (truncated?)")
        raise BundleError(f"{name} holds no PEM data")
    _check_gap(text[position:], name, after_last=True, first=False)
    return blocks


def _check_gap(gap: str, name: str, after_last: bool, first: bool) -> None:
    if not gap.strip():
        return
    if "-----BEGIN" in gap:
        raise BundleError(f"{name} has a PEM block without its END line (truncated?)")
    if after_last:
        raise BundleError(f"{name} has text after its last PEM block")
    where = "before its first PEM block" if first else "between its PEM blocks"
    raise BundleError(f"{name} has text {where}")


def _parse_leaf(text: str, name: str) -> x509.Certificate:
    certs = _parse_certificates(text, name)
    if len(certs) > 1:
        raise BundleError(
            f"{name} holds {len(certs)} certificates; it must hold only the leaf "
            "(issuers belong in the chain)"
        )
    return certs[0]


def _parse_certificates(text: str, name: str) -> List[x509.Certificate]:
    blocks = _pem_blocks(text, name)
    for block in blocks:
        if block.label != _CERT_LABEL:
            raise BundleError(f"{name} holds a {block.label} block; only certificates belong there")
    return [_load_certificate(block, name) for block in blocks]


def _load_certificate(block: _Block, name: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(block.pem())
    except ValueError:  # also UnicodeEncodeError: non-ASCII inside the block
        pass
    raise BundleError(f"{name} holds a certificate that cannot be parsed")


def _parse_private_key(text: str, name: str) -> PrivateKey:
    blocks = [b for b in _pem_blocks(text, name) if b.label != _EC_PARAMETERS_LABEL]
    if any(b.label == _ENCRYPTED_KEY_LABEL or _legacy_encrypted(b) for b in blocks):
        raise BundleError(f"{name} is encrypted; the agent needs an unencrypted key")
    for block in blocks:
        if block.label not in _KEY_LABELS:
            raise BundleError(f"{name} holds a {block.label} block, not a private key")
    if len(blocks) != 1:
        raise BundleError(f"{name} holds {len(blocks)} private keys, not one")
    # Parse outside any except block so no exception raised here can carry key bytes as context.
    key, failure = _load_private_key(blocks[0])
    if key is None:
        raise BundleError(failure.format(name=name))
    return key


def _legacy_encrypted(block: _Block) -> bool:
    """OpenSSL's traditional encryption puts RFC 1421 headers inside the block."""
    return "Proc-Type:" in block.body and "ENCRYPTED" in block.body


def _load_private_key(block: _Block) -> Tuple[Optional[PrivateKey], str]:
    try:
        key = serialization.load_pem_private_key(block.pem(), password=None)
    except TypeError:  # "password was not given but private key is encrypted"
        return None, "{name} is encrypted; the agent needs an unencrypted key"
    except (ValueError, UnsupportedAlgorithm):
        return None, "{name} is not a private key that can be parsed"
    if not isinstance(
        key,
        (
            rsa.RSAPrivateKey,
            ec.EllipticCurvePrivateKey,
            ed25519.Ed25519PrivateKey,
            ed448.Ed448PrivateKey,
            dsa.DSAPrivateKey,
        ),
    ):
        return None, "{name} holds an unsupported key type (use RSA or EC P-256/P-384/P-521)"
    return key, ""


def _spki(public_key: Any) -> bytes:
    data: bytes = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return data


# --- (4) the leaf ---------------------------------------------------------------------------


def _leaf_info(cert: x509.Certificate, name: str) -> LeafInfo:
    try:
        dns_names, ips = _san(cert)
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


def _san(
    cert: x509.Certificate,
) -> Tuple[List[str], List[Union[ipaddress.IPv4Address, ipaddress.IPv6Address]]]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], []
    ips = [
        ip
        for ip in san.get_values_for_type(x509.IPAddress)
        if isinstance(ip, (ipaddress.IPv4Address, ipaddress.IPv6Address))
    ]
    return san.get_values_for_type(x509.DNSName), ips


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
) -> None:
    name = policy.fields.certificate
    if _is_self_signed(cert):
        raise BundleError(f"{name} is self-signed; it must be issued by a CA")
    public_key = cert.public_key()
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
        raise BundleError(f"{name} is not valid until {_when(info.not_before)}")
    if now > info.not_after:
        raise BundleError(f"{name} expired on {_when(info.not_after)}")
    if not info.names:
        raise BundleError(f"{name} has no subjectAltName DNS names or IP addresses")
    if policy.server_name is not None and not certificate_covers(cert, policy.server_name):
        listed = ", ".join(info.names)[:_MAX_DETAIL_CHARS]
        raise BundleError(f"{name} does not cover {policy.server_name} (it names {listed})")


def _covers(
    dns_names: Sequence[str],
    ips: Sequence[Union[ipaddress.IPv4Address, ipaddress.IPv6Address]],
    server_name: str,
) -> bool:
    """IP literals match IP SANs only; DNS names match case-insensitively, with a wildcard
    allowed only as the whole left-most label and matching exactly one label."""
    ip = _ip_or_none(server_name)
    if ip is not None:
        return ip in ips
    host = _normalise_dns(server_name)
    if host is None or "*" in host:
        return False
    return any(_dns_matches(_normalise_dns(pattern), host) for pattern in dns_names)


def _ip_or_none(text: str) -> Optional[Union[ipaddress.IPv4Address, ipaddress.IPv6Address]]:
    try:
        return ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None


def _normalise_dns(name: str) -> Optional[str]:
    name = name.strip().rstrip(".").lower()
    if not name:
        return None
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    return name


def _dns_matches(pattern: Optional[str], host: str) -> bool:
    if pattern is None:
        return False
    if pattern == host:
        return True
    if not pattern.startswith("*."):
        return False
    suffix = pattern[2:]
    if "*" in suffix or "." not in suffix:  # no "*.com", no second wildcard
        return False
    label, dot, rest = host.partition(".")
    return bool(label) and bool(dot) and rest == suffix


# --- (5) (6) the chain ----------------------------------------------------------------------


def _check_chain_shape(
    leaf: x509.Certificate, chain: Sequence[x509.Certificate], names: SecretFields
) -> None:
    """Each certificate must be directly issued by the next one, so that Apache sends a chain
    clients can follow; the reason names which link is broken and how."""
    if leaf in chain:
        raise BundleError(
            f"{names.chain} contains the leaf certificate; it must hold only its issuers"
        )
    subjects = [c.subject for c in chain]
    children = [(leaf, names.certificate)]
    children += [(c, f"certificate {i + 1} of {names.chain}") for i, c in enumerate(chain)]
    for (cert, what), issuer in zip(children, chain):
        if cert.issuer == issuer.subject:
            if not _directly_issued_by(cert, issuer):
                raise BundleError(
                    f"the signature of {what} does not verify with the key of "
                    f"{_dn(issuer.subject)} in {names.chain}"
                )
        elif _is_self_signed(cert):
            raise BundleError(f"{what} is a self-signed root, but more certificates follow it")
        elif cert.issuer in subjects:
            raise BundleError(
                f"{names.chain} is in the wrong order; each certificate must be followed by "
                "its issuer"
            )
        else:
            raise BundleError(
                f"{what} is issued by {_dn(cert.issuer)}, but the next certificate in "
                f"{names.chain} is {_dn(issuer.subject)} (missing intermediate?)"
            )


def _directly_issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _is_self_signed(cert: x509.Certificate) -> bool:
    return cert.issuer == cert.subject and _directly_issued_by(cert, cert)


def _verify_path(
    leaf: x509.Certificate,
    chain: Sequence[x509.Certificate],
    policy: BundlePolicy,
    now: dt.datetime,
) -> None:
    """Web PKI path validation, trusting the chain's last certificate (root or top intermediate):
    catches what the shape check does not (non-CA issuers, expired intermediates, weak
    signatures, missing serverAuth)."""
    subject = _verification_subject(leaf, policy.server_name)
    verifier = (
        verification.PolicyBuilder()
        .store(verification.Store([chain[-1]]))
        .time(now)
        .build_server_verifier(subject)
    )
    failure = None
    try:
        verifier.verify(leaf, list(chain[:-1]))
    except verification.VerificationError as exc:
        detail = " ".join(str(exc).split())
        for noise in ("validation failed: ", "candidates exhausted: "):
            detail = detail.replace(noise, "")
        failure = detail[:_MAX_DETAIL_CHARS]
    if failure is not None:
        raise BundleError(
            f"{policy.fields.certificate} does not verify against {policy.fields.chain}: {failure}"
        )


def _verification_subject(
    leaf: x509.Certificate, server_name: Optional[str]
) -> Union[x509.DNSName, x509.IPAddress]:
    """The verifier wants a name; the name check already ran, so any covered name will do."""
    dns_names, ips = _san(leaf)
    if server_name is not None:
        ip = _ip_or_none(server_name)
        if ip is not None:
            return x509.IPAddress(ip)
        host = _normalise_dns(server_name)
        if host is not None:
            return x509.DNSName(host)
    for name in dns_names:
        if "*" not in name:
            return x509.DNSName(name)
    if ips:
        return x509.IPAddress(ips[0])
    return x509.DNSName(dns_names[0].replace("*", "certpull-check", 1))


# --- small helpers --------------------------------------------------------------------------


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _dn(name: x509.Name) -> str:
    return f"'{name.rfc4514_string()}'"


def _when(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _require_aware(moment: dt.datetime, what: str) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime")
