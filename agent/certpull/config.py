"""The configuration, declared once: INI keys -> frozen dataclasses, with file:line:key errors.

Each key is one dataclass field whose metadata holds its parser (``key(parser)``); the sections'
key lists, the defaults and the typed parse are all derived from those declarations, so adding a
key touches one field (plus its documentation in packaging/certpull.conf and the README).

Two stages, as aws-secretsmanager-agent's config.rs does it: config_ini.py reads the raw INI and
remembers lines; here unknown sections and keys are refused, then every value is parsed and
range-checked, then the few rules that span keys are checked. This module touches nothing: the
caller reads the file and passes its text in.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import (
    Any,
    Callable,
    Dict,
    FrozenSet,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Type,
    TypeVar,
)

from certpull import config_values as v
from certpull.config_ini import RawSection, read_sections
from certpull.errors import ConfigError
from certpull.windows import InstallWindows

DEFAULT_CONFIG_PATH = "/etc/certpull/certpull.conf"
CERT_SECTION_PREFIX = "cert:"
AGENT_SECTION = "agent"
DAY_S = 86400.0

_CERT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

# Compat-link keys of [cert:NAME] -> the live file each link points at.
COMPAT_LINK_KEYS: Dict[str, str] = {
    "cert_file": "cert.pem",
    "chain_file": "chain.pem",
    "fullchain_file": "fullchain.pem",
    "key_file": "privkey.pem",
}


def key(parse: Callable[[str], Any], *, name: Optional[str] = None) -> Dict[str, Any]:
    """Field metadata: the field is an INI key (named ``name``, default the field's name)."""
    return {"parse": parse, "key": name}


def nested(cls: type) -> Dict[str, Any]:
    """Field metadata: the field is a dataclass whose keys sit flat in the same section."""
    return {"nested": cls}


@dataclass(frozen=True)
class SecretFields:
    """JSON key names in the secret; configurable per certificate for other producers."""

    certificate: str = field(
        default="CERTIFICATE_PEM", metadata=key(v.field_name, name="certificate_field")
    )
    chain: str = field(
        default="CERTIFICATE_CHAIN_PEM", metadata=key(v.field_name, name="chain_field")
    )
    private_key: str = field(
        default="PRIVATE_KEY_PEM", metadata=key(v.field_name, name="private_key_field")
    )
    certificate_arn: str = field(
        default="CERTIFICATE_ARN", metadata=key(v.field_name, name="certificate_arn_field")
    )


@dataclass(frozen=True)
class BundlePolicy:
    """What a new bundle must satisfy before it may replace the installed one (bundle.py)."""

    server_name: Optional[str] = field(default=None, metadata=key(v.server_name))
    min_rsa_bits: int = field(default=2048, metadata=key(v.integer(2048, 16384)))
    allow_downgrade: bool = field(default=False, metadata=key(v.boolean))
    allow_cn_only: bool = field(default=True, metadata=key(v.boolean))
    include_root: bool = field(default=False, metadata=key(v.boolean))
    fields: SecretFields = field(default_factory=SecretFields, metadata=nested(SecretFields))
    max_secret_bytes: int = 65536  # Secrets Manager's own limit; not a key


@dataclass(frozen=True)
class AgentConfig:
    """The `[agent]` section: how and when the agent works, for all certificates."""

    poll_interval_s: float = field(default=300.0, metadata=key(v.number(1, 7 * DAY_S)))
    reconcile_interval_s: float = field(default=3600.0, metadata=key(v.number(1, 7 * DAY_S)))
    startup_splay_s: float = field(default=10.0, metadata=key(v.number(0, 3600)))
    max_backoff_s: float = field(default=900.0, metadata=key(v.number(5, DAY_S)))
    events_queue_url: Optional[str] = field(default=None, metadata=key(v.queue_url))
    event_splay_s: float = field(default=5.0, metadata=key(v.number(0, 3600)))
    reload_command: Tuple[str, ...] = field(
        default=("systemctl", "reload", "httpd"), metadata=key(v.command)
    )
    configtest_command: Tuple[str, ...] = field(
        default=("apachectl", "configtest"), metadata=key(v.command)
    )
    start_command: Tuple[str, ...] = field(
        default=("systemctl", "start", "httpd"), metadata=key(v.command)
    )
    httpd_pid_file: Optional[str] = field(default=None, metadata=key(v.absolute_path))
    command_timeout_s: float = field(default=60.0, metadata=key(v.number(1, 3600)))
    live_dir: str = field(default="/etc/pki/certpull", metadata=key(v.absolute_path))
    state_dir: str = field(default="/var/lib/certpull", metadata=key(v.absolute_path))
    install_window: Optional[InstallWindows] = field(
        default=None, metadata=key(InstallWindows.parse)
    )
    urgent_before_expiry_days: float = field(default=7.0, metadata=key(v.number(0, 3650)))
    warn_days: float = field(default=30.0, metadata=key(v.number(0, 3650)))
    crit_days: float = field(default=7.0, metadata=key(v.number(0, 3650)))
    verify_timeout_s: float = field(default=10.0, metadata=key(v.number(0.5, 600)))
    endpoint_url: Optional[str] = field(default=None, metadata=key(v.url))
    connect_timeout_s: float = field(default=5.0, metadata=key(v.number(0.1, 300)))
    read_timeout_s: float = field(default=15.0, metadata=key(v.number(0.1, 300)))
    max_attempts: int = field(default=3, metadata=key(v.integer(1, 20)))
    log_level: str = field(default="info", metadata=key(v.log_level))
    # The doorbell and the adaptive safety poll (cadence.py), the control socket, the fleet view.
    doorbell: bool = field(default=False, metadata=key(v.boolean))
    safety_poll_interval_s: float = field(default=21600.0, metadata=key(v.number(60, 7 * DAY_S)))
    rotation_poll_interval_s: float = field(default=600.0, metadata=key(v.number(1, DAY_S)))
    rotation_lead_s: float = field(default=3600.0, metadata=key(v.number(0, 7 * DAY_S)))
    rotation_grace_s: float = field(default=7200.0, metadata=key(v.number(0, 7 * DAY_S)))
    expiry_watch_days: float = field(default=14.0, metadata=key(v.number(0, 3650)))
    expiry_poll_interval_s: float = field(default=3600.0, metadata=key(v.number(1, DAY_S)))
    poll_install_delay_s: float = field(default=3600.0, metadata=key(v.number(0, 7 * DAY_S)))
    restart_splay_s: float = field(default=300.0, metadata=key(v.number(0, DAY_S)))
    host_splay_s: float = field(default=30.0, metadata=key(v.number(0, 3600)))
    control_socket: str = field(default="/run/certpull/control.sock", metadata=key(v.absolute_path))
    ssm_inventory: str = field(default="auto", metadata=key(v.auto_no_or_path))
    prometheus_textfile_dir: Optional[str] = field(default=None, metadata=key(v.absolute_path))


@dataclass(frozen=True)
class CertConfig:
    """One `[cert:NAME]` section: which secret, and how its files are installed and checked."""

    name: str  # NAME of the section header, not a key
    secret_arn: str = field(metadata=key(v.secret_arn))
    role_arn: Optional[str] = field(default=None, metadata=key(v.role_arn))
    external_id: Optional[str] = field(default=None, metadata=key(v.text))
    verify: Optional[Tuple[str, int]] = field(default=None, metadata=key(v.parse_host_port))
    keep_versions: int = field(default=2, metadata=key(v.integer(2, 50)))
    key_mode: int = field(default=0o600, metadata=key(v.key_mode))
    cert_mode: int = field(default=0o644, metadata=key(v.cert_mode))
    owner: Optional[str] = field(default=None, metadata=key(v.text))
    group: Optional[str] = field(default=None, metadata=key(v.text))
    cert_file: Optional[str] = field(default=None, metadata=key(v.absolute_path))
    chain_file: Optional[str] = field(default=None, metadata=key(v.absolute_path))
    fullchain_file: Optional[str] = field(default=None, metadata=key(v.absolute_path))
    key_file: Optional[str] = field(default=None, metadata=key(v.absolute_path))
    policy: BundlePolicy = field(default_factory=BundlePolicy, metadata=nested(BundlePolicy))

    @property
    def region(self) -> str:
        """The secret's region, taken from its ARN (Secrets Manager calls must go there)."""
        return self.secret_arn.split(":")[3]

    @property
    def account(self) -> str:
        return self.secret_arn.split(":")[4]

    @property
    def server_name(self) -> Optional[str]:
        """The name the leaf must cover; also the SNI of the `verify` handshake."""
        return self.policy.server_name

    @property
    def compat_links(self) -> Tuple[Tuple[str, str], ...]:
        """(path, live file name) for each compat link set, in COMPAT_LINK_KEYS order."""
        links = ((getattr(self, k), filename) for k, filename in COMPAT_LINK_KEYS.items())
        return tuple((path, filename) for path, filename in links if path is not None)


@dataclass(frozen=True)
class Config:
    path: str  # the main file
    agent: AgentConfig
    certs: Tuple[CertConfig, ...]
    sources: Tuple[str, ...] = ()  # every file read: the main file, then the drop-ins in order

    def cert(self, name: str) -> CertConfig:
        for cert in self.certs:
            if cert.name == name:
                return cert
        raise KeyError(name)

    @property
    def names(self) -> Tuple[str, ...]:
        return tuple(cert.name for cert in self.certs)

    def live_path(self, name: str) -> str:
        """`<live_dir>/<name>`: where one certificate's files are published."""
        return f"{self.agent.live_dir.rstrip('/')}/{name}"


# --- the declarations, walked --------------------------------------------------------------------

T = TypeVar("T")


def _keys(cls: type) -> FrozenSet[str]:
    names: List[str] = []
    for f in dataclasses.fields(cls):
        if "nested" in f.metadata:
            names.extend(_keys(f.metadata["nested"]))
        elif "parse" in f.metadata:
            names.append(f.metadata["key"] or f.name)
    return frozenset(names)


def agent_keys() -> FrozenSet[str]:
    """Every key `[agent]` accepts."""
    return _keys(AgentConfig)


def cert_keys() -> FrozenSet[str]:
    """Every key `[cert:NAME]` accepts."""
    return _keys(CertConfig)


class _Section:
    """One raw section being turned into typed values; errors carry the key's file and line."""

    def __init__(self, raw: RawSection) -> None:
        self.raw = raw
        self.path = raw.path

    def error(self, key_name: str, message: str) -> ConfigError:
        return ConfigError(
            message,
            self.raw.path_of(key_name),
            self.raw.lines.get(key_name, self.raw.line),
            key_name,
        )

    def build(self, cls: Type[T], fixed: Mapping[str, Any]) -> T:
        """``cls`` from its declared keys; ``fixed`` gives the fields that are not keys."""
        values: Dict[str, Any] = dict(fixed)
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name in values:
                continue
            if "nested" in f.metadata:
                values[f.name] = self.build(f.metadata["nested"], {})
                continue
            if "parse" not in f.metadata:
                continue
            name = f.metadata["key"] or f.name
            text = self.raw.values.get(name) or None  # an empty value means "the default"
            if text is None:
                continue  # the dataclass default applies
            try:
                values[f.name] = f.metadata["parse"](text)
            except ValueError as exc:
                raise self.error(name, str(exc)) from None
        return cls(**values)


def _parse_agent(section: _Section) -> AgentConfig:
    agent = section.build(AgentConfig, {})
    if agent.crit_days > agent.warn_days:
        raise section.error(
            "crit_days", f"{agent.crit_days:g} is larger than warn_days ({agent.warn_days:g})"
        )
    return agent


def _parse_cert(section: _Section, name: str) -> CertConfig:
    if not _CERT_NAME.match(name):
        raise ConfigError(
            f"certificate name {name!r} must be 1-64 letters, digits, '.', '_' or '-' "
            "and start with a letter or digit",
            section.path,
            section.raw.line,
        )
    if not section.raw.values.get("secret_arn"):
        raise ConfigError(
            f"[cert:{name}] needs secret_arn", section.path, section.raw.line, "secret_arn"
        )
    cert = section.build(CertConfig, {"name": name})
    if cert.external_id and not cert.role_arn:
        raise section.error("external_id", "is only used with role_arn")
    return cert


def parse_config(text: str, path: str = DEFAULT_CONFIG_PATH) -> Config:
    """Parse and check one configuration file's text. Raises ConfigError with file:line."""
    return parse_files([(path, text)])


def parse_files(files: Sequence[Tuple[str, str]]) -> Config:
    """Parse the main file and its drop-ins, given as (path, text) with the main file first.

    1. Read every file's sections (config_ini.py); unknown sections and keys are refused.
    2. `[agent]` keys merge in file order: a drop-in's key overrides the main file's (and an
       earlier drop-in's); each key keeps the file and line it came from, for errors.
    3. Each `[cert:NAME]` may be defined once across all files.
    4. Parse the merged `[agent]`, then every certificate; check the rules across sections.
    """
    if not files:
        raise ValueError("no configuration file given")
    main_path = files[0][0]
    allowed_agent, allowed_cert = agent_keys(), cert_keys()
    agent_values: Dict[str, str] = {}
    agent_lines: Dict[str, int] = {}
    agent_paths: Dict[str, str] = {}
    agent_start: Optional[Tuple[str, int]] = None
    cert_sections: List[RawSection] = []
    defined: Dict[str, RawSection] = {}
    for path, text in files:  # (1)
        for raw in read_sections(text, path):
            if raw.name == AGENT_SECTION:
                allowed = allowed_agent
            elif raw.name.startswith(CERT_SECTION_PREFIX):
                allowed = allowed_cert
            else:
                raise ConfigError(
                    f"unknown section [{raw.name}] (expected [agent] or [cert:NAME])",
                    path,
                    raw.line,
                )
            for key_name in raw.values:
                if key_name not in allowed:
                    raise ConfigError(
                        f"unknown key in [{raw.name}]", path, raw.lines.get(key_name), key_name
                    )
            if raw.name == AGENT_SECTION:  # (2)
                agent_start = agent_start or (path, raw.line)
                for key_name, value in raw.values.items():
                    agent_values[key_name] = value
                    agent_lines[key_name] = raw.lines[key_name]
                    agent_paths[key_name] = path
                continue
            first = defined.get(raw.name)  # (3)
            if first is not None:
                raise ConfigError(
                    f"[{raw.name}] is already defined at {first.path}:{first.line}",
                    path,
                    raw.line,
                )
            defined[raw.name] = raw
            cert_sections.append(raw)
    agent = AgentConfig()  # (4)
    if agent_start is not None:
        merged = RawSection(
            AGENT_SECTION, agent_start[1], agent_values, agent_lines, agent_start[0], agent_paths
        )
        agent = _parse_agent(_Section(merged))
    certs: List[CertConfig] = []
    link_owners: Dict[str, str] = {}
    for raw in cert_sections:
        section = _Section(raw)
        cert = _parse_cert(section, raw.name[len(CERT_SECTION_PREFIX) :])
        for link, _ in cert.compat_links:
            if link in link_owners:
                raise ConfigError(
                    f"{link} is already a compat link of [cert:{link_owners[link]}]",
                    raw.path,
                    raw.line,
                )
            link_owners[link] = cert.name
        certs.append(cert)
    if not certs:
        raise ConfigError("no [cert:NAME] section: nothing to install", main_path)
    return Config(
        path=main_path,
        agent=agent,
        certs=tuple(certs),
        sources=tuple(path for path, _ in files),
    )


def load_config(
    path: str,
    read_text: Callable[[str], str],
    list_dropins: Optional[Callable[[str], Sequence[str]]] = None,
) -> Config:
    """Read the main file and its drop-ins (through the injected reader and lister) and parse
    them; unreadable files are ConfigErrors too. ``list_dropins(path)`` returns the drop-in
    paths in the order they are read."""
    files = [(path, _read(path, read_text))]
    if list_dropins is not None:
        files += [(dropin, _read(dropin, read_text)) for dropin in list_dropins(path)]
    return parse_files(files)


def _read(path: str, read_text: Callable[[str], str]) -> str:
    try:
        return read_text(path)
    except FileNotFoundError:
        raise ConfigError("no such file", path) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", path) from None
    except UnicodeDecodeError:
        raise ConfigError("is not UTF-8 text", path) from None
