"""doctor_host: the sandbox, SELinux, httpd liveness and directory checks, each passing and failing.

`systemctl show` and `restorecon -n` are stood in for by small scripts that print what those
commands print (their key=value and "Would relabel" formats); a booted systemd is not needed to
read a unit's settings. httpd's `-S` output is parsed from samples of Debian's and Amazon Linux's.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Optional

import pytest

from certpull.config import Config, parse_config
from certpull.doctor_host import HostChecks, vhost_location
from certpull.doctor_report import Result
from certpull.httpd import Httpd
from certpull.proc import CommandRunner

AL2023_DUMP = """\
VirtualHost configuration:
*:443                  is a NameVirtualHost
         default server www.example.com (/etc/httpd/conf.d/ssl.conf:56)
         port 443 namevhost www.example.com (/etc/httpd/conf.d/ssl.conf:56)
         port 443 namevhost api.example.com (/etc/httpd/conf.d/api.conf:3)
ServerRoot: "/etc/httpd"
"""
DEBIAN_DUMP = """\
VirtualHost configuration:
127.0.0.1:8443         www.example.com (/tmp/t/httpd.conf:16)
ServerRoot: "/etc/apache2"
"""


def test_vhost_location_from_httpd_dump() -> None:
    assert vhost_location(AL2023_DUMP, 443, "api.example.com") == "/etc/httpd/conf.d/api.conf:3"
    assert vhost_location(AL2023_DUMP, 443, None) == "/etc/httpd/conf.d/ssl.conf:56"
    assert vhost_location(DEBIAN_DUMP, 8443, "www.example.com") == "/tmp/t/httpd.conf:16"
    assert vhost_location(DEBIAN_DUMP, 443, None) is None


def config(tmp_path: Path, cert_extra: str = "", agent_extra: str = "") -> Config:
    text = f"""
[agent]
live_dir = /etc/pki/certpull
state_dir = {tmp_path}/state
configtest_command = /bin/true
reload_command = systemctl reload httpd
httpd_pid_file = {tmp_path}/httpd.pid
{agent_extra}

