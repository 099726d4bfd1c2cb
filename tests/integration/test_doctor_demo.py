"""The demo's world end to end (scripts/demo.py: ACM PCA, the rotation function, a real httpd):
its closing `certpull doctor` finds every check that applies passing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def test_demo_ends_with_a_doctor_run_where_everything_that_applies_passes() -> None:
    # The event-to-served time is printed, not judged: on a shared machine running two suites
    # at once it is noise; bench/bench_event_latency.py measures it.
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "demo.py"), "--latency-budget-s", "0"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "new leaf served to a fresh handshake: " in done.stdout, done.stdout[-6000:]
    section = done.stdout.split("$ certpull doctor\n", 1)[1].split("(exit ", 1)[0]
    lines = section.splitlines()
    assert lines[0].startswith("certpull doctor: OK - "), section
    marks = {line[:4] for line in lines[1:]}
    assert marks <= {"ok  ", "n/a "}, section
    for title in (
        "identity",
        "www: GetSecretValue",
        "www: secret content",
        "www: served certificate",
    ):
        assert any(line.startswith(f"ok   {title} ") for line in lines), (title, section)
