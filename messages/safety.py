"""The safety net: does a patient's own text name a red-flag sign?

The sign words are data in the catalogs (`[signs]` in messages/locales/<lang>/safety.toml),
one rule per line, so that a clinic's reviewer can read and extend them:

    rule    = group [" + " group ...]   every group must occur somewhere in the text
    group   = phrase ["|" phrase ...]   any one of the phrases
    phrase  = word [" " word ...]       these words, one after another
    word    = letters or digits, a trailing "*" matches any ending ("swell*": swelling, swells)

Text and rules are normalised the same way before matching: Unicode compatibility forms,
case folded, every script's digits as ASCII digits, punctuation as spaces, and a letter
repeated in a row counted once ("feverrr", "puss"), so common misspellings need no rule.
Every language's rules are tried on every text: a patient may write in any of them.

A false alarm is acceptable (the patient is told to contact the clinic); a miss is not, so
the rules lean wide. No negation handling: "no fever" alarms too, on purpose.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Sequence

import msgspec

from messages.render import available_languages, catalog
from messages.scripts import fold

# The signs of SPEC.md, in the order a reply names them; the first two call for the
# emergency line before anything else.
SIGNS = (
    "breathing",
    "collapse",
    "fever",
    "pus",
    "hives",
    "warmth",
    "spreading_redness",
    "worse_pain",
    "worse_swelling",
)
EMERGENCY = frozenset({"breathing", "collapse"})
MAX_TEXT = 4000

_REPEATS = re.compile(r"(\D)\1+")


def normalise(text: str) -> list[str]:
    """The words of `text`, as the matcher compares them."""
    chars = []
    for ch in fold(text[:MAX_TEXT]):
        if ch.isalnum() or unicodedata.category(ch).startswith("M"):
            chars.append(ch)  # combining marks belong to their letter (Malayalam vowel signs)
        else:
            chars.append(" ")
    return [_REPEATS.sub(r"\1", word) for word in "".join(chars).split()]


class _Word(msgspec.Struct, frozen=True):
    text: str
    prefix: bool

    def matches(self, word: str) -> bool:
        return word.startswith(self.text) if self.prefix else word == self.text


Phrase = tuple[_Word, ...]
Group = tuple[Phrase, ...]
Rule = tuple[Group, ...]


class RuleError(ValueError):
    """A sign rule that cannot be read."""


def parse_rule(line: str) -> Rule:
    groups: list[Group] = []
    for raw_group in line.split(" + "):
        phrases: list[Phrase] = []
        for raw_phrase in raw_group.split("|"):
            words = []
            for raw in raw_phrase.split():
                prefix = raw.endswith("*")
                normal = normalise(raw.rstrip("*"))
                if len(normal) != 1:
                    raise RuleError(f"{line!r}: {raw!r} is not one word")
                words.append(_Word(normal[0], prefix))
            if not words:
                raise RuleError(f"{line!r}: an empty phrase")
            phrases.append(tuple(words))
        groups.append(tuple(phrases))
    return tuple(groups)


def _occurs(phrase: Phrase, words: Sequence[str]) -> bool:
    size = len(phrase)
    return any(
        all(phrase[i].matches(words[start + i]) for i in range(size))
        for start in range(len(words) - size + 1)
    )


def _holds(rule: Rule, words: Sequence[str]) -> bool:
    return all(any(_occurs(phrase, words) for phrase in group) for group in rule)


def rules_of(lines: str) -> list[Rule]:
    return [parse_rule(line.strip()) for line in lines.splitlines() if line.strip()]


@functools.cache
def _rules(languages: tuple[str, ...]) -> dict[str, list[Rule]]:
    found: dict[str, list[Rule]] = {sign: [] for sign in SIGNS}
    for lang in languages:
        texts = catalog(lang)
        for sign in SIGNS:
            key = f"signs.{sign}"
            if key in texts:
                found[sign] += rules_of(texts.raw(key))
    return found


def red_flags(text: str, languages: Iterable[str] | None = None) -> list[str]:
    """The red-flag signs `text` names, in SIGNS order (empty: none)."""
    words = normalise(text)
    if not words:
        return []
    rules = _rules(tuple(languages) if languages is not None else available_languages())
    return [sign for sign in SIGNS if any(_holds(rule, words) for rule in rules[sign])]


def needs_emergency(signs: Iterable[str]) -> bool:
    return any(sign in EMERGENCY for sign in signs)
