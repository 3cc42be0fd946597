"""Typed time zones: an IANA name ("Asia/Tehran"), a city or a country with a single zone,
in any of the bot's languages ("تهران", "ഇന്ത്യ", "Kolkata").

The names come from CLDR through Babel: each language's exemplar cities of the time zones and
its names of the countries that have one zone. A name that is no zone gives None; nothing
typed is ever used as a path.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from zoneinfo import available_timezones

from babel import Locale
from babel.core import get_global

from messages.render import available_languages
from messages.scripts import fold

MAX_TYPED = 64


def _fold(text: str) -> str:
    return fold(text[:MAX_TYPED].replace("_", " "))


@functools.cache
def _names() -> dict[str, str]:
    zones = available_timezones()
    # Legacy links without a region ("Iran", "Japan") are left to the country names below,
    # which give the zone's real name.
    names = {_fold(zone): zone for zone in sorted(zones) if "/" in zone or zone == "UTC"}
    for zone in sorted(zones):  # "New York", "Kolkata"
        if "/" in zone and not zone.startswith("Etc/"):
            names.setdefault(_fold(zone.rsplit("/", 1)[1]), zone)
    one_zone: Mapping[str, Sequence[str]] = get_global("territory_zones")
    for lang in available_languages():
        locale = Locale.parse(lang)
        for zone, info in sorted(locale.time_zones.items()):
            city = info.get("city")
            if isinstance(city, str) and zone in zones:
                names.setdefault(_fold(city), zone)
        for territory, found in sorted(one_zone.items()):
            name = locale.territories.get(territory)
            if len(found) == 1 and found[0] in zones and name:
                names.setdefault(_fold(name), found[0])
    return names


def find_zone(typed: str) -> str | None:
    """The IANA zone a patient means, or None."""
    return _names().get(_fold(typed)) if typed.strip() else None
