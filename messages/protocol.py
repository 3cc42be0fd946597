"""The care protocol as data: what is said when, loaded from a TOML file a clinic can edit.

A clinic copies `protocols/mesotherapy.toml`, changes offsets or texts, and gets its mistakes
reported on load ("mesotherapy.toml: step 'prep-1d': when: unknown anchor 'strat'") instead
of as a wrong reminder weeks later. Models are frozen: one loaded protocol is shared by every
session and must never change under them.

Times in the file are references `<anchor>[+|-<duration>][@HH:MM]` (see `TimeRef`).
"""

from __future__ import annotations

import calendar
import functools
import re
import string
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from zoneinfo import ZoneInfo

import tomli
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from messages.render import DEFAULT_LANGUAGE, Catalog, available_languages, catalog, flatten

PROTOCOLS_DIR = Path(__file__).parent / "protocols"

ANCHORS = ("booking", "start", "end", "next", "last")
"""booking: the instant of planning; start/end: the session; next: when the next course session
is due; last: the end of the last course session (maintenance). next and last may be absent."""

BASE_STEP_PARAMS = frozenset(
    {"start", "end", "minutes", "place", "checklist", "screening", "next_due", "emergency"}
)
"""Placeholders every step text may use; the renderer passes all of them for every step.

start: session start, local ("Thu 3 Dec, 14:30"); end: when the session should end (the
aftercare counts from it); minutes: the session's length; place: clinic name and address;
emergency: the emergency-services number of the patient's clinic;
checklist: the restrictions of the step's `checklist` phase, one line each (Html);
screening: the screening result (Html); next_due: when the next course session is due.
Besides these, `until_<restriction key>` for every restriction: when that restriction ends.
"""


class ProtocolError(ValueError):
    """A protocol file that cannot be used; the message names the file and the entry."""


def default_protocol_path() -> Path:
    """The protocol shipped with the product."""
    return PROTOCOLS_DIR / "mesotherapy.toml"


# --- time references ----------------------------------------------------------------------

_REF_RE = re.compile(
    r"(?P<anchor>[a-z_]+)(?:(?P<sign>[+-])(?P<duration>[0-9a-z]+))?(?:@(?P<at>[0-9:]+))?"
)
_DURATION_RE = re.compile(r"(?:(\d+)mo)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?")
_AT_RE = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")


