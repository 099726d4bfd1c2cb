"""Per-host splay from the instance id, and the instance-id readers that need no network."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from certpull.instance_id import first_of, from_env, from_file, from_machine_id
from certpull.splay import host_splay_s


def instance_ids(n: int, seed: int = 1) -> list:  # type: ignore[type-arg]
    rng = random.Random(seed)
    return [f"i-{rng.getrandbits(68):017x}" for _ in range(n)]


def test_splay_is_fixed_per_host_and_within_bounds() -> None:
    ids = instance_ids(1000)
    first = [host_splay_s(i, 30.0) for i in ids]
    assert first == [host_splay_s(i, 30.0) for i in ids]  # same id, same place in the wave
    assert all(0.0 <= s < 30.0 for s in first)
    assert len(set(first)) == len(first)


def test_a_wave_does_not_reload_in_lockstep() -> None:
    ids = instance_ids(10_000, seed=2)
    per_second = Counter(int(host_splay_s(i, 30.0)) for i in ids)
    assert len(per_second) == 30  # every second of the window is used
    mean = 10_000 / 30
    assert max(per_second.values()) <= 1.2 * mean and min(per_second.values()) >= 0.8 * mean


def test_sequential_ids_spread_too() -> None:
    ids = [f"i-{n:017x}" for n in range(1000)]  # ids that differ in one digit only
    per_decile = Counter(int(10 * host_splay_s(i, 1.0)) for i in ids)
    assert len(per_decile) == 10 and max(per_decile.values()) <= 140


@pytest.mark.parametrize(("host_id", "max_s"), [("i-0123456789abcdef0", 0.0), ("", 30.0)])
def test_no_splay(host_id: str, max_s: float) -> None:
    assert host_splay_s(host_id, max_s) == 0.0


def test_readers_in_order(tmp_path: Path) -> None:
    cloud_init = tmp_path / "instance-id"
    cloud_init.write_text("i-0aaaaaaaaaaaaaaaa\n")
    machine_id = tmp_path / "machine-id"
    machine_id.write_text("0123456789abcdef0123456789abcdef\n")
    env = {"AWS_SSM_INSTANCE_ID": "i-0bbbbbbbbbbbbbbbb"}
    readers = [from_env(env), from_file(str(cloud_init)), from_machine_id(str(machine_id))]
    assert first_of(readers) == "i-0bbbbbbbbbbbbbbbb"
    assert first_of(readers[1:]) == "i-0aaaaaaaaaaaaaaaa"
    assert first_of(readers[2:]) == "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize("content", ["iid-datasource-none\n", "", "i-XYZ\n", "i-0aaa; rm -rf /\n"])
def test_cloud_init_ids_that_are_not_ec2_ids_are_ignored(tmp_path: Path, content: str) -> None:
    path = tmp_path / "instance-id"
    path.write_text(content)
    assert from_file(str(path))() is None


def test_missing_sources_answer_none(tmp_path: Path) -> None:
    assert from_env({})() is None
    assert from_file(str(tmp_path / "absent"))() is None
    assert from_machine_id(str(tmp_path / "absent"))() is None
    assert first_of([]) is None


def test_hybrid_managed_node_ids_are_accepted() -> None:
    assert from_env({"AWS_SSM_INSTANCE_ID": "mi-0123456789abcdef0"})() == "mi-0123456789abcdef0"
