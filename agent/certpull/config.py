"""INI configuration -> frozen dataclasses, in two stages.

Stage one reads the raw INI and refuses anything it does not know (unknown sections and keys, duplicates),
remembering the line of every key. Stage two turns strings into typed values and checks ranges, ARNs,
paths and modes. Every error names the file, the line and the key, so an operator can fix it without
guessing. This module touches nothing: the caller reads the file and passes its text in.
"""

from __future__ import annotations

import configparser
import ipaddress
import re
import shlex
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Tuple, TypeVar

from certpull.errors import ConfigError
from certpull.windows import parse_windows

DEFAULT_CONFIG_PATH = "/etc/certpull/certpull.conf"
CERT_SECTION_PREFIX = "cert:"

_SECRET_ARN = re.compile(
    r"^arn:aws(?:-[a-z]+)*:secretsmanager:(?P<region>[a-z]{2}(?:-[a-z]+)+-\d+):(?P<account>\d{12}):"
    r"secret:(?P<name>[A-Za-z0-9/_+=.@-]+)$"
)
_ROLE_ARN = re.compile(r"^arn:aws(?:-[a-z]+)*:iam::\d{12}:role/[A-Za-z0-9+=,.@_/-]+$")
_SQS_URL = re.compile(r"^https?://[A-Za-z0-9.-]+(?::\d+)?/\d{12}/[A-Za-z0-9_-]+(?:\.fifo)?$")
_CERT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_LOG_LEVELS = ("debug", "info", "warning", "error")

COMPAT_LINK_KEYS: Dict[str, str] = {
    "cert_file": "cert.pem",
    "chain_file": "chain.pem",
    "fullchain_file": "fullchain.pem",
    "key_file": "privkey.pem",
}


@dataclass(frozen=True)
class AgentConfig:
    """The `[agent]` section: how and when the agent works, for all certificates."""

    poll_interval_s: float = 300.0
    reconcile_interval_s: float = 3600.0
    startup_splay_s: float = 10.0
    max_backoff_s: float = 900.0
    events_queue_url: Optional[str] = None
    event_splay_s: float = 5.0
    reload_command: Tuple[str, ...] = ("systemctl", "reload", "httpd")
    configtest_command: Tuple[str, ...] = ("apachectl", "configtest")
    start_command: Tuple[str, ...] = ("systemctl", "start", "httpd")
    httpd_pid_file: Optional[str] = "/run/httpd/httpd.pid"
    command_timeout_s: float = 60.0
    live_dir: str = "/etc/pki/certpull"
    state_dir: str = "/var/lib/certpull"
    install_window: Optional[str] = None
    urgent_before_expiry_days: float = 7.0
    warn_days: float = 30.0
    crit_days: float = 7.0
    verify_timeout_s: float = 10.0
    endpoint_url: Optional[str] = None
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 15.0
    max_attempts: int = 3
    log_level: str = "info"


@dataclass(frozen=True)
class CertConfig:
    """One `[cert:NAME]` section: which secret, and how its files are installed and checked."""

    name: str
    secret_arn: str
    role_arn: Optional[str] = None
    external_id: Optional[str] = None
    server_name: Optional[str] = None
    verify: Optional[Tuple[str, int]] = None
    keep_versions: int = 2
    key_mode: int = 0o600
    cert_mode: int = 0o644
    owner: Optional[str] = None
    group: Optional[str] = None
    compat_links: Tuple[Tuple[str, str], ...] = ()  # (path, file name in the live dir)
    allow_downgrade: bool = False
    include_root: bool = False
    min_rsa_bits: int = 2048
    certificate_field: str = "CERTIFICATE_PEM"
    chain_field: str = "CERTIFICATE_CHAIN_PEM"
    private_key_field: str = "PRIVATE_KEY_PEM"
    certificate_arn_field: str = "CERTIFICATE_ARN"

    @property
    def region(self) -> str:
        """The secret's region, taken from its ARN (Secrets Manager calls must go there)."""
        return self.secret_arn.split(":")[3]

    @property
    def account(self) -> str:
        return self.secret_arn.split(":")[4]


@dataclass(frozen=True)
class Config:
    path: str
    agent: AgentConfig
    certs: Tuple[CertConfig, ...]

    def cert(self, name: str) -> CertConfig:
        for cert in self.certs:
            if cert.name == name:
                return cert
        raise KeyError(name)

    @property
    def names(self) -> Tuple[str, ...]:
        return tuple(cert.name for cert in self.certs)


# --- stage one: raw INI, unknown keys refused, lines remembered ----------------------------------

