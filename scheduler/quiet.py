"""Quiet hours as people write them: the one parser, for the settings and for patients."""

from __future__ import annotations

from datetime import time

NONE = ("00:00", "00:00")  # start == end: no quiet hours


def parse_quiet_hours(text: str) -> tuple[str, str] | None:
    """'22:00-08:00' (or '22-8', or with an en dash) -> ('22:00', '08:00'); None if unreadable."""
    cleaned = text.strip().replace("\N{EN DASH}", "-").replace("\N{EM DASH}", "-")
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