@dataclass(frozen=True, slots=True)
class TimeRef:
    """A point in time relative to an anchor: `end+24h`, `start-3d@10:00`, `last+3mo@10:00`.

    Without `@HH:MM` the offset is absolute time (`end+24h` is exactly 24 hours later, DST or
    not), except months, which are calendar months on the patient's wall clock. With `@HH:MM`
    the offset moves the patient's local date (days and months only) and the time is that
    local wall-clock time, so "10:00" stays 10:00 across a DST change.

    A dataclass, unlike the project's other value classes (`msgspec.Struct`): its text does
    not count in its equality (`parse("end+24h")` is `TimeRef("end", seconds=86400)`),
    which a Struct cannot say.
    """

    anchor: str
    months: int = 0
    days: int = 0
    seconds: int = 0
    at: time | None = None
    text: str = field(default="", compare=False)
    delta: timedelta = field(init=False, repr=False, compare=False)
    """days and seconds as one timedelta, made once: the planner adds it tens of thousands
    of times a second in a bulk replan."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "delta", timedelta(days=self.days, seconds=self.seconds))

    @classmethod
    def parse(cls, text: str) -> TimeRef:
        """Parse a reference; ValueError says what is wrong in words a clinic can act on."""
        match = _REF_RE.fullmatch(text.strip())
        if match is None:
            raise ValueError(f"cannot read {text!r}: expected e.g. 'end+24h' or 'start-3d@10:00'")
        anchor = match["anchor"]
        if anchor not in ANCHORS:
            raise ValueError(f"unknown anchor {anchor!r} (one of {', '.join(ANCHORS)})")
        months = days = seconds = 0
        if match["duration"] is not None:
            parts = _DURATION_RE.fullmatch(match["duration"])
            if parts is None or not any(parts.groups()):
                raise ValueError(
                    f"bad duration {match['duration']!r}: use e.g. 3d, 2h, 30m, 1d12h or 3mo"
                )
            mo, d, h, m = (int(g) if g else 0 for g in parts.groups())
            sign = -1 if match["sign"] == "-" else 1
            months, days, seconds = sign * mo, sign * d, sign * (h * 3600 + m * 60)
        at = None
        if match["at"] is not None:
            clock = _AT_RE.fullmatch(match["at"])
            if clock is None:
                raise ValueError(f"bad time of day {match['at']!r}: use HH:MM, e.g. 10:00")
            at = time(int(clock[1]), int(clock[2]))
            if seconds:
                raise ValueError(
                    f"{text!r}: with @HH:MM the offset moves the date, so use days or months"
                )
        return cls(anchor, months, days, seconds, at, text.strip())

    def __str__(self) -> str:
        return self.text


def _require_aware(value: datetime, name: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime, got {value!r}")


def _add_months(day: date, months: int) -> date:
    # Calendar months, the day clamped to the month's end (31 Jan + 1 month = 28/29 Feb).
    # Done here rather than with dateutil, which is only a transitive, untyped dependency.
    if not months:
        return day
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    month += 1
    last_day = calendar.monthrange(year, month)[1]
    return day.replace(year=year, month=month, day=min(day.day, last_day))


@functools.lru_cache(maxsize=4096)
def local_to_utc(day: date, clock: time, tz: ZoneInfo) -> datetime:
    """The instant at which the patient's clock shows `day clock`.

    A time that does not exist (the spring-forward gap) resolves forward by the gap's length
    (02:30 becomes 03:30); an ambiguous one (autumn) takes the first occurrence. Both are what
    `fold=0` means in PEP 495.

    Cached: a bulk replan asks for the same few days at the same few clock times (every
    "@10:00" of the protocol on the days around a clinic's sessions) tens of thousands of
    times, and a zone conversion costs more than the lookup.
    """
    return datetime.combine(day, clock.replace(tzinfo=None, fold=0), tzinfo=tz).astimezone(UTC)


def resolve(ref: TimeRef | str, anchors: Mapping[str, datetime], tz: ZoneInfo) -> datetime | None:
    """The instant (UTC) that `ref` names, or None when its anchor is absent.

    `anchors` maps anchor names to aware datetimes; `tz` is the patient's zone.
    """
    if isinstance(ref, str):
        ref = TimeRef.parse(ref)
    base = anchors.get(ref.anchor)
    if base is None:
        return None
    _require_aware(base, f"anchor {ref.anchor!r}")
    return resolve_from(ref, base.astimezone(UTC), tz)


def resolve_from(
    ref: TimeRef, base: datetime, tz: ZoneInfo, local_day: date | None = None
) -> datetime:
    """The instant (UTC) that `ref` names when its anchor is at `base`, which must be aware
    and in UTC (not checked: the planner checks its anchors once, not once per step).
    `local_day`: the patient's date at `base`, if the caller has it already."""
    if ref.at is not None:
        if local_day is None:
            local_day = base.astimezone(tz).date()
        return local_to_utc(_add_months(local_day, ref.months) + ref.delta, ref.at, tz)
    if ref.months:
        local = base.astimezone(tz)
        base = local_to_utc(_add_months(local.date(), ref.months), local.time(), tz)
    # Arithmetic on UTC: adding to a zoned datetime would add wall-clock time, not real time.
    return base + ref.delta


def _to_ref(value: object) -> TimeRef:
    if isinstance(value, TimeRef):
        return value
    if not isinstance(value, str):
        raise ValueError("a time must be written as a string, e.g. 'end+24h'")
    return TimeRef.parse(value)


Ref = Annotated[TimeRef, PlainValidator(_to_ref), PlainSerializer(str, return_type=str)]
Key = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")]
# Restriction keys become placeholder names (`until_<key>`), so they must be identifiers.
Identifier = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]