_AGENT_KEYS = frozenset(AgentConfig.__dataclass_fields__)
_CERT_KEYS = frozenset(
    {
        "secret_arn",
        "role_arn",
        "external_id",
        "server_name",
        "verify",
        "keep_versions",
        "key_mode",
        "cert_mode",
        "owner",
        "group",
        "allow_downgrade",
        "include_root",
        "min_rsa_bits",
        "certificate_field",
        "chain_field",
        "private_key_field",
        "certificate_arn_field",
        *COMPAT_LINK_KEYS,
    }
)


@dataclass(frozen=True)
class _RawSection:
    name: str
    line: int
    values: Mapping[str, str]
    lines: Mapping[str, int]


def _read_raw(text: str, path: str) -> List[_RawSection]:
    parser = configparser.ConfigParser(
        interpolation=None,
        inline_comment_prefixes=(";", "#"),
        empty_lines_in_values=False,
        default_section="\x00no-defaults",  # a [DEFAULT] section is just unknown here
    )
    try:
        parser.read_string(text, source=path)
    except configparser.DuplicateSectionError as exc:
        raise ConfigError(f"section [{exc.section}] appears twice", path, exc.lineno) from None
    except configparser.DuplicateOptionError as exc:
        raise ConfigError(
            f"key appears twice in [{exc.section}]", path, exc.lineno, exc.option
        ) from None
    except configparser.MissingSectionHeaderError as exc:
        raise ConfigError("text before the first [section] header", path, exc.lineno) from None
    except configparser.ParsingError as exc:
        line = exc.errors[0][0] if exc.errors else None
        raise ConfigError("cannot parse this line (expected `key = value`)", path, line) from None
    except configparser.Error as exc:
        raise ConfigError(str(exc).splitlines()[0], path) from None

    section_lines, key_lines = _line_numbers(text)
    sections = []
    for name in parser.sections():
        values = {key: value.strip() for key, value in parser.items(name)}
        lines = {key: key_lines.get((name, key), section_lines.get(name, 0)) for key in values}
        sections.append(_RawSection(name, section_lines.get(name, 0), values, lines))
    return sections


def _line_numbers(text: str) -> Tuple[Dict[str, int], Dict[Tuple[str, str], int]]:
    """Where each section header and key stands (configparser does not keep line numbers)."""
    section_lines: Dict[str, int] = {}
    key_lines: Dict[Tuple[str, str], int] = {}
    current = ""
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped[0] in "#;" or line[:1].isspace():
            continue
        if stripped.startswith("[") and "]" in stripped:
            current = stripped[1 : stripped.index("]")].strip()
            section_lines.setdefault(current, number)
            continue
        key = re.split(r"[=:]", stripped, maxsplit=1)[0].strip().lower()
        key_lines.setdefault((current, key), number)
    return section_lines, key_lines


# --- stage two: typed values ---------------------------------------------------------------------

T = TypeVar("T")


class _Section:
    """Typed accessors over one raw section; each error carries the key's file and line."""

    def __init__(self, raw: _RawSection, path: str) -> None:
        self.raw = raw
        self.path = path

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(message, self.path, self.raw.lines.get(key, self.raw.line), key)

    def text(self, key: str) -> Optional[str]:
        value = self.raw.values.get(key)
        return value if value else None

    def convert(self, key: str, parse: Callable[[str], T], default: T) -> T:
        value = self.text(key)
        if value is None:
            return default
        try:
            return parse(value)
        except ValueError as exc:
            raise self.error(key, str(exc)) from None


def _number(minimum: float, maximum: float) -> Callable[[str], float]:
    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a number") from None
        if not minimum <= number <= maximum:
            raise ValueError(f"{value} is out of range [{minimum:g}, {maximum:g}]")
        return number

    return parse


def _integer(minimum: int, maximum: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = int(value, 10)
        except ValueError:
            raise ValueError(f"{value!r} is not a whole number") from None
        if not minimum <= number <= maximum:
            raise ValueError(f"{value} is out of range [{minimum}, {maximum}]")
        return number

    return parse


def _boolean(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "yes", "true", "on"):
        return True
    if lowered in ("0", "no", "false", "off"):
        return False
    raise ValueError(f"{value!r} is not a boolean (use yes or no)")


def _absolute_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"{value!r} is not an absolute path")
    if "\x00" in value or any(part == ".." for part in value.split("/")):
        raise ValueError(f"{value!r} must not contain '..'")
    return value.rstrip("/") or "/"


def _command(value: str) -> Tuple[str, ...]:
    try:
        argv = tuple(shlex.split(value))
    except ValueError as exc:
        raise ValueError(f"cannot split {value!r} into arguments: {exc}") from None
    if not argv:
        raise ValueError("is empty")
    return argv


def _mode(value: str) -> int:
    if not re.fullmatch(r"0?[0-7]{3}", value):
        raise ValueError(f"{value!r} is not an octal file mode like 0600")
    return int(value, 8)


