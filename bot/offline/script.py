"""What the demo's people are called and type, in each language of the bot
(`aftercare demo --language fa`): their Telegram app speaks it, so the bot answers in it,
and they type dates the way its speakers write them.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import msgspec
import tomli

from messages.calendars import format_pattern


class Script(msgspec.Struct, frozen=True):
    lang: str
    patient: str  # books and receives the whole timeline
    second: str  # moves a session, asks /aftercare, writes to the clinic
    nurse: str  # a configured staff member: alerts and the inbox
    staff: str  # joins through a staff invite and broadcasts
    due: tuple[str, str, str, str]  # four patients due for maintenance
    question: str
    answer: str
    worry: str  # must name a red-flag sign
    broadcast: str

    def typed(self, at: datetime, tz: ZoneInfo) -> str:
        """A session time as a patient types it ("3 December 14:30", "۱۲ آذر ۱۴:۳۰")."""
        return format_pattern(at, tz, self.lang, "d MMMM HH:mm")


def _load() -> dict[str, Script]:
    with _FILE.open("rb") as file:
        found = tomli.load(file)
    return {
        lang: Script(lang=lang, **{**lines, "due": tuple(lines["due"])})
        for lang, lines in found.items()
    }


_FILE = Path(__file__).with_name("script.toml")
SCRIPTS = _load()
"""The script of each language, from script.toml (what the people say is data, translated
as the catalogs are)."""
