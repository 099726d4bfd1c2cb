"""Compat links in a pass: made by every install before httpd is reloaded, a failure reported and
rolled back, made at start with one reload, restored on drift. httpd (a fake) reads the paths an
unmodified ssl.conf names, so a link made too late shows as a verification failure."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Tuple

import pytest

from certpull.agent import Agent
from certpull.config import parse_config
from certpull.outcome import Status
from certpull.startup import files_in_place
from certpull.state import StateFile
from certpull.wiring import compat_factory, live_dir_factory
from tests.unit.test_agent import PKI, FakeHttpd, FakeServed, FakeSource, live_cert, put, statuses

World = Tuple[Agent, FakeSource, FakeHttpd, Path]


@pytest.fixture
def world(tmp_path: Path) -> World:
    tls = tmp_path / "etc" / "pki" / "tls"
    (tls / "certs").mkdir(parents=True)
    (tls / "private").mkdir()
    crt, key = tls / "certs" / "localhost.crt", tls / "private" / "localhost.key"
    crt.write_bytes(PKI.leaf(slot=30).pem.encode())  # the distribution's self-signed stand-in
    key.write_bytes(b"the distribution's key\n")
    os.chmod(key, 0o600)
    text = (
        f"[agent]\nlive_dir = {tmp_path / 'live'}\nstate_dir = {tmp_path / 'state'}\n\n"
        "[cert:a]\nsecret_arn = arn:aws:secretsmanager:us-east-1:111122223333:secret:a\n"
        f"verify = 127.0.0.1:1001\ncert_file = {crt}\nkey_file = {key}\n"
    )
    config = parse_config(text, str(tmp_path / "c.conf"))
    source, httpd = FakeSource(), FakeHttpd(tmp_path / "live", ["a"], {"a": crt})
    agent = Agent(
        config,
        source=source,
        httpd=httpd,
        state_file=StateFile(str(tmp_path / "state")),
        live_dir_for=live_dir_factory(config, None),
        compat_for=compat_factory(config),
        served_check=FakeServed(httpd, {1001: "a"}),
    )
    return agent, source, httpd, tmp_path


def crt_path(tmp: Path) -> Path:
    return tmp / "etc" / "pki" / "tls" / "certs" / "localhost.crt"


def test_the_first_install_makes_the_compat_links_before_the_reload(world: World) -> None:
    agent, source, httpd, tmp = world
    leaf = PKI.leaf(slot=10)
    put(source, "a", "a1", leaf)
    assert statuses(agent.sync()) == {"a": Status.INSTALLED}
    assert os.readlink(crt_path(tmp)) == str(tmp / "live" / "a" / "cert.pem")
    assert httpd.calls == ["configtest", "graceful"]
    assert crt_path(tmp).read_bytes() == leaf.pem.encode()


def test_a_compat_link_that_cannot_be_made_fails_the_install_and_rolls_it_back(
    world: World,
) -> None:
    agent, source, httpd, tmp = world
    first = PKI.leaf(slot=10)
    put(source, "a", "a1", first)
    agent.sync()
    httpd.calls.clear()
    crt = crt_path(tmp)
    crt.unlink()
    crt.mkdir()  # someone put a directory where the link goes
    put(source, "a", "a2", PKI.leaf(slot=11))
    report = agent.sync()
    assert statuses(report) == {"a": Status.FAILED}
    assert "cannot make its compat links" in report.outcomes[0].message
    assert "is a directory" in report.outcomes[0].message
    assert live_cert(tmp, "a") == first.pem.encode()
    assert httpd.calls == []  # nothing was reloaded


def test_recovery_at_start_makes_missing_compat_links_and_reloads_once(world: World) -> None:
    agent, source, httpd, tmp = world
    leaf = PKI.leaf(slot=10)
    put(source, "a", "a1", leaf)
    agent.sync()
    crt = crt_path(tmp)
    crt.unlink()
    crt.write_bytes(b"put back by a package update\n")
    httpd.calls.clear()
    assert agent.recover() == []
    assert os.readlink(crt) == str(tmp / "live" / "a" / "cert.pem")
    assert httpd.calls == ["configtest", "graceful"]
    assert agent.recover() == [] and httpd.calls == ["configtest", "graceful"]  # once


def test_drift_of_a_compat_link_alone_is_repaired_and_counted(world: World) -> None:
    agent, source, _httpd, tmp = world
    put(source, "a", "a1", PKI.leaf(slot=10))
    agent.sync()
    crt = crt_path(tmp)
    crt.unlink()
    os.symlink("/etc/hostname", crt)
    assert agent.repair("a") is True
    assert os.readlink(crt) == str(tmp / "live" / "a" / "cert.pem")
    state = StateFile(str(tmp / "state")).load()
    assert state.certs["a"].drift_count == 1


def test_recovery_before_ready_makes_the_links_and_leaves_the_reload_to_the_first_pass(
    world: World,
) -> None:
    """Before READY=1 a reload of httpd would wait for certpull's own start job (httpd's unit is
    ordered after it): the daemon's recovery makes the links, records a reload pending, and its
    first pass reloads once (no AWS fetch: the version is current)."""
    agent, source, httpd, tmp = world
    put(source, "a", "a1", PKI.leaf(slot=10))
    agent.sync()
    crt = crt_path(tmp)
    crt.unlink()
    crt.write_bytes(b"put back by a package update\n")
    httpd.calls.clear()
    assert agent.recover(reload=False) == []
    assert os.readlink(crt) == str(tmp / "live" / "a" / "cert.pem")
    assert httpd.calls == []
    assert StateFile(str(tmp / "state")).load().certs["a"].reload_pending is True
    report = agent.sync(["a"])
    assert [o.status for o in report.outcomes] == [Status.INSTALLED]
    assert httpd.calls == ["configtest", "graceful"]
    assert StateFile(str(tmp / "state")).load().certs["a"].reload_pending is False


def test_files_in_place_only_when_every_version_link_and_compat_link_is(world: World) -> None:
    """startup.py sends READY=1 before the loop only then: httpd may start on the files at once."""
    agent, source, _httpd, tmp = world
    config = agent.config
    assert not files_in_place(config)  # a fresh host: nothing installed
    put(source, "a", "a1", PKI.leaf(slot=10))
    agent.sync()
    assert files_in_place(config)
    compat = compat_factory(config)(config.certs[0])
    assert compat.unlinked() == []

    crt = crt_path(tmp)
    crt.unlink()
    crt.write_bytes(b"someone's file\n")  # a compat link replaced: recovery must relink it first
    assert compat.unlinked() == [str(crt)]
    assert not files_in_place(config)
    agent.recover(reload=False)
    assert files_in_place(config)

    (tmp / "live" / "a" / "chain.pem").unlink()  # a user-visible link gone
    assert not files_in_place(config)
    agent.recover(reload=False)
    assert files_in_place(config)


def test_files_in_place_refuses_a_live_root_others_can_write_without_raising(world: World) -> None:
    agent, source, _httpd, tmp = world
    put(source, "a", "a1", PKI.leaf(slot=10))
    agent.sync()
    os.chmod(tmp / "live", 0o777)  # noqa: S103 - someone else could have planted what it holds
    assert not files_in_place(agent.config)
