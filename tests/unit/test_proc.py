"""CommandRunner.

Unit tests refuse real subprocesses (cloud-init's habit): the autouse guard below makes
``subprocess.Popen`` raise unless a test asks for the ``real_subprocess`` fixture. The runner's own
tests opt in, because spawning, killing and failing to spawn are exactly what they check.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import List

import pytest

from certpull.errors import CommandError, ReloadError
from certpull.proc import CommandResult, CommandRunner
from tests.unit.conftest import RealSubprocessRefused


def _gone(pid: int) -> bool:
    """Dead or a zombie (our killed shell's children are re-parented to a PID 1 that may not reap)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


def test_guard_refuses_real_subprocesses_without_opt_in() -> None:
    with pytest.raises(RealSubprocessRefused):
        CommandRunner().run(["/bin/true"])


@pytest.mark.parametrize(
    "args",
    [
        ["plain"],
        ["with space", "two  spaces"],
        ["$HOME", "`id`", "a;b", "c && d", "|", ">out"],
        ["'single'", '"double"', "back\\slash", "*", "~"],
        ["ünïcode", ""],
    ],
)
def test_argv_reaches_the_program_unchanged(real_subprocess: None, args: List[str]) -> None:
    code = "import json, sys; print(json.dumps(sys.argv[1:]))"
    result = CommandRunner().run([sys.executable, "-c", code, *args])
    assert result.argv == (sys.executable, "-c", code, *args)
    assert json.loads(result.stdout) == args
    assert result.returncode == 0
    assert result.duration_s >= 0


def test_nonzero_exit_raises_command_error_with_everything(real_subprocess: None) -> None:
    argv = ["/bin/sh", "-c", "echo to-stdout; echo first >&2; echo 'last line' >&2; exit 3"]
    with pytest.raises(CommandError) as caught:
        CommandRunner().run(argv)
    err = caught.value
    assert isinstance(err, ReloadError)
    assert err.argv == argv
    assert err.returncode == 3
    assert err.stdout == "to-stdout\n"
    assert err.stderr == "first\nlast line\n"
    assert str(err).endswith("exited 3: last line")
    assert "/bin/sh -c" in str(err)
    assert "\n" not in str(err)


def test_check_false_returns_the_failure(real_subprocess: None) -> None:
    result = CommandRunner().run(["/bin/sh", "-c", "echo why >&2; exit 4"], check=False)
    assert isinstance(result, CommandResult)
    assert (result.returncode, result.stdout, result.stderr) == (4, "", "why\n")


def test_timeout_kills_the_whole_process_group(real_subprocess: None) -> None:
    # The shell starts a background grandchild, prints its pid and waits; both must die.
    argv = ["/bin/sh", "-c", "sleep 60 & echo $!; sleep 60"]
    with pytest.raises(CommandError) as caught:
        CommandRunner().run(argv, timeout_s=0.5)
    err = caught.value
    assert err.returncode is None
    assert "timed out after 0.5 s and was killed" in str(err)
    grandchild = int(err.stdout.split()[0])
    deadline = time.monotonic() + 10
    while not _gone(grandchild) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _gone(grandchild), "the background grandchild survived the timeout"


def test_default_timeout_applies(real_subprocess: None) -> None:
    with pytest.raises(CommandError, match=r"timed out after 0\.3 s"):
        CommandRunner(default_timeout_s=0.3).run(["/bin/sleep", "60"])


def test_missing_binary(real_subprocess: None) -> None:
    with pytest.raises(CommandError) as caught:
        CommandRunner().run(["/nonexistent/apachectl", "configtest"])
    err = caught.value
    assert err.returncode is None
    assert err.argv == ["/nonexistent/apachectl", "configtest"]
    assert (
        str(err) == "`/nonexistent/apachectl configtest` could not run: No such file or directory"
    )


def test_binary_not_on_path(real_subprocess: None) -> None:
    with pytest.raises(CommandError, match="could not run: No such file or directory"):
        CommandRunner(env={"PATH": "/nonexistent"}).run(["certpull-no-such-tool"])


def test_not_executable(real_subprocess: None, tmp_path: Path) -> None:
    script = tmp_path / "reload.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    os.chmod(script, 0o644)
    with pytest.raises(CommandError, match="could not run: Permission denied"):
        CommandRunner().run([str(script)])


def test_env_replaces_the_environment(real_subprocess: None) -> None:
    runner = CommandRunner(env={"CERTPULL_X": "1"})
    result = runner.run(["/bin/sh", "-c", "echo ${CERTPULL_X}-${HOME:-unset}"])
    assert result.stdout == "1-unset\n"


def test_repr_hides_the_environment() -> None:
    assert "secret" not in repr(CommandRunner(env={"AWS_SECRET_ACCESS_KEY": "secret"}))


@pytest.mark.parametrize("argv", [[], ()])
def test_empty_argv_is_refused(argv: List[str]) -> None:
    with pytest.raises(ValueError, match="empty command"):
        CommandRunner().run(argv)


def test_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        CommandRunner(default_timeout_s=0)
