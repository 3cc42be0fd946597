"""Texts from the locale catalogs, rendered for Telegram's HTML parse mode.

Catalog texts are trusted HTML written by us or a translator (only <b>, <i>, <u>, <s>, <code>
and <a href> are allowed, which is what Telegram accepts). Parameters are not trusted: a
patient's name or a clinic's address can contain `<` or `&`, so every parameter is escaped
unless it is an `Html` fragment that was itself rendered from the catalog.
"""

from __future__ import annotations

import functools
import html
import tomllib
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from babel import Locale
from babel.dates import format_datetime

LOCALES_DIR = Path(__file__).parent / "locales"
DEFAULT_LANGUAGE = "en"


class Html(str):
    """An HTML fragment that is already safe for Telegram (rendered from the catalog and
    escaped there), so that it can be passed as a parameter into another text as it is."""

    __slots__ = ()


def _flatten(table: Mapping[str, object], prefix: str, out: dict[str, str], source: str) -> None:
    for name, value in table.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            _flatten(value, f"{key}.", out, source)
        elif isinstance(value, str):
            out[key] = value
        else:
            raise ValueError(f"{source}: {key}: a text must be a string")


def _escape(value: object) -> object:
    if isinstance(value, Html):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value  # keeps format specs such as {count:d} working; numbers need no escaping
    return html.escape(str(value), quote=False)


PLURAL_FORMS = ("zero", "one", "two", "few", "many", "other")
PLURAL_BY = "_by"


class Catalog:
    """The texts of one language, addressed by dotted keys ("step.prep-1d").

    A key missing in this language falls back to the English text, so that a half-finished
    translation degrades to English instead of failing at send time (a test makes sure the
    shipped catalogs are complete).

    A text that depends on a number is a table of CLDR plural forms, and `_by` names the
    parameter that decides (Babel's plural rules: in Persian 0 and 1 take "one"):

        [staff.course_set]
        _by = "sessions"
        one = "… {sessions} session …"
        other = "… {sessions} sessions …"
    """

    def __init__(
        self, lang: str, texts: Mapping[str, str], fallback: Catalog | None = None
    ) -> None:
        self.lang = lang
        self._texts = dict(texts)
        self._fallback = fallback

    @classmethod
    def load(cls, path: Path, fallback: Catalog | None = None) -> Catalog:
        """Read a language: a folder of TOML files (or one file), nested tables, where a
        table path plus a name is the key. A key defined twice is an error."""
        files = sorted(path.glob("*.toml")) if path.is_dir() else [path]
        texts: dict[str, str] = {}
        for file in files:
            with file.open("rb") as f:
                data = tomllib.load(f)
            part: dict[str, str] = {}
            _flatten(data, "", part, file.name)
            if twice := part.keys() & texts.keys():
                raise ValueError(f"{file.name}: defined in another file too: {sorted(twice)}")
            texts.update(part)
        return cls(path.stem, texts, fallback)

    def __contains__(self, key: object) -> bool:
        if key in self._texts or f"{key}.{PLURAL_BY}" in self._texts:
            return True
        return self._fallback is not None and key in self._fallback

    def __iter__(self) -> Iterator[str]:
        """The keys defined in this language's own file (without the fallback's)."""
        return iter(self._texts)

    def raw(self, key: str, /) -> str:
        """The text as written in the catalog, unformatted."""
        if key in self._texts:
            return self._texts[key]
        if self._fallback is not None:
            return self._fallback.raw(key)
        raise KeyError(f"no text {key!r} in the {self.lang!r} catalog")

    def plural(self, key: str, params: Mapping[str, object]) -> str:
        """The key of the form a plural text takes for these parameters (`key` itself when
        the text is not a plural one)."""
        by = f"{key}.{PLURAL_BY}"
        if by in self._texts:
            count = params.get(self._texts[by])
            form = "other"
            if isinstance(count, int) and not isinstance(count, bool):
                form = Locale.parse(self.lang).plural_form(abs(count))
            return f"{key}.{form}" if f"{key}.{form}" in self._texts else f"{key}.other"
        if key in self._texts or self._fallback is None:
            return key
        return self._fallback.plural(key, params)

    def text(self, key: str, /, **params: object) -> Html:
        """The text for `key` with its `{placeholders}` filled in, parameters HTML-escaped."""
        escaped = {name: _escape(value) for name, value in params.items()}
        return Html(self.raw(self.plural(key, params)).format_map(escaped))


def available_languages() -> tuple[str, ...]:
    """The languages that have a catalog file, English first."""
    others = sorted(
        p.name for p in LOCALES_DIR.iterdir() if p.is_dir() and p.name != DEFAULT_LANGUAGE
    )
    return (DEFAULT_LANGUAGE, *others)


@functools.cache
def catalog(lang: str) -> Catalog:
    """The catalog for `lang`; English for a language without a catalog file.

    Cached for the life of the process: catalogs are read-only data shipped with the code.
    """
    if lang == DEFAULT_LANGUAGE:
        return Catalog.load(LOCALES_DIR / DEFAULT_LANGUAGE)
    # isalpha() first: `lang` comes from Telegram and must never become a path like "../x".
    if not lang.isalpha() or not (LOCALES_DIR / lang).is_dir():
        return catalog(DEFAULT_LANGUAGE)
    return Catalog.load(LOCALES_DIR / lang, fallback=catalog(DEFAULT_LANGUAGE))


def format_local(dt: datetime, tz: ZoneInfo, lang: str, fmt: str = "datetime") -> str:
    """`dt` as the patient reads it on their clock: in their zone and language.

    `fmt` names a CLDR pattern in the catalog's [format] table ("datetime" gives
    "Thu 3 Dec, 14:30" in English, "time" gives "14:30"), so each language picks its own order.
    """
    if dt.tzinfo is None:
        raise ValueError("format_local needs an aware datetime")
    texts = catalog(lang)
    return format_datetime(dt, format=texts.raw(f"format.{fmt}"), tzinfo=tz, locale=texts.lang)
