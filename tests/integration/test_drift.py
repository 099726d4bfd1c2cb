"""DriftWatcher with real files, real inotify: deletes, overwrites, rename-over edits, suppression."""

from __future__ import annotations

import os
import queue
import threading
import time
from pathlib import Path
from typing import Iterator, List

import pytest

from certpull.drift import CONFIG_KEY, DriftWatcher

pytestmark = pytest.mark.integration

WAIT_S = 5.0  # "within a few seconds": a generous deadline, not a speed measurement
DEBOUNCE_S = 0.1
QUIET_S = 0.8  # how long "nothing reported" is observed for


def make_live(root: Path, name: str, version: str = "..2024_01_01_v1") -> Path:
    """A live dir shaped like store.py's: files in a versioned dir, ..data, top-level links."""
    live = root / name
    versioned = live / version
    versioned.mkdir(parents=True)
    for f in ("cert.pem", "chain.pem", "fullchain.pem", "privkey.pem"):
        (versioned / f).write_text(f"{f} {version}\n")
    (live / "..data").symlink_to(version)
    for f in ("cert.pem", "chain.pem", "fullchain.pem", "privkey.pem"):
        (live / f).symlink_to(f"..data/{f}")
    return live


def swap_version(live: Path, version: str) -> None:
    """The agent's own install: new versioned dir, then one rename of ..data."""
    versioned = live / version
    versioned.mkdir()
    for f in ("cert.pem", "chain.pem", "fullchain.pem", "privkey.pem"):
        (versioned / f).write_text(f"{f} {version}\n")
    tmp = live / "..data_tmp"
    tmp.symlink_to(version)
    os.rename(tmp, live / "..data")


# Generous on purpose: a loaded CI machine (two test runs side by side) delivers inotify events
# late, and a late event of the agent's own install must still count as its own.
SETTLE_S = 2.0


class Recorder:
    def __init__(self) -> None:
        self.keys: queue.Queue[str] = queue.Queue()
        self.threads: List[str] = []

    def __call__(self, key: str) -> None:
        self.threads.append(threading.current_thread().name)
        self.keys.put(key)

    def next(self, timeout: float = WAIT_S) -> str:
        return self.keys.get(timeout=timeout)

    def quiet(self, seconds: float = QUIET_S) -> List[str]:
        got = []
        try:
            while True:
                got.append(self.keys.get(timeout=seconds))
        except queue.Empty:
            return got


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple]:  # type: ignore[type-arg]
    live_root = tmp_path / "live"
    www = make_live(live_root, "www")
    api = make_live(live_root, "api")
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    conf = conf_dir / "certpull.conf"
    conf.write_text("[agent]\n")
    (conf_dir / "other.conf").write_text("x\n")
    rec = Recorder()
    watcher = DriftWatcher(
        {"www": str(www), "api": [str(api)], CONFIG_KEY: str(conf)},
        rec,
        debounce_s=DEBOUNCE_S,
        settle_s=SETTLE_S,
    )
    watcher.start()
    try:
        yield watcher, rec, www, api, conf
    finally:
        watcher.stop()


def test_deleted_link_is_reported(setup: tuple) -> None:  # type: ignore[type-arg]
    _, rec, www, _, _ = setup
    (www / "cert.pem").unlink()
    assert rec.next() == "www"
    assert rec.quiet() == []  # once per burst, and "api" untouched


def test_replaced_link_is_reported(setup: tuple) -> None:  # type: ignore[type-arg]
    _, rec, www, _, _ = setup
    (www / "privkey.pem").unlink()
    (www / "privkey.pem").write_text("someone else's key\n")
    assert rec.next() == "www"


def test_edit_through_the_link_into_the_versioned_dir_is_reported(setup: tuple) -> None:  # type: ignore[type-arg]
    _, rec, _, api, _ = setup
    with open(api / "cert.pem", "a") as f:  # follows cert.pem -> ..data/cert.pem
        f.write("tampered\n")
    assert rec.next() == "api"


def test_data_link_repointed_is_reported(setup: tuple) -> None:  # type: ignore[type-arg]
    _, rec, www, _, _ = setup
    swap_version(www, "..2024_02_02_v2")  # not suppressed: someone else did it
    assert rec.next() == "www"


def test_config_edited_by_rename_over_is_reported(setup: tuple) -> None:  # type: ignore[type-arg]
    _, rec, _, _, conf = setup
    tmp = conf.with_name(".certpull.conf.swp")
    tmp.write_text("[agent]\npoll_interval_s = 60\n")
    os.rename(tmp, conf)
    assert rec.next() == CONFIG_KEY
    assert rec.quiet() == []


