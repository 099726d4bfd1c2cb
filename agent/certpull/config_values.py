"""Pure parsers for configuration values: a string in, a typed value out, ValueError with a reason.

config.py attaches one of these to each declared key; the reason becomes the `file:line: key:` error
the operator sees. httpd.py reuses the host and name helpers for its verify targets.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from typing import Callable, Tuple

_SECRET_ARN = re.compile(
    r"^arn:aws(?:-[a-z]+)*:secretsmanager:(?P<region>[a-z]{2}(?:-[a-z]+)+-\d+):(?P<account>\d{12}):"
    r"secret:(?P<name>[A-Za-z0-9/_+=.@-]+)$"
)
_ROLE_ARN = re.compile(r"^arn:aws(?:-[a-z]+)*:iam::\d{12}:role/[A-Za-z0-9+=,.@_/-]+$")
_SQS_URL = re.compile(r"^https?://[A-Za-z0-9.-]+(?::\d+)?/\d{12}/[A-Za-z0-9_-]+(?:\.fifo)?$")
_DNS_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
LOG_LEVELS = ("debug", "info", "warning", "error")


def number(minimum: float, maximum: float) -> Callable[[str], float]:
    def parse(value: str) -> float:
        try:
            result = float(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a number") from None
        if not minimum <= result <= maximum:
            raise ValueError(f"{value} is out of range [{minimum:g}, {maximum:g}]")
        return result

    return parse


def integer(minimum: int, maximum: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            result = int(value, 10)
        except ValueError:
            raise ValueError(f"{value!r} is not a whole number") from None
        if not minimum <= result <= maximum:
            raise ValueError(f"{value} is out of range [{minimum}, {maximum}]")
        return result

    return parse


def boolean(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "yes", "true", "on"):
        return True
    if lowered in ("0", "no", "false", "off"):
        return False
    raise ValueError(f"{value!r} is not a boolean (use yes or no)")


def text(value: str) -> str:
    return value


def absolute_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"{value!r} is not an absolute path")
    if "\x00" in value or any(part == ".." for part in value.split("/")):
        raise ValueError(f"{value!r} must not contain '..'")
    return value.rstrip("/") or "/"


def command(value: str) -> Tuple[str, ...]:
    """A command line split shell-style into argv; no shell ever runs it (no pipes, no `&&`)."""
    try:
        argv = tuple(shlex.split(value))
    except ValueError as exc:
        raise ValueError(f"cannot split {value!r} into arguments: {exc}") from None
    if not argv:
        raise ValueError("is empty")
    return argv


def mode(value: str) -> int:
    if not re.fullmatch(r"0?[0-7]{3}", value):
        raise ValueError(f"{value!r} is not an octal file mode like 0600")
    return int(value, 8)


def key_mode(value: str) -> int:
    result = mode(value)
    if result & 0o007:
        raise ValueError(f"{value} would let other users read the private key (use 0600 or 0640)")
    if result & 0o400 == 0:
        raise ValueError(f"{value} does not let the owner read the private key")
    return result


def cert_mode(value: str) -> int:
    result = mode(value)
    if result & 0o002:
        raise ValueError(
            f"{value} would let every user change the certificate files (use 0644 or 0640)"
        )
    return result


def secret_arn(value: str) -> str:
    if not _SECRET_ARN.match(value):
        raise ValueError(
            f"{value!r} is not a Secrets Manager secret ARN "
            "(arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME)"
        )
    return value


def role_arn(value: str) -> str:
    if not _ROLE_ARN.match(value):
        raise ValueError(f"{value!r} is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)")
    return value


def queue_url(value: str) -> str:
    if not _SQS_URL.match(value):
        raise ValueError(
            f"{value!r} is not an SQS queue URL (https://sqs.REGION.amazonaws.com/ACCOUNT/NAME)"
        )
    return value


def url(value: str) -> str:
    if not re.match(r"^https?://[^\s/]+", value):
        raise ValueError(f"{value!r} is not an http(s) URL")
    return value


def server_name(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    if not is_dns_name(value):
        raise ValueError(f"{value!r} is not a DNS name or IP address")
    return value.rstrip(".").lower()


def field_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,128}", value):
        raise ValueError(f"{value!r} is not a JSON key name (letters, digits, _ . -)")
    return value


def auto_no_or_path(value: str) -> str:
    """``auto``, ``no``, or an absolute directory path (the fleet files' places)."""
    if value.lower() in ("auto", "no"):
        return value.lower()
    if not value.startswith("/"):
        raise ValueError(f"{value!r} is not auto, no or an absolute path")
    return absolute_path(value)


def log_level(value: str) -> str:
    if value.lower() not in LOG_LEVELS:
        raise ValueError(f"{value!r} is not one of {', '.join(LOG_LEVELS)}")
    return value.lower()


def parse_host_port(value: str) -> Tuple[str, int]:
    """`127.0.0.1:443`, `[::1]:8443` or `host.example.com:443` -> (host, port); ValueError on junk.

    The one parser of `verify` targets.
    """
    stripped = value.strip()
    if stripped.startswith("["):
        host, sep, rest = stripped[1:].partition("]")
        if not sep or not rest.startswith(":") or not _is_ipv6(host):
            raise ValueError(f"verify target {value!r}: expected [IPv6]:PORT")
        port_text = rest[1:]
    else:
        host, sep, port_text = stripped.rpartition(":")
        if not sep or not host:
            raise ValueError(f"verify target {value!r}: expected HOST:PORT (e.g. 127.0.0.1:443)")
        if ":" in host:
            raise ValueError(f"verify target {value!r}: put an IPv6 address in brackets, [::1]:443")
        if not is_ip(host) and not is_dns_name(host):
            raise ValueError(f"verify target {value!r}: {host!r} is not an IP address or host name")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"verify target {value!r}: port must be a number from 1 to 65535")
    return host, int(port_text)


def is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _is_ipv6(value: str) -> bool:
    try:
        return ipaddress.ip_address(value).version == 6
    except ValueError:
        return False


def is_dns_name(value: str) -> bool:
    """A host name (trailing dot allowed), not an IP address nor an IP-looking typo."""
    if is_ip(value) or len(value) > 253 or not value:
        return False
    labels = value[:-1].split(".") if value.endswith(".") else value.split(".")
    if labels[-1].isdigit():
        return False  # 1.2.3 or 999.1.1.1: an IP typo, not a name
    return all(_DNS_LABEL.match(label) for label in labels)