# --- the protocol -------------------------------------------------------------------------


class _Frozen(BaseModel):
    # Validators built on first use: `load_protocol` builds Protocol's, which holds every
    # other model's; their own, built at import, went unused at run time (8 ms of each start).
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)


def _default_text_keys(data: Any, defaults: Mapping[str, str]) -> Any:
    """Fill text keys the file leaves out with their conventional name (`step.<key>`)."""
    if isinstance(data, dict) and isinstance(data.get("key"), str):
        data = {**{name: tpl.format(data["key"]) for name, tpl in defaults.items()}, **data}
    return data


class Step(_Frozen):
    """One message of the timeline and the window in which it is still worth sending."""

    key: Key
    text: str
    when: Ref
    not_before: Ref | None = None
    """Earliest instant the quiet-hours rule may move it to; default: `when`."""
    expires: Ref
    """From this instant on the message is worthless and is recorded as expired."""
    quiet: Literal["shift", "ignore"] = "shift"
    fold_into: str | None = None
    """If this step is already past when planning, its text goes into that (earlier) step."""
    folded_text: str | None = None
    """The text appended to the target when folded; default `folded.<key>`."""
    only_if_between: tuple[Ref, Ref] | None = None
    """The step exists only if `when` lies in [first, second)."""
    buttons: Literal["checkin"] | None = None
    checklist: Literal["before", "after"] | None = None
    """Which restrictions the `{checklist}` placeholder lists for this step."""
    phase: Literal["before", "after"] | None = None
    """Pre-care (sent before the session starts) or aftercare (after it ends): checked."""
    ends: tuple[str, ...] = ()
    """Restriction keys this step announces as over ("alcohol is fine again")."""
    when_extended: Literal["drop", "reword"] = "drop"
    """When another session of the patient keeps one of `ends` in force past this session's
    end of it, the announcement would be false: the step is dropped, or sent with its
    `extended_text` (which says until when to keep avoiding it)."""
    extended_text: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        data = _default_text_keys(data, {"text": "step.{}"})
        if isinstance(data, dict) and data.get("fold_into") is not None:
            data = _default_text_keys(data, {"folded_text": "folded.{}"})
        if isinstance(data, dict) and data.get("when_extended") == "reword":
            data = _default_text_keys(data, {"extended_text": "extended.{}"})
        return data


class Restriction(_Frozen):
    """Something to avoid between two instants, e.g. no washing the hair until end+24h."""

    model_config = ConfigDict(populate_by_name=True)

    key: Identifier
    text: str
    phase: Literal["before", "after"]
    since: Ref = Field(alias="from")
    until: Ref
    topic: Identifier | None = None
    """What is avoided, when two restrictions are the same thing (alcohol before and after a
    session): their times merge across a patient's sessions. Default: the key."""

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        return _default_text_keys(data, {"text": "restriction.{}"})

    @property
    def subject(self) -> str:
        return self.topic or self.key


class CheckinOption(_Frozen):
    """An answer button of the side-effect check-in."""

    key: Identifier
    label: str
    guidance: str
    red_flag: Literal["never", "always", "after_day_3"] = "never"
    describe: bool = False
    """Ask the patient for a short description ("something else")."""

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        return _default_text_keys(
            data, {"label": "checkin.label.{}", "guidance": "checkin.guidance.{}"}
        )

    def is_red_flag(self, session_end: datetime, answered_at: datetime, tz: ZoneInfo) -> bool:
        """Whether this answer must alert the clinic at once.

        "After day 3" counts calendar days on the patient's clock, the session day being day 0:
        at the day-3 check-in fading bruising is expected; from day 4 it is not.
        """
        if self.red_flag == "after_day_3":
            _require_aware(session_end, "session_end")
            _require_aware(answered_at, "answered_at")
            day = (answered_at.astimezone(tz).date() - session_end.astimezone(tz).date()).days
            return day > 3
        return self.red_flag == "always"


Answer = Literal["yes", "no", "na"]


