"""httpd_pid.py without systemd or httpd: which source `locate` picks, and what each makes of the
answers systemctl and httpd give (a FakeRunner answers them)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from certpull.httpd import Httpd
from certpull.httpd_pid import (
    DumpedPidFile,
    HttpdUnknown,
    PidFile,
    SystemdMainPid,
    dump_argv,
    locate,
    systemd_unit,
)
from certpull.proc import CommandResult
from tests.unit.test_httpd_unit import DEAD_PID, FakeRunner

SHOW = ("systemctl", "show", "-p", "LoadState", "-p", "MainPID")


def shown(unit: str, text: str, code: int = 0) -> FakeRunner:
    return FakeRunner({(*SHOW, unit): CommandResult((*SHOW, unit), code, text, "", 0.01)})


def test_the_shipped_defaults_resolve_to_systemds_mainpid_of_httpd_service() -> None:
    """AL2023's defaults (httpd_pid_file unset, systemctl reload/start httpd): no path guessed."""
    source = locate(
        FakeRunner(),
        None,
        ("systemctl", "reload", "httpd"),
        ("systemctl", "start", "httpd"),
        ("apachectl", "configtest"),
    )
    assert isinstance(source, SystemdMainPid) and source.unit == "httpd"
    assert source.describe() == "MainPID of httpd"


def test_a_configured_pid_file_wins_and_other_commands_ask_httpd_for_its_pidfile() -> None:
    assert isinstance(
        locate(
            FakeRunner(),
            "/run/x.pid",
            ("systemctl", "reload", "httpd"),
            None,
            ("apachectl", "configtest"),
        ),
        PidFile,
    )
    source = locate(
        FakeRunner(), None, ("httpd", "-k", "graceful"), None, ("apachectl", "configtest")
    )
    assert isinstance(source, DumpedPidFile)


@pytest.mark.parametrize(
    ("argv", "unit"),
    [
        (("systemctl", "reload", "apache2"), "apache2"),
        (("/usr/bin/systemctl", "--no-block", "reload", "httpd.service"), "httpd.service"),
        (("systemctl", "reload"), None),
        (("apachectl", "graceful"), None),
    ],
)
def test_systemd_unit_of_a_command(argv: tuple, unit: str) -> None:  # type: ignore[type-arg]
    assert systemd_unit(argv) == unit


def test_mainpid_of_a_running_unit_then_watched_without_asking_again() -> None:
    runner = shown("httpd", f"LoadState=loaded\nMainPID={os.getpid()}\n")
    source = SystemdMainPid(runner, "httpd")
    assert source.main_pid() == os.getpid()
    assert source.main_pid() == os.getpid()
    assert len(runner.calls) == 1  # the pid is alive: systemd is not asked every 50 ms


def test_mainpid_zero_is_stopped_and_a_gone_pid_is_asked_again() -> None:
    runner = shown("httpd", "LoadState=loaded\nMainPID=0\n")
    source = SystemdMainPid(runner, "httpd")
    assert source.main_pid() is None
    source._known = DEAD_PID
    assert source.main_pid() is None and len(runner.calls) == 2


def test_an_unknown_unit_is_an_error_naming_it_and_httpd_is_then_not_taken_for_stopped() -> None:
    """Debian with AL2023's defaults: systemd has no httpd.service. Not "httpd is not running"
    (files installed without reload, silently): the reload runs and fails with its reason."""
    runner = shown("httpd", "LoadState=not-found\nMainPID=0\n")
    source = SystemdMainPid(runner, "httpd")
    with pytest.raises(
        HttpdUnknown, match=r"systemd has no unit httpd \(LoadState=not-found\).*apache2 on Debian"
    ):
        source.main_pid()
    httpd = Httpd(
        runner,
        ("apachectl", "configtest"),
        ("systemctl", "reload", "httpd"),
        None,
        pid_source=source,
    )
    assert httpd.known_stopped() is False
    assert httpd.main_pid() is None


def test_dump_run_cfg_argv_from_the_config_test() -> None:
    assert dump_argv(("apachectl", "configtest")) == ["apachectl", "-t", "-D", "DUMP_RUN_CFG"]
    assert dump_argv(("httpd", "-f", "/c.conf", "-t")) == [
        "httpd",
        "-f",
        "/c.conf",
        "-t",
        "-D",
        "DUMP_RUN_CFG",
    ]


def test_the_pidfile_httpd_reports_is_read_once_then_used(tmp_path: Path) -> None:
    pid_file = tmp_path / "apache2.pid"
    argv = ("apachectl", "-t", "-D", "DUMP_RUN_CFG")
    out = f'ServerRoot: "/etc/apache2"\nMain DocumentRoot: "/var/www/html"\nPidFile: "{pid_file}"\nDefine: DUMP_RUN_CFG\n'
    runner = FakeRunner({argv: CommandResult(argv, 0, out, "", 0.01)})
    source = DumpedPidFile(runner, ("apachectl", "configtest"))
    assert source.main_pid() is None  # no file: not running
    pid_file.write_text(f"{os.getpid()}\n")
    assert source.main_pid() == os.getpid()
    assert runner.calls == [argv]
    assert source.describe() == f"pid file {pid_file}"


def test_no_pidfile_line_is_an_error_not_a_stopped_httpd() -> None:
    argv = ("apachectl", "-t", "-D", "DUMP_RUN_CFG")
    runner = FakeRunner({argv: CommandResult(argv, 1, "", "AH00526: Syntax error", 0.01)})
    with pytest.raises(HttpdUnknown, match="printed no PidFile line: set httpd_pid_file"):
        DumpedPidFile(runner, ("apachectl", "configtest")).main_pid()
