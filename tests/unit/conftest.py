"""Unit tests do no I/O beyond temporary directories: real subprocesses are refused unless a test
asks for the `real_subprocess` fixture (cloud-init's habit)."""

from __future__ import annotations

import subprocess

import pytest


class RealSubprocessRefused(RuntimeError):
    pass


@pytest.fixture
def real_subprocess() -> None:
    """Opt-in marker for tests that really spawn processes."""


@pytest.fixture(autouse=True)
def _refuse_subprocesses(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if "real_subprocess" in request.fixturenames:
        return

    def refuse(*args: object, **kwargs: object) -> None:
        raise RealSubprocessRefused(f"unit test started a real subprocess: {args[:1]}")

    monkeypatch.setattr(subprocess, "Popen", refuse)
