"""Dates as each language writes them: its calendar, its month and weekday names, its digits.

A language's catalog says which calendar it uses (`[format] calendar`, a CLDR calendar id:
"gregorian" or "persian") and the CLDR patterns of its dates ("EEEE d MMMM، HH:mm"). Babel
formats Gregorian dates and parses every pattern; it has no Persian (Solar Hijri) calendar,
so persiantools supplies that calendar's days, months and names. Babel knows each language's
default numbering system (Persian: "arabext") but formats dates with ASCII digits whatever
it is; messages/scripts.py fills that gap.

One function, `format_local`, writes every date and time the bot shows: in texts, in
/aftercare and /reminders, in staff views, in the calendar keyboard and in the demo.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import msgspec
from babel import Locale
from babel.dates import DateTimeFormat, format_date, get_day_names, parse_pattern
from persiantools.jdatetime import (
    MONTH_NAMES_FA,
    WEEKDAY_NAMES_ABBR_FA,
    WEEKDAY_NAMES_FA,
    JalaliDate,
)

from messages.render import catalog
from messages.scripts import local_digits, locale_of

GREGORIAN, PERSIAN = "gregorian", "persian"


def calendar_of(lang: str) -> str:
    texts = catalog(lang)
    return texts.raw("format.calendar") if "format.calendar" in texts else GREGORIAN


def _jalali(day: date) -> JalaliDate:
    return JalaliDate(day)  # type: ignore[no-untyped-call]  # persiantools' constructor is untyped


def from_solar_hijri(year: int, month: int, day: int) -> date | None:
    """The Gregorian day of a Solar Hijri date; None if there is no such day."""
    try:
        jalali = JalaliDate(year, month, day)  # type: ignore[no-untyped-call]
    except (ValueError, OverflowError):
        return None
    found: date = jalali.to_gregorian()
    return found


def solar_hijri_year(day: date) -> int:
    return int(_jalali(day).year)


class _SolarHijri(DateTimeFormat):
    """Babel's field formatter with the year, month, day and weekday of the Persian calendar
    (hours, minutes and the rest are the same in both calendars)."""

    def __init__(self, value: datetime, locale: Locale) -> None:
        super().__init__(value, locale)
        self.jalali = _jalali(value.date())

    def __getitem__(self, name: str) -> str:
        char, num = name[0], len(name)
        jalali = self.jalali
        if char in "yY":
            return self.format(jalali.year, num)
        if char in "ML":
            if num >= 3:
                return str(MONTH_NAMES_FA[jalali.month])
            return self.format(jalali.month, num)
        if char == "d":
            return self.format(jalali.day, num)
        if char in "Ec":
            names = WEEKDAY_NAMES_ABBR_FA if num == 5 else WEEKDAY_NAMES_FA
            return names[jalali.weekday()]
        return str(super().__getitem__(name))


def format_local(dt: datetime, tz: ZoneInfo, lang: str, fmt: str = "datetime") -> str:
    """`dt` as the reader reads it on their clock: in their zone, language and calendar.

    `fmt` names a CLDR pattern in the catalog's [format] table ("datetime" gives
    "Thu 3 Dec, 14:30" in English and "پنجشنبه ۱۲ آذر، ۱۴:۳۰" in Persian; "time" gives
    "14:30"), so each language picks its own order.
    """
    return format_pattern(dt, tz, lang, catalog(lang).raw(f"format.{fmt}"))


def format_pattern(dt: datetime, tz: ZoneInfo, lang: str, pattern: str) -> str:
    """`dt` in a CLDR pattern of one's own ("d MMMM HH:mm"), in the language's calendar."""
    if dt.tzinfo is None:
        raise ValueError("format_local needs an aware datetime")
    parsed = parse_pattern(pattern)
    local = dt.astimezone(tz)
    locale = locale_of(catalog(lang).lang)
    if calendar_of(lang) == PERSIAN:
        text = str(parsed % _SolarHijri(local, locale))
    else:
        text = str(parsed % DateTimeFormat(local, locale))
    return local_digits(text, lang)


class Month(msgspec.Struct, frozen=True):
    """One month of a language's calendar, as the Gregorian days it spans."""

    first: date
    last: date
    title: str

    @property
    def days(self) -> list[date]:
        return [self.first + timedelta(days=i) for i in range((self.last - self.first).days + 1)]

    def previous(self, lang: str) -> Month:
        return month_of(self.first - timedelta(days=1), lang)

    def next(self, lang: str) -> Month:
        return month_of(self.last + timedelta(days=1), lang)


def month_of(day: date, lang: str) -> Month:
    """The month of `day` in the language's calendar ("آذر ۱۴۰۵" holds 22 Nov to 21 Dec)."""
    if calendar_of(lang) == PERSIAN:
        jalali = _jalali(day)
        size = JalaliDate.days_in_month(jalali.month, jalali.year)
        first = from_solar_hijri(jalali.year, jalali.month, 1)
        assert first is not None
        title = f"{MONTH_NAMES_FA[jalali.month]} {jalali.year}"
        return Month(first, first + timedelta(days=size - 1), local_digits(title, lang))
    first = day.replace(day=1)
    last = (first + timedelta(days=32)).replace(day=1) - timedelta(days=1)
    return Month(first, last, local_digits(format_date(first, "LLLL y", locale=lang), lang))


def first_weekday(lang: str) -> int:
    """The day a week starts on where the language is spoken (Monday is 0; Persian: 5)."""
    return int(locale_of(lang).first_week_day)


def weekday_initials(lang: str) -> list[str]:
    """The narrow weekday names, in the order of the language's week."""
    if calendar_of(lang) == PERSIAN:
        # persiantools lists them from Saturday (Python's weekday 5).
        by_weekday = [WEEKDAY_NAMES_ABBR_FA[(w - 5) % 7] for w in range(7)]
    else:
        narrow = get_day_names("narrow", "stand-alone", locale_of(lang))
        by_weekday = [narrow[w] for w in range(7)]
    start = first_weekday(lang)
    return [by_weekday[(start + i) % 7] for i in range(7)]
