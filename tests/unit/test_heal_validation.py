"""Validation outcomes in a pass (issue 12, item 4): a notBefore ahead is pending until then, not
a failure; AWSCURRENT moved back to a version this host installed before is installed although it
expires earlier, while an older certificate in a new version is still refused; validation
warnings reach the outcome and state."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from certpull.outcome import Status
from tests.pki import make_ca, make_leaf, now
from tests.unit.test_agent import PKI, live_cert, put, statuses, world

__all__ = ["world"]


def test_a_not_before_slightly_ahead_is_pending_then_installed(world: Any) -> None:
    agent, source, _httpd, _served, tmp = world
    put(source, "a", "a1", PKI.leaf(slot=10))
    agent.sync(["a"])
    before = live_cert(tmp, "a")
    start = now() + dt.timedelta(minutes=3)  # issued a moment ago, by a CA whose clock runs fast
    fresh = PKI.leaf(slot=50, not_before=start)
    put(source, "a", "a2", fresh)
    report = agent.sync(["a"])
    assert statuses(report) == {"a": Status.PENDING}, report.outcomes
    (outcome,) = report.outcomes
    assert f"pending until {start:%Y-%m-%dT%H:%M:%SZ}" in outcome.message
    assert outcome.ok and live_cert(tmp, "a") == before
    cert = json.loads((tmp / "state" / "state.json").read_text())["certs"]["a"]
    assert cert["consecutive_failures"] == 0 and cert["last_error"] is None
    assert cert["pending"]["not_before"] == start.isoformat()
    source.calls.clear()
    assert statuses(agent.sync(["a"])) == {"a": Status.PENDING}
    assert source.calls == ["DescribeSecret"]  # not fetched again before its time
    agent.clock = lambda: start.timestamp() + 1
    assert statuses(agent.sync(["a"])) == {"a": Status.INSTALLED}
    assert live_cert(tmp, "a") == fresh.pem.encode()


def test_a_not_before_far_ahead_is_refused_not_pending(world: Any) -> None:
    agent, source, _httpd, _served, _tmp = world
    put(source, "a", "a1", PKI.leaf(slot=10))
    agent.sync(["a"])
    put(source, "a", "a2", PKI.leaf(slot=55, not_before=now() + dt.timedelta(days=1)))
    report = agent.sync(["a"])
    assert statuses(report) == {"a": Status.FAILED}
    assert "is not valid until" in report.outcomes[0].message


def install_two(world: Any) -> tuple:  # type: ignore[type-arg]
    agent, source, _httpd, _served, _tmp = world
    older = PKI.leaf(slot=51, days=60)
    newer = PKI.leaf(slot=52, days=90)
    put(source, "a", "a1", older)
    assert statuses(agent.sync(["a"])) == {"a": Status.INSTALLED}
    put(source, "a", "a2", newer)
    assert statuses(agent.sync(["a"])) == {"a": Status.INSTALLED}
    return older, newer


def test_awscurrent_moved_back_to_the_previous_version_is_installed(world: Any) -> None:
    agent, source, _httpd, _served, tmp = world
    older, _newer = install_two(world)
    put(source, "a", "a1", older)  # the AWS way to revert: AWSCURRENT back onto version a1
    report = agent.sync(["a"])
    assert statuses(report) == {"a": Status.INSTALLED}, report.outcomes
    assert live_cert(tmp, "a") == older.pem.encode()


def test_awscurrent_moved_back_is_installed_even_after_state_json_was_lost(world: Any) -> None:
    agent, source, _httpd, _served, tmp = world
    older, _newer = install_two(world)
    (tmp / "state" / "state.json").unlink()  # the kept version directory still says a1 was here
    put(source, "a", "a1", older)
    assert statuses(agent.sync(["a"])) == {"a": Status.INSTALLED}
    assert live_cert(tmp, "a") == older.pem.encode()


def test_an_older_certificate_in_a_new_version_is_still_refused(world: Any) -> None:
    agent, source, _httpd, _served, tmp = world
    install_two(world)
    before = live_cert(tmp, "a")
    put(source, "a", "a3", PKI.leaf(slot=53, days=30))
    report = agent.sync(["a"])
    assert statuses(report) == {"a": Status.FAILED}
    assert "before the installed certificate" in report.outcomes[0].message
    assert live_cert(tmp, "a") == before


def test_a_chain_expiring_before_the_leaf_is_installed_and_said(world: Any) -> None:
    agent, source, _httpd, _served, tmp = world
    short = make_ca("short-lived intermediate", issuer=PKI.root, slot=9, days=30)
    leaf = make_leaf(short, slot=54, days=90)
    source.put(
        "arn:aws:secretsmanager:us-east-1:111122223333:secret:a",
        "a1",
        PKI.secret_string(leaf, CERTIFICATE_CHAIN_PEM=short.pem + PKI.root.pem),
    )
    report = agent.sync(["a"])
    assert statuses(report) == {"a": Status.INSTALLED}
    assert "CN=short-lived intermediate" in report.outcomes[0].message
    cert = json.loads((tmp / "state" / "state.json").read_text())["certs"]["a"]
    assert cert["installed"]["chain_expiring"] == "CN=short-lived intermediate"
    assert any("before the certificate" in w for w in cert["warnings"])
