"""config_values.py: each value parser, table-driven (the config tests cover their wiring)."""

from __future__ import annotations

from typing import List

import pytest

from certpull import config_values
from certpull.config_values import parse_host_port


@pytest.mark.parametrize(
    ("value", "host", "port"),
    [
        ("127.0.0.1:443", "127.0.0.1", 443),
        ("[::1]:8443", "::1", 8443),
        ("[fe80::1%eth0]:443", "fe80::1%eth0", 443),
        ("www.example.com:443", "www.example.com", 443),
        ("localhost:1", "localhost", 1),
        (" host-1.internal:65535 ", "host-1.internal", 65535),
        ("fqdn.example.com.:443", "fqdn.example.com.", 443),
    ],
)
def test_parse_host_port(value: str, host: str, port: int) -> None:
    assert parse_host_port(value) == (host, port)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "443",
        "host",
        "host:",
        ":443",
        "host:0",
        "host:65536",
        "host:https",
        "host:-1",
        "host:44 3",
        "::1:443",
        "[::1]443",
        "[zz::1]:443",
        "a b:443",
        "[::1]",
        "[127.0.0.1]:443",
        "[not-an-ip]:443",
        "ho st:443",
        "-bad.example.com:443",
        "a..b:443",
        "under_score.example.com:443",
        "1.2.3:443",
        "999.1.1.1:443",
        "https://host:443",
    ],
)
def test_parse_host_port_rejects_junk(value: str) -> None:
    with pytest.raises(ValueError, match="verify target"):
        parse_host_port(value)


@pytest.mark.parametrize(
    ("command", "argv"),
    [
        ("systemctl reload httpd", ["systemctl", "reload", "httpd"]),
        ("apachectl configtest", ["apachectl", "configtest"]),
        ("  /usr/sbin/httpd   -k graceful ", ["/usr/sbin/httpd", "-k", "graceful"]),
        (
            "'/opt/my httpd/bin/httpd' -f \"/etc/my conf\"",
            ["/opt/my httpd/bin/httpd", "-f", "/etc/my conf"],
        ),
        ("sh -c 'a && b'", ["sh", "-c", "a && b"]),
        ("echo $HOME; rm", ["echo", "$HOME;", "rm"]),
    ],
)
def test_command(command: str, argv: List[str]) -> None:
    assert config_values.command(command) == tuple(argv)


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("", "is empty"),
        ("   ", "is empty"),
        ("apachectl 'unclosed", "No closing quotation"),
    ],
)
def test_command_rejects(command: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        config_values.command(command)


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("auto", "auto"),
        ("No", "no"),
        ("/var/lib/x/inventory/custom/", "/var/lib/x/inventory/custom"),
    ],
)
def test_ssm_inventory_is_auto_no_or_a_directory(value: str, parsed: str) -> None:
    assert config_values.auto_no_or_path(value) == parsed


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("yes", "auto, no or an absolute path"),
        ("relative/dir", "auto, no or an absolute path"),
        ("/a/../b", "must not contain"),
    ],
)
def test_ssm_inventory_refuses_anything_else(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        config_values.auto_no_or_path(value)


def test_the_fleet_keys_parse_with_their_defaults_and_ranges() -> None:
    from certpull.config import AgentConfig, parse_config
    from certpull.errors import ConfigError

    base = "[cert:www]\nsecret_arn = arn:aws:secretsmanager:us-east-1:111122223333:secret:w\n"
    agent = parse_config(f"[agent]\ndoorbell = yes\nhost_splay_s = 0\n{base}").agent
    assert agent.doorbell and agent.host_splay_s == 0
    assert (agent.safety_poll_interval_s, agent.control_socket) == (
        AgentConfig().safety_poll_interval_s,
        "/run/certpull/control.sock",
    )
    with pytest.raises(ConfigError, match="safety_poll_interval_s"):
        parse_config(f"[agent]\nsafety_poll_interval_s = 10\n{base}")
    with pytest.raises(ConfigError, match="control_socket"):
        parse_config(f"[agent]\ncontrol_socket = run/control.sock\n{base}")
