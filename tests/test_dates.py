"""Typed session dates, in the patient's zone."""

from __future__ import annotations

import tomllib
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from _pytest.mark import ParameterSet

from bot.dates import parse_when
from bot.zones import find_zone
from scheduler.quiet import parse_quiet_hours

NOW = datetime(2026, 11, 25, 16, 17, tzinfo=UTC)  # a Wednesday
LONDON = ZoneInfo("Europe/London")
TYPED = Path(__file__).parent / "typed"
ZONES = {
    "en": LONDON,
    "fa": ZoneInfo("Asia/Tehran"),
    "ml": ZoneInfo("Asia/Kolkata"),
}


def typed(key: str) -> list[ParameterSet]:
    """The `key` cases of every language's file in tests/typed/, each with its language."""
    cases = []
    for path in sorted(TYPED.glob("*.toml")):
        with path.open("rb") as f:
            for case in tomllib.load(f)[key]:
                text = case if isinstance(case, str) else case["text"]
                cases.append(pytest.param(path.stem, case, id=f"{path.stem}:{text}"))
    assert cases, f"no {key} in {TYPED}"
    return cases


@pytest.mark.parametrize(("lang", "case"), typed("dates"))
def test_typed_dates_in_every_language(lang: str, case: dict[str, Any]) -> None:
    parsed = parse_when(case["text"], tz=ZONES[lang], now=NOW, language=lang)
    assert parsed is not None
    assert (parsed.day, parsed.at) == (case["day"], case.get("at"))


@pytest.mark.parametrize(("lang", "text"), typed("not_dates"))
def test_not_a_date_in_their_language(lang: str, text: str) -> None:
    assert parse_when(text, tz=ZONES[lang], now=NOW, language=lang) is None


@pytest.mark.parametrize("text", ["", "😀" * 50, "a" * 5000, "\u202e\u0000"])
def test_not_a_date(text: str) -> None:
    assert parse_when(text, tz=LONDON, now=NOW) is None


def test_today_is_the_patients_today() -> None:
    # 23:30 UTC is already tomorrow in Kolkata.
    late = datetime(2026, 11, 25, 23, 30, tzinfo=UTC)
    parsed = parse_when("today 15:00", tz=ZoneInfo("Asia/Kolkata"), now=late)
    assert parsed is not None
    assert parsed.day == date(2026, 11, 26)


def test_a_persian_speaker_can_write_in_english_and_the_other_way_round() -> None:
    for lang in ("en", "fa", "ml"):
        for text in ("3 Dec 14:30", "۱۲ آذر ۱۴:۳۰", "ഡിസംബർ 3 14:30"):
            parsed = parse_when(text, tz=ZONES["fa"], now=NOW, language=lang)
            assert parsed is not None, (lang, text)
            assert (parsed.day, parsed.at) == (date(2026, 12, 3), time(14, 30))


@pytest.mark.parametrize(("_lang", "case"), typed("quiet"))
def test_typed_quiet_hours_in_any_digits(_lang: str, case: dict[str, str]) -> None:
    assert parse_quiet_hours(case["text"]) == (case["from"], case["to"])


@pytest.mark.parametrize(("_lang", "text"), typed("not_quiet"))
def test_quiet_hours_refused(_lang: str, text: str) -> None:
    assert parse_quiet_hours(text) is None


@pytest.mark.parametrize(
    ("typed", "zone"),
    [
        ("Asia/Tehran", "Asia/Tehran"),
        ("asia/tehran", "Asia/Tehran"),
        ("تهران", "Asia/Tehran"),  # a city, in Persian
        ("ایران", "Asia/Tehran"),  # a country with one zone
        ("Iran", "Asia/Tehran"),  # not the legacy link "Iran"
        ("کلکته", "Asia/Kolkata"),
        ("കൊൽക്കത്ത", "Asia/Kolkata"),  # in Malayalam
        ("ഇന്ത്യ", "Asia/Kolkata"),
        ("India", "Asia/Kolkata"),
        ("ദുബായ്", "Asia/Dubai"),
        ("new york", "America/New_York"),
        ("پاریس", "Europe/Paris"),
        ("Mars/Olympus_Mons", None),
        ("../etc/passwd", None),
        ("", None),
        ("آمریکا", None),  # a country with several zones: the patient is asked for a city
    ],
)
def test_typed_time_zones_in_every_language(typed: str, zone: str | None) -> None:
    assert find_zone(typed) == zone