def _key_mode(value: str) -> int:
    mode = _mode(value)
    if mode & 0o007:
        raise ValueError(f"{value} would let other users read the private key (use 0600 or 0640)")
    if mode & 0o400 == 0:
        raise ValueError(f"{value} does not let the owner read the private key")
    return mode


def _secret_arn(value: str) -> str:
    if not _SECRET_ARN.match(value):
        raise ValueError(
            f"{value!r} is not a Secrets Manager secret ARN "
            "(arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME)"
        )
    return value


def _role_arn(value: str) -> str:
    if not _ROLE_ARN.match(value):
        raise ValueError(f"{value!r} is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)")
    return value


def _queue_url(value: str) -> str:
    if not _SQS_URL.match(value):
        raise ValueError(
            f"{value!r} is not an SQS queue URL (https://sqs.REGION.amazonaws.com/ACCOUNT/NAME)"
        )
    return value


def _url(value: str) -> str:
    if not re.match(r"^https?://[^\s/]+", value):
        raise ValueError(f"{value!r} is not an http(s) URL")
    return value


def _server_name(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    if not is_dns_name(value):
        raise ValueError(f"{value!r} is not a DNS name or IP address")
    return value.rstrip(".").lower()


def parse_host_port(value: str) -> Tuple[str, int]:
    """`127.0.0.1:443`, `[::1]:8443` or `host.example.com:443` -> (host, port); ValueError on junk.

    The one parser of `verify` targets (httpd.VerifyTarget uses it too).
    """
    text = value.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":") or not _is_ipv6(host):
            raise ValueError(f"verify target {value!r}: expected [IPv6]:PORT")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ValueError(f"verify target {value!r}: expected HOST:PORT (e.g. 127.0.0.1:443)")
        if ":" in host:
            raise ValueError(f"verify target {value!r}: put an IPv6 address in brackets, [::1]:443")
        if not _is_ip(host) and not is_dns_name(host):
            raise ValueError(f"verify target {value!r}: {host!r} is not an IP address or host name")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"verify target {value!r}: port must be a number from 1 to 65535")
    return host, int(port_text)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _is_ipv6(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).version == 6
    except ValueError:
        return False


_DNS_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def is_dns_name(text: str) -> bool:
    """A host name (trailing dot allowed), not an IP address nor an IP-looking typo."""
    if _is_ip(text) or len(text) > 253 or not text:
        return False
    labels = text[:-1].split(".") if text.endswith(".") else text.split(".")
    if labels[-1].isdigit():
        return False  # 1.2.3 or 999.1.1.1: an IP typo, not a name
    return all(_DNS_LABEL.match(label) for label in labels)


def _field_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,128}", value):
        raise ValueError(f"{value!r} is not a JSON key name (letters, digits, _ . -)")
    return value


def _log_level(value: str) -> str:
    if value.lower() not in _LOG_LEVELS:
        raise ValueError(f"{value!r} is not one of {', '.join(_LOG_LEVELS)}")
    return value.lower()


def _parse_agent(section: _Section) -> AgentConfig:
    d = AgentConfig()
    day = 86400.0
    agent = AgentConfig(
        poll_interval_s=section.convert("poll_interval_s", _number(1, 7 * day), d.poll_interval_s),
        reconcile_interval_s=section.convert(
            "reconcile_interval_s", _number(1, 7 * day), d.reconcile_interval_s
        ),
        startup_splay_s=section.convert("startup_splay_s", _number(0, 3600), d.startup_splay_s),
        max_backoff_s=section.convert("max_backoff_s", _number(5, day), d.max_backoff_s),
        events_queue_url=section.convert("events_queue_url", _queue_url, d.events_queue_url),
        event_splay_s=section.convert("event_splay_s", _number(0, 3600), d.event_splay_s),
        reload_command=section.convert("reload_command", _command, d.reload_command),
        configtest_command=section.convert("configtest_command", _command, d.configtest_command),
        start_command=section.convert("start_command", _command, d.start_command),
        httpd_pid_file=section.convert("httpd_pid_file", _absolute_path, d.httpd_pid_file),
        command_timeout_s=section.convert(
            "command_timeout_s", _number(1, 3600), d.command_timeout_s
        ),
        live_dir=section.convert("live_dir", _absolute_path, d.live_dir),
        state_dir=section.convert("state_dir", _absolute_path, d.state_dir),
        install_window=section.convert("install_window", _install_window, d.install_window),
        urgent_before_expiry_days=section.convert(
            "urgent_before_expiry_days", _number(0, 3650), d.urgent_before_expiry_days
        ),
        warn_days=section.convert("warn_days", _number(0, 3650), d.warn_days),
        crit_days=section.convert("crit_days", _number(0, 3650), d.crit_days),
        verify_timeout_s=section.convert("verify_timeout_s", _number(0.5, 600), d.verify_timeout_s),
        endpoint_url=section.convert("endpoint_url", _url, d.endpoint_url),
        connect_timeout_s=section.convert(
            "connect_timeout_s", _number(0.1, 300), d.connect_timeout_s
        ),
        read_timeout_s=section.convert("read_timeout_s", _number(0.1, 300), d.read_timeout_s),
        max_attempts=section.convert("max_attempts", _integer(1, 20), d.max_attempts),
        log_level=section.convert("log_level", _log_level, d.log_level),
    )
    if agent.crit_days > agent.warn_days:
        raise section.error(
            "crit_days", f"{agent.crit_days:g} is larger than warn_days ({agent.warn_days:g})"
        )
    return agent


