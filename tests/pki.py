"""A small private PKI for tests: root -> intermediate -> leaf, with every knob the bad-input table needs.

Keys are cached per (type, size) because RSA generation dominates test time otherwise.
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = Union[rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey]

UTC = dt.timezone.utc


def now() -> dt.datetime:
    return dt.datetime.now(UTC).replace(microsecond=0)


@functools.cache
def _cached_key(kind: str, size: int, slot: int) -> PrivateKey:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=size)
    if kind == "ec":
        curve = {256: ec.SECP256R1(), 384: ec.SECP384R1(), 521: ec.SECP521R1()}[size]
        return ec.generate_private_key(curve)
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(kind)


def key(kind: str = "ec", size: int = 256, slot: int = 0) -> PrivateKey:
    """A cached private key; a different ``slot`` gives a different key of the same type."""
    return _cached_key(kind, size, slot)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _hash_for(k: PrivateKey) -> Optional[hashes.HashAlgorithm]:
    return None if isinstance(k, ed25519.Ed25519PrivateKey) else hashes.SHA256()


@dataclass
class Issued:
    cert: x509.Certificate
    key: PrivateKey

    @property
    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    def key_pem(self, fmt: str = "pkcs8", password: Optional[bytes] = None) -> str:
        formats = {
            "pkcs8": serialization.PrivateFormat.PKCS8,
            "pkcs1": serialization.PrivateFormat.TraditionalOpenSSL,  # RSA: PKCS#1
            "sec1": serialization.PrivateFormat.TraditionalOpenSSL,  # EC: SEC1
        }
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(password)
            if password
            else serialization.NoEncryption()
        )
        return self.key.private_bytes(serialization.Encoding.PEM, formats[fmt], encryption).decode()


def make_ca(
    cn: str = "certpull test root",
    issuer: Optional[Issued] = None,
    key_kind: str = "ec",
    key_size: int = 384,
    slot: int = 0,
    days: int = 3650,
) -> Issued:
    """A CA certificate: self-signed when ``issuer`` is None, else an intermediate signed by it."""
    k = key(key_kind, key_size, slot=100 + slot)
    signer_key = issuer.key if issuer else k
    issuer_name = issuer.cert.subject if issuer else _name(cn)
    start = now() - dt.timedelta(days=1)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer_name)
        .public_key(k.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(k.public_key()), critical=False)
    )
    if issuer:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    return Issued(builder.sign(signer_key, _hash_for(signer_key)), k)


# Every key kind, size and PEM form certpull accepts, as (kind, size, Issued.key_pem format): the
# pure check (tests/unit/test_bundle_truth.py) and the real-httpd proof (test_key_types.py) share it.
ACCEPTED_KEYS = [
    ("rsa", 2048, "pkcs8"),
    ("rsa", 2048, "pkcs1"),
    ("rsa", 3072, "pkcs8"),
    ("rsa", 4096, "pkcs1"),
    ("ec", 256, "pkcs8"),
    ("ec", 256, "sec1"),
    ("ec", 384, "sec1"),
    ("ec", 521, "pkcs8"),
]


def make_leaf(
    issuer: Issued,
    names: Sequence[str] = ("www.example.com", "127.0.0.1"),
    key_kind: str = "ec",
    key_size: int = 256,
    slot: int = 0,
    not_before: Optional[dt.datetime] = None,
    not_after: Optional[dt.datetime] = None,
    days: int = 90,
    cn: Optional[str] = None,
    san: bool = True,
) -> Issued:
    """A server certificate for ``names`` (DNS names and IP addresses) signed by ``issuer``."""
    k = key(key_kind, key_size, slot=slot)
    start = not_before or now() - dt.timedelta(hours=1)
    end = not_after or start + dt.timedelta(days=days)
    sans: List[x509.GeneralName] = []
    for n in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            sans.append(x509.DNSName(n))
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn or (names[0] if names else "leaf")))
        .issuer_name(issuer.cert.subject)
        .public_key(k.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    )
    if san and sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return Issued(builder.sign(issuer.key, _hash_for(issuer.key)), k)


@dataclass
class Pki:
    """root -> intermediate, and leaves issued by the intermediate."""

    root: Issued = field(default_factory=make_ca)
    intermediate: Issued = field(init=False)

    def __post_init__(self) -> None:
        self.intermediate = make_ca("certpull test intermediate", issuer=self.root, slot=1)

    def leaf(self, **kwargs: object) -> Issued:
        return make_leaf(self.intermediate, **kwargs)  # type: ignore[arg-type]

    def chain_pem(self, include_root: bool = False) -> str:
        chain = self.intermediate.pem
        return chain + self.root.pem if include_root else chain

    def secret(self, leaf: Optional[Issued] = None, **overrides: object) -> Dict[str, object]:
        """The rotation function's JSON document for ``leaf`` (a fresh one by default)."""
        leaf = leaf or self.leaf()
        doc: Dict[str, object] = {
            "CERTIFICATE_PEM": leaf.pem,
            "CERTIFICATE_CHAIN_PEM": self.chain_pem(),
            "PRIVATE_KEY_PEM": leaf.key_pem(),
            "CERTIFICATE_ARN": "arn:aws:acm-pca:us-east-1:123456789012:certificate-authority/test/certificate/0",
            "CERTIFICATE_TYPE": "ACM_PCA_ISSUED",
        }
        doc.update(overrides)
        return doc

    def secret_string(self, leaf: Optional[Issued] = None, **overrides: object) -> str:
        return json.dumps(self.secret(leaf, **overrides))


