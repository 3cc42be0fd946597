"""Typed session dates, in the patient's zone."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

import pytest

from bot.dates import parse_when

NOW = datetime(2026, 11, 25, 16, 17, tzinfo=UTC)  # a Wednesday
LONDON = ZoneInfo("Europe/London")


@pytest.mark.parametrize(
    ("text", "day", "at"),
    [
        ("2026-12-03 14:30", date(2026, 12, 3), time(14, 30)),
        ("3 Dec 14:30", date(2026, 12, 3), time(14, 30)),
        ("tomorrow 10am", date(2026, 11, 26), time(10, 0)),
        ("tomorrow 10", date(2026, 11, 26), time(10, 0)),
        ("I had it today at 11", date(2026, 11, 25), time(11, 0)),
        ("3/12 9:00", date(2026, 12, 3), time(9, 0)),
        ("3 Dec", date(2026, 12, 3), None),
        ("next friday 9:30", date(2026, 11, 27), time(9, 30)),
    ],
)
def test_typed_dates(text: str, day: date, at: time | None) -> None:
    parsed = parse_when(text, tz=LONDON, now=NOW)
    assert parsed is not None
    assert (parsed.day, parsed.at) == (day, at)


@pytest.mark.parametrize(
    "text", ["hello", "12", "", "😀" * 50, "/start", "a" * 5000, "\u202e\u0000"]
)
def test_not_a_date(text: str) -> None:
    assert parse_when(text, tz=LONDON, now=NOW) is None


def test_today_is_the_patients_today() -> None:
    # 23:30 UTC is already tomorrow in Kolkata.
    late = datetime(2026, 11, 25, 23, 30, tzinfo=UTC)
    parsed = parse_when("today 15:00", tz=ZoneInfo("Asia/Kolkata"), now=late)
    assert parsed is not None
    assert parsed.day == date(2026, 11, 26)
