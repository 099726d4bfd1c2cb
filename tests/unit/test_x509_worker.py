"""x509_worker's pure part: the child's interpreter flags (the adapter: tests/integration)."""

from __future__ import annotations

from types import SimpleNamespace

from certpull.x509_worker import interpreter_flags


def test_the_child_runs_with_this_interpreters_isolation_and_optimization() -> None:
    flags = SimpleNamespace(isolated=1, ignore_environment=1, no_site=0, optimize=2)
    assert interpreter_flags(flags) == ["-I", "-OO", "-B"]
    flags = SimpleNamespace(isolated=0, ignore_environment=0, no_site=1, optimize=0)
    assert interpreter_flags(flags) == ["-S", "-B"]
