"""Integration fixtures shared by modules: the RPM, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.rpm_build import build_rpm, find_python39


@pytest.fixture(scope="session")
def rpm_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """dist RPM of this checkout (packaging/build-rpm.sh, about 20 s)."""
    return build_rpm(tmp_path_factory.mktemp("rpmbuild"))


@pytest.fixture(scope="session")
def python39() -> str:
    found = find_python39()
    if not found:
        pytest.fail("no CPython 3.9 found (set PYTHON39): build-rpm.sh needs one as well")
    return found