def test_config_edited_in_place_is_reported(setup: tuple) -> None:  # type: ignore[type-arg]
    _, rec, _, _, conf = setup
    with open(conf, "a") as f:
        f.write("; comment\n")
    assert rec.next() == CONFIG_KEY


def test_reading_and_neighbours_are_not_drift(setup: tuple) -> None:  # type: ignore[type-arg]
    _, rec, www, _, conf = setup
    for path in (www / "cert.pem", www / "privkey.pem", conf):
        path.read_text()  # httpd and the agent read these all the time
    (conf.parent / "other.conf").write_text("y\n")  # another file next to the config
    assert rec.quiet() == []


def test_own_install_is_suppressed_then_real_drift_is_seen(setup: tuple) -> None:  # type: ignore[type-arg]
    watcher, rec, www, api, _ = setup
    with watcher.suppress("www"):
        swap_version(www, "..2024_03_03_v3")
        (api / "chain.pem").unlink()  # a different key is not suppressed
    assert rec.next() == "api"
    assert rec.quiet() == []
    time.sleep(SETTLE_S)  # inotify may deliver the install's events late; after the settle time
    (www / "fullchain.pem").unlink()  # a change is someone else's again
    assert rec.next() == "www"


def test_burst_of_changes_is_one_report(setup: tuple) -> None:  # type: ignore[type-arg]
    _, rec, www, _, _ = setup
    for i in range(20):
        (www / f"junk{i}").write_text("x")
    assert rec.next() == "www"
    assert rec.quiet() == []


def test_callback_runs_on_the_watcher_thread_and_survives_errors(tmp_path: Path) -> None:
    live = make_live(tmp_path, "www")
    seen: queue.Queue[str] = queue.Queue()
    calls = {"n": 0}

    def flaky(key: str) -> None:
        calls["n"] += 1
        seen.put(threading.current_thread().name)
        if calls["n"] == 1:
            raise RuntimeError("boom")

    watcher = DriftWatcher({"www": str(live)}, flaky, debounce_s=DEBOUNCE_S)
    watcher.start()
    try:
        (live / "cert.pem").unlink()
        assert seen.get(timeout=WAIT_S) == "certpull-drift"
        (live / "chain.pem").unlink()
        assert seen.get(timeout=WAIT_S) == "certpull-drift"  # still alive after the exception
    finally:
        watcher.stop()


def test_compat_link_outside_the_live_dir(tmp_path: Path) -> None:
    live = make_live(tmp_path / "live", "www")
    certs = tmp_path / "etc-pki-tls-certs"
    certs.mkdir()
    link = certs / "localhost.crt"
    link.symlink_to(live / "cert.pem")
    (certs / "unrelated.crt").write_text("x")
    rec = Recorder()
    watcher = DriftWatcher({"www": [str(live), str(link)]}, rec, debounce_s=DEBOUNCE_S)
    watcher.start()
    try:
        assert (str(certs), False) in watcher.watched_dirs
        (certs / "unrelated.crt").write_text("y")
        assert rec.quiet() == []
        link.unlink()
        link.write_text("a copy, not a link\n")
        assert rec.next() == "www"
    finally:
        watcher.stop()


def test_update_starts_watching_a_dir_created_later(tmp_path: Path) -> None:
    root = tmp_path / "live"
    root.mkdir()
    rec = Recorder()
    watcher = DriftWatcher({"www": str(root / "www")}, rec, debounce_s=DEBOUNCE_S)
    watcher.start()
    try:
        assert watcher.watched_dirs == [(str(root), False)]
        with watcher.suppress("www"):
            make_live(root, "www")  # first install
        watcher.update()
        assert watcher.watched_dirs == [(str(root / "www"), True)]
        assert rec.quiet() == []
        (root / "www" / "cert.pem").unlink()
        assert rec.next() == "www"
        watcher.update({"other": str(tmp_path)})
        assert watcher.watched_dirs == [(str(tmp_path), True)]
    finally:
        watcher.stop()


def test_stop_is_prompt_and_idempotent(tmp_path: Path) -> None:
    watcher = DriftWatcher({"x": str(tmp_path)}, lambda key: None)
    watcher.start()
    watcher.stop()
    watcher.stop()
    assert not any(t.name == "certpull-drift" and t.is_alive() for t in threading.enumerate())
