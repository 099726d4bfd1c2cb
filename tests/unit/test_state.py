"""state.py: the round trip of every field, what a reader does with fields it does not know,
atomic saves into a 0700 directory, and the lock that serialises passes."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from pathlib import Path

import pytest

from certpull.errors import StoreError
from certpull.state import CertState, DaemonState, Installed, Pending, State, StateFile


def full_state() -> State:
    installed = Installed(
        version_id="v2",
        store_version="..2026_11_29_19_30_01.123456789_v2",
        serial="1a2b",
        fingerprint_sha256="ab" * 32,
        subject="CN=www.example.com",
        names=["www.example.com", "127.0.0.1"],
        not_before="2026-11-01T00:00:00+00:00",
        not_after="2027-11-01T00:00:00+00:00",
        key_type="EC-P256",
        certificate_arn="arn:aws:acm-pca:us-east-1:111122223333:certificate-authority/x/certificate/y",
        installed_at=1_790_000_000.5,
    )
    previous = dataclasses.replace(installed, version_id="v1", serial="0f")
    cert = CertState(
        secret_arn="arn:aws:secretsmanager:us-east-1:111122223333:secret:www-AbCdEf",
        installed=installed,
        previous=previous,
        last_check_at=1.5,
        last_change_at=2.5,
        last_error="www: DescribeSecret: ThrottlingException",
        last_error_at=3.5,
        last_error_transient=True,
        consecutive_failures=4,
        last_verify_ok=False,
        last_verify_at=5.5,
        seen_version_id="v3",
        held_version_id="v0",
        pending=Pending(
            version_id="v3", serial="3c", not_after="2028-01-01T00:00:00+00:00", found_at=6.5
        ),
        next_check_at=7.5,
        backoff_until=8.5,
        drift_count=9,
        last_drift_at=10.5,
    )
    daemon = DaemonState(
        pid=4242,
        started_at=11.5,
        heartbeat_at=12.5,
        heartbeat_interval_s=30.0,
        stopped_at=None,
        config_error="certpull.conf:3: x: unknown key in [agent]",
        mode="events",
    )
    return State(certs={"www": cert, "api": CertState()}, daemon=daemon, updated_at=13.5)


def test_every_field_survives_a_round_trip() -> None:
    state = full_state()
    assert State.from_json(state.to_json()) == state


def test_file_round_trip_in_a_0700_directory(tmp_path: Path) -> None:
    store = StateFile(str(tmp_path / "state"), clock=lambda: 99.0)
    state = full_state()
    store.save(state)
    assert stat.S_IMODE(os.stat(tmp_path / "state").st_mode) == 0o700
    loaded = store.load()
    assert loaded == dataclasses.replace(state, updated_at=99.0)
    assert [p.name for p in (tmp_path / "state").iterdir()] == ["state.json"]  # no temp left


def test_a_missing_file_is_an_empty_state(tmp_path: Path) -> None:
    assert StateFile(str(tmp_path)).load() == State()


def test_fields_this_version_does_not_know_are_ignored_on_read(tmp_path: Path) -> None:
    body = json.loads(full_state().to_json())
    body["from_the_future"] = 1
    body["certs"]["www"]["new_field"] = "x"
    body["certs"]["www"]["installed"]["new_field"] = "y"
    body["daemon"]["new_field"] = "z"
    loaded = State.from_json(json.dumps(body))
    assert loaded == full_state()
    assert "new_field" not in loaded.to_json()


@pytest.mark.parametrize("text", ["{", "[1, 2]", "\x00garbage"])
def test_an_unreadable_file_is_a_store_error(tmp_path: Path, text: str) -> None:
    (tmp_path / "state.json").write_text(text)
    with pytest.raises(StoreError, match=r"state\.json is damaged \("):
        StateFile(str(tmp_path)).load()


def test_update_changes_and_saves_under_the_lock(tmp_path: Path) -> None:
    store = StateFile(str(tmp_path))
    store.update(lambda state: setattr(state.cert("www"), "drift_count", 3))
    assert store.load().certs["www"].drift_count == 3


def test_a_second_holder_of_the_lock_waits_and_then_gives_up(tmp_path: Path) -> None:
    store = StateFile(str(tmp_path))
    sleeps = []
    with store.lock(), pytest.raises(StoreError, match="another certpull holds"):  # noqa: SIM117
        with StateFile(str(tmp_path)).lock(timeout_s=0.0, sleep=sleeps.append):
            pass
    with store.lock():  # released again
        pass
