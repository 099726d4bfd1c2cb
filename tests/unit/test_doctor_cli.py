"""The CLI contract for `doctor`: in argparse, in --help's exit codes, in README's command table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from certpull import cli

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_commands() -> set:  # type: ignore[type-arg]
    section = README.read_text().split("\n## Commands", 1)[1].split("\n## ", 1)[0]
    return {m.group(1) for m in re.finditer(r"^\| `([a-z-]+)[ `]", section, re.MULTILINE)}


def test_readme_command_table_lists_every_command() -> None:
    assert readme_commands() == set(cli.COMMANDS)
    assert "doctor" in cli.COMMANDS


def test_help_gives_doctors_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert re.search(r"doctor\s+0 every check passed .*1 a check failed", out, re.DOTALL)


def test_doctor_takes_json_and_names(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["doctor", "--help"])
    out = capsys.readouterr().out
    assert "--json" in out and "NAME" in out and "inferred" in out
