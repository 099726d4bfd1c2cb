"""Pure: the rotation settings stored in the secret's own JSON -> frozen, checked dataclasses.

Secrets written for the original AWS sample function (``sm_rotate_secrets.py``) keep working: the
same keys with the same meaning. ``KEY_ALGORITHM`` is ``TYPE_RSA``/``TYPE_EC`` (or the older
``RSA``/``EC``); ``SIGNING_ALGORITHM`` is the family of the CA's signature, ``RSA`` or ``ECDSA``, with
the hash in ``SIGNING_HASH`` (the blog's table), or a full ACM PCA name such as ``SHA256WITHRSA``, or
a bare hash such as ``sha256`` (the sample's first revision). For ``TYPE_EC``, ``EC_CURVE`` names the
curve as the sample reads it (``SECP384R1``) and then ``KEY_SIZE``, which the sample required but
ignored for EC keys, is ignored too. What ACM Private CA would refuse, or what would make a
certificate Apache cannot serve, is rejected here, before anything is issued, with a
``ConfigError`` naming the key.

The leaf's key type and the CA's signature family are independent: an EC leaf key signed by an RSA
CA is ``TYPE_EC`` with ``SIGNING_ALGORITHM = RSA``. Only the family against the CA's own key is
checked (``ca_signing_algorithm``), because ACM PCA signs with the CA's key.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Tuple, Union

from certpull.errors import ConfigError

ACM_ISSUED = "ACM_ISSUED"
ACM_PCA_ISSUED = "ACM_PCA_ISSUED"

# What the function writes; everything else in the secret is carried forward unchanged.
OUTPUT_KEYS = ("CERTIFICATE_PEM", "CERTIFICATE_CHAIN_PEM", "PRIVATE_KEY_PEM", "CERTIFICATE_ARN")

RSA_SIZES = (2048, 3072, 4096)  # what ACM PCA accepts in a CSR
EC_CURVES = {  # accepted spellings -> cryptography's curve name
    "p-256": "secp256r1",
    "p256": "secp256r1",
    "prime256v1": "secp256r1",
    "secp256r1": "secp256r1",
    "p-384": "secp384r1",
    "p384": "secp384r1",
    "secp384r1": "secp384r1",
    "p-521": "secp521r1",
    "p521": "secp521r1",
    "secp521r1": "secp521r1",
}
EC_CURVE_BITS = {"secp256r1": 256, "secp384r1": 384, "secp521r1": 521}
HASHES = ("SHA256", "SHA384", "SHA512")
DEFAULT_VALIDITY_DAYS = 365
MAX_VALIDITY_DAYS = 3650
MAX_COMMON_NAME_CHARS = 64  # X.509 ub-common-name

_KEY_ALGORITHMS = {"TYPE_RSA": "RSA", "RSA": "RSA", "TYPE_EC": "EC", "EC": "EC"}
_UNSUPPORTED_KEY_ALGORITHMS = (  # the sample could generate these; ACM PCA refuses them in a CSR
    "TYPE_DSA",
    "DSA",
    "TYPE_DH",
    "DH",
    "TYPE_ED25519",
    "ED25519",
    "TYPE_ED448",
    "ED448",
)
_SIGNING_ALGORITHM = re.compile(r"^(SHA256|SHA384|SHA512)WITH(RSA|ECDSA)$")
_SIGNING_FAMILIES = ("RSA", "ECDSA")  # the blog's SIGNING_ALGORITHM values
_CA_ARN = re.compile(r"^arn:aws[a-z-]*:acm-pca:[a-z0-9-]+:\d{12}:certificate-authority/[\w-]+$")
_TEMPLATE_ARN = re.compile(r"^arn:aws[a-z-]*:acm-pca:::template/([A-Za-z0-9_]+)/V\d+$")
_DNS_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


@dataclass(frozen=True)
class KeySpec:
    """The leaf key to generate: RSA with ``rsa_bits`` or EC on ``curve`` (cryptography's name)."""

    algorithm: str  # "RSA" or "EC"
    rsa_bits: int = 0
    curve: str = ""

    def describe(self) -> str:
        return f"RSA-{self.rsa_bits}" if self.algorithm == "RSA" else f"EC-{self.curve}"


@dataclass(frozen=True)
class AcmSettings:
    """CERTIFICATE_TYPE=ACM_ISSUED: an ACM private certificate from CA_ARN, exported."""

    ca_arn: str
    common_name: str
    environment: str
    subject_alternative_names: Tuple[str, ...] = ()

    @property
    def renew_every_rotation(self) -> bool:
        """ENVIRONMENT=TEST renews on every rotation; otherwise ACM renews on its own schedule."""
        return self.environment.upper() == "TEST"


@dataclass(frozen=True)
class PcaSettings:
    """CERTIFICATE_TYPE=ACM_PCA_ISSUED: a CSR of our own, signed by the ACM PCA at CA_ARN."""

    ca_arn: str
    common_name: str
    template_arn: str
    key: KeySpec
    csr_hash: str  # signs the CSR: SHA256 / SHA384 / SHA512
    ca_hash: str  # the CA's signature hash
    ca_signature_family: Optional[str]  # "RSA" / "ECDSA", or None: follow the CA's key
    subject_alternative_names: Tuple[str, ...] = ()
    validity_days: int = DEFAULT_VALIDITY_DAYS
    reuse_key: bool = False


Settings = Union[AcmSettings, PcaSettings]


def parse_settings(doc: Mapping[str, Any]) -> Settings:
    """Read and check the settings in a secret's JSON object; ``ConfigError`` names the bad key."""
    kind = _text(doc, "CERTIFICATE_TYPE")
    ca_arn = _text(doc, "CA_ARN")
    if not _CA_ARN.match(ca_arn):
        raise ConfigError("is not an ACM Private CA ARN", key="CA_ARN")
    common_name = _common_name(doc)
    sans = _subject_alternative_names(doc, common_name)
    if kind == ACM_ISSUED:
        return AcmSettings(
            ca_arn=ca_arn,
            common_name=common_name,
            environment=_text(doc, "ENVIRONMENT"),
            subject_alternative_names=sans,
        )
    if kind != ACM_PCA_ISSUED:
        raise ConfigError(
            f"{kind!r} is not supported; use {ACM_ISSUED} or {ACM_PCA_ISSUED}",
            key="CERTIFICATE_TYPE",
        )
    ca_hash, family, csr_hash = _signing(doc)
    return PcaSettings(
        ca_arn=ca_arn,
        common_name=common_name,
        template_arn=_template_arn(doc),
        key=_key_spec(doc),
        csr_hash=csr_hash,
        ca_hash=ca_hash,
        ca_signature_family=family,
        subject_alternative_names=sans,
        validity_days=_validity_days(doc),
        reuse_key=_flag(doc, "REUSE_KEY"),
    )


def certificate_names(settings: Settings) -> Tuple[str, ...]:
    """COMMON_NAME then SUBJECT_ALTERNATIVE_NAMES, without repeats: the leaf's subjectAltName."""
    return (settings.common_name, *settings.subject_alternative_names)


def ca_region(ca_arn: str) -> str:
    """The region of the CA (the ACM / ACM PCA clients must talk to it there)."""
    return ca_arn.split(":")[3]


def ca_signing_algorithm(settings: PcaSettings, ca_key_algorithm: str) -> str:
    """The SigningAlgorithm for IssueCertificate, checked against the CA's KeyAlgorithm.

    ACM PCA signs with the CA's key, so the family is the CA's (RSA_* -> RSA, EC_* -> ECDSA),
    whatever the leaf key is; asking for the other family fails the call after the CSR is made.
    """
    if ca_key_algorithm.startswith("RSA_"):
        family = "RSA"
    elif ca_key_algorithm.startswith("EC_"):
        family = "ECDSA"
    else:
        raise ConfigError(
            f"the CA's key algorithm {ca_key_algorithm} is not supported (RSA_* or EC_* only)",
            key="CA_ARN",
        )
    wanted = settings.ca_signature_family
    if wanted is not None and wanted != family:
        raise ConfigError(
            f"{settings.ca_hash}WITH{wanted} cannot be used with a CA whose key is "
            f"{ca_key_algorithm}; use {settings.ca_hash}WITH{family}",
            key="SIGNING_ALGORITHM",
        )
    return f"{settings.ca_hash}WITH{family}"


# --- single keys ----------------------------------------------------------------------------


def _text(doc: Mapping[str, Any], key: str) -> str:
    value = doc.get(key)
    if value is None:
        raise ConfigError("is missing from the secret's JSON", key=key)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError("must be a non-empty string", key=key)
    return value.strip()


def _optional(doc: Mapping[str, Any], key: str) -> Any:
    value = doc.get(key)
    return None if value is None or (isinstance(value, str) and not value.strip()) else value


def _integer(value: Any, key: str) -> int:
    if isinstance(value, bool):
        raise ConfigError("must be a whole number", key=key)
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    raise ConfigError("must be a whole number", key=key)


def _flag(doc: Mapping[str, Any], key: str) -> bool:
    value = _optional(doc, key)
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ConfigError("must be true or false", key=key)


def _common_name(doc: Mapping[str, Any]) -> str:
    name = _text(doc, "COMMON_NAME")
    if len(name) > MAX_COMMON_NAME_CHARS:
        raise ConfigError(
            f"is longer than {MAX_COMMON_NAME_CHARS} characters; put long names in "
            "SUBJECT_ALTERNATIVE_NAMES",
            key="COMMON_NAME",
        )
    return _host_name(name, "COMMON_NAME")


def _subject_alternative_names(doc: Mapping[str, Any], common_name: str) -> Tuple[str, ...]:
    value = _optional(doc, "SUBJECT_ALTERNATIVE_NAMES")
    if value is None:
        return ()
    if isinstance(value, str):
        items = [item.strip() for item in value.split(",")]
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        items = [item.strip() for item in value]
    else:
        raise ConfigError(
            "must be a list of names or a comma-separated string", key="SUBJECT_ALTERNATIVE_NAMES"
        )
    names = []
    for item in items:
        if not item:
            raise ConfigError("has an empty name", key="SUBJECT_ALTERNATIVE_NAMES")
        name = _host_name(item, "SUBJECT_ALTERNATIVE_NAMES")
        if name != common_name and name not in names:
            names.append(name)
    return tuple(names)


def _host_name(name: str, key: str) -> str:
    """A DNS name (a wildcard only as the whole first label) or an IP address, lower-cased."""
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        pass
    host = name.lower().rstrip(".")
    labels = host.split(".")
    if labels[0] == "*" and len(labels) > 2:
        labels = labels[1:]
    if len(host) > 253 or not all(_DNS_LABEL.match(label) for label in labels):
        raise ConfigError(f"{name!r} is not a DNS name or IP address", key=key)
    return host


def _key_spec(doc: Mapping[str, Any]) -> KeySpec:
    raw = _text(doc, "KEY_ALGORITHM")
    algorithm = _KEY_ALGORITHMS.get(raw.upper())
    if algorithm is None:
        why = (
            "is not supported by ACM Private CA"
            if raw.upper() in _UNSUPPORTED_KEY_ALGORITHMS
            else "is not a key algorithm"
        )
        raise ConfigError(f"{raw} {why}; use TYPE_RSA or TYPE_EC", key="KEY_ALGORITHM")
    size_value = _optional(doc, "KEY_SIZE")
    if algorithm == "RSA":
        if size_value is None:
            raise ConfigError(
                "is missing from the secret's JSON (TYPE_RSA needs it)", key="KEY_SIZE"
            )
        size = _integer(size_value, "KEY_SIZE")
        if size not in RSA_SIZES:
            raise ConfigError(
                f"{size} is not supported for TYPE_RSA; use one of "
                f"{', '.join(str(s) for s in RSA_SIZES)}",
                key="KEY_SIZE",
            )
        return KeySpec("RSA", rsa_bits=size)
    curve_value = _optional(doc, "EC_CURVE")
    if curve_value is not None:  # the curve, as the sample reads it; KEY_SIZE is then ignored
        if not isinstance(curve_value, str) or curve_value.strip().lower() not in EC_CURVES:
            raise ConfigError(
                f"{curve_value!r} is not supported by ACM Private CA; use SECP256R1, SECP384R1 "
                "or SECP521R1 (P-256, P-384, P-521)",
                key="EC_CURVE",
            )
        curve = EC_CURVES[curve_value.strip().lower()]
    elif size_value is not None:  # no EC_CURVE: KEY_SIZE picks the curve
        size = _integer(size_value, "KEY_SIZE")
        by_size = {bits: name for name, bits in EC_CURVE_BITS.items()}.get(size)
        if by_size is None:
            raise ConfigError(
                f"{size} is not supported for TYPE_EC; use 256, 384 or 521, or set EC_CURVE",
                key="KEY_SIZE",
            )
        curve = by_size
    else:
        raise ConfigError("TYPE_EC needs EC_CURVE or KEY_SIZE (256, 384, 521)", key="KEY_SIZE")
    return KeySpec("EC", curve=curve)


def _hash_name(value: Any, key: str) -> str:
    name = value.strip().upper().replace("-", "") if isinstance(value, str) else ""
    if name not in HASHES:
        raise ConfigError(f"{value!r} is not supported; use sha256, sha384 or sha512", key=key)
    return name


def _hash(doc: Mapping[str, Any], key: str, default: str) -> str:
    value = _optional(doc, key)
    return default if value is None else _hash_name(value, key)


def _signing(doc: Mapping[str, Any]) -> Tuple[str, Optional[str], str]:
    """(CA hash, CA family or None, CSR hash) from SIGNING_ALGORITHM and SIGNING_HASH.

    ``RSA`` / ``ECDSA`` (the blog's table) name only the family: the hash is SIGNING_HASH, for the
    CSR and the CA alike, as the sample does. ``SHA256WITHRSA`` names both; the first revision's
    ``sha256`` only the hash (the family then follows the CA's key).
    """
    raw = _text(doc, "SIGNING_ALGORITHM")
    if raw.upper() in _SIGNING_FAMILIES:
        value = _optional(doc, "SIGNING_HASH")
        if value is None:
            raise ConfigError(
                f"is missing from the secret's JSON (SIGNING_ALGORITHM {raw} needs it: "
                "sha256, sha384 or sha512)",
                key="SIGNING_HASH",
            )
        hash_name = _hash_name(value, "SIGNING_HASH")
        return hash_name, raw.upper(), hash_name
    match = _SIGNING_ALGORITHM.match(raw.upper())
    if match:
        ca_hash, family = match.group(1), match.group(2)
    elif raw.upper().replace("-", "") in HASHES:
        ca_hash, family = _hash_name(raw, "SIGNING_ALGORITHM"), None
    else:
        raise ConfigError(
            f"{raw} is not supported; use RSA or ECDSA (with SIGNING_HASH), or one of "
            "SHA256WITHRSA, SHA384WITHRSA, SHA512WITHRSA, SHA256WITHECDSA, SHA384WITHECDSA, "
            "SHA512WITHECDSA",
            key="SIGNING_ALGORITHM",
        )
    return ca_hash, family, _hash(doc, "SIGNING_HASH", default=ca_hash)


def _template_arn(doc: Mapping[str, Any]) -> str:
    arn = _text(doc, "TEMPLATE_ARN")
    match = _TEMPLATE_ARN.match(arn)
    if not match:
        raise ConfigError("is not an ACM Private CA template ARN", key="TEMPLATE_ARN")
    if "CACertificate" in match.group(1):
        raise ConfigError(
            f"{match.group(1)} issues CA certificates, not server certificates; use "
            "EndEntityCertificate/V1 or EndEntityServerAuthCertificate/V1",
            key="TEMPLATE_ARN",
        )
    return arn


def _validity_days(doc: Mapping[str, Any]) -> int:
    key = "VALIDITY_DAYS" if _optional(doc, "VALIDITY_DAYS") is not None else "VALIDITY"
    value = _optional(doc, key)  # VALIDITY: the original function's name for it
    if value is None:
        return DEFAULT_VALIDITY_DAYS
    days = _integer(value, key)
    if not 1 <= days <= MAX_VALIDITY_DAYS:
        raise ConfigError(f"{days} is out of range (1 to {MAX_VALIDITY_DAYS} days)", key=key)
    return days