def _install_window(value: str) -> str:
    """Checked by the windows module's own parser so the grammar lives in one place."""
    parse_windows(value)
    return value


def _parse_cert(section: _Section, name: str) -> CertConfig:
    if not _CERT_NAME.match(name):
        raise ConfigError(
            f"certificate name {name!r} must be 1-64 letters, digits, '.', '_' or '-' "
            "and start with a letter or digit",
            section.path,
            section.raw.line,
        )
    secret_arn = section.text("secret_arn")
    if secret_arn is None:
        raise ConfigError(
            f"[cert:{name}] needs secret_arn", section.path, section.raw.line, "secret_arn"
        )
    d = CertConfig(name=name, secret_arn="")
    links: List[Tuple[str, str]] = []
    for key, filename in COMPAT_LINK_KEYS.items():
        path = section.convert(key, _absolute_path, None)
        if path is not None:
            links.append((path, filename))
    cert = CertConfig(
        name=name,
        secret_arn=section.convert("secret_arn", _secret_arn, ""),
        role_arn=section.convert("role_arn", _role_arn, d.role_arn),
        external_id=section.text("external_id"),
        server_name=section.convert("server_name", _server_name, d.server_name),
        verify=section.convert("verify", parse_host_port, d.verify),
        keep_versions=section.convert("keep_versions", _integer(2, 50), d.keep_versions),
        key_mode=section.convert("key_mode", _key_mode, d.key_mode),
        cert_mode=section.convert("cert_mode", _mode, d.cert_mode),
        owner=section.text("owner"),
        group=section.text("group"),
        compat_links=tuple(links),
        allow_downgrade=section.convert("allow_downgrade", _boolean, d.allow_downgrade),
        include_root=section.convert("include_root", _boolean, d.include_root),
        min_rsa_bits=section.convert("min_rsa_bits", _integer(2048, 16384), d.min_rsa_bits),
        certificate_field=section.convert("certificate_field", _field_name, d.certificate_field),
        chain_field=section.convert("chain_field", _field_name, d.chain_field),
        private_key_field=section.convert("private_key_field", _field_name, d.private_key_field),
        certificate_arn_field=section.convert(
            "certificate_arn_field", _field_name, d.certificate_arn_field
        ),
    )
    if cert.external_id and not cert.role_arn:
        raise section.error("external_id", "is only used with role_arn")
    return cert


def parse_config(text: str, path: str = DEFAULT_CONFIG_PATH) -> Config:
    """Parse and check a whole configuration file's text. Raises ConfigError with file:line."""
    agent: Optional[AgentConfig] = None
    certs: List[CertConfig] = []
    link_owners: Dict[str, str] = {}
    for raw in _read_raw(text, path):
        section = _Section(raw, path)
        if raw.name == "agent":
            allowed = _AGENT_KEYS
        elif raw.name.startswith(CERT_SECTION_PREFIX):
            allowed = _CERT_KEYS
        else:
            raise ConfigError(
                f"unknown section [{raw.name}] (expected [agent] or [cert:NAME])", path, raw.line
            )
        for key in raw.values:
            if key not in allowed:
                raise section.error(key, f"unknown key in [{raw.name}]")
        if raw.name == "agent":
            agent = _parse_agent(section)
            continue
        cert = _parse_cert(section, raw.name[len(CERT_SECTION_PREFIX) :].strip())
        for link, _ in cert.compat_links:
            if link in link_owners:
                raise ConfigError(
                    f"{link} is already a compat link of [cert:{link_owners[link]}]", path, raw.line
                )
            link_owners[link] = cert.name
        certs.append(cert)
    if not certs:
        raise ConfigError("no [cert:NAME] section: nothing to install", path)
    return Config(path=path, agent=agent or AgentConfig(), certs=tuple(certs))


def load_config(path: str, read_text: Callable[[str], str]) -> Config:
    """Read (through the injected reader) and parse; unreadable files are ConfigErrors too."""
    try:
        text = read_text(path)
    except FileNotFoundError:
        raise ConfigError("no such file", path) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", path) from None
    except UnicodeDecodeError:
        raise ConfigError("is not UTF-8 text", path) from None
    return parse_config(text, path)
