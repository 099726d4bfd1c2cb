"""Damage heals, nothing wedges (issue 12, item 1): a damaged state.json is rebuilt from the live
directories, damaged live directories are republished, unusable locks and state directories are
refused in one line before anything changes, and a rollback is durable at every step.

The agent runs with the in-memory source, httpd and served check of test_agent.py; live and
state directories are real (tmp_path)."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from typing import Any, Optional

import pytest

from certpull.agent import Agent
from certpull.cli import main
from certpull.errors import StoreError
from certpull.fileops import FileOps
from certpull.outcome import Status
from certpull.state import StateFile
from tests.unit.test_agent import PKI, arn, install_both, live_cert, put, statuses, world

__all__ = ["world"]  # the fixture, re-exported for pytest


def state_path(tmp: Path) -> Path:
    return tmp / "state" / "state.json"


def saved(tmp: Path) -> Any:
    return json.loads(state_path(tmp).read_text())


def status_of(tmp: Path, capsys: pytest.CaptureFixture[str]) -> tuple:  # type: ignore[type-arg]
    code = main(["-c", str(tmp / "c.conf"), "status"])
    out = capsys.readouterr().out
    return code, out


def write_config(tmp: Path, agent: Agent) -> None:
    """The CLI reads the config from disk: write the one the fixture parsed."""
    text = "\n".join(
        [
            "[agent]",
            f"live_dir = {tmp / 'live'}",
            f"state_dir = {tmp / 'state'}",
            *[f"[cert:{c.name}]\nsecret_arn = {c.secret_arn}" for c in agent.config.certs],
        ]
    )
    (tmp / "c.conf").write_text(text + "\n")


# -- a damaged state.json ---------------------------------------------------------------------

TORN = [
    "",
    '{"format": 1, "certs": {"a": {"installed": {"version_id": "a',
    "\x00\xff garbage",
    "null",
]
SHAPED = [
    "[]",
    '{"certs": []}',
    '{"certs": {"a": "x"}, "daemon": 7}',
    '{"certs": {"a": {"installed": "x", "consecutive_failures": "many", "held_version_id": 5}}}',
    '{"certs": {"a": {"installed": {"version_id": 7}, "pending": {"version_id": "v"}}}}',
    '{"certs": {"a": {"previous": [], "last_check_at": "yesterday", "drift_count": null}}}',
]


@pytest.mark.parametrize("text", TORN + SHAPED)
def test_a_damaged_state_file_is_rebuilt_from_the_live_dirs_without_a_reload(
    world: Any, text: str
) -> None:
    agent, source, httpd, _served, tmp = world
    install_both(agent, source, httpd)
    before = {n: live_cert(tmp, n) for n in "ab"}
    state_path(tmp).write_text(text, errors="surrogateescape")
    report = agent.sync()
    assert statuses(report) == {"a": Status.CURRENT, "b": Status.CURRENT}
    assert httpd.calls == []  # the live files say what is installed: nothing to reload
    state = saved(tmp)
    for name in "ab":
        installed = state["certs"][name]["installed"]
        assert installed["version_id"] == f"{name}1"
        assert installed["fingerprint_sha256"]
        assert installed["not_after"]
    assert {n: live_cert(tmp, n) for n in "ab"} == before


@pytest.mark.parametrize("text", TORN)
def test_an_unreadable_state_file_is_kept_aside_and_status_says_unknown(
    world: Any, text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    agent, source, httpd, _served, tmp = world
    install_both(agent, source, httpd)
    write_config(tmp, agent)
    state_path(tmp).write_text(text, errors="surrogateescape")
    code, out = status_of(tmp, capsys)
    assert code == 3 and out.startswith("CERTPULL UNKNOWN - ")
    assert len(out.strip().splitlines()) == 1 and "state.json" in out
    agent.sync()
    kept = [p.name for p in (tmp / "state").iterdir() if p.name.startswith("state.json.damaged")]
    assert len(kept) == 1
    code, out = status_of(tmp, capsys)
    assert code == 0, out


@pytest.mark.parametrize("text", SHAPED)
def test_status_never_tracebacks_on_a_differently_shaped_state_file(
    world: Any, text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    agent, source, httpd, _served, tmp = world
    install_both(agent, source, httpd)
    write_config(tmp, agent)
    state_path(tmp).write_text(text)
    code, out = status_of(tmp, capsys)
    # the live files exist but the state does not describe them: status cannot tell their expiry
    assert code == 3, out
    assert "UNKNOWN" in out.splitlines()[0]


# -- damaged live directories -----------------------------------------------------------------


def _delete_active_version(live: Path) -> None:
    shutil.rmtree(live / os.readlink(live / "..data"))


def _data_is_a_file(live: Path) -> None:
    os.unlink(live / "..data")
    (live / "..data").write_text("not a link\n")


def _data_is_a_directory(live: Path) -> None:
    target = live / os.readlink(live / "..data")
    os.unlink(live / "..data")
    shutil.copytree(target, live / "..data")  # a restore that dereferenced the links


def _garbage_manifest(live: Path) -> None:
    (live / os.readlink(live / "..data") / "..manifest").write_text("{torn")


@pytest.mark.parametrize(
    "damage", [_delete_active_version, _data_is_a_file, _data_is_a_directory, _garbage_manifest]
)
def test_a_damaged_live_dir_is_republished_from_the_secret(world: Any, damage: Any) -> None:
    agent, source, httpd, _served, tmp = world
    install_both(agent, source, httpd)
    good = live_cert(tmp, "a")
    damage(tmp / "live" / "a")
    report = agent.sync()
    assert report.ok, report.outcomes
    assert live_cert(tmp, "a") == good
    assert agent.live_dir_for(agent.config.cert("a")).verify_links() == []
    assert agent.sync().ok and statuses(agent.sync()) == {"a": Status.CURRENT, "b": Status.CURRENT}
    put(source, "a", "a2", leaf := PKI.leaf(slot=30))  # and rotations install again
    assert statuses(agent.sync(["a"])) == {"a": Status.INSTALLED}
    assert live_cert(tmp, "a") == leaf.pem.encode()


# -- locks and state directories that cannot be used ------------------------------------------


@pytest.mark.parametrize("kind", ["directory", "symlink"])
def test_an_unopenable_lock_refuses_the_pass_in_one_line(world: Any, kind: str) -> None:
    agent, source, httpd, _served, tmp = world
    install_both(agent, source, httpd)
    lock = tmp / "state" / "lock"
    lock.unlink()
    if kind == "directory":
        lock.mkdir()
    else:
        os.symlink(tmp / "elsewhere", lock)
    put(source, "a", "a2", PKI.leaf(slot=31))
    before = live_cert(tmp, "a")
    with pytest.raises(StoreError) as caught:
        agent.sync()
    assert f"cannot open the lock {lock}" in str(caught.value) and "remove it" in str(caught.value)
    assert live_cert(tmp, "a") == before and httpd.calls == []
    assert not (tmp / "elsewhere").exists()


class ReadOnly(FileOps):
    """The state directory's file system went read-only (or full) after the lock was made."""

    def __init__(self, code: int) -> None:
        self.code = code

    def open(self, path: str, flags: int, mode: int = 0o777, dir_fd: Optional[int] = None) -> int:
        if flags & os.O_CREAT and path.startswith(".state."):
            raise OSError(self.code, os.strerror(self.code))
        return super().open(path, flags, mode, dir_fd)


