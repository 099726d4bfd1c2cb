"""A process and its descendants, from /proc (the host harness stops containers by them; the
benches measure the agent's children by them)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import List


def children(pid: int) -> List[int]:
    """The live children of ``pid`` (of every thread); [] when it has gone."""
    found: List[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):  # a thread that ended meanwhile
                found += [int(c) for c in (task / "children").read_text().split()]
    return found


def tree(pid: int) -> List[int]:
    """``pid`` first, then all its live descendants."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children(current))
    return found
