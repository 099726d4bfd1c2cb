"""Who a process is, from /proc: its start time and the boot it belongs to.

A pid alone does not name a process for long: once the daemon is gone the kernel hands its pid to
the next process. `certpull run` records its start time (field 22 of /proc/PID/stat, in clock
ticks since boot) and the boot id; `status` then tells the daemon from whatever reuses its pid.
Light on purpose (the `status` path): the stdlib only.
"""

from __future__ import annotations

from typing import Optional, Tuple

BOOT_ID = "/proc/sys/kernel/random/boot_id"


def start_ticks(pid: int) -> Optional[int]:
    """Field 22 (starttime) of /proc/PID/stat; None when there is no such process or no /proc.

    The command name (field 2) may hold spaces and parentheses: the fields after it are counted
    from the last ')'.
    """
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            text = handle.read()
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()
    # fields[0] is field 3 (state): field 22 is fields[19]
    if len(fields) < 20 or not fields[19].isdigit() or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def boot_id() -> Optional[str]:
    try:
        with open(BOOT_ID, encoding="ascii") as handle:
            return handle.read().strip() or None
    except OSError:
        return None


def process_identity(pid: int) -> Optional[Tuple[int, Optional[str]]]:
    """(start ticks, boot id) of a live process; None when ``pid`` names none (or a zombie)."""
    ticks = start_ticks(pid)
    return None if ticks is None else (ticks, boot_id())
