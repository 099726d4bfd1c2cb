"""Tables of SecretStrings that must be rejected or accepted, shared by unit and integration tests.

Each bad case names the fragment its one-line error must contain, so a test that feeds the case
through the whole agent (daemon, CLI) can assert the same reason reaches the log and `status`.
Leaves cover "www.example.com" and "127.0.0.1" by default so an Apache test server can serve them.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certpull.config import BundlePolicy, SecretFields
from tests.pki import Issued, Pki, PrivateKey, make_ca, make_leaf, now

DEFAULT_POLICY = BundlePolicy(server_name="www.example.com")

# DER of the P-256 OID, as `openssl ecparam -genkey` writes it before a SEC1 key.
EC_PARAMETERS_P256 = (
    "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n"
)


@dataclass(frozen=True)
class BadCase:
    id: str
    secret_string: str
    message: str  # a fragment the BundleError message must contain
    policy: BundlePolicy = DEFAULT_POLICY
    installed_not_after: Optional[dt.datetime] = None


@dataclass(frozen=True)
class ValidCase:
    id: str
    secret_string: str
    leaf: Issued  # the leaf the bundle must hold
    chain_len: int  # certificates expected in chain.pem
    key_type: str
    policy: BundlePolicy = DEFAULT_POLICY
    installed_not_after: Optional[dt.datetime] = None


def custom_leaf(
    issuer: Optional[Issued],
    leaf_key: object,
    names: Sequence[str] = ("www.example.com",),
    eku: Sequence[x509.ObjectIdentifier] = (ExtendedKeyUsageOID.SERVER_AUTH,),
    san: bool = True,
) -> Issued:
    """A leaf with any key (DSA, secp256k1...) that tests.pki cannot make; self-signed if no issuer."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    signer: PrivateKey = issuer.key if issuer else leaf_key  # type: ignore[assignment]
    start = now() - dt.timedelta(hours=1)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(leaf_key.public_key())  # type: ignore[attr-defined]
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=90))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    )
    if san:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        )
    if issuer:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    return Issued(builder.sign(signer, hashes.SHA256()), leaf_key)  # type: ignore[arg-type]


def _json(doc: object) -> str:
    return json.dumps(doc)


def _without(doc: Dict[str, object], key: str) -> Dict[str, object]:
    return {k: v for k, v in doc.items() if k != key}


def _crlf(text: str) -> str:
    return text.replace("\n", "\r\n")


