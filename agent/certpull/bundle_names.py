"""Validation step 4's names: which DNS names and IP addresses a leaf carries, and whether they
cover ``server_name`` (RFC 6125: IP literals match IP SANs only; a wildcard is the whole left-most
label and matches exactly one label). A CN is a name only for a leaf without subjectAltName.
"""

from __future__ import annotations

import ipaddress
from typing import Iterable, List, Optional, Sequence, Tuple, Union

from cryptography import x509
from cryptography.x509.oid import NameOID

from certpull.config_values import is_dns_name

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


def covers(names: Iterable[str], server_name: str) -> bool:
    """Whether LeafInfo-style ``names`` cover ``server_name`` (RFC 6125; IP-looking names are IPs)."""
    dns_names: List[str] = []
    ips: List[IPAddress] = []
    for name in names:
        ip = ip_or_none(name)
        if ip is None:
            dns_names.append(name)
        else:
            ips.append(ip)
    return covers_in(dns_names, ips, server_name)


def certificate_covers(cert: x509.Certificate, server_name: str) -> bool:
    """Whether the certificate's subjectAltName covers ``server_name``; the CN is ignored."""
    dns_names, ips = san(cert)
    return covers_in(dns_names, ips, server_name)


def san(
    cert: x509.Certificate,
) -> Tuple[List[str], List[IPAddress]]:
    """The leaf's subjectAltName DNS names and IP addresses; empty lists without one."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], []
    ips = [
        ip
        for ip in ext.get_values_for_type(x509.IPAddress)
        if isinstance(ip, (ipaddress.IPv4Address, ipaddress.IPv6Address))
    ]
    return ext.get_values_for_type(x509.DNSName), ips


def common_name(cert: x509.Certificate) -> Optional[str]:
    """The subject's CN when it is one DNS name (what a CN-only leaf can be matched on)."""
    values = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(values) != 1 or not isinstance(values[0].value, str):
        return None
    cn = values[0].value.strip()
    return cn if is_dns_name(cn.replace("*.", "", 1)) else None


def covers_in(
    dns_names: Sequence[str],
    ips: Sequence[IPAddress],
    server_name: str,
) -> bool:
    """IP literals match IP SANs only; DNS names match case-insensitively, with a wildcard
    allowed only as the whole left-most label and matching exactly one label."""
    ip = ip_or_none(server_name)
    if ip is not None:
        return ip in ips
    host = normalise_dns(server_name)
    if host is None or "*" in host:
        return False
    return any(_dns_matches(normalise_dns(pattern), host) for pattern in dns_names)


def ip_or_none(text: str) -> Optional[IPAddress]:
    try:
        return ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None


def normalise_dns(name: str) -> Optional[str]:
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