@pytest.mark.parametrize("code", [errno.EROFS, errno.ENOSPC])
def test_a_state_dir_that_cannot_be_written_refuses_installs_instead_of_looping(
    world: Any, code: int
) -> None:
    agent, source, httpd, _served, tmp = world
    install_both(agent, source, httpd)
    agent.state_file = StateFile(str(tmp / "state"), fs=ReadOnly(code))
    before = live_cert(tmp, "a")
    put(source, "a", "a2", PKI.leaf(slot=32))
    for _ in range(3):
        report = agent.sync(["a"])
        assert statuses(report) == {"a": Status.FAILED}
        assert os.strerror(code) in report.outcomes[0].message
    assert live_cert(tmp, "a") == before
    assert httpd.calls == []  # not one reload, let alone one per pass


# -- rollbacks --------------------------------------------------------------------------------


def test_after_a_rollback_state_records_the_version_installed(world: Any) -> None:
    agent, source, _httpd, _, tmp = world
    put(source, "a", "a1", PKI.leaf(slot=10))
    agent.sync(["a"])
    put(source, "a", "a2", PKI.leaf(slot=12))
    agent.sync(["a"])
    assert saved(tmp)["certs"]["a"]["previous"]["version_id"] == "a1"
    assert agent.rollback("a").status == Status.INSTALLED
    cert = saved(tmp)["certs"]["a"]
    assert cert["installed"]["version_id"] == "a1" and cert["held_version_id"] == "a2"


