"""Typed dates ("3 Dec 14:30", "tomorrow 10am", "فردا ساعت ۱۰", "നാളെ രാവിലെ 10 മണിക്ക്")
-> a local date and maybe a time.

dateparser does the parsing. This module tidies the patient's words first, where dateparser
falls short (dateparser 1.2-1.5, checked against it in tests/test_dates.py):

- Digits of any script are read as ASCII digits (it reads "۱۴:۳۰" but not every form).
- Words for a day relative to today: it misses "پس‌فردا" and "മറ്റന്നാൾ" (the day after
  tomorrow) and drops the time next to "امروز"; they become the date itself.
- A bare hour with an o'clock word ("ساعت ۱۰", "10 മണിക്ക്", "at 11") or a part of the day
  ("۵ عصر", "രാവിലെ 10", "9 شب"): it ignores these or reads them as the current time;
  they become "HH:MM" on the 24-hour clock.
- The Solar Hijri calendar ("۱۲ آذر ۱۴۰۵", "۱۴۰۵/۰۹/۱۲"): its Jalali calendar needs the
  convertdate package and cannot be mixed with times or relative words; persiantools (which
  the bot already uses to write Persian dates) turns the date into its Gregorian day.
- Filler words ("I had it", "جلسه‌ام", "എന്റെ സെഷൻ") are dropped.

It also tells apart "a day was given" from "a day and a time were given".
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import msgspec

from messages.scripts import INVISIBLE, fold

MAX_INPUT = 100


class _Words(msgspec.Struct, frozen=True):
    """How one language says what dateparser misses. Every pattern is a regular expression
    alternative, matched on the tidied text (NFKC, ASCII digits, no zero-width joiners)."""

    days: Mapping[str, int]  # a day relative to today -> its offset in days
    clock_before: str = ""  # an o'clock word before the hour ("ساعت")
    clock_after: str = ""  # ... or after it ("മണിക്ക്")
    half: str = ""  # "and a half" after the hour ("و نیم")
    morning: str = ""  # before noon: 12 is midnight
    noon: str = ""  # around noon: 1 to 5 are in the afternoon
    afternoon: str = ""  # after noon: 1 to 11 are p.m.
    night: str = ""  # at night: 6 to 11 are p.m., 12 is midnight, 1 to 5 are a.m.
    fillers: str = ""
    part_after: bool = True  # the part of the day may follow the hour ("۵ عصر"), not only lead
    solar_hijri: bool = False  # its speakers may write Solar Hijri dates ("۱۲ آذر")


# Telegram's language of the patient decides nothing here: every language's words are
# tried on every text (a Persian speaker may type "tomorrow 10am").
_LANGUAGES = {
    "en": _Words(
        days={"today": 0, "tomorrow": 1, "day after tomorrow": 2, "yesterday": -1},
        clock_before=r"at",
        clock_after=r"o'?clock",
        fillers=(
            r"i had (?:it|my session|the session)|i had|it was|my session(?: is| was)?"
            r"|the session(?: is)?|session|appointment|on"
        ),
    ),
    "fa": _Words(
        days={
            "امروز": 0,
            "فردا": 1,
            "پسفردا": 2,
            "پس فردا": 2,
            "دیروز": -1,
            "پریروز": -2,
        },
        clock_before=r"ساعت",
        half=r"و نیم",
        morning=r"صبح|بامداد",
        noon=r"ظهر",
        afternoon=r"بعدازظهر|بعد از ظهر|عصر|بعدظهر",
        night=r"شب",
        solar_hijri=True,
        fillers=(
            r"جلسه(?:ام|ی من)?|جلسه ام|نوبت(?:م)?|وقت(?:م)?|من|در|روز|تاریخ|بود|است|هست"
            r"|داشتم|رفتم|برای|ساعت"
        ),
    ),
    "ml": _Words(
        days={"ഇന്ന്": 0, "ഇന്നു": 0, "നാളെ": 1, "മറ്റന്നാൾ": 2, "ഇന്നലെ": -1},
        clock_after=r"മണിക്ക്|മണിക്കു|മണി",
        morning=r"രാവിലെ|പുലർച്ചെ",
        noon=r"ഉച്ചയ്ക്ക്|ഉച്ചക്ക്|ഉച്ചയ്ക്കു|ഉച്ച",
        afternoon=r"വൈകുന്നേരം|വൈകിട്ട്|വൈകീട്ട്|സന്ധ്യക്ക്",
        night=r"രാത്രി",
        part_after=False,  # "ജനുവരി 5 രാവിലെ 10 മണിക്ക്": രാവിലെ belongs to the 10
        fillers=r"എന്റെ|സെഷൻ|അപ്പോയിന്റ്മെന്റ്|ആയിരുന്നു|ആണ്|തീയതി|ന്",
    ),
}

_HOUR = r"(?<![\d/.:-])(?P<h>\d{1,2})(?:[:.](?P<m>\d{2}))?"
_TIME = re.compile(r"\d{1,2}[:.h]\d{2}|\d{1,2}\s*(am|pm|a\.m|p\.m)|\bnoon\b|\bmidnight\b", re.I)
_JALALI_NUMERIC = re.compile(r"\b(1[34]\d\d)[/.-](\d{1,2})[/.-](\d{1,2})\b")


@functools.cache
def _jalali_months() -> tuple[dict[str, int], re.Pattern[str]]:
    """Solar Hijri month names -> numbers, and a day with one ("۱۲ آذر ۱۴۰۵"); built on the
    first Persian-looking date, not at start-up (persiantools' tables)."""
    from persiantools.jdatetime import MONTH_NAMES_FA

    months = {name: number for number, name in enumerate(MONTH_NAMES_FA) if name}
    months["امرداد"] = 5
    named = re.compile(
        rf"\b(\d{{1,2}})\s*(?:ام\s*)?({'|'.join(months)})(?:\s*(?:ماه)?\s*(1[34]\d\d))?(?!\w)"
    )
    return months, named


_NUMERIC_DATE = re.compile(r"\d{1,4}[-/.]\d{1,2}")
# "tomorrow 10", "2026-12-03 14": a bare number right after a day is its hour.
_HOUR_AFTER_DAY = re.compile(r"(\d{4}-\d{2}-\d{2}) (\d{1,2})(?![\d:.h]|\s*(?:am|pm|a\.m|p\.m))")
# Malayalam endings on a number: "3-ന്" (on the 3rd), "3-ാം" (the 3rd).
_NUMBER_SUFFIX = re.compile(r"(\d+)\s*-?\s*(?:ന്|ാം|ആം)(?![\w\u0d00-\u0d7f])")


def _either(*patterns: str) -> str:
    return "|".join(p for p in patterns if p)


def _word(pattern: str) -> str:
    """A whole word or phrase: not inside another word (Malayalam vowel signs included)."""
    return rf"(?<![\w\u0d00-\u0d7f])(?:{pattern})(?![\w\u0d00-\u0d7f])"


@functools.cache
def _cldr_names() -> tuple[dict[str, str], re.Pattern[str]]:
    """Weekday and month names as typed (without zero-width joiners) -> as CLDR, and so
    dateparser, spells them: "വെള്ളിയാഴ്ച" is "വെള്ളിയാഴ്\u200cച" there, and patients'
    keyboards rarely type the joiner; and a pattern that finds them.

    Built on the first typed date, not at start-up: it loads every language's CLDR data
    (several MB, tens of ms) that a bot delivering reminders may never need."""
    from babel.dates import get_day_names, get_month_names

    names = {}
    for lang in _LANGUAGES:
        for width in ("wide", "abbreviated"):
            spelled = [*get_day_names(width, locale=lang).values()]
            spelled += [*get_month_names(width, locale=lang).values()]
            for name in spelled:
                for joiner in ("", " "):  # "سه‌شنبه" typed as "سهشنبه" or "سه شنبه"
                    typed = name.replace("\u200c", joiner).translate(INVISIBLE).casefold()
                    if typed != name.casefold():
                        names[typed] = name
    spelling = re.compile(
        "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True)) or "(?!)"
    )
    return names, spelling


class ParsedWhen(msgspec.Struct, frozen=True):
    day: date
    at: time | None  # None: the patient gave a day but no time


def _clock(match: re.Match[str], words: _Words) -> str:
    if not _explicit(match):
        return match.group()
    hour, minute = int(match["h"]), int(match["m"] or 0)
    if match.groupdict().get("half"):
        minute = 30
    part = match["part"] or match.groupdict().get("part2") or ""
    if part and re.fullmatch(words.morning or "(?!)", part):
        hour = 0 if hour == 12 else hour
    elif part and re.fullmatch(words.noon or "(?!)", part):
        hour = hour + 12 if 1 <= hour <= 5 else hour
    elif part and re.fullmatch(words.afternoon or "(?!)", part):
        hour = hour + 12 if hour < 12 else hour
    elif part and re.fullmatch(words.night or "(?!)", part):
        hour = hour + 12 if 6 <= hour <= 11 else (0 if hour == 12 else hour)
    if hour > 23 or minute > 59:
        return match.group()
    return f" {hour:02d}:{minute:02d} "


def _clock_pattern(words: _Words) -> re.Pattern[str] | None:
    """An hour made explicit by an o'clock word or a part of the day, either side."""
    parts = _either(words.morning, words.noon, words.afternoon, words.night)
    marks = [m for m in (words.clock_before, words.clock_after, parts) if m]
    if not marks:
        return None
    before = _either(words.clock_before)
    after = _either(words.clock_after)
    half = rf"(?:\s*(?P<half>{words.half}))?" if words.half else ""
    pattern = (rf"(?:(?P<part>{parts})\s*)?" if parts else r"(?P<part>)") + (
        rf"(?:(?P<before>{before})\s*)?" if before else ""
    )
    pattern += _HOUR + half
    pattern += rf"(?:\s*(?P<after>{after}))?" if after else ""
    pattern += rf"(?:\s*(?P<part2>{parts}))?" if parts and words.part_after else ""
    return re.compile(_word(pattern))


def _explicit(match: re.Match[str]) -> bool:
    """An hour only counts when something says it is one (not the "12" of "12 آذر")."""
    found = match.groupdict()
    return any(found.get(name) for name in ("part", "before", "after", "part2", "half", "m"))


def _noon(words: _Words) -> Callable[[re.Match[str]], str]:
    def replace(m: re.Match[str]) -> str:
        return " 12:00 " if re.fullmatch(words.noon, m.group()) else m.group()

    return replace


def _rewrite(text: str, today: date) -> str:
    text = _NUMBER_SUFFIX.sub(r"\1", text)
    for words in _LANGUAGES.values():
        for phrase, offset in sorted(words.days.items(), key=lambda kv: -len(kv[0])):
            day = (today + timedelta(days=offset)).isoformat()
            text = re.sub(_word(re.escape(phrase)), f" {day} ", text)
        pattern = _clock_pattern(words)
        if pattern is not None:
            text = pattern.sub(functools.partial(_clock, words=words), text)
        if words.noon:  # "tomorrow noon": noon itself, unless it is part of "afternoon"
            text = re.sub(_word(_either(words.afternoon, words.noon)), _noon(words), text)
        if words.solar_hijri:
            text = _solar_hijri(text, today)
        if words.fillers:
            text = re.sub(_word(words.fillers), " ", text)
    text = _HOUR_AFTER_DAY.sub(r"\1 \2:00", " ".join(text.split()))
    names, spelling = _cldr_names()
    return " ".join(spelling.sub(lambda m: names[m.group()], text).split())


def _solar_hijri(text: str, today: date) -> str:
    """Solar Hijri dates as Gregorian ISO dates ("۱۲ آذر" -> the next 12 Azar)."""
    # Imported at the first date typed: Babel's date formatting and persiantools cost each
    # start 15 ms.
    from messages.calendars import from_solar_hijri, solar_hijri_year

    def numeric(m: re.Match[str]) -> str:
        found = from_solar_hijri(int(m[1]), int(m[2]), int(m[3]))
        return f" {found.isoformat()} " if found else m.group()

    months, named_pattern = _jalali_months()

    def named(m: re.Match[str]) -> str:
        day, month = int(m[1]), months[m[2]]
        if m[3]:
            found = from_solar_hijri(int(m[3]), month, day)
        else:  # the next such day, as dateparser does for "3 Dec"
            year = solar_hijri_year(today)
            found = from_solar_hijri(year, month, day)
            if found is not None and found < today:
                found = from_solar_hijri(year + 1, month, day)
        return f" {found.isoformat()} " if found else m.group()

    return named_pattern.sub(named, _JALALI_NUMERIC.sub(numeric, text))


def parse_when(
    text: str, *, tz: ZoneInfo, now: datetime, language: str = "en"
) -> ParsedWhen | None:
    """Read a typed session date in the patient's zone; None when it is not a date."""
    local_now = now.astimezone(tz).replace(tzinfo=None)
    cleaned = _rewrite(fold(text[:MAX_INPUT]), local_now.date())
    has_time = bool(_TIME.search(cleaned))
    if not cleaned or not (
        has_time or _NUMERIC_DATE.search(cleaned) or any(ch.isalpha() for ch in cleaned)
    ):
        return None
    # Imported on the first typed date, not at start-up: dateparser and its language data
    # cost about 40 ms and 3 MB that a bot delivering reminders may never need.
    import dateparser

    try:
        parsed = dateparser.parse(
            cleaned,
            languages=list(dict.fromkeys([language, *_LANGUAGES])),
            settings={
                "TIMEZONE": str(tz),
                "RETURN_AS_TIMEZONE_AWARE": False,
                "PREFER_DATES_FROM": "future",
                "RELATIVE_BASE": local_now,
                "DATE_ORDER": "DMY",
                "STRICT_PARSING": False,
            },
        )
    except (OverflowError, ValueError):  # e.g. "9999999 days" runs past year 9999
        return None
    if parsed is None or parsed.year < local_now.year - 1:  # "1405/13/01" is no Gregorian date
        return None
    at = parsed.time().replace(second=0, microsecond=0) if has_time else None
    return ParsedWhen(day=parsed.date(), at=at)
