"""Steps 1-2 of bundle validation: the SecretString's JSON and PEM text -> parsed objects.

Pure. Every failure is a one-line BundleError naming the configured JSON key; no message and no
exception context ever carries key material (keys are parsed outside any except block).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple, Union

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

from certpull.config import BundlePolicy
from certpull.errors import BundleError

CERT_LABEL = "CERTIFICATE"
_KEY_LABELS = ("PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY")
_ENCRYPTED_KEY_LABEL = "ENCRYPTED PRIVATE KEY"
_EC_PARAMETERS_LABEL = "EC PARAMETERS"  # `openssl ecparam -genkey` writes it before a SEC1 key
_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----\n(.*?)\n?-----END \1-----", re.DOTALL)
_TRAILING_BLANKS = re.compile(r"[ \t]+$", re.MULTILINE)
# What `openssl pkcs12 -nodes` prints before each block: a "Bag Attributes" (or "Key
# Attributes") header, its indented attributes, and subject= / issuer= lines. Nothing else.
_PKCS12_HEADER = re.compile(r"^(?:Bag|Key) Attributes(?::.*)?$")
_PKCS12_LINE = re.compile(r"^(?:(?:Bag|Key) Attributes(?::.*)?|subject=.*|issuer=.*|[ \t]+\S.*)$")


PrivateKey = Union[
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
    dsa.DSAPrivateKey,
]


@dataclass(frozen=True)
class PemBlock:
    label: str
    body: str

    def pem(self) -> bytes:
        return f"-----BEGIN {self.label}-----\n{self.body}\n-----END {self.label}-----\n".encode()


# --- (1) decoding ---------------------------------------------------------------------------


def decode_secret(secret_string: object, policy: BundlePolicy) -> Dict[str, Any]:
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


def required_text(doc: Dict[str, Any], name: str) -> str:
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


def pem_blocks(text: str, name: str) -> List[PemBlock]:
    """Split PEM text into blocks, refusing anything but whitespace around and between them,
    or the `Bag Attributes` preamble `openssl pkcs12 -nodes` prints before each block."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _TRAILING_BLANKS.sub("", text)
    blocks: List[PemBlock] = []
    position = 0
    for match in _PEM_BLOCK.finditer(text):
        _check_gap(text[position : match.start()], name, after_last=False, first=not blocks)
        blocks.append(PemBlock(match.group(1), match.group(2).strip("\n")))
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
    if not after_last and _is_pkcs12_preamble(gap):
        return
    if "-----BEGIN" in gap:
        raise BundleError(f"{name} has a PEM block without its END line (truncated?)")
    if after_last:
        raise BundleError(f"{name} has text after its last PEM block")
    where = "before its first PEM block" if first else "between its PEM blocks"
    raise BundleError(f"{name} has text {where}")


def _is_pkcs12_preamble(gap: str) -> bool:
    lines = [line for line in gap.split("\n") if line.strip()]
    return bool(_PKCS12_HEADER.match(lines[0])) and all(_PKCS12_LINE.match(x) for x in lines)


def parse_leaf(text: str, name: str) -> x509.Certificate:
    certs = parse_certificates(text, name)
    if len(certs) > 1:
        raise BundleError(
            f"{name} holds {len(certs)} certificates; it must hold only the leaf "
            "(issuers belong in the chain)"
        )
    return certs[0]


def parse_certificates(text: str, name: str) -> List[x509.Certificate]:
    blocks = pem_blocks(text, name)
    for block in blocks:
        if block.label != CERT_LABEL:
            raise BundleError(f"{name} holds a {block.label} block; only certificates belong there")
    return [load_certificate(block, name) for block in blocks]


def load_certificate(block: PemBlock, name: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(block.pem())
    except ValueError:  # also UnicodeEncodeError: non-ASCII inside the block
        pass
    raise BundleError(f"{name} holds a certificate that cannot be parsed")


def parse_private_key(text: str, name: str) -> PrivateKey:
    blocks = [b for b in pem_blocks(text, name) if b.label != _EC_PARAMETERS_LABEL]
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


def _legacy_encrypted(block: PemBlock) -> bool:
    """OpenSSL's traditional encryption puts RFC 1421 headers inside the block."""
    return "Proc-Type:" in block.body and "ENCRYPTED" in block.body


def _load_private_key(block: PemBlock) -> Tuple[Optional[PrivateKey], str]:
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
