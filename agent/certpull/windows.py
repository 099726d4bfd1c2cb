"""Install windows: when a new certificate may be installed, unless it is urgent.

Pure: datetimes in, answers out. Grammar of ``install_window`` (case-insensitive day names)::

    windows := window ("," window)*           ; newlines work as separators too
    window  := [days] HH:MM "-" HH:MM [zone]
    days    := day | day "-" day              ; Mon..Sun; "Fri-Mon" wraps; none = every day
    zone    := "UTC" | IANA name ("Europe/Paris"); default UTC

Examples: ``Sun 02:00-04:00 UTC``, ``Mon-Fri 22:00-23:30 Europe/Paris, Sat 01:00-05:00``.
A window whose end is not after its start crosses midnight: ``Sun 23:00-01:00`` opens Sunday
23:00 and closes Monday 01:00; the day names the day the window opens. ``24:00`` is the end of
the day. Times are wall-clock times in the zone, so a window follows daylight-saving changes.
``,`` separates windows because ``;`` starts a comment in the INI config.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import FrozenSet, List, Optional, Tuple

UTC = dt.timezone.utc
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WINDOW = re.compile(
    r"^(?:(?P<days>[A-Za-z]{3}(?:-[A-Za-z]{3})?)\s+)?"
    r"(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})"
    r"(?:\s+(?P<zone>\S+))?$"
)


@dataclass(frozen=True)
class Window:
    """One window: the days it opens on (0 = Monday), start and length in minutes, its zone."""

    days: FrozenSet[int]
    start_min: int
    length_min: int
    zone: dt.tzinfo
    text: str

    def occurrences(self, around_utc: dt.datetime) -> List[Tuple[dt.datetime, dt.datetime]]:
        """(open, close) in UTC for windows opening from the day before to a week after."""
        local_day = around_utc.astimezone(self.zone).date()
        spans = []
        for offset in range(-1, 9):
            day = local_day + dt.timedelta(days=offset)
            if day.weekday() not in self.days:
                continue
            start_local = dt.datetime.combine(day, dt.time(), tzinfo=self.zone) + dt.timedelta(
                minutes=self.start_min
            )
            end_local = start_local + dt.timedelta(minutes=self.length_min)
            # wall-clock arithmetic, then to UTC: a window keeps its local hours across DST
            spans.append((_wall_to_utc(start_local), _wall_to_utc(end_local)))
        return spans


class InstallWindows:
    """A set of windows; open when any window is open."""

    def __init__(self, windows: List[Window]) -> None:
        if not windows:
            raise ValueError("install_window: no window given")
        self.windows = list(windows)

    @classmethod
    def parse(cls, text: str) -> InstallWindows:
        parts = [p.strip() for p in re.split(r"[,\n]", text) if p.strip()]
        if not parts:
            raise ValueError("install_window is empty; expected e.g. 'Sun 02:00-04:00 UTC'")
        return cls([_parse_window(part) for part in parts])

    def is_open(self, now_utc: dt.datetime) -> bool:
        now = _aware(now_utc)
        return any(
            start <= now < end for window in self.windows for start, end in window.occurrences(now)
        )

    def next_open(self, now_utc: dt.datetime) -> dt.datetime:
        """``now_utc`` if a window is open, else the next time one opens (UTC)."""
        now = _aware(now_utc)
        if self.is_open(now):
            return now
        starts = [
            start for window in self.windows for start, _ in window.occurrences(now) if start > now
        ]
        return min(starts)  # every window opens at least once a week

    def __str__(self) -> str:
        return ", ".join(window.text for window in self.windows)

    def __repr__(self) -> str:
        return f"InstallWindows({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, InstallWindows) and self.windows == other.windows

    def __hash__(self) -> int:
        return hash(tuple(self.windows))


def install_allowed(
    windows: Optional[InstallWindows],
    now_utc: dt.datetime,
    installed_not_after: Optional[dt.datetime],
    urgent_before_expiry_days: float = 7.0,
    installed_valid: bool = True,
) -> Tuple[bool, str]:
    """May a validated new version be installed now? Returns (allowed, reason for the log).

    Yes without windows or inside one; yes at once when the installed certificate is missing,
    invalid, or expires within ``urgent_before_expiry_days``; otherwise it waits (pending).
    """
    now = _aware(now_utc)
    if windows is None:
        return True, "no install window configured"
    if installed_not_after is None or not installed_valid:
        return True, "urgent: the installed certificate is missing or invalid"
    left = _aware(installed_not_after) - now
    if left <= dt.timedelta(0):
        return True, "urgent: the installed certificate has expired"
    if left <= dt.timedelta(days=urgent_before_expiry_days):
        return True, f"urgent: the installed certificate expires in {_human(left)}"
    if windows.is_open(now):
        return True, f"install window {windows} is open"
    opens = windows.next_open(now).strftime("%Y-%m-%d %H:%M UTC")
    return False, f"waiting for install window {windows} (opens {opens})"


def _parse_window(text: str) -> Window:
    match = _WINDOW.match(" ".join(text.split()))
    if not match:
        raise ValueError(
            f"install_window {text!r}: expected '[Day[-Day]] HH:MM-HH:MM [Zone]', "
            "e.g. 'Sun 02:00-04:00 UTC'"
        )
    days = _parse_days(match.group("days"), text)
    start = _parse_time(match.group("start"), text, allow_24=False)
    end = _parse_time(match.group("end"), text, allow_24=True)
    if start == end or (start == 0 and end == 24 * 60):
        raise ValueError(f"install_window {text!r}: start and end are the same time")
    length = end - start if end > start else end + 24 * 60 - start
    zone = _parse_zone(match.group("zone"), text)
    return Window(frozenset(days), start, length, zone, " ".join(text.split()))


def _parse_days(spec: Optional[str], text: str) -> List[int]:
    if spec is None:
        return list(range(7))
    first, _, last = spec.lower().partition("-")
    for day in (first, last or first):
        if day not in DAYS:
            raise ValueError(f"install_window {text!r}: unknown day {day!r}; use Mon..Sun")
    a, b = DAYS.index(first), DAYS.index(last or first)
    return [(a + i) % 7 for i in range((b - a) % 7 + 1)]


def _parse_time(spec: str, text: str, allow_24: bool) -> int:
    hours, minutes = (int(x) for x in spec.split(":"))
    total = hours * 60 + minutes
    if minutes >= 60 or total > 24 * 60 or (total == 24 * 60 and not allow_24):
        raise ValueError(f"install_window {text!r}: {spec} is not a time of day")
    return total


def _parse_zone(name: Optional[str], text: str) -> dt.tzinfo:
    if name is None or name.upper() in ("UTC", "Z", "GMT"):
        return UTC
    import zoneinfo  # noqa: PLC0415 - only for a named zone; keeps `certpull status` light

    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"install_window {text!r}: unknown time zone {name!r}") from exc


def _wall_to_utc(local: dt.datetime) -> dt.datetime:
    return local.astimezone(UTC)


def _aware(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        raise ValueError("naive datetime: pass an aware UTC datetime")
    return value.astimezone(UTC)


def _human(delta: dt.timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds >= 86400:
        return f"{seconds // 86400} d {seconds % 86400 // 3600} h"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"