def bad_secret_cases(pki: Pki) -> List[BadCase]:
    """At least one case per rejection in certpull.bundle.validate."""
    leaf = pki.leaf()
    good = pki.secret(leaf)
    cert, chain, key = leaf.pem, pki.chain_pem(), leaf.key_pem()
    other_leaf = pki.leaf(slot=1)
    root, intermediate = pki.root, pki.intermediate
    t = now()

    impostor = make_ca("certpull test intermediate", issuer=root, slot=7)  # same name, other key
    expired_ca = make_ca("certpull expired intermediate", issuer=root, slot=3, days=0)
    not_a_ca = make_leaf(root, names=("not-a-ca.example.com",), slot=4)
    under_not_a_ca = make_leaf(not_a_ca, slot=5)
    under_expired_ca = make_leaf(expired_ca, slot=6)
    level2 = make_ca("certpull test intermediate 2", issuer=intermediate, slot=2)
    under_level2 = make_leaf(level2)
    self_signed = custom_leaf(None, ec.generate_private_key(ec.SECP256R1()))
    client_only = custom_leaf(
        intermediate,
        ec.generate_private_key(ec.SECP256R1()),
        eku=(ExtendedKeyUsageOID.CLIENT_AUTH,),
    )
    dsa_leaf = custom_leaf(intermediate, dsa.generate_private_key(2048))
    k1_leaf = custom_leaf(intermediate, ec.generate_private_key(ec.SECP256K1()))
    ed_leaf = pki.leaf(key_kind="ed25519")
    rsa1024 = pki.leaf(key_kind="rsa", key_size=1024)
    rsa2048 = pki.leaf(key_kind="rsa", key_size=2048)
    expired = pki.leaf(not_before=t - dt.timedelta(days=100), not_after=t - dt.timedelta(days=1))
    future = pki.leaf(not_before=t + dt.timedelta(days=1))
    other_host = pki.leaf(names=("api.example.com", "127.0.0.1"))
    wildcard = pki.leaf(names=("*.example.com",))
    no_san = pki.leaf(san=False)  # the AWS sample's leaves: CN=www.example.com, no SAN
    no_name = pki.leaf(san=False, cn="Web Server Certificate")  # no SAN, a CN that is no name
    cn_only_client = custom_leaf(
        intermediate,
        ec.generate_private_key(ec.SECP256R1()),
        eku=(ExtendedKeyUsageOID.CLIENT_AUTH,),
        san=False,
    )
    long_lived = pki.leaf(days=365)

    body = key.split("\n")[1]
    broken_cert = cert.replace(cert.split("\n")[2], "!!!! not base64 !!!!")

    cases = [
        BadCase("empty-string", "", "SecretString is empty"),
        BadCase("whitespace-only", " \n\t ", "SecretString is empty"),
        BadCase(
            "larger-than-64KiB",
            _json(pki.secret(leaf, PADDING="x" * 70_000)),
            "more than the 65536-byte limit",
        ),
        BadCase(
            "larger-than-configured-limit",
            _json(good),
            "more than the 1000-byte limit",
            policy=BundlePolicy(server_name="www.example.com", max_secret_bytes=1000),
        ),
        BadCase("not-json", "CERTIFICATE_PEM=" + cert, "SecretString is not JSON"),
        BadCase("truncated-json", _json(good)[:-10], "SecretString is not JSON"),
        BadCase("json-array", _json([cert, chain, key]), "SecretString is a JSON array"),
        BadCase("json-string", _json(cert), "SecretString is a JSON string"),
        BadCase("json-number", "42", "SecretString is a JSON number"),
        BadCase("json-null", "null", "SecretString is JSON null"),
        BadCase(
            "duplicate-key",
            _json(good)[:-1] + ', "CERTIFICATE_PEM": ' + json.dumps(other_leaf.pem) + "}",
            "has the key 'CERTIFICATE_PEM' more than once",
        ),
        BadCase(
            "missing-certificate",
            _json(_without(good, "CERTIFICATE_PEM")),
            "SecretString has no CERTIFICATE_PEM field",
        ),
        BadCase(
            "missing-chain",
            _json(_without(good, "CERTIFICATE_CHAIN_PEM")),
            "SecretString has no CERTIFICATE_CHAIN_PEM field",
        ),
        BadCase(
            "missing-key",
            _json(_without(good, "PRIVATE_KEY_PEM")),
            "SecretString has no PRIVATE_KEY_PEM field",
        ),
        BadCase(
            "lower-case-key-names",
            _json(
                {"certificate_pem": cert, "certificate_chain_pem": chain, "private_key_pem": key}
            ),
            "has no CERTIFICATE_PEM field (found certificate_pem; key names are case-sensitive)",
        ),
        BadCase(
            "configured-names-absent",
            _json(good),
            "SecretString has no cert field",
            policy=BundlePolicy(
                server_name="www.example.com", fields=SecretFields("cert", "chain", "key")
            ),
        ),
        BadCase(
            "null-key",
            _json(pki.secret(leaf, PRIVATE_KEY_PEM=None)),
            "PRIVATE_KEY_PEM is JSON null",
        ),
        BadCase(
            "number-certificate",
            _json(pki.secret(leaf, CERTIFICATE_PEM=12345)),
            "CERTIFICATE_PEM is a JSON number, not a PEM string",
        ),
        BadCase(
            "list-chain",
            _json(pki.secret(leaf, CERTIFICATE_CHAIN_PEM=[chain])),
            "CERTIFICATE_CHAIN_PEM is a JSON array",
        ),
        BadCase(
            "empty-chain",
            _json(pki.secret(leaf, CERTIFICATE_CHAIN_PEM="")),
            "CERTIFICATE_CHAIN_PEM is empty",
        ),
        BadCase(
            "blank-key",
            _json(pki.secret(leaf, PRIVATE_KEY_PEM="\n  \n")),
            "PRIVATE_KEY_PEM is empty",
        ),
        BadCase(
            "certificate-not-pem",
            _json(pki.secret(leaf, CERTIFICATE_PEM="hello")),
            "CERTIFICATE_PEM holds no PEM data",
        ),
        BadCase(
            "certificate-bad-base64",
            _json(pki.secret(leaf, CERTIFICATE_PEM=broken_cert)),
            "CERTIFICATE_PEM holds a certificate that cannot be parsed",
        ),
        BadCase(
            "certificate-truncated",
            _json(pki.secret(leaf, CERTIFICATE_PEM=cert[: len(cert) // 2])),
            "CERTIFICATE_PEM has a PEM block without its END line",
        ),
        BadCase(
            "literal-backslash-n",
            _json(pki.secret(leaf, CERTIFICATE_PEM=cert.replace("\n", "\\n"))),
            "CERTIFICATE_PEM holds literal \\n sequences",
        ),
        BadCase(
            "trailing-garbage",
            _json(pki.secret(leaf, CERTIFICATE_CHAIN_PEM=chain + "garbage\n")),
            "CERTIFICATE_CHAIN_PEM has text after its last PEM block",
        ),
        BadCase(
            "leading-garbage",
            _json(pki.secret(leaf, CERTIFICATE_PEM="subject=CN = www\n" + cert)),
            "CERTIFICATE_PEM has text before its first PEM block",
        ),
        BadCase(
            "garbage-between-blocks",
            _json(pki.secret(leaf, CERTIFICATE_CHAIN_PEM=intermediate.pem + "--\n" + root.pem)),
            "CERTIFICATE_CHAIN_PEM has text between its PEM blocks",
        ),
        BadCase(
            "several-leaves",
            _json(pki.secret(leaf, CERTIFICATE_PEM=cert + other_leaf.pem)),
            "CERTIFICATE_PEM holds 2 certificates",
        ),
        BadCase(
            "fullchain-in-certificate",
            _json(pki.secret(leaf, CERTIFICATE_PEM=cert + chain)),
            "CERTIFICATE_PEM holds 2 certificates",
        ),
        BadCase(
            "key-in-chain",
            _json(pki.secret(leaf, CERTIFICATE_CHAIN_PEM=chain + key)),
            "CERTIFICATE_CHAIN_PEM holds a PRIVATE KEY block",
        ),
        BadCase(
            "certificate-in-key",
            _json(pki.secret(leaf, PRIVATE_KEY_PEM=cert)),
            "PRIVATE_KEY_PEM holds a CERTIFICATE block, not a private key",
        ),
        BadCase(
            "two-keys",
            _json(pki.secret(leaf, PRIVATE_KEY_PEM=key + other_leaf.key_pem())),
            "PRIVATE_KEY_PEM holds 2 private keys",
        ),
        BadCase(
            "key-bad-base64",
            _json(
                pki.secret(leaf, PRIVATE_KEY_PEM=key.replace(body, body[:20] + "@@" + body[22:]))
            ),
            "PRIVATE_KEY_PEM is not a private key that can be parsed",
        ),
        BadCase(
            "encrypted-pkcs8-key",
            _json(pki.secret(leaf, PRIVATE_KEY_PEM=leaf.key_pem(password=b"hunter2"))),
            "PRIVATE_KEY_PEM is encrypted; the agent needs an unencrypted key",
        ),
        BadCase(
            "encrypted-traditional-key",
            _json(
                pki.secret(rsa2048, PRIVATE_KEY_PEM=rsa2048.key_pem("pkcs1", password=b"hunter2"))
            ),
            "PRIVATE_KEY_PEM is encrypted; the agent needs an unencrypted key",
        ),
        BadCase(
            "key-of-another-certificate",
            _json(pki.secret(leaf, PRIVATE_KEY_PEM=other_leaf.key_pem())),
            "PRIVATE_KEY_PEM does not match CERTIFICATE_PEM",
        ),
        BadCase(
            "rsa-key-for-ec-certificate",
            _json(pki.secret(leaf, PRIVATE_KEY_PEM=rsa2048.key_pem())),
            "PRIVATE_KEY_PEM does not match CERTIFICATE_PEM",
        ),
        BadCase(
            "chain-contains-leaf",
            _json(pki.secret(leaf, CERTIFICATE_CHAIN_PEM=cert + chain)),
            "contains the leaf",
        ),
        BadCase(
            "chain-wrong-order",
            _json(pki.secret(leaf, CERTIFICATE_CHAIN_PEM=root.pem + intermediate.pem)),
            "CERTIFICATE_CHAIN_PEM is in the wrong order",
        ),
        BadCase(
            "chain-wrong-order-deeper",
            _json(
                pki.secret(
                    under_level2, CERTIFICATE_CHAIN_PEM=level2.pem + root.pem + intermediate.pem
                )
            ),
            "CERTIFICATE_CHAIN_PEM is in the wrong order",
        ),
        BadCase(
            "chain-only-root-missing-intermediate",
            _json(pki.secret(leaf, CERTIFICATE_CHAIN_PEM=root.pem)),
            "missing intermediate",
        ),
        BadCase(
            "chain-missing-middle-intermediate",
            _json(pki.secret(under_level2, CERTIFICATE_CHAIN_PEM=level2.pem + root.pem)),
            "certificate 1 of CERTIFICATE_CHAIN_PEM is issued by",
        ),
        BadCase(
            "chain-certificate-after-root",
            _json(
                pki.secret(
                    leaf, CERTIFICATE_CHAIN_PEM=pki.chain_pem(include_root=True) + impostor.pem
                )
            ),
            "certificate 2 of CERTIFICATE_CHAIN_PEM is a self-signed root, but more certificates follow it",
        ),
        BadCase(
            "chain-impostor-intermediate",
            _json(pki.secret(leaf, CERTIFICATE_CHAIN_PEM=impostor.pem)),
            "the signature of CERTIFICATE_PEM does not verify",
        ),
        BadCase(
            "chain-issuer-not-a-ca",
            _json(pki.secret(under_not_a_ca, CERTIFICATE_CHAIN_PEM=not_a_ca.pem + root.pem)),
            "CERTIFICATE_PEM does not verify against CERTIFICATE_CHAIN_PEM",
        ),
        BadCase(
            "chain-expired-intermediate",
            _json(pki.secret(under_expired_ca, CERTIFICATE_CHAIN_PEM=expired_ca.pem + root.pem)),
            "CERTIFICATE_PEM does not verify against CERTIFICATE_CHAIN_PEM",
        ),
        BadCase(
            "leaf-without-server-auth",
            _json(pki.secret(client_only)),
            "CERTIFICATE_PEM does not verify against CERTIFICATE_CHAIN_PEM",
        ),
        BadCase(
            "self-signed-leaf", _json(pki.secret(self_signed)), "CERTIFICATE_PEM is self-signed"
        ),
        BadCase("expired", _json(pki.secret(expired)), "CERTIFICATE_PEM expired on"),
        BadCase("not-yet-valid", _json(pki.secret(future)), "CERTIFICATE_PEM is not valid until"),
        BadCase(
            "certificate-for-another-host",
            _json(pki.secret(other_host)),
            "CERTIFICATE_PEM does not cover www.example.com (it names api.example.com, 127.0.0.1)",
        ),
        BadCase(
            "wildcard-covers-one-label-only",
            _json(pki.secret(wildcard)),
            "does not cover a.www.example.com",
            policy=BundlePolicy(server_name="a.www.example.com"),
        ),
        BadCase(
            "wildcard-not-the-bare-domain",
            _json(pki.secret(wildcard)),
            "does not cover example.com",
            policy=BundlePolicy(server_name="example.com"),
        ),
        BadCase(
            "ip-not-in-san",
            _json(good),
            "does not cover 10.0.0.1",
            policy=BundlePolicy(server_name="10.0.0.1"),
        ),
        BadCase(
            "cn-only-refused-by-allow-cn-only-no",
            _json(pki.secret(no_san)),
            "CERTIFICATE_PEM names www.example.com in its CN only, without a subjectAltName, "
            "and allow_cn_only = no",
            policy=BundlePolicy(allow_cn_only=False),
        ),
        BadCase(
            "cn-only-not-the-server-name",
            _json(pki.secret(no_san)),
            "does not cover api.example.com (its CN is www.example.com)",
            policy=BundlePolicy(server_name="api.example.com"),
        ),
        BadCase(
            "cn-only-ip-server-name",
            _json(pki.secret(no_san)),
            "does not cover 127.0.0.1 (its CN is www.example.com)",
            policy=BundlePolicy(server_name="127.0.0.1"),
        ),
        BadCase(
            "no-subject-alt-name-and-no-name-in-cn",
            _json(pki.secret(no_name)),
            "has no subjectAltName DNS names or IP addresses",
        ),
        BadCase(
            "cn-only-client-auth-only",
            _json(
                {
                    **pki.secret(),
                    "CERTIFICATE_PEM": cn_only_client.pem,
                    "PRIVATE_KEY_PEM": cn_only_client.key_pem(),
                }
            ),
            "its extendedKeyUsage does not allow serverAuth",
        ),
        BadCase(
            "rsa-1024",
            _json(pki.secret(rsa1024)),
            "CERTIFICATE_PEM has an RSA-1024 key; at least 2048 bits are required",
        ),
        BadCase(
            "rsa-2048-below-configured-minimum",
            _json(pki.secret(rsa2048)),
            "at least 3072 bits are required",
            policy=BundlePolicy(server_name="www.example.com", min_rsa_bits=3072),
        ),
        BadCase("ed25519-leaf", _json(pki.secret(ed_leaf)), "unsupported Ed25519 key"),
        BadCase("dsa-leaf", _json(pki.secret(dsa_leaf)), "unsupported DSA-2048 key"),
        BadCase("secp256k1-leaf", _json(pki.secret(k1_leaf)), "unsupported EC-secp256k1 key"),
        BadCase(
            "downgrade",
            _json(good),
            "before the installed certificate",
            installed_not_after=long_lived.cert.not_valid_after_utc,
        ),
    ]
    return cases


def valid_secret_cases(pki: Pki) -> List[ValidCase]:
    """Secrets that must be accepted, covering every accepted encoding and key type."""
    leaf = pki.leaf()
    root, intermediate = pki.root, pki.intermediate
    rsa2048 = pki.leaf(key_kind="rsa", key_size=2048)
    rsa3072 = pki.leaf(key_kind="rsa", key_size=3072)
    rsa4096 = pki.leaf(key_kind="rsa", key_size=4096)
    ec384 = pki.leaf(key_kind="ec", key_size=384)
    ec521 = pki.leaf(key_kind="ec", key_size=521)
    wildcard = pki.leaf(names=("*.example.com", "127.0.0.1"))
    level2 = make_ca("certpull test intermediate 2", issuer=intermediate, slot=2)
    under_level2 = make_leaf(level2)
    under_root = make_leaf(root)
    short = pki.leaf(days=30)
    chain = pki.chain_pem()
    t = now()
    www = "www.example.com"
    spaced = "\n\n  " + leaf.pem.replace("\n", "  \n") + "\n \t\n"

    return [
        ValidCase("ec-p256-pkcs8", _json(pki.secret(leaf)), leaf, 1, "EC-P256"),
        ValidCase(
            "ec-p256-sec1",
            _json(pki.secret(leaf, PRIVATE_KEY_PEM=leaf.key_pem("sec1"))),
            leaf,
            1,
            "EC-P256",
        ),
        ValidCase(
            "ec-p256-sec1-with-parameters",
            _json(pki.secret(leaf, PRIVATE_KEY_PEM=EC_PARAMETERS_P256 + leaf.key_pem("sec1"))),
            leaf,
            1,
            "EC-P256",
        ),
        ValidCase("ec-p384", _json(pki.secret(ec384)), ec384, 1, "EC-P384"),
        ValidCase("ec-p521", _json(pki.secret(ec521)), ec521, 1, "EC-P521"),
        ValidCase("rsa-2048-pkcs8", _json(pki.secret(rsa2048)), rsa2048, 1, "RSA-2048"),
        ValidCase(
            "rsa-2048-pkcs1",
            _json(pki.secret(rsa2048, PRIVATE_KEY_PEM=rsa2048.key_pem("pkcs1"))),
            rsa2048,
            1,
            "RSA-2048",
        ),
        ValidCase("rsa-3072", _json(pki.secret(rsa3072)), rsa3072, 1, "RSA-3072"),
        ValidCase("rsa-4096", _json(pki.secret(rsa4096)), rsa4096, 1, "RSA-4096"),
        ValidCase(
            "crlf-line-endings",
            _json(
                pki.secret(
                    leaf,
                    CERTIFICATE_PEM=_crlf(leaf.pem),
                    CERTIFICATE_CHAIN_PEM=_crlf(pki.chain_pem(include_root=True)),
                    PRIVATE_KEY_PEM=_crlf(leaf.key_pem()),
                )
            ),
            leaf,
            1,
            "EC-P256",
        ),
        ValidCase(
            "extra-whitespace",
            "\n  "
            + _json(
                pki.secret(
                    leaf,
                    CERTIFICATE_PEM=spaced,
                    CERTIFICATE_CHAIN_PEM="\n" + intermediate.pem + "\n\n  \n" + root.pem + "\n\n",
                    PRIVATE_KEY_PEM="  " + leaf.key_pem() + "\n\n",
                )
            )
            + "\n\n",
            leaf,
            1,
            "EC-P256",
        ),
        ValidCase(
            "chain-with-root-dropped",
            _json(pki.secret(leaf, CERTIFICATE_CHAIN_PEM=pki.chain_pem(include_root=True))),
            leaf,
            1,
            "EC-P256",
        ),
        ValidCase(
            "chain-with-root-kept",
            _json(pki.secret(leaf, CERTIFICATE_CHAIN_PEM=pki.chain_pem(include_root=True))),
            leaf,
            2,
            "EC-P256",
            policy=BundlePolicy(server_name=www, include_root=True),
        ),
        ValidCase(
            "two-intermediates",
            _json(
                pki.secret(
                    under_level2, CERTIFICATE_CHAIN_PEM=level2.pem + intermediate.pem + root.pem
                )
            ),
            under_level2,
            2,
            "EC-P256",
        ),
        ValidCase(
            "issued-by-root-chain-only-root",  # the root stays: chain.pem is never empty
            _json(pki.secret(under_root, CERTIFICATE_CHAIN_PEM=root.pem)),
            under_root,
            1,
            "EC-P256",
        ),
        ValidCase(
            "no-server-name", _json(pki.secret(leaf)), leaf, 1, "EC-P256", policy=BundlePolicy()
        ),
        ValidCase(
            "server-name-ip",
            _json(pki.secret(leaf)),
            leaf,
            1,
            "EC-P256",
            policy=BundlePolicy(server_name="127.0.0.1"),
        ),
        ValidCase(
            "server-name-case-and-dot",
            _json(pki.secret(leaf)),
            leaf,
            1,
            "EC-P256",
            policy=BundlePolicy(server_name="WWW.Example.COM."),
        ),
        ValidCase("wildcard", _json(pki.secret(wildcard)), wildcard, 1, "EC-P256"),
        ValidCase(
            "wildcard-no-server-name",
            _json(pki.secret(wildcard)),
            wildcard,
            1,
            "EC-P256",
            policy=BundlePolicy(),
        ),
        ValidCase(
            "without-arn-and-extra-fields-ignored",
            _json(
                {**_without(pki.secret(leaf), "CERTIFICATE_ARN"), "KEY_ALGORITHM": "EC_prime256v1"}
            ),
            leaf,
            1,
            "EC-P256",
        ),
        ValidCase(
            "custom-field-names",
            _json({"crt": leaf.pem, "ca": chain, "key": leaf.key_pem()}),
            leaf,
            1,
            "EC-P256",
            policy=BundlePolicy(server_name=www, fields=SecretFields("crt", "ca", "key", "arn")),
        ),
        ValidCase(
            "renewal-expires-later",
            _json(pki.secret(leaf)),
            leaf,
            1,
            "EC-P256",
            installed_not_after=t + dt.timedelta(days=30),
        ),
        ValidCase(
            "same-expiry-is-not-a-downgrade",
            _json(pki.secret(leaf)),
            leaf,
            1,
            "EC-P256",
            installed_not_after=leaf.cert.not_valid_after_utc,
        ),
        ValidCase(
            "downgrade-allowed",
            _json(pki.secret(short)),
            short,
            1,
            "EC-P256",
            policy=BundlePolicy(server_name=www, allow_downgrade=True),
            installed_not_after=t + dt.timedelta(days=300),
        ),
    ]
