"""Install windows: grammar, open/closed, next opening, midnight, DST, urgent overrides."""

from __future__ import annotations

import datetime as dt
from typing import Optional

import pytest

from certpull.windows import InstallWindows, install_allowed

UTC = dt.timezone.utc


def at(text: str) -> dt.datetime:
    """'2024-06-02 03:00' -> aware UTC (2024-06-02 is a Sunday)."""
    return dt.datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("spec", "now", "is_open"),
    [
        ("Sun 02:00-04:00 UTC", "2024-06-02 02:00", True),  # opening minute included
        ("Sun 02:00-04:00 UTC", "2024-06-02 03:59", True),
        ("Sun 02:00-04:00 UTC", "2024-06-02 04:00", False),  # closing minute excluded
        ("Sun 02:00-04:00 UTC", "2024-06-02 01:59", False),
        ("Sun 02:00-04:00 UTC", "2024-06-03 03:00", False),  # Monday
        ("sun 02:00-04:00", "2024-06-02 03:00", True),  # case, default UTC
        ("Sun 23:00-01:00 UTC", "2024-06-02 23:30", True),  # crosses midnight
        ("Sun 23:00-01:00 UTC", "2024-06-03 00:30", True),  # ...into Monday
        ("Sun 23:00-01:00 UTC", "2024-06-03 01:00", False),
        ("Sun 23:00-01:00 UTC", "2024-06-02 00:30", False),  # Saturday's night is not Sunday's
        ("Mon-Fri 22:00-23:30 UTC", "2024-06-05 22:15", True),  # Wednesday
        ("Mon-Fri 22:00-23:30 UTC", "2024-06-08 22:15", False),  # Saturday
        ("Fri-Mon 01:00-02:00", "2024-06-02 01:30", True),  # wraps over the weekend
        ("Fri-Mon 01:00-02:00", "2024-06-05 01:30", False),
        ("03:00-04:00", "2024-06-05 03:30", True),  # every day
        ("Sat 22:00-24:00", "2024-06-01 23:59", True),
        ("Sat 22:00-24:00", "2024-06-02 00:00", False),
        ("Sun 02:00-04:00 Europe/Paris", "2024-06-02 00:30", True),  # CEST = UTC+2
        ("Sun 02:00-04:00 Europe/Paris", "2024-06-02 02:30", False),
        ("Sun 02:00-04:00 Europe/Paris", "2024-01-07 01:30", True),  # CET = UTC+1 in winter
        ("Sun 02:00-04:00 Europe/Paris", "2024-01-07 00:30", False),
        ("Tue 01:00-02:00, Sun 02:00-04:00", "2024-06-04 01:30", True),  # several windows
        ("Tue 01:00-02:00\nSun 02:00-04:00", "2024-06-02 03:30", True),
        ("Tue 01:00-02:00, Sun 02:00-04:00", "2024-06-05 01:30", False),
    ],
)
def test_is_open(spec: str, now: str, is_open: bool) -> None:
    assert InstallWindows.parse(spec).is_open(at(now)) is is_open


@pytest.mark.parametrize(
    ("spec", "now", "opens"),
    [
        ("Sun 02:00-04:00 UTC", "2024-06-02 03:00", "2024-06-02 03:00"),  # open: now
        ("Sun 02:00-04:00 UTC", "2024-06-02 04:00", "2024-06-09 02:00"),  # just closed: next week
        ("Sun 02:00-04:00 UTC", "2024-06-05 12:00", "2024-06-09 02:00"),
        ("Sun 23:00-01:00 UTC", "2024-06-03 02:00", "2024-06-09 23:00"),
        ("Mon-Fri 22:00-23:30", "2024-06-07 23:45", "2024-06-10 22:00"),  # Fri late -> Monday
        ("Tue 01:00-02:00, Sun 02:00-04:00", "2024-06-03 12:00", "2024-06-04 01:00"),
        ("Sun 02:00-04:00 Europe/Paris", "2024-06-01 12:00", "2024-06-02 00:00"),
        # the Sunday DST ends (27 Oct 2024): 02:00 local is then UTC+1
        ("Sun 03:00-04:00 Europe/Paris", "2024-10-26 12:00", "2024-10-27 02:00"),
    ],
)
def test_next_open(spec: str, now: str, opens: str) -> None:
    assert InstallWindows.parse(spec).next_open(at(now)) == at(opens)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "empty"),
        ("Sunday 02:00-04:00", "expected"),
        ("Sun 2am-4am", "expected"),
        ("Sun 02:00", "expected"),
        ("Xyz 02:00-04:00", "unknown day 'xyz'"),
        ("Mon-Xyz 02:00-04:00", "unknown day 'xyz'"),
        ("Sun 25:00-26:00", "not a time of day"),
        ("Sun 02:61-04:00", "not a time of day"),
        ("Sun 24:00-01:00", "not a time of day"),
        ("Sun 02:00-02:00", "same time"),
        ("Sun 00:00-24:00", "same time"),
        ("Sun 02:00-04:00 Mars/Olympus", "unknown time zone 'Mars/Olympus'"),
        ("Sun 02:00-04:00 UTC extra", "expected"),
        ("Sun 02:00-04:00, junk", "'junk'"),
    ],
)
def test_junk_is_a_clear_value_error(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        InstallWindows.parse(spec)
    assert "\n" not in str(info.value)


def test_str_round_trips_and_equal_texts_are_equal_windows() -> None:
    windows = InstallWindows.parse("Sun  02:00-04:00 UTC,Mon 01:00-02:00")
    assert str(windows) == "Sun 02:00-04:00 UTC, Mon 01:00-02:00"
    assert windows == InstallWindows.parse(str(windows))
    assert windows != InstallWindows.parse("Sun 02:00-04:00 UTC")


def test_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        InstallWindows.parse("Sun 02:00-04:00").is_open(dt.datetime(2024, 6, 2, 3))


WINDOWS = InstallWindows.parse("Sun 02:00-04:00 UTC")
CLOSED = at("2024-06-05 12:00")


@pytest.mark.parametrize(
    ("windows", "now", "not_after", "valid", "allowed", "reason"),
    [
        (None, CLOSED, CLOSED + dt.timedelta(days=60), True, True, "no install window"),
        (WINDOWS, at("2024-06-02 03:00"), CLOSED + dt.timedelta(days=60), True, True, "is open"),
        (
            WINDOWS,
            CLOSED,
            CLOSED + dt.timedelta(days=60),
            True,
            False,
            "opens 2024-06-09 02:00 UTC",
        ),
        (WINDOWS, CLOSED, CLOSED + dt.timedelta(days=6), True, True, "expires in 6 d 0 h"),
        (WINDOWS, CLOSED, CLOSED + dt.timedelta(hours=5), True, True, "expires in 5 h 0 min"),
        (WINDOWS, CLOSED, CLOSED - dt.timedelta(days=1), True, True, "has expired"),
        (WINDOWS, CLOSED, CLOSED + dt.timedelta(days=60), False, True, "missing or invalid"),
        (WINDOWS, CLOSED, None, True, True, "missing or invalid"),
    ],
)
def test_install_allowed(
    windows: Optional[InstallWindows],
    now: dt.datetime,
    not_after: Optional[dt.datetime],
    valid: bool,
    allowed: bool,
    reason: str,
) -> None:
    got, why = install_allowed(windows, now, not_after, 7.0, valid)
    assert got is allowed
    assert reason in why
