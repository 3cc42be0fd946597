"""Quiet hours as people write them: the one parser, for the settings and for patients."""

from __future__ import annotations

import re
from datetime import time

from messages.scripts import ascii_digits

NONE = ("00:00", "00:00")  # start == end: no quiet hours


# Between the two times: a dash, or "to" in the bot's languages.
_TO = re.compile(r"\s*(?:[\N{EN DASH}\N{EM DASH}]|\bto\b|تا|മുതൽ)\s*")


def parse_quiet_hours(text: str) -> tuple[str, str] | None:
    """'22:00-08:00' (or '22-8', '۲۲:۰۰ تا ۰۸:۰۰', '22:00 മുതൽ 08:00 വരെ') -> ('22:00', '08:00');
    None if unreadable."""
    cleaned = _TO.sub("-", ascii_digits(text.strip()[:40]).removesuffix("വരെ"))
    cleaned = cleaned.replace(" ", "")
    if len(cleaned) > 20 or cleaned.count("-") != 1:
        return None
    parts = []
    for part in cleaned.split("-"):
        hour, _, minute = part.partition(":")
        if not (hour.isdigit() and len(hour) <= 2 and (not minute or minute.isdigit())):
            return None
        try:
            parts.append(time(int(hour), int(minute or 0)).strftime("%H:%M"))
        except ValueError:
            return None
    return parts[0], parts[1]