[cert:www]
secret_arn = arn:aws:secretsmanager:us-east-1:111122223333:secret:www-tls-AbCdEf
{cert_extra}
"""
    return parse_config(text, str(tmp_path / "certpull.conf"))


def with_agent(cfg: Config, **changes: object) -> Config:
    return dataclasses.replace(cfg, agent=dataclasses.replace(cfg.agent, **changes))  # type: ignore[arg-type]


def stand_in(tmp_path: Path, name: str, output: str, status: int = 0) -> str:
    """A script that prints ``output`` whatever its arguments are (as `systemctl show` would)."""
    path = tmp_path / name
    path.write_text(f"#!/bin/sh\ncat <<'EOF'\n{output}\nEOF\nexit {status}\n")
    path.chmod(0o755)
    return str(path)


def host(cfg: Config, **kwargs: object) -> HostChecks:
    runner = CommandRunner(default_timeout_s=10)
    httpd = Httpd(
        runner,
        configtest_argv=cfg.agent.configtest_command,
        reload_argv=cfg.agent.reload_command,
        pid_file=cfg.agent.httpd_pid_file,
    )
    kwargs.setdefault("systemd", lambda: True)
    kwargs.setdefault("selinux", lambda: None)
    return HostChecks(cfg, httpd, runner, **kwargs)  # type: ignore[arg-type]


UNIT_SHOW = """LoadState=loaded
ProtectSystem=strict
ReadWritePaths=/etc/pki/certpull -/etc/pki/tls
StateDirectory=certpull"""


@pytest.mark.usefixtures("real_subprocess")
def test_sandbox_allows_the_live_dir_state_dir_and_compat_links(tmp_path: Path) -> None:
    cfg = config(tmp_path, cert_extra="cert_file = /etc/pki/tls/certs/localhost.crt")
    cfg = with_agent(cfg, state_dir="/var/lib/certpull")  # the unit's StateDirectory
    check = host(cfg, systemctl=stand_in(tmp_path, "systemctl", UNIT_SHOW)).sandbox()
    assert check.result is Result.PASSED, check
    assert "ProtectSystem=strict" in check.detail


@pytest.mark.usefixtures("real_subprocess")
def test_sandbox_refuses_a_compat_link_outside_read_write_paths(tmp_path: Path) -> None:
    cfg = config(tmp_path, cert_extra="cert_file = /srv/tls/www.crt")
    check = host(cfg, systemctl=stand_in(tmp_path, "systemctl", UNIT_SHOW)).sandbox()
    assert check.result is Result.FAILED
    assert "/srv/tls" in check.detail and str(tmp_path / "state") in check.detail
    assert check.fixes[0].lines[0] == "[Service]"
    assert check.fixes[0].lines[1] == f"ReadWritePaths={tmp_path}/state /srv/tls"


@pytest.mark.usefixtures("real_subprocess")
def test_sandbox_does_not_apply_without_systemd_or_without_the_unit(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    assert host(cfg, systemd=lambda: False).sandbox().result is Result.NOT_APPLICABLE
    missing = stand_in(tmp_path, "systemctl", "LoadState=not-found")
    check = host(cfg, systemctl=missing).sandbox()
    assert check.result is Result.NOT_APPLICABLE and "not installed" in check.detail


@pytest.mark.usefixtures("real_subprocess")
@pytest.mark.parametrize(
    ("output", "result"),
    [
        ("", Result.PASSED),
        (
            "Would relabel /etc/pki/certpull/www/..data/privkey.pem from "
            "unconfined_u:object_r:user_tmp_t:s0 to system_u:object_r:cert_t:s0",
            Result.FAILED,
        ),
    ],
)
def test_selinux_labels(tmp_path: Path, output: str, result: Result) -> None:
    live = tmp_path / "live"
    live.mkdir()
    cfg = with_agent(config(tmp_path), live_dir=str(live))
    restorecon = stand_in(tmp_path, "restorecon", output)
    check = host(cfg, selinux=lambda: "enforcing", restorecon=restorecon).selinux_labels()
    assert check.result is result, check
    if result is Result.FAILED:
        assert "Would relabel" in check.detail
        assert check.fixes[0].commands[0] == f"sudo restorecon -R -v {live}"


def test_selinux_off_does_not_apply(tmp_path: Path) -> None:
    assert host(config(tmp_path)).selinux_labels().result is Result.NOT_APPLICABLE


@pytest.mark.usefixtures("real_subprocess")
def test_httpd_active_under_systemd_but_pid_file_wrong(tmp_path: Path) -> None:
    systemctl = stand_in(tmp_path, "systemctl", "MainPID=4242\nActiveState=active")
    check = host(config(tmp_path), systemctl=systemctl).running()
    assert check.result is Result.FAILED
    assert "httpd is active (MainPID 4242)" in check.detail
    assert "httpd_pid_file" in check.fixes[0].where


@pytest.mark.usefixtures("real_subprocess")
@pytest.mark.parametrize("pid", [None, "self"])
def test_httpd_running_from_the_pid_file(tmp_path: Path, pid: Optional[str]) -> None:
    if pid:
        (tmp_path / "httpd.pid").write_text(str(os.getpid()))
    systemctl = stand_in(tmp_path, "systemctl", "MainPID=0\nActiveState=inactive")
    check = host(config(tmp_path), systemctl=systemctl).running()
    assert check.result is (Result.PASSED if pid else Result.FAILED)


@pytest.mark.usefixtures("real_subprocess")
@pytest.mark.parametrize(
    ("command", "result"), [("/bin/true", Result.PASSED), ("/bin/false", Result.FAILED)]
)
def test_config_test(tmp_path: Path, command: str, result: Result) -> None:
    cfg = with_agent(config(tmp_path), configtest_command=(command,))
    assert host(cfg).config_test().result is result


def test_missing_httpd_binaries(tmp_path: Path) -> None:
    cfg = with_agent(config(tmp_path), configtest_command=("/nonexistent/apachectl", "configtest"))
    check = host(cfg, which=lambda name: "/usr/bin/systemctl").binaries()
    assert (
        check.result is Result.FAILED
        and "configtest_command's /nonexistent/apachectl" in check.detail
    )
    good = host(
        config(tmp_path), which=lambda name: "/bin/true" if name == "systemctl" else None
    ).binaries()
    assert good.result is Result.PASSED


@pytest.mark.parametrize(("mode", "result"), [(0o700, Result.PASSED), (0o755, Result.FAILED)])
def test_state_dir_mode(tmp_path: Path, mode: int, result: Result) -> None:
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(mode)
    check = host(config(tmp_path)).state_dir()
    assert check.result is result
    if result is Result.FAILED:
        assert f"chmod 0700 {state}" in check.fixes[0].commands


def test_state_dir_not_created_yet(tmp_path: Path) -> None:
    assert host(config(tmp_path)).state_dir().result is Result.NOT_APPLICABLE
