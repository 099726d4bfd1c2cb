"""Where httpd's main process is: a configured pid file, or learned from systemd or httpd itself.

A guessed pid file is wrong on some distribution (/run/httpd/httpd.pid on Amazon Linux,
/run/apache2/apache2.pid on Debian), and a wrong one silently turns every reload into "httpd is
not running". So, with ``httpd_pid_file`` unset (the default), `locate` picks:

  1. ``reload_command`` or ``start_command`` is ``systemctl VERB UNIT``: systemd's MainPID of
     UNIT. A unit systemd does not know is an error naming it, never "stopped".
  2. Otherwise the PidFile httpd reports itself (``configtest_command`` as ``-t -D
     DUMP_RUN_CFG``: ``apachectl -t -D DUMP_RUN_CFG``), read like a configured pid file.

Each source answers ``main_pid()``: the pid, None when httpd is not running, or raises
`HttpdUnknown` when it cannot tell.
"""

from __future__ import annotations

import os
import re
from typing import List, Optional, Protocol, Sequence

from certpull.errors import CommandError, ReloadError
from certpull.proc import CommandRunner

SHOW_TIMEOUT_S = 10.0
_PID_FILE_LINE = re.compile(r'^\s*PidFile:\s*"?([^"\s]+)"?\s*$', re.MULTILINE)


class HttpdUnknown(ReloadError):
    """Whether httpd runs cannot be told (an unknown unit, httpd cannot report its PidFile)."""


class PidSource(Protocol):
    def main_pid(self) -> Optional[int]: ...

    def describe(self) -> str: ...


class PidFile:
    """A pid file: the pid it names while that process lives (a zombie counts as gone)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def describe(self) -> str:
        return f"pid file {self.path}"

    def main_pid(self) -> Optional[int]:
        try:
            with open(self.path, encoding="ascii", errors="replace") as f:
                text = f.read().strip()
        except OSError:
            return None
        if not text.isdigit() or int(text) <= 0:
            return None
        pid = int(text)
        return pid if alive(pid) else None


class SystemdMainPid:
    """systemd's MainPID of httpd's unit; the pid is then watched directly until it is gone."""

    def __init__(self, runner: CommandRunner, unit: str, systemctl: str = "systemctl") -> None:
        self.unit = unit
        self._runner = runner
        self._systemctl = systemctl
        self._known: Optional[int] = None

    def describe(self) -> str:
        return f"MainPID of {self.unit}"

    def main_pid(self) -> Optional[int]:
        if self._known is not None and alive(self._known):
            return self._known
        argv = [self._systemctl, "show", "-p", "LoadState", "-p", "MainPID", self.unit]
        try:
            result = self._runner.run(argv, timeout_s=SHOW_TIMEOUT_S, check=False)
        except CommandError as exc:
            raise HttpdUnknown(f"cannot ask systemd about {self.unit}: {exc}") from None
        shown = dict(line.partition("=")[::2] for line in result.stdout.splitlines() if "=" in line)
        load_state = shown.get("LoadState", "")
        if result.returncode != 0 or load_state != "loaded":
            raise HttpdUnknown(
                f"systemd has no unit {self.unit} (LoadState={load_state or '?'}): set "
                "reload_command and start_command to httpd's unit (httpd on Amazon Linux, "
                "apache2 on Debian and Ubuntu)"
            )
        text = shown.get("MainPID", "0").strip()
        pid = int(text) if text.isdigit() else 0
        self._known = pid if pid > 0 else None
        return self._known


class DumpedPidFile:
    """The PidFile httpd reports with ``-t -D DUMP_RUN_CFG`` (asked once), read as a pid file."""

    def __init__(self, runner: CommandRunner, configtest_argv: Sequence[str]) -> None:
        self._runner = runner
        self._argv = dump_argv(configtest_argv)
        self._file: Optional[PidFile] = None

    def describe(self) -> str:
        if self._file is not None:
            return self._file.describe()
        return f"the PidFile `{' '.join(self._argv)}` reports"

    def main_pid(self) -> Optional[int]:
        if self._file is None:
            argv = self._argv
            try:
                result = self._runner.run(argv, timeout_s=SHOW_TIMEOUT_S, check=False)
            except CommandError as exc:
                raise HttpdUnknown(f"cannot ask httpd for its PidFile: {exc}") from None
            found = _PID_FILE_LINE.search(result.stdout + "\n" + result.stderr)
            if found is None:
                raise HttpdUnknown(
                    f"`{' '.join(argv)}` printed no PidFile line: set httpd_pid_file"
                )
            self._file = PidFile(found.group(1))
        return self._file.main_pid()


def systemd_unit(argv: Sequence[str]) -> Optional[str]:
    """UNIT of ``systemctl [OPTIONS] VERB UNIT``, else None."""
    if not argv or os.path.basename(argv[0]) != "systemctl":
        return None
    words = [a for a in argv[1:] if not a.startswith("-")]
    return words[-1] if len(words) >= 2 else None


def locate(
    runner: CommandRunner,
    pid_file: Optional[str],
    reload_argv: Sequence[str],
    start_argv: Optional[Sequence[str]],
    configtest_argv: Sequence[str],
) -> PidSource:
    """Steps 1-2 of the module docstring; a configured ``pid_file`` wins."""
    if pid_file:
        return PidFile(pid_file)
    unit = systemd_unit(reload_argv) or systemd_unit(start_argv or ())
    if unit is not None:  # (1)
        return SystemdMainPid(runner, unit)
    return DumpedPidFile(runner, configtest_argv)  # (2)


def dump_argv(configtest_argv: Sequence[str]) -> List[str]:
    """The config test as a run-config dump: ``apachectl configtest`` -> ``apachectl -t -D
    DUMP_RUN_CFG``; ``httpd -f CONF -t`` -> ``httpd -f CONF -t -D DUMP_RUN_CFG``."""
    argv = list(configtest_argv)
    if argv and argv[-1] == "configtest":
        argv.pop()
    if "-t" not in argv:
        argv.append("-t")
    return [*argv, "-D", "DUMP_RUN_CFG"]


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (signal 0 still reaches one; /proc tells)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    return not _is_dead_on_linux(pid)


def _is_dead_on_linux(pid: int) -> bool:
    """A zombie (Z) or dead (X) process still answers signal 0; /proc tells the truth."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
    except FileNotFoundError:
        return os.path.isdir("/proc/self")  # /proc is there but the process is not: it just went
    except OSError:
        return False  # no usable /proc (not Linux): trust signal 0
    state = stat.rpartition(")")[2].split()
    return bool(state) and state[0] in ("Z", "X")
