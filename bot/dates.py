"""Typed dates ("3 Dec 14:30", "tomorrow 10am", "I had it today at 11") -> local date/time.

dateparser does the parsing; this module only tidies the patient's words first and tells
apart "a day was given" from "a day and a time were given".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time
from zoneinfo import ZoneInfo

import dateparser

MAX_INPUT = 100

_FILLER = re.compile(
    r"\b(i had (it|my session|the session)|i had|it was|my session( is| was)?|the session( is)?|"
    r"session|appointment|on)\b",
    re.IGNORECASE,
)
# "at 11", "tomorrow 10": a bare hour means o'clock.
_BARE_HOUR = re.compile(
    r"(\bat\s+|\b(?:today|tomorrow|yesterday)\s+)(\d{1,2})\b(?![:.h]\d|\s*(?:am|pm|a\.m|p\.m))",
    re.IGNORECASE,
)
_TIME = re.compile(r"\d{1,2}[:.h]\d{2}|\d{1,2}\s*(am|pm|a\.m|p\.m)|\bnoon\b|\bmidnight\b", re.I)
_DAYISH = re.compile(
    r"[a-z]{3,}|\d{1,4}[-/.]\d{1,2}|\d{1,2}\s+[a-z]{3,}|[a-z]{3,}\s+\d{1,2}", re.IGNORECASE
)


@dataclass(frozen=True)
class ParsedWhen:
    day: date
    at: time | None  # None: the patient gave a day but no time


def parse_when(
    text: str, *, tz: ZoneInfo, now: datetime, language: str = "en"
) -> ParsedWhen | None:
    """Read a typed session date in the patient's zone; None when it is not a date."""
    cleaned = " ".join(_FILLER.sub(" ", text[:MAX_INPUT]).split())
    cleaned = _BARE_HOUR.sub(lambda m: f"{m.group(1)}{m.group(2)}:00", cleaned)
    if not cleaned or (not _DAYISH.search(cleaned) and not _TIME.search(cleaned)):
        return None
    local_now = now.astimezone(tz).replace(tzinfo=None)
    try:
        parsed = dateparser.parse(
            cleaned,
            languages=[language],
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
    if parsed is None:
        return None
    at = parsed.time().replace(second=0, microsecond=0) if _TIME.search(cleaned) else None
    return ParsedWhen(day=parsed.date(), at=at)