class ScreeningQuestion(_Frozen):
    """A question asked before a session is confirmed; "yes" flags, never blocks."""

    key: Identifier
    question: str
    advice: str
    """Why the clinic wants a physician's view after a "yes" (one sentence, with the reason)."""
    short: str
    """A few words for lists: the staff's views, the answers remembered."""
    lasting: bool = False
    """A lasting condition: the answer is remembered and confirmed at the next booking."""
    about_date: bool = False
    """About the session's date: asked once the date is chosen; its text names it ({date})."""
    not_applicable: bool = False
    """May be answered "does not apply to me"; that answer is remembered like a lasting one."""
    skip_if_not_applicable: str | None = None
    """Not asked when that (earlier) question does not apply (periods, after pregnancy)."""

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        return _default_text_keys(
            data,
            {
                "question": "screening.question.{}",
                "advice": "screening.advice.{}",
                "short": "screening.short.{}",
            },
        )


class CoursePlan(_Frozen):
    """A typical number of sessions for a degree of hair loss (information, not a rule)."""

    key: Identifier
    text: str
    sessions: tuple[int, int] = Field(description="fewest and most sessions")

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        return _default_text_keys(data, {"text": "course.plan.{}"})


class Course(_Frozen):
    """Course defaults a clinic may change."""

    interval_days: int = Field(default=14, ge=1)
    plans: tuple[CoursePlan, ...] = ()
    maintenance_months: tuple[int, ...] = (3, 4)
    """When maintenance is due after the last course session (staff's "due" list); the
    reminders themselves are the `maintenance-*` steps."""


_Keyed = TypeVar("_Keyed", Step, Restriction, CheckinOption, ScreeningQuestion)


def _named(items: Iterable[_Keyed], key: str) -> _Keyed:
    """The item whose key is `key` (KeyError if there is none)."""
    for item in items:
        if item.key == key:
            return item
    raise KeyError(key)


