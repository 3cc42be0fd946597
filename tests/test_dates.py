"""Typed session dates, in the patient's zone."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

import pytest

from bot.dates import parse_when
from bot.zones import find_zone
from scheduler.quiet import parse_quiet_hours

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


# Persian and Malayalam, as patients type them. NOW is Wednesday 25 Nov 2026 (4 Azar 1405);
# 19:47 in Tehran, 21:47 in Kolkata.
TEHRAN = ZoneInfo("Asia/Tehran")
KOLKATA = ZoneInfo("Asia/Kolkata")
TOMORROW = date(2026, 11, 26)
PERSIAN = [
    ("۱۲ آذر ۱۴:۳۰", date(2026, 12, 3), time(14, 30)),  # Solar Hijri, Persian digits
    ("۱۴۰۵/۰۹/۱۲ ۱۴:۳۰", date(2026, 12, 3), time(14, 30)),
    ("1405/09/12 14:30", date(2026, 12, 3), time(14, 30)),  # Latin digits
    ("۱۴۰۵-۰۹-۱۲", date(2026, 12, 3), None),
    ("۱۲ آذر ۱۴۰۵ ساعت ۱۴:۳۰", date(2026, 12, 3), time(14, 30)),
    ("۱۲ام آذر ساعت ۲ بعد از ظهر", date(2026, 12, 3), time(14, 0)),
    ("پنجشنبه ۱۲ آذر، ۱۴:۳۰", date(2026, 12, 3), time(14, 30)),  # as the bot writes it
    ("۱۲ آذر", date(2026, 12, 3), None),
    ("۱ فروردین ۱۰:۰۰", date(2027, 3, 21), time(10, 0)),  # the next Nowruz
    ("۳ دسامبر ۱۴:۳۰", date(2026, 12, 3), time(14, 30)),  # a Gregorian month in Persian
    ("فردا ساعت ۱۰", TOMORROW, time(10, 0)),
    ("فردا", TOMORROW, None),
    ("فردا ۱۰:۳۰", TOMORROW, time(10, 30)),
    ("فردا صبح ساعت ۱۰", TOMORROW, time(10, 0)),
    ("فردا ۵ عصر", TOMORROW, time(17, 0)),
    ("فردا ساعت ۵ بعدازظهر", TOMORROW, time(17, 0)),
    ("فردا ساعت ۹ شب", TOMORROW, time(21, 0)),
    ("فردا ظهر", TOMORROW, time(12, 0)),
    ("فردا ۱ ظهر", TOMORROW, time(13, 0)),
    ("امروز ساعت ۱۱", date(2026, 11, 25), time(11, 0)),
    ("پس‌فردا ساعت ۱۰ و نیم", date(2026, 11, 27), time(10, 30)),
    ("پس فردا ۹ صبح", date(2026, 11, 27), time(9, 0)),
    ("دیروز ساعت ۱۱ جلسه داشتم", date(2026, 11, 24), time(11, 0)),
    ("جلسه‌ام امروز ساعت ۱۱ بود", date(2026, 11, 25), time(11, 0)),
    ("شنبه ساعت ۱۰", date(2026, 11, 28), time(10, 0)),
    ("یکشنبه ساعت ۸ صبح", date(2026, 11, 29), time(8, 0)),
    ("سه‌شنبه ۱۰:۰۰", date(2026, 12, 1), time(10, 0)),
    ("سه شنبه ۱۰:۰۰", date(2026, 12, 1), time(10, 0)),
    ("tomorrow 10am", TOMORROW, time(10, 0)),  # English works for everyone
]
MALAYALAM = [
    ("ഡിസംബർ 3 14:30", date(2026, 12, 3), time(14, 30)),
    ("3 ഡിസംബർ 14:30", date(2026, 12, 3), time(14, 30)),
    ("ഡിസംബർ 3-ന് 14:30", date(2026, 12, 3), time(14, 30)),
    ("ഡിസം 3 10 മണിക്ക്", date(2026, 12, 3), time(10, 0)),
    ("ഡിസംബർ 3", date(2026, 12, 3), None),
    ("വ്യാഴം, 3 ഡിസം, 14:30", date(2026, 12, 3), time(14, 30)),  # as the bot writes it
    ("൩ ഡിസംബർ ൧൪:൩൦", date(2026, 12, 3), time(14, 30)),  # Malayalam digits
    ("2026-12-03 14:30", date(2026, 12, 3), time(14, 30)),
    ("3/12 9:00", date(2026, 12, 3), time(9, 0)),
    ("ജനുവരി 5 രാവിലെ 10 മണിക്ക്", date(2027, 1, 5), time(10, 0)),
    ("നാളെ രാവിലെ 10 മണിക്ക്", TOMORROW, time(10, 0)),
    ("നാളെ 10 മണിക്ക്", TOMORROW, time(10, 0)),
    ("നാളെ 10", TOMORROW, time(10, 0)),
    ("നാളെ 10:30", TOMORROW, time(10, 30)),
    ("നാളെ", TOMORROW, None),
    ("നാളെ ഉച്ചയ്ക്ക് 2 മണിക്ക്", TOMORROW, time(14, 0)),
    ("നാളെ ഉച്ചയ്ക്ക്", TOMORROW, time(12, 0)),
    ("നാളെ രാത്രി 8 മണി", TOMORROW, time(20, 0)),
    ("എന്റെ സെഷൻ നാളെ രാവിലെ 9.30 ന്", TOMORROW, time(9, 30)),
    ("ഇന്ന് 11 മണിക്ക്", date(2026, 11, 25), time(11, 0)),
    ("ഇന്ന് രാവിലെ 11 മണിക്ക്", date(2026, 11, 25), time(11, 0)),
    ("ഇന്നലെ 11 മണിക്ക്", date(2026, 11, 24), time(11, 0)),
    ("മറ്റന്നാൾ വൈകുന്നേരം 5 മണിക്ക്", date(2026, 11, 27), time(17, 0)),
    ("വെള്ളിയാഴ്ച 10 മണിക്ക്", date(2026, 11, 27), time(10, 0)),
    ("തിങ്കളാഴ്ച രാവിലെ 9 മണിക്ക്", date(2026, 11, 30), time(9, 0)),
    ("ചൊവ്വാഴ്ച 15:00", date(2026, 12, 1), time(15, 0)),
    ("tomorrow 10am", TOMORROW, time(10, 0)),
]


@pytest.mark.parametrize(("text", "day", "at"), PERSIAN)
def test_persian_dates(text: str, day: date, at: time | None) -> None:
    parsed = parse_when(text, tz=TEHRAN, now=NOW, language="fa")
    assert parsed is not None
    assert (parsed.day, parsed.at) == (day, at)


@pytest.mark.parametrize(("text", "day", "at"), MALAYALAM)
def test_malayalam_dates(text: str, day: date, at: time | None) -> None:
    parsed = parse_when(text, tz=KOLKATA, now=NOW, language="ml")
    assert parsed is not None
    assert (parsed.day, parsed.at) == (day, at)


@pytest.mark.parametrize(
    ("lang", "text"),
    [
        ("fa", "سلام"),
        ("fa", "۱۲"),
        ("fa", "ساعت"),
        ("fa", "درد دارم"),  # "I have pain": a message, not a date
        ("fa", "۳۱ اسفند"),  # Esfand has 29 or 30 days
        ("fa", "۳۰ اسفند ۱۴۰۵"),  # 1405 is not a leap year
        ("fa", "۱۴۰۵/۱۳/۰۱"),  # no 13th month
        ("ml", "നമസ്കാരം"),
        ("ml", "12"),
        ("ml", "വേദനയുണ്ട്"),  # "it hurts"
        ("ml", "മണിക്ക്"),
    ],
)
def test_not_a_date_in_their_language(lang: str, text: str) -> None:
    zone = TEHRAN if lang == "fa" else KOLKATA
    assert parse_when(text, tz=zone, now=NOW, language=lang) is None


def test_a_persian_speaker_can_write_in_english_and_the_other_way_round() -> None:
    for lang in ("en", "fa", "ml"):
        for text in ("3 Dec 14:30", "۱۲ آذر ۱۴:۳۰", "ഡിസംബർ 3 14:30"):
            parsed = parse_when(text, tz=TEHRAN, now=NOW, language=lang)
            assert parsed is not None, (lang, text)
            assert (parsed.day, parsed.at) == (date(2026, 12, 3), time(14, 30))


@pytest.mark.parametrize(
    ("text", "quiet"),
    [
        ("22:00-08:00", ("22:00", "08:00")),
        ("22-8", ("22:00", "08:00")),
        ("22:00 \N{EN DASH} 07:30", ("22:00", "07:30")),
        ("۲۲:۰۰-۰۸:۰۰", ("22:00", "08:00")),
        ("۲۲ تا ۸", ("22:00", "08:00")),
        ("22:00 മുതൽ 08:00 വരെ", ("22:00", "08:00")),
        ("22 to 8", ("22:00", "08:00")),
        ("25-8", None),
        ("22-8-9", None),
        ("شب", None),
    ],
)
def test_typed_quiet_hours_in_any_digits(text: str, quiet: tuple[str, str] | None) -> None:
    assert parse_quiet_hours(text) == quiet


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
