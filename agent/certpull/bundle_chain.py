"""Validation steps 5-6: the chain's shape (no duplicates, no weak signatures below the trust
anchor, each certificate issued by the next) and path validation under the web PKI profile with
cryptography's verifier, trusting the chain's last certificate.
"""

from __future__ import annotations

import datetime as dt
from typing import Dict, Optional, Sequence, Union

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID

from certpull.bundle_names import ip_or_none, normalise_dns, san
from certpull.config import BundlePolicy, SecretFields
from certpull.errors import BundleError

MAX_DETAIL_CHARS = 200  # of a name list or a verifier's message, in a one-line error


def dn(name: x509.Name) -> str:
    return f"'{name.rfc4514_string()}'"


_WEAK_HASHES = {"sha1": "SHA-1", "md5": "MD5"}


def check_chain_shape(
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
            if not directly_issued_by(cert, issuer):
                raise BundleError(
                    f"the signature of {what} does not verify with the key of "
                    f"{dn(issuer.subject)} in {names.chain}"
                )
        elif is_self_signed(cert):
            raise BundleError(f"{what} is a self-signed root, but more certificates follow it")
        elif cert.issuer in subjects:
            raise BundleError(
                f"{names.chain} is in the wrong order; each certificate must be followed by "
                "its issuer"
            )
        else:
            raise BundleError(
                f"{what} is issued by {dn(cert.issuer)}, but the next certificate in "
                f"{names.chain} is {dn(issuer.subject)} (missing intermediate?)"
            )


def check_duplicates(chain: Sequence[x509.Certificate], names: SecretFields) -> None:
    seen: Dict[bytes, int] = {}
    for index, cert in enumerate(chain, start=1):
        der = cert.public_bytes(serialization.Encoding.DER)
        if der in seen:
            raise BundleError(
                f"{names.chain} holds {dn(cert.subject)} twice (certificates {seen[der]} and "
                f"{index}); remove the duplicate"
            )
        seen[der] = index


def check_signature_hashes(
    leaf: x509.Certificate, chain: Sequence[x509.Certificate], names: SecretFields
) -> None:
    """A SHA-1 or MD5 signature is refused by name (it would otherwise surface as a signature
    that "does not verify"). The last chain certificate is the trust anchor: its own
    signature is never checked by clients."""
    signed = [(leaf, names.certificate)]
    signed += [(c, f"certificate {i + 1} of {names.chain}") for i, c in enumerate(chain[:-1])]
    for cert, what in signed:
        try:
            algorithm = cert.signature_hash_algorithm
        except UnsupportedAlgorithm:
            continue  # the path validation names it
        weak = _WEAK_HASHES.get(algorithm.name) if algorithm is not None else None
        if weak:
            raise BundleError(
                f"{what} is signed with {weak}, which TLS clients refuse; reissue it with "
                "SHA-256 or better"
            )


def directly_issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def is_self_signed(cert: x509.Certificate) -> bool:
    return cert.issuer == cert.subject and directly_issued_by(cert, cert)


def verify_path(
    leaf: x509.Certificate,
    chain: Sequence[x509.Certificate],
    policy: BundlePolicy,
    now: dt.datetime,
) -> None:
    """Web PKI path validation, trusting the chain's last certificate (root or top intermediate):
    catches what the shape check does not (non-CA issuers, expired intermediates, weak
    signatures, missing serverAuth)."""
    builder = verification.PolicyBuilder().store(verification.Store([chain[-1]])).time(now)
    verifier: Union[verification.ServerVerifier, verification.ClientVerifier]
    if any(san(leaf)):
        verifier = builder.build_server_verifier(_verification_subject(leaf, policy.server_name))
    else:
        verifier = builder.extension_policies(
            ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(), ee_policy=_CN_ONLY_EE
        ).build_client_verifier()
    failure = None
    try:
        verifier.verify(leaf, list(chain[:-1]))
    except verification.VerificationError as exc:
        detail = " ".join(str(exc).split())
        for noise in ("validation failed: ", "candidates exhausted: "):
            detail = detail.replace(noise, "")
        failure = detail[:MAX_DETAIL_CHARS]
    if failure is not None:
        raise BundleError(
            f"{policy.fields.certificate} does not verify against {policy.fields.chain}: {failure}"
        )


def _server_auth_allowed(
    policy: verification.Policy, cert: x509.Certificate, eku: Optional[x509.ExtendedKeyUsage]
) -> None:
    """The web PKI's EKU rule, kept for a leaf verified without a name: serverAuth (or any)."""
    if eku is not None and not {
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
    } & set(eku):
        raise ValueError("its extendedKeyUsage does not allow serverAuth")


# A CN-only leaf cannot pass the server verifier (it matches names in the subjectAltName only):
# the web PKI's end-entity rules with the subjectAltName optional and the EKU rule kept (the
# name itself is checked against the CN in step 4).


_CN_ONLY_EE = (
    verification.ExtensionPolicy.webpki_defaults_ee()
    .may_be_present(x509.SubjectAlternativeName, verification.Criticality.AGNOSTIC, None)
    .may_be_present(x509.ExtendedKeyUsage, verification.Criticality.AGNOSTIC, _server_auth_allowed)
)


def _verification_subject(
    leaf: x509.Certificate, server_name: Optional[str]
) -> Union[x509.DNSName, x509.IPAddress]:
    """The verifier wants a name; the name check already ran, so any covered name will do."""
    dns_names, ips = san(leaf)
    if server_name is not None:
        ip = ip_or_none(server_name)
        if ip is not None:
            return x509.IPAddress(ip)
        host = normalise_dns(server_name)
        if host is not None:
            return x509.DNSName(host)
    for name in dns_names:
        if "*" not in name:
            return x509.DNSName(name)
    if ips:
        return x509.IPAddress(ips[0])
    return x509.DNSName(dns_names[0].replace("*", "certpull-check", 1))