class Protocol(_Frozen):
    """A whole care protocol: the timeline, what to avoid, the check-in and the screening;
    for a clinic's own file, also the languages it speaks and texts of its own."""

    session_minutes: int = Field(default=45, ge=1)
    steps: tuple[Step, ...]
    restrictions: tuple[Restriction, ...] = ()
    checkin: tuple[CheckinOption, ...] = ()
    screening: tuple[ScreeningQuestion, ...] = ()
    course: Course = Course()
    # The languages the clinic's patients are answered in (default: every shipped one). A
    # patient whose Telegram speaks another gets the first of them.
    languages: tuple[str, ...] | None = Field(default=None, min_length=1)
    # [texts.<lang>]: the clinic's own texts, nested as in the catalogs ([texts.fa.step]
    # "prep-5d" = "..."), on top of the shipped ones.
    texts: dict[str, dict[str, str]] = {}  # not a default_factory: bot/settings.py says why
    _catalogs: dict[str, Catalog] = PrivateAttr(default_factory=dict)

    @field_validator("languages")
    @classmethod
    def _shipped_languages(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        shipped = available_languages()
        for lang in value or ():
            if lang not in shipped:
                raise ValueError(f"{lang!r} has no catalog (there are {', '.join(shipped)})")
        return value

    @field_validator("texts", mode="before")
    @classmethod
    def _flat_texts(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        shipped = available_languages()
        flat: dict[str, dict[str, str]] = {}
        for lang, table in value.items():
            if lang not in shipped:
                raise ValueError(f"{lang!r} has no catalog (there are {', '.join(shipped)})")
            if not isinstance(table, dict):
                raise ValueError(f"{lang}: a table of texts, as in the catalogs")
            flat[lang] = {}
            flatten(table, "", flat[lang], f"texts.{lang}")
        return flat

    @property
    def enabled_languages(self) -> tuple[str, ...]:
        return self.languages or available_languages()

    def language_for(self, lang: str) -> str:
        """The language a patient is answered in: theirs when the clinic speaks it."""
        enabled = self.enabled_languages
        return lang if lang in enabled else enabled[0]

    def catalog(self, lang: str) -> Catalog:
        """The texts patients of this protocol read in `lang`: the clinic's own over the
        shipped ones, English (the clinic's, then the shipped) for anything missing."""
        if not self.texts:
            return catalog(lang)
        if lang not in self._catalogs:
            english = catalog(DEFAULT_LANGUAGE).overlay(self.texts.get(DEFAULT_LANGUAGE, {}))
            found = english
            if lang != DEFAULT_LANGUAGE:
                shipped = catalog(lang)
                own = {key: shipped.raw(key) for key in shipped} if shipped.lang == lang else {}
                found = Catalog(lang, {**own, **self.texts.get(lang, {})}, fallback=english)
            self._catalogs[lang] = found
        return self._catalogs[lang]

    def question(self, key: str) -> ScreeningQuestion:
        """The screening question named `key` (KeyError if there is none)."""
        return _named(self.screening, key)

    def restriction(self, key: str) -> Restriction:
        """The restriction named `key` (KeyError if there is none)."""
        return _named(self.restrictions, key)

    def step(self, key: str) -> Step:
        """The step named `key` (KeyError if there is none)."""
        return _named(self.steps, key)

    def checkin_option(self, key: str) -> CheckinOption:
        """The check-in answer named `key` (KeyError if there is none)."""
        return _named(self.checkin, key)

    @property
    def step_params(self) -> frozenset[str]:
        """The placeholders a step text may use (see BASE_STEP_PARAMS)."""
        return BASE_STEP_PARAMS | {f"until_{r.key}" for r in self.restrictions}

    def text_keys(self) -> Iterator[tuple[str, str, str]]:
        """(entry label, field, catalog key) of every text the protocol refers to."""
        for s in self.steps:
            yield f"step {s.key!r}", "text", s.text
            if s.folded_text is not None:
                yield f"step {s.key!r}", "folded_text", s.folded_text
            if s.extended_text is not None:
                yield f"step {s.key!r}", "extended_text", s.extended_text
        for r in self.restrictions:
            yield f"restriction {r.key!r}", "text", r.text
        for c in self.checkin:
            yield f"checkin {c.key!r}", "label", c.label
            yield f"checkin {c.key!r}", "guidance", c.guidance
        for q in self.screening:
            yield f"screening {q.key!r}", "question", q.question
            yield f"screening {q.key!r}", "advice", q.advice
            yield f"screening {q.key!r}", "short", q.short
        for p in self.course.plans:
            yield f"course plan {p.key!r}", "text", p.text


# --- loading ------------------------------------------------------------------------------

_SECTION_LABELS = {
    "steps": "step",
    "restrictions": "restriction",
    "checkin": "checkin",
    "screening": "screening",
}


def _describe_error(data: Mapping[str, Any], error: Mapping[str, Any]) -> str:
    """Turn a pydantic error into "step 'prep-1d': when: unknown anchor 'strat'"."""
    loc: list[str | int] = list(error["loc"])
    where = ""
    if len(loc) >= 2 and loc[0] in _SECTION_LABELS and isinstance(loc[1], int):
        entries = data.get(str(loc[0]))
        entry = entries[loc[1]] if isinstance(entries, list) and loc[1] < len(entries) else None
        key = entry.get("key") if isinstance(entry, dict) else None
        name = repr(key) if isinstance(key, str) else f"#{loc[1] + 1}"
        where = f"{_SECTION_LABELS[str(loc[0])]} {name}: "
        loc = loc[2:]
    # A ValueError raised by our own validators reads best without pydantic's prefix.
    value_error = error["type"] == "value_error"
    message = str(error["ctx"]["error"] if value_error else error["msg"])
    path = ".".join(str(part) for part in loc)
    return f"{where}{path}: {message}" if path else f"{where}{message}"


def _placeholders(template: str) -> set[str]:
    names = set()
    for _, name, _, _ in string.Formatter().parse(template):
        if name is not None:
            names.add(re.split(r"[.\[]", name, maxsplit=1)[0])
    return names


def _check(protocol: Protocol, texts: Catalog) -> list[str]:
    """What pydantic cannot see: cross-references between entries and into the catalog."""
    problems: list[str] = []
    for section, entries in (
        ("step", protocol.steps),
        ("restriction", protocol.restrictions),
        ("checkin", protocol.checkin),
        ("screening", protocol.screening),
    ):
        counts = Counter(entry.key for entry in entries)
        problems += [f"{section} {k!r}: duplicate key" for k, n in counts.items() if n > 1]
    earlier: set[str] = set()
    restriction_keys = {r.key for r in protocol.restrictions}
    for step in protocol.steps:
        if step.fold_into is not None and step.fold_into not in earlier:
            problems.append(f"step {step.key!r}: fold_into: no earlier step {step.fold_into!r}")
        earlier.add(step.key)
        problems += [
            f"step {step.key!r}: ends: no restriction {key!r}"
            for key in step.ends
            if key not in restriction_keys
        ]
    asked: dict[str, ScreeningQuestion] = {}
    for question in protocol.screening:
        other = question.skip_if_not_applicable
        if other is not None and not (other in asked and asked[other].not_applicable):
            problems.append(
                f"screening {question.key!r}: skip_if_not_applicable: no earlier question "
                f"{other!r} that may be answered 'not applicable'"
            )
        asked[question.key] = question
    return problems + _text_problems(protocol, texts, texts.__contains__)


def _text_problems(protocol: Protocol, texts: Catalog, has: Callable[[str], bool]) -> list[str]:
    """Every text the protocol refers to is one `texts` has, and a step's text uses only the
    placeholders the renderer passes."""
    problems = []
    params = protocol.step_params
    for label, name, key in protocol.text_keys():
        if not has(key):
            problems.append(f"{label}: {name}: no text {key!r} in the {texts.lang} catalog")
        elif label.startswith("step "):
            try:
                unknown = _placeholders(texts.raw(key)) - params
            except ValueError as exc:
                problems.append(f"{label}: {name}: text {key!r}: {exc}")
                continue
            if unknown:
                problems.append(
                    f"{label}: {name}: text {key!r} in {texts.lang} uses unknown placeholder(s) "
                    + ", ".join(f"{{{u}}}" for u in sorted(unknown))
                )
    return problems


# --- meaning: what a protocol would tell patients ------------------------------------------
# References are relative to anchors, so a few sample sessions (morning, afternoon, late
# evening) show every relation a clinic can get wrong; "@HH:MM" times make the time of day
# matter, hence more than one.

SAMPLE_ZONE = ZoneInfo("UTC")
SAMPLE_STARTS = (time(8, 0), time(14, 30), time(21, 30))
SAMPLE_DAY = date(2026, 6, 10)
DEFAULT_QUIET = (time(22, 0), time(8, 0))


def sample_anchors(protocol: Protocol) -> list[dict[str, datetime]]:
    """Anchors of sample sessions, booked ten days ahead, with a next and a last session."""
    found = []
    for clock in SAMPLE_STARTS:
        start = local_to_utc(SAMPLE_DAY, clock, SAMPLE_ZONE)
        end = start + timedelta(minutes=protocol.session_minutes)
        found.append(
            {
                "booking": start - timedelta(days=10),
                "start": start,
                "end": end,
                "next": start + timedelta(days=protocol.course.interval_days),
                "last": end,
            }
        )
    return found


def _meaning(protocol: Protocol, texts: Catalog) -> list[str]:
    """What a well-formed protocol could still tell patients wrongly: an "allowed again"
    before the restriction ends, a window that closes before it opens, pre-care after the
    session starts, aftercare before it ends, a restriction that ends before it begins."""
    problems: set[str] = set()
    for anchors in sample_anchors(protocol):

        def at(ref: TimeRef, anchors: dict[str, datetime] = anchors) -> datetime | None:
            return resolve(ref, anchors, SAMPLE_ZONE)

        for r in protocol.restrictions:
            since, until = at(r.since), at(r.until)
            if since is not None and until is not None and until <= since:
                problems.add(
                    f"restriction {r.key!r}: ends ({r.until}) before it begins ({r.since})"
                )
        for step in protocol.steps:
            when, expires = at(step.when), at(step.expires)
            if when is None or expires is None or not _exists(step, when, at):
                continue
            name = f"step {step.key!r}"
            if expires <= when:
                problems.add(f"{name}: expires ({step.expires}) is not after when ({step.when})")
            if step.phase == "before" and when > anchors["start"]:
                problems.add(
                    f"{name}: pre-care, but planned after the session starts ({step.when})"
                )
            if step.phase == "after" and when < anchors["end"]:
                problems.add(
                    f"{name}: aftercare, but planned before the session ends ({step.when})"
                )
            stated = _placeholders(texts.raw(step.text)) if step.text in texts else set()
            for key in step.ends:
                restriction = protocol.restriction(key)
                until = at(restriction.until)
                if until is not None and when < until and f"until_{key}" not in stated:
                    problems.add(
                        f"{name}: says {key!r} is allowed again, but is planned at {step.when},"
                        f" before it ends ({restriction.until})"
                    )
    return sorted(problems)


def _exists(step: Step, when: datetime, at: Callable[[TimeRef], datetime | None]) -> bool:
    """Whether the step is planned at all for this session (`only_if_between`)."""
    if step.only_if_between is None:
        return True
    first, second = (at(ref) for ref in step.only_if_between)
    return first is not None and second is not None and first <= when < second


def missing_translations(
    protocol: Protocol, catalogs: Iterable[Catalog] | None = None
) -> list[str]:
    """Texts a language lacks, which its patients would read in English: by default in every
    language the protocol enables, the clinic's own texts over the shipped ones."""
    hint = catalogs is None  # the protocol's own languages: say where the text goes
    if catalogs is None:
        catalogs = [protocol.catalog(lang) for lang in protocol.enabled_languages]
    problems = []
    for texts in catalogs:
        if texts.lang != DEFAULT_LANGUAGE:  # English is checked with the protocol itself
            own = set(texts)
            found = _text_problems(protocol, texts, own.__contains__)
            problems += [
                f"{p}: add it under [texts.{texts.lang}]" if hint and "no text" in p else p
                for p in found
            ]
    return problems


def warnings_of(protocol: Protocol) -> list[str]:
    """What a clinic may mean but probably does not: usable, yet worth a second look."""
    found = []
    quiet_start, quiet_end = DEFAULT_QUIET
    for step in protocol.steps:
        clock = step.when.at
        if clock is not None and (clock >= quiet_start or clock < quiet_end):
            found.append(
                f"step {step.key!r}: {clock:%H:%M} is inside the default quiet hours "
                f"({quiet_start:%H:%M}-{quiet_end:%H:%M}), so it will usually move"
            )
    return found


def load_protocol(path: Path, *, texts: Catalog | None = None) -> Protocol:
    """Read and validate a protocol file; ProtocolError lists everything that is wrong.

    `texts` is the catalog the text keys must exist in (English by default: every other
    language falls back to it).
    """
    name = path.name
    try:
        with path.open("rb") as f:
            data = tomli.load(f)
    except OSError as exc:
        raise ProtocolError(f"{name}: cannot read: {exc.strerror or exc}") from exc
    except tomli.TOMLDecodeError as exc:
        raise ProtocolError(f"{name}: not valid TOML: {exc}") from exc
    try:
        protocol = Protocol.model_validate(data)
    except ValidationError as exc:
        problems = [_describe_error(data, e) for e in exc.errors()]
        raise ProtocolError("\n".join(f"{name}: {p}" for p in problems)) from None
    english = texts if texts is not None else protocol.catalog(DEFAULT_LANGUAGE)
    problems = _check(protocol, english)
    if not problems:  # meaning needs a protocol whose references and keys hold
        problems = _meaning(protocol, english) + (
            missing_translations(protocol) if texts is None else []
        )
    if problems:
        raise ProtocolError("\n".join(f"{name}: {p}" for p in problems))
    return protocol
