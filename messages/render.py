"""Texts from the locale catalogs, rendered for Telegram's HTML parse mode.

Catalog texts are trusted HTML written by us or a translator (only <b>, <i>, <u>, <s>, <code>
and <a href> are allowed, which is what Telegram accepts). Parameters are not trusted: a
patient's name or a clinic's address can contain `<` or `&`, so every parameter is escaped
unless it is an `Html` fragment that was itself rendered from the catalog.
"""

from __future__ import annotations

import functools
import html
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import tomli
from babel import Locale

from messages.scripts import (
    isolate,
    isolate_ltr_runs,
    lines_start_rtl,
    local_digits,
    reads_ltr,
)

LOCALES_DIR = Path(__file__).parent / "locales"
DEFAULT_LANGUAGE = "en"


class Html(str):
    """An HTML fragment that is already safe for Telegram (rendered from the catalog and
    escaped there), so that it can be passed as a parameter into another text as it is."""

    __slots__ = ()


def flatten(table: Mapping[str, object], prefix: str, out: dict[str, str], source: str) -> None:
    """Nested TOML tables of texts as dotted keys ("step" > "prep-1d" -> "step.prep-1d")."""
    for name, value in table.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            flatten(value, f"{key}.", out, source)
        elif isinstance(value, str):
            out[key] = value
        else:
            raise ValueError(f"{source}: {key}: a text must be a string")


class _Number:
    """A number parameter, written with the language's digits whatever its format spec."""

    __slots__ = ("lang", "value")

    def __init__(self, value: int | float, lang: str) -> None:
        self.value, self.lang = value, lang

    def __format__(self, spec: str) -> str:
        return local_digits(format(self.value, spec), self.lang)


class Later:
    """A parameter worked out only if its text states it: `Later(reader.at, when)`. A time
    on the reader's calendar needs their language's CLDR data (megabytes, read on first use),
    which a text that states no time has no reason to load."""

    __slots__ = ("_args", "_work")

    def __init__(self, work: Callable[..., object], *args: object) -> None:
        self._work, self._args = work, args

    def __call__(self) -> object:
        return self._work(*self._args)


def _escape(value: object, lang: str, rtl: bool) -> object:
    if isinstance(value, Html):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _Number(value, lang)  # numbers need no escaping
    text = html.escape(str(value), quote=False)
    # Left-to-right values, and any value with digits (a time, a range, a phone number)
    # keep their own order inside a right-to-left line.
    if rtl and (reads_ltr(text) or any(ch.isdecimal() for ch in text)):
        return isolate(text)
    return text


class _Stated(dict[str, object]):
    """The parameters a text states, each escaped (a `Later` worked out first) when the text
    names it: `str.format_map` asks for those only. An unknown name is a KeyError, as in a
    plain dict."""

    def __init__(self, params: Mapping[str, object], lang: str, rtl: bool) -> None:
        super().__init__()
        self._params, self._lang, self._rtl = params, lang, rtl

    def __missing__(self, name: str) -> object:
        value = self._params[name]
        if isinstance(value, Later):
            value = value()
        escaped = self[name] = _escape(value, self._lang, self._rtl)
        return escaped


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
        self._templates: dict[str, str] = {}

    @functools.cached_property
    def rtl(self) -> bool:
        """Right to left, as the catalog's `[format] direction` says: CLDR's character order
        of its language, which a test checks. Stated like its calendar rather than asked of
        Babel, whose answer needs its global CLDR data (2.5 MB) before the first menu."""
        return "format.direction" in self and self.raw("format.direction") == "rtl"

    @classmethod
    def load(cls, path: Path, fallback: Catalog | None = None) -> Catalog:
        """Read a language: a folder of TOML files (or one file), nested tables, where a
        table path plus a name is the key. A key defined twice is an error."""
        files = sorted(path.glob("*.toml")) if path.is_dir() else [path]
        texts: dict[str, str] = {}
        for file in files:
            with file.open("rb") as f:
                data = tomli.load(f)
            part: dict[str, str] = {}
            flatten(data, "", part, file.name)
            if twice := part.keys() & texts.keys():
                raise ValueError(f"{file.name}: defined in another file too: {sorted(twice)}")
            texts.update(part)
        return cls(path.stem, texts, fallback)

    def __contains__(self, key: object) -> bool:
        if key in self._texts or f"{key}.{PLURAL_BY}" in self._texts:
            return True
        return self._fallback is not None and key in self._fallback

    def overlay(self, texts: Mapping[str, str]) -> Catalog:
        """This language with some texts of one's own on top (a clinic's protocol file)."""
        return Catalog(self.lang, {**self._texts, **texts}, self._fallback) if texts else self

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

    def _template(self, key: str) -> str:
        """The text of `key` ready to fill in: in a right-to-left language, with its
        left-to-right runs isolated (messages/scripts.py)."""
        if key not in self._templates:
            raw = self.raw(key)
            self._templates[key] = isolate_ltr_runs(raw) if self.rtl else raw
        return self._templates[key]

    def text(self, key: str, /, **params: object) -> Html:
        """The text for `key` with its `{placeholders}` filled in, parameters HTML-escaped,
        numbers in the language's digits; in a right-to-left language, left-to-right values
        isolated and every line starting right to left."""
        own = key in self._texts or f"{key}.{PLURAL_BY}" in self._texts
        if self._fallback is not None and not own:
            return self._fallback.text(key, **params)  # an English text stays English
        stated = _Stated(params, self.lang, self.rtl)
        text = self._template(self.plural(key, params)).format_map(stated)
        return Html(lines_start_rtl(text) if self.rtl else text)


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
