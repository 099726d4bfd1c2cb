"""SIGKILL a publishing process at random instants: readers must always see one whole set.

A worker subprocess (tests/store_crash_worker.py) publishes alternating sets in a loop; the test
kills it 0-30 ms after it says ``ready`` and then checks what a reader such as httpd would see.
``CERTPULL_CRASH_KILLS`` overrides the number of kills (default 200), ``CERTPULL_CRASH_SEED`` the
random seed. SIGKILL tests process death, not power loss: fsync ordering is covered by the unit
tests' fault injection, not here.
"""

from __future__ import annotations

import collections
import os
import random
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Counter, Dict, List, Set

import pytest

import certpull
from certpull.layout import DATA_LINK, DATA_TMP, LINK_TMP, STAGING_PREFIX, is_version_name
from certpull.store import LiveDir

WORKER = Path(__file__).resolve().parent.parent / "store_crash_worker.py"
FILE_NAMES = ("cert.pem", "chain.pem", "fullchain.pem", "privkey.pem")
KEY = "privkey.pem"
MAX_DELAY_S = 0.030


def _worker_env() -> Dict[str, str]:
    agent_dir = str(Path(certpull.__file__).resolve().parent.parent)
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": agent_dir + (os.pathsep + path if path else "")}


def _set_id(data: bytes) -> str:
    first = data.split(b"\n", 1)[0]
    assert first.startswith(b"id="), first[:20]
    return first[3:].decode()


def _classify(target: Path, names: Set[str]) -> str:
    """Where in a publish the kill landed, judged from what it left on disk."""
    if any(n.startswith(STAGING_PREFIX) for n in names):
        return "staging"
    if DATA_TMP in names:
        return "swapping ..data"
    if LINK_TMP in names:
        return "swapping a link"
    active = os.readlink(target / DATA_LINK)
    if any(is_version_name(n) and n > active for n in names):
        return "staged, not yet active"
    return "between publishes"


def _key_files_private(target: Path) -> List[str]:
    """Every key file anywhere under the target, staging dirs included, that others could read."""
    exposed = []
    for entry in target.iterdir():
        key = entry / KEY
        hidden_dir = entry.name.startswith("..") and not entry.is_symlink()
        if hidden_dir and key.exists() and stat.S_IMODE(key.lstat().st_mode) & 0o077:
            exposed.append(str(key))
    return exposed


@pytest.mark.integration
@pytest.mark.slow
def test_sigkill_at_random_points_never_mixes_sets(tmp_path: Path) -> None:
    kills = int(os.environ.get("CERTPULL_CRASH_KILLS", "200"))
    seed = int(os.environ.get("CERTPULL_CRASH_SEED", str(time.time_ns() % 1_000_000)))
    rng = random.Random(seed)
    target = tmp_path / "live" / "www"
    store = LiveDir(str(target), file_modes={KEY: 0o600}, keep_versions=2)
    where: Counter[str] = collections.Counter()
    seen_ids: Set[str] = set()
    env = _worker_env()
    started = time.monotonic()

    for kill in range(kills):
        proc = subprocess.Popen(
            [sys.executable, str(WORKER), str(target)], stdout=subprocess.PIPE, env=env
        )
        assert proc.stdout is not None
        try:
            assert proc.stdout.readline() == b"ready\n", f"worker died before ready (kill {kill})"
            time.sleep(rng.uniform(0.0, MAX_DELAY_S))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            proc.stdout.close()
        assert proc.returncode == -signal.SIGKILL, f"worker exited by itself: {proc.returncode}"

        context = f"kill {kill}, seed {seed}"
        where[_classify(target, set(os.listdir(target)))] += 1
        ids = {name: _set_id((target / name).read_bytes()) for name in FILE_NAMES}
        assert len(set(ids.values())) == 1, f"mixed sets after {context}: {ids}"
        seen_ids.update(ids.values())
        assert stat.S_IMODE(os.stat(target / KEY).st_mode) == 0o600, context
        assert _key_files_private(target) == [], context

        store.recover()
        left = [n for n in os.listdir(target) if n.startswith(STAGING_PREFIX) or n == DATA_TMP]
        assert left == [], context
        assert store.verify_links() == [], context

    elapsed = time.monotonic() - started
    mid = kills - where["between publishes"]
    print(
        f"\nstore crash test: {kills} kills in {elapsed:.1f} s (seed {seed}); "
        f"{mid} left traces of an unfinished publish: {dict(where)}; "
        f"{len(seen_ids)} distinct sets observed"
    )
    assert len(seen_ids) > 1 and mid > kills // 10, "kills hardly ever landed inside a publish"