def openssl_leaf(
    issuer: Issued,
    workdir: os.PathLike[str],
    algorithm: str = "RSA",
    digest: str = "sha256",
    names: Sequence[str] = ("www.example.com", "127.0.0.1"),
    days: int = 90,
    bits: int = 2048,
) -> Tuple[str, str]:
    """(leaf PEM, key PEM) made by the openssl CLI, for what cryptography will not make: an
    RSA-PSS subject key, a SHA-1 signature. ``issuer`` signs it with ``digest``."""
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = work / "ca.key", work / "ca.pem"
    ca_key.write_bytes(
        issuer.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    os.chmod(ca_key, 0o600)
    ca_cert.write_text(issuer.pem)
    key, csr, cert, ext = (work / n for n in ("leaf.key", "leaf.csr", "leaf.pem", "leaf.ext"))
    sans = ",".join(
        f"IP:{n}" if n.replace(".", "").isdigit() or ":" in n else f"DNS:{n}" for n in names
    )
    ext.write_text(
        f"subjectAltName={sans}\nbasicConstraints=critical,CA:FALSE\n"
        "extendedKeyUsage=serverAuth\nauthorityKeyIdentifier=keyid\n"
    )

    def run(*argv: str) -> None:
        subprocess.run(["openssl", *argv], check=True, capture_output=True, timeout=60)

    run("genpkey", "-algorithm", algorithm, "-pkeyopt", f"rsa_keygen_bits:{bits}", "-out", str(key))
    run("req", "-new", "-key", str(key), "-subj", f"/CN={names[0]}", "-out", str(csr))
    run(
        "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
        "-CAcreateserial", f"-{digest}", "-days", str(days), "-extfile", str(ext),
        "-out", str(cert),
    )  # fmt: skip
    return cert.read_text(), key.read_text()


def pkcs12_text(cert_pem: str, key_pem: str, chain_pem: str, workdir: os.PathLike[str]) -> str:
    """What `openssl pkcs12 -nodes` prints for a bundle: PEM blocks with `Bag Attributes`
    preambles (how many operators export a certificate from a .pfx)."""
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    (work / "c.pem").write_text(cert_pem)
    (work / "k.pem").write_text(key_pem)
    (work / "ch.pem").write_text(chain_pem)
    p12 = work / "b.p12"
    subprocess.run(
        ["openssl", "pkcs12", "-export", "-in", str(work / "c.pem"), "-inkey", str(work / "k.pem"),
         "-certfile", str(work / "ch.pem"), "-name", "www", "-passout", "pass:x", "-out", str(p12)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    done = subprocess.run(
        ["openssl", "pkcs12", "-in", str(p12), "-passin", "pass:x", "-nodes"],
        check=True, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return done.stdout
