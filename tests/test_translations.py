"""Every language says what English says: the same keys, the same placeholders, the same
numbers (any script's digits counted as the same digits), plural texts with the language's
own CLDR forms, and no English left behind (names, codes, commands and examples aside)."""

from __future__ import annotations

import re
import string
import unicodedata
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from babel import Locale

from bot.offline.sandbox import parse_html
from messages.calendars import format_local
from messages.render import PLURAL_BY, available_languages, catalog
from messages.scripts import FSI, PDI, RLM, reads_ltr

OTHERS = [lang for lang in available_languages() if lang != "en"]
# Not prose: date patterns, and the sign words (each language has its own, tried together).
NOT_PROSE = ("format.", "signs.")
# Latin words a translation may keep: product and file names, abbreviations.
KEPT = {"Telegram", "QR", "CSV", "ID", "IANA", "HH", "MM"}
CODE = re.compile(r"<code>.*?</code>", re.S)
TAG = re.compile(r"<[^>]+>")
COMMAND = re.compile(r"/[a-z_]+")
ENTITY = re.compile(r"&[a-z]+;|&#\d+;")


def own(lang: str) -> dict[str, str]:
    texts = catalog(lang)
    return {key: texts.raw(key) for key in texts}


def placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def ascii_digits(text: str) -> str:
    return "".join(str(unicodedata.decimal(ch)) if ch.isdecimal() else ch for ch in text)


def numbers(text: str) -> list[str]:
    """The numbers a text states, outside examples (`<code>`) and placeholders."""
    prose = CODE.sub(" ", text)
    prose = re.sub(r"\{[^}]*\}", " ", prose)
    prose = TAG.sub(" ", prose)
    return sorted(re.findall(r"\d+", ascii_digits(prose)))


def base(key: str) -> str:
    """A plural form's text key without its form ("staff.course_set.one" -> its table)."""
    head, _, form = key.rpartition(".")
    return head if form in ("zero", "one", "two", "few", "many", "other") else key


@pytest.mark.parametrize("lang", OTHERS)
def test_every_key_and_only_those(lang: str) -> None:
    english = own("en")
    theirs = own(lang)
    plural_tables = {k.removesuffix(f".{PLURAL_BY}") for k in english if k.endswith(PLURAL_BY)}
    missing = {k for k in english if base(k) not in plural_tables and k not in theirs}
    extra = {k for k in theirs if base(k) not in plural_tables and k not in english}
    assert missing == set() and extra == set()
    for table in plural_tables:
        assert theirs.get(f"{table}.{PLURAL_BY}") == english[f"{table}.{PLURAL_BY}"], table
        forms = {k.rpartition(".")[2] for k in theirs if base(k) == table and k != table}
        forms.discard(PLURAL_BY)
        wanted = set(Locale.parse(lang).plural_form.tags) | {"other"}
        assert forms == wanted, (table, forms, wanted)


@pytest.mark.parametrize("lang", OTHERS)
def test_same_placeholders_and_numbers(lang: str) -> None:
    english = own("en")
    theirs = own(lang)
    problems = []
    for key, text in theirs.items():
        if key.startswith(NOT_PROSE) or key.endswith(PLURAL_BY):
            continue
        source = english.get(key) or english.get(f"{base(key)}.other", "")
        if placeholders(text) != placeholders(source):
            problems.append(f"{key}: placeholders {placeholders(text)} != {placeholders(source)}")
        if numbers(text) != numbers(source):
            problems.append(f"{key}: numbers {numbers(text)} != {numbers(source)}")
    assert problems == []


@pytest.mark.parametrize("lang", OTHERS)
def test_nothing_is_left_in_english(lang: str) -> None:
    left = []
    for key, text in own(lang).items():
        if key.startswith(NOT_PROSE) or key.endswith(PLURAL_BY):
            continue
        prose = CODE.sub(" ", text)
        prose = re.sub(r"\{[^}]*\}", " ", prose)
        prose = ENTITY.sub(" ", TAG.sub(" ", prose))
        prose = COMMAND.sub(" ", prose)
        words = [w for w in re.findall(r"[A-Za-z]{2,}", prose) if w not in KEPT]
        if words:
            left.append(f"{key}: {words}")
    assert left == []