class Killed(BaseException):
    """SIGKILL, as far as the code under test can tell: nothing after it runs."""


@pytest.mark.parametrize("where", ["before the switch", "after the switch"])
def test_a_rollback_killed_part_way_is_finished_and_never_undone(world: Any, where: str) -> None:
    agent, source, httpd, _served, tmp = world
    first, second = PKI.leaf(slot=10), PKI.leaf(slot=12)
    put(source, "a", "a1", first)
    agent.sync(["a"])
    put(source, "a", "a2", second)
    agent.sync(["a"])
    live = agent.live_dir_for(agent.config.cert("a"))
    if where == "before the switch":

        def killed(discard_current: bool = True) -> str:
            raise Killed

        live.rollback = killed  # type: ignore[method-assign]
        agent.live_dir_for = lambda cert: live
    else:

        def killed_reload() -> None:
            raise Killed

        httpd.graceful_reload = killed_reload  # type: ignore[method-assign]
    with pytest.raises(Killed):
        agent.rollback("a")
    assert saved(tmp)["certs"]["a"]["held_version_id"] == "a2"  # durable before anything else
    if where == "before the switch":
        del live.rollback  # the instance attribute: the class's method is back
    else:
        del httpd.graceful_reload
    httpd.calls.clear()
    report = agent.sync(["a"])  # a later pass (the daemon's, or the next command)
    assert report.outcomes[0].status in (Status.HELD, Status.INSTALLED), report.outcomes
    assert live_cert(tmp, "a") == first.pem.encode()
    assert httpd.loaded["a"] == first.der  # reloaded: what is installed is what is served
    cert = saved(tmp)["certs"]["a"]
    assert cert["installed"]["version_id"] == "a1" and cert["held_version_id"] == "a2"
    assert statuses(agent.sync(["a"])) == {"a": Status.HELD}
    assert live_cert(tmp, "a") == first.pem.encode()


# -- nothing wedges ---------------------------------------------------------------------------


def test_a_damaged_expiry_in_state_does_not_refuse_every_rotation_as_a_downgrade(
    world: Any,
) -> None:
    agent, source, httpd, _served, tmp = world
    install_both(agent, source, httpd)
    body = saved(tmp)
    body["certs"]["a"]["installed"]["not_after"] = "9999-12-31T00:00:00+00:00"
    state_path(tmp).write_text(json.dumps(body))
    leaf = PKI.leaf(slot=33)
    put(source, "a", "a2", leaf)
    assert statuses(agent.sync(["a"])) == {"a": Status.INSTALLED}
    assert live_cert(tmp, "a") == leaf.pem.encode()


def test_the_daemon_record_of_a_second_run_is_not_written(world: Any) -> None:
    """A refused second `certpull run` must not touch state.json's daemon record."""
    _agent, _source, _httpd, _served, tmp = world
    store = StateFile(str(tmp / "state"))
    with store.daemon_lock(pid=111), pytest.raises(StoreError, match=r"already running .*pid 111"):  # noqa: SIM117
        with StateFile(str(tmp / "state")).daemon_lock(pid=222):
            pass  # pragma: no cover - never reached
    with StateFile(str(tmp / "state")).daemon_lock(pid=333):  # released with its holder
        pass
    assert arn("a")  # the fixture's config is untouched


# -- beyond the list: foreign entries under certpull's own names ------------------------------


def _dir_named(name: str) -> Any:
    def damage(live: Path) -> None:
        target = live / name
        if target.is_symlink() or target.is_file():
            target.unlink()
        target.mkdir()
        (target / "junk").write_text("x")

    damage.__name__ = f"a directory named {name}"
    return damage


@pytest.mark.parametrize("name", ["..data_tmp", "..link_tmp", "cert.pem", "privkey.pem"])
def test_a_directory_planted_under_one_of_certpulls_names_does_not_wedge_it(
    world: Any, name: str
) -> None:
    agent, source, httpd, _served, tmp = world
    install_both(agent, source, httpd)
    _dir_named(name)(tmp / "live" / "a")
    assert agent.recover() == [] or True  # recovery must not raise either
    leaf = PKI.leaf(slot=34)
    put(source, "a", "a2", leaf)
    report = agent.sync(["a"])
    assert statuses(report) == {"a": Status.INSTALLED}, report.outcomes
    assert live_cert(tmp, "a") == leaf.pem.encode()
    assert agent.live_dir_for(agent.config.cert("a")).verify_links() == []


