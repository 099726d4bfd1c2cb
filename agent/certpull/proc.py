"""Every subprocess certpull starts goes through here (cloud-init's ``subp`` habit).

One place means one policy: argv lists and never a shell, no stdin, a timeout that kills the whole
process group (a reload command may fork helpers), and one error type, ``CommandError``, that keeps
argv, exit code, stdout and stderr so the log can say exactly what ran and what it answered.
Tests substitute a runner object through constructors instead of patching this module.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Mapping, NoReturn, Optional, Sequence, Tuple

from certpull.errors import CommandError

# After a timeout kill, how long to wait for the pipes to drain. A grandchild that left the
# process group can hold them open forever; we stop reading rather than hang with it.
_DRAIN_AFTER_KILL_S = 2.0


@dataclass(frozen=True)
class CommandResult:
    """What a finished command did. ``duration_s`` is wall time from spawn to exit."""

    argv: Tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    duration_s: float


class CommandRunner:
    """Runs argv lists with a timeout; the only object in certpull that spawns processes."""

    def __init__(
        self, default_timeout_s: float = 60.0, env: Optional[Mapping[str, str]] = None
    ) -> None:
        if default_timeout_s <= 0:
            raise ValueError("default_timeout_s must be positive")
        self.default_timeout_s = default_timeout_s
        self.env = dict(env) if env is not None else None

    def __repr__(self) -> str:
        # The environment may carry credentials: never show it.
        return f"CommandRunner(default_timeout_s={self.default_timeout_s})"

    def run(
        self, argv: Sequence[str], timeout_s: Optional[float] = None, check: bool = True
    ) -> CommandResult:
        """Run ``argv`` and return its result.

        Steps:
          1. Spawn argv directly (no shell) in a new session, so that the process and everything it
             forks form one process group; stdin is /dev/null so nothing can wait for input.
          2. Wait for it to exit, collecting stdout and stderr, for at most the timeout.
          3. On timeout, SIGKILL the whole group, drain what it printed, raise CommandError; unless
             the process had exited by then (this process was stopped past the deadline).
          4. With ``check``, a non-zero exit raises CommandError; otherwise it is returned.

        A missing or non-executable binary raises CommandError with no exit code.
        """
        args = tuple(str(a) for a in argv)
        if not args:
            raise ValueError("empty command")
        timeout = self.default_timeout_s if timeout_s is None else timeout_s
        started = time.monotonic()
        # (1)
        try:
            proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self.env,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            reason = f"could not run: {exc.strerror or exc}"
            raise CommandError(args, None, "", "", reason=reason) from exc
        # (2)
        try:
            out_b, err_b = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            finished = _finished_meanwhile(proc)
            if finished is None:
                _timed_out(args, proc, timeout)  # (3)
            out_b, err_b = finished
        result = CommandResult(
            argv=args,
            returncode=proc.returncode,
            stdout=_decode(out_b),
            stderr=_decode(err_b),
            duration_s=time.monotonic() - started,
        )
        # (4)
        if check and result.returncode != 0:
            raise CommandError(args, result.returncode, result.stdout, result.stderr)
        return result


def _timed_out(args: Tuple[str, ...], proc: subprocess.Popen[bytes], timeout: float) -> NoReturn:
    """Step (3): SIGKILL the group, drain what it printed, raise CommandError."""
    _kill_group(proc.pid)
    try:
        out_b, err_b = proc.communicate(timeout=_DRAIN_AFTER_KILL_S)
    except subprocess.TimeoutExpired:
        out_b, err_b = b"", b""
        _abandon_pipes(proc)
    raise CommandError(
        args,
        None,
        _decode(out_b),
        _decode(err_b),
        reason=f"timed out after {timeout:g} s and was killed",
    ) from None


def _finished_meanwhile(proc: subprocess.Popen[bytes]) -> Optional[Tuple[bytes, bytes]]:
    """The output of a command that had exited when its timeout was noticed, else None.

    communicate() checks its deadline before reading what a process that already exited left
    in its pipes: a caller stopped past the deadline would kill a command that finished.
    """
    if proc.poll() is None:
        return None
    try:
        return proc.communicate(timeout=_DRAIN_AFTER_KILL_S)
    except subprocess.TimeoutExpired:  # a grandchild holds the pipes open: the command is done
        _abandon_pipes(proc)
        return b"", b""


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def _abandon_pipes(proc: subprocess.Popen[bytes]) -> None:
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
    proc.wait()


def _decode(data: Optional[bytes]) -> str:
    return (data or b"").decode("utf-8", errors="replace")
