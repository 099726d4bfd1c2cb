"""Publish alternating file sets into one LiveDir forever, to be SIGKILLed by test_store_crash.py.

Usage: ``python store_crash_worker.py TARGET_DIR``. It runs ``recover()``, makes sure a set is
installed, prints ``ready`` and then publishes A, B, A, ... as fast as it can. Every file of a set
carries the same id (``<A|B>:<pid>:<n>``) so the test can tell whether what it reads after a kill
comes from one set. The key file gets mode 0600, as in production.
"""

from __future__ import annotations

import os
import sys
from typing import Dict

from certpull.store import LiveDir

FILE_NAMES = ("cert.pem", "chain.pem", "fullchain.pem", "privkey.pem")
KEY_MODES = {"privkey.pem": 0o600}
PADDING_LINES = 40  # a few KiB per file, so a write is more than one tiny syscall


def file_set(set_id: str) -> Dict[str, bytes]:
    return {
        name: (f"id={set_id}\n" + f"{name} {set_id} filler\n" * PADDING_LINES).encode()
        for name in FILE_NAMES
    }


def main(target: str) -> None:
    store = LiveDir(target, file_modes=KEY_MODES, keep_versions=2)
    store.recover()
    pid = os.getpid()
    if store.current() is None:
        store.publish(file_set(f"A:{pid}:0"), "initial")
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    n = 1
    while True:
        tag = "AB"[n % 2]
        store.publish(file_set(f"{tag}:{pid}:{n}"), tag)
        n += 1


if __name__ == "__main__":
    main(sys.argv[1])
