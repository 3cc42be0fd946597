"""What a language's script asks of a text: its digits, and its direction.

Babel knows each language's default numbering system (Persian: "arabext") and the direction
of its script ("right-to-left"), but not the digits of a numbering system, and it does not
lay out mixed-direction text; this module fills those two gaps. (A catalog states its own
direction, `[format] direction`, which a test checks against Babel's.)

Right-to-left: Telegram lays a message out with the Unicode bidirectional algorithm, where a
left-to-right run inside Persian ("/book", "Europe/Paris", "+98 21 1234 5678", "Dr Smith")
can pull the punctuation and numbers around it out of order. Each such run is wrapped in a
first-strong isolate (U+2068 … U+2069), which lays it out on its own, and a message whose
line would start left-to-right starts with a right-to-left mark, so that Telegram aligns
and orders it as Persian.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Mapping

from babel import Locale
from babel.core import get_global

FSI, PDI, RLM = "\u2068", "\u2069", "\u200f"
# Marks that change no word a patient types: zero-width (non-)joiners, soft hyphens, and the
# direction marks and isolates (ours, when a patient copies an example back). As a
# str.translate table that deletes them.
INVISIBLE = dict.fromkeys(
    map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad\u200e\u200f\u2066\u2067\u2068\u2069")
)
# The zero of each numbering system a catalog language may default to (CLDR numberingSystems).
_ZERO = {"latn": "0", "arabext": "\u06f0", "arab": "\u0660", "mlym": "\u0d66", "deva": "\u0966"}
_ASCII_DIGITS = frozenset("0123456789")
# Markup that is not text: tags, entities and {placeholders} (these are isolated when filled).
_MARKUP = re.compile(r"<[^>]*>|&[#a-zA-Z0-9]+;|\{[^{}]*\}")
_MARKUP_OR_CODE = re.compile(rf"<code>[^<]*</code>|{_MARKUP.pattern}")
# A left-to-right run in a template: Latin words, ASCII numbers, commands and codes, with
# the spaces and punctuation between them ("/invite 2026-12-03 14:30", "Europe/Paris").
_LTR_RUN = re.compile(
    r"[/+@]?[A-Za-z0-9][A-Za-z0-9:/._@+\-]*(?:[ ,][/+@]?[A-Za-z0-9][A-Za-z0-9:/._@+\-]*)*"
)


@functools.cache
def locale_of(lang: str) -> Locale:
    """The language with its likely territory ("fa" -> fa_Arab_IR): whose week, digits and
    script it follows."""
    likely: Mapping[str, str] = get_global("likely_subtags")
    return Locale.parse(likely.get(lang, lang))


@functools.cache
def _digit_table(lang: str) -> dict[int, int]:
    zero = _ZERO.get(str(locale_of(lang).default_numbering_system), "0")
    return {ord("0") + i: ord(zero) + i for i in range(10)} if zero != "0" else {}


def local_digits(text: str, lang: str) -> str:
    """`text` with its ASCII digits in the language's own default digits ("14:30" -> "۱۴:۳۰")."""
    table = _digit_table(lang)
    return text.translate(table) if table else text


def ascii_digits(text: str) -> str:
    """Every script's decimal digits as ASCII digits ("۱۴:۳۰" -> "14:30")."""
    return "".join(
        str(unicodedata.decimal(ch)) if ch.isdecimal() and not ch.isascii() else ch for ch in text
    )


def fold(text: str) -> str:
    """Typed text as the bot compares it: compatibility forms, no invisible marks, every
    script's digits as ASCII, case folded, runs of spaces as one."""
    text = unicodedata.normalize("NFKC", text).translate(INVISIBLE)
    return " ".join(ascii_digits(text).casefold().split())


def reads_ltr(text: str) -> bool:
    """Whether `text` holds something laid out left to right: a Latin letter or an ASCII digit."""
    return any(ch in _ASCII_DIGITS or unicodedata.bidirectional(ch) == "L" for ch in text)


def isolate(text: str) -> str:
    return f"{FSI}{text}{PDI}"


def isolate_ltr_runs(template: str) -> str:
    """A right-to-left template with its left-to-right runs isolated; tags, entities and
    placeholders are left as they are. A left-to-right example in <code> is isolated whole,
    outside its tags, so that a tap on it copies the example without the isolate marks."""
    out, last = [], 0
    for markup in _MARKUP_OR_CODE.finditer(template):
        out.append(_LTR_RUN.sub(lambda m: isolate(m.group()), template[last : markup.start()]))
        code = markup.group()
        example = code.startswith("<code>") and reads_ltr(_MARKUP.sub("", code[6:-7]))
        out.append(isolate(code) if example else code)
        last = markup.end()
    out.append(_LTR_RUN.sub(lambda m: isolate(m.group()), template[last:]))
    return "".join(out)


def _leads_rtl(line: str) -> bool:
    for ch in _MARKUP.sub("", line):
        kind = unicodedata.bidirectional(ch)
        if kind in ("R", "AL"):
            return True
        if kind not in (
            "WS",
            "ON",
            "CS",
            "ES",
            "ET",
            "BN",
            "NSM",
        ):  # a Latin letter, a digit, an isolate
            return False
    return not line.strip()


def lines_start_rtl(text: str) -> str:
    """`text` with a right-to-left mark at the start of every line that would otherwise
    start with something left-to-right (a Latin letter, a digit, an isolated run), so that
    each line is laid out, aligned and read as Persian."""
    return "\n".join(line if _leads_rtl(line) else RLM + line for line in text.split("\n"))
