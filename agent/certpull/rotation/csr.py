"""Pure: the certificate signing request sent to ACM PCA.

Clients ignore the CN when a subjectAltName is present (RFC 6125), so the CSR always carries the
SAN extension with the CN in it; ACM PCA copies the CSR's SAN into the certificate.
"""

from __future__ import annotations

import ipaddress
from typing import Callable, Dict, List, Sequence, Union

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from certpull.rotation.keys import PrivateKey

_HASHES: Dict[str, Callable[[], Union[hashes.SHA256, hashes.SHA384, hashes.SHA512]]] = {
    "SHA256": hashes.SHA256,
    "SHA384": hashes.SHA384,
    "SHA512": hashes.SHA512,
}


def build_csr(key: PrivateKey, common_name: str, names: Sequence[str], hash_name: str) -> bytes:
    """A PEM CSR with subject CN=``common_name`` and subjectAltName ``names`` (DNS or IP)."""
    general_names: List[x509.GeneralName] = []
    for name in names:
        try:
            general_names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            general_names.append(x509.DNSName(name))
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .add_extension(x509.SubjectAlternativeName(general_names), critical=False)
        .sign(key, _HASHES[hash_name]())
    )
    return request.public_bytes(serialization.Encoding.PEM)