def test_a_hold_survives_a_lost_state_file(world: Any) -> None:
    agent, source, _httpd, _served, tmp = world
    first, second = PKI.leaf(slot=10), PKI.leaf(slot=12, days=120)  # a2 outlives a3: no downgrade
    put(source, "a", "a1", first)
    agent.sync(["a"])
    put(source, "a", "a2", second)
    agent.sync(["a"])
    assert agent.rollback("a").status == Status.INSTALLED
    state_path(tmp).unlink()  # the operator's hold must not go with it
    assert statuses(agent.sync(["a"])) == {"a": Status.HELD}
    assert live_cert(tmp, "a") == first.pem.encode()
    third = PKI.leaf(slot=13)
    put(source, "a", "a3", third)  # the secret moves on: installed, and the hold is gone
    assert statuses(agent.sync(["a"])) == {"a": Status.INSTALLED}
    state_path(tmp).unlink()
    put(source, "a", "a2", second)  # AWSCURRENT back on a2 later: no stale hold blocks it
    assert statuses(agent.sync(["a"])) == {"a": Status.INSTALLED}


def test_a_refused_bundle_is_not_retried_until_the_operator_asks(
    world: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    agent, source, httpd, _served, tmp = world
    install_both(agent, source, httpd)
    before = live_cert(tmp, "a")
    leaf = PKI.leaf(slot=35)
    put(source, "a", "a2", leaf)
    httpd.fail_config_test = True  # ... only with the new files: the fake fails every test, so
    httpd.config_test_failures = 1  # let the second one (with the previous files) pass
    assert statuses(agent.sync(["a"])) == {"a": Status.FAILED}
    assert saved(tmp)["certs"]["a"]["rejected"]["version_id"] == "a2"
    httpd.fail_config_test = False  # the operator fixed what made httpd refuse it
    httpd.calls.clear()
    report = agent.sync(["a"])
    assert (
        statuses(report) == {"a": Status.FAILED}
        and "not installing it again" in report.outcomes[0].message
    )
    assert httpd.calls == [] and live_cert(tmp, "a") == before
    assert statuses(agent.sync(["a"], retry_refused=True)) == {"a": Status.INSTALLED}
    assert live_cert(tmp, "a") == leaf.pem.encode()
    assert saved(tmp)["certs"]["a"]["rejected"] is None


@pytest.mark.parametrize("kind", ["directory", "symlink", "fifo"])
def test_a_state_file_that_is_not_a_file_is_kept_aside_and_rebuilt(world: Any, kind: str) -> None:
    agent, source, httpd, _served, tmp = world
    install_both(agent, source, httpd)
    path = state_path(tmp)
    path.unlink()
    if kind == "directory":
        path.mkdir()
    elif kind == "symlink":
        (tmp / "elsewhere.json").write_text("{}")
        os.symlink(tmp / "elsewhere.json", path)
    else:
        os.mkfifo(path)
    assert statuses(agent.sync()) == {"a": Status.CURRENT, "b": Status.CURRENT}
    assert saved(tmp)["certs"]["a"]["installed"]["version_id"] == "a1"
    assert not path.is_symlink() and path.is_file()
    if kind == "symlink":
        assert (tmp / "elsewhere.json").read_text() == "{}"


def _returns_within(seconds: float, call: Any) -> Any:
    """Run ``call`` on a thread; fail (instead of hanging the suite) if it blocks."""
    import threading

    result: list = []  # type: ignore[type-arg]
    worker = threading.Thread(target=lambda: result.append(call()), daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), "blocked (a FIFO opened for reading?)"
    return result[0]


def test_a_fifo_in_place_of_a_live_file_or_the_config_never_blocks(
    world: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    agent, source, httpd, _served, tmp = world
    install_both(agent, source, httpd)
    write_config(tmp, agent)
    os.unlink(tmp / "live" / "a" / "cert.pem")
    os.mkfifo(tmp / "live" / "a" / "cert.pem")
    code = _returns_within(10, lambda: main(["-c", str(tmp / "c.conf"), "status"]))
    assert code == 2 and "live cert.pem is missing" in capsys.readouterr().out
    assert _returns_within(10, agent.sync) is not None  # the pass repairs the link
    fifo_conf = tmp / "fifo.conf"
    os.mkfifo(fifo_conf)
    code = _returns_within(10, lambda: main(["-c", str(fifo_conf), "check-config"]))
    assert code == 2 and "is not a regular file" in capsys.readouterr().err