@pytest.mark.parametrize("lang", OTHERS)
def test_the_same_html(lang: str) -> None:
    english = own("en")
    differ = []
    for key, text in own(lang).items():
        if key.startswith(NOT_PROSE) or key.endswith(PLURAL_BY):
            continue
        source = english.get(key) or english.get(f"{base(key)}.other", "")
        tags = sorted(t for t in TAG.findall(text) if not t.startswith("<a "))
        if tags != sorted(t for t in TAG.findall(source) if not t.startswith("<a ")):
            differ.append(key)
    assert differ == []


RTL = [lang for lang in OTHERS if catalog(lang).rtl]


def strong(ch: str) -> bool:
    return unicodedata.bidirectional(ch) in ("L", "R", "AL")


LTR_SAMPLES: list[object] = [
    "Anna Smith",  # a Latin name
    "+98 21 5550 0100",  # a phone number
    "Europe/Paris",  # a time zone
    "/book",  # a command
    "14:30",  # a time with ASCII digits
    "<Klinik & Co>",  # escaped on the way in
]


def rendered_lines(lang: str) -> list[tuple[str, str]]:
    """Every text of `lang`, rendered with left-to-right values, an own date and an own
    fragment as parameters, as Telegram shows it (plain text after its HTML parser)."""
    texts = catalog(lang)
    own_date = format_local(
        datetime(2026, 12, 3, 11, 0, tzinfo=UTC), ZoneInfo("Asia/Tehran"), lang
    )
    fragment = texts.text("sessions.state.booked")
    out = []
    plural_tables = {k.removesuffix(f".{PLURAL_BY}") for k in texts if k.endswith(PLURAL_BY)}
    for key in sorted({base(k) if base(k) in plural_tables else k for k in texts}):
        if key.startswith(NOT_PROSE) or key.endswith(PLURAL_BY):
            continue
        names = placeholders(texts.raw(texts.plural(key, {})))
        by = texts.raw(f"{key}.{PLURAL_BY}") if f"{key}.{PLURAL_BY}" in texts else None
        for value in [*LTR_SAMPLES, own_date, fragment]:
            params = dict.fromkeys(names, value)
            for count in (1, 12) if by else (None,):
                if by:
                    params[by] = count
                plain, _ = parse_html(texts.text(key, **params))
                out += [(key, line) for line in plain.split("\n")]
    return out


def outside_isolates(line: str) -> str:
    out, depth = [], 0
    for ch in line:
        if ch == FSI:
            depth += 1
        elif ch == PDI:
            assert depth > 0, "an isolate closed that was never opened"
            depth -= 1
        elif depth == 0:
            out.append(ch)
    assert depth == 0, "an isolate left open"
    return "".join(out)


@pytest.mark.parametrize("lang", RTL)
def test_right_to_left_texts_keep_left_to_right_values_apart(lang: str) -> None:
    """In Persian, every Latin letter and ASCII digit sits in an isolate (so that it cannot
    reorder the words around it), and every line starts right to left."""
    problems = []
    for key, line in rendered_lines(lang):
        try:
            bare = outside_isolates(line)
        except AssertionError as e:
            problems.append(f"{key}: {e}: {line!r}")
            continue
        if reads_ltr(bare):
            problems.append(f"{key}: left-to-right outside an isolate: {line!r}")
        if line.strip() and line[0] != RLM:
            first = next((ch for ch in line if ch == FSI or ch.isdigit() or strong(ch)), None)
            if first is not None and unicodedata.bidirectional(first) not in ("R", "AL"):
                problems.append(f"{key}: starts left to right: {line!r}")
    assert problems == []


def test_plural_forms_follow_cldr() -> None:
    """Persian: 0 and 1 take "one"; English and Malayalam: only 1 does."""
    for lang, zero in (("en", "other"), ("fa", "one"), ("ml", "other")):
        texts = catalog(lang)
        assert texts.plural("inbox.title", {"shown": 0}) == f"inbox.title.{zero}", lang
        assert texts.plural("inbox.title", {"shown": 1}) == "inbox.title.one", lang
        assert texts.plural("inbox.title", {"shown": 2}) == "inbox.title.other", lang


def test_each_catalog_states_its_languages_direction() -> None:
    """`[format] direction` is CLDR's character order of the language, and each catalog reads
    as it says: Persian right to left (so the tests above have a language to check)."""
    for lang in available_languages():
        cldr = Locale.parse(lang).character_order
        stated = catalog(lang).raw("format.direction")
        assert stated == {"left-to-right": "ltr", "right-to-left": "rtl"}[cldr], lang
    assert RTL == ["fa"]
