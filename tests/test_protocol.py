"""The protocol file, time references and the catalogs."""

from __future__ import annotations

import re
from datetime import UTC, datetime, time
from html.parser import HTMLParser
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from messages.calendars import format_local
from messages.protocol import (
    Protocol,
    ProtocolError,
    TimeRef,
    default_protocol_path,
    load_protocol,
    resolve,
)
from messages.render import (
    LOCALES_DIR,
    Catalog,
    Html,
    Later,
    available_languages,
    catalog,
)
from tests.e2e import TIMELINE

LONDON = ZoneInfo("Europe/London")
NEW_YORK = ZoneInfo("America/New_York")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")
KOLKATA = ZoneInfo("Asia/Kolkata")


def at(text: str) -> datetime:
    """An ISO instant with its offset, in UTC."""
    return datetime.fromisoformat(text).astimezone(UTC)


@pytest.fixture(scope="module")
def protocol() -> Protocol:
    return load_protocol(default_protocol_path())


# --- time references ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("end", TimeRef("end")),
        ("end+24h", TimeRef("end", seconds=86400)),
        ("start-2h", TimeRef("start", seconds=-7200)),
        ("end+1d12h", TimeRef("end", days=1, seconds=43200)),
        ("end+30m", TimeRef("end", seconds=1800)),
        ("last+3mo@10:00", TimeRef("last", months=3, at=time(10))),
        ("start-3d@10:00", TimeRef("start", days=-3, at=time(10))),
        ("end+0d@20:00", TimeRef("end", at=time(20))),
        ("next@09:30", TimeRef("next", at=time(9, 30))),
    ],
)
def test_parse_ref(text: str, expected: TimeRef) -> None:
    ref = TimeRef.parse(text)
    assert ref == expected
    assert str(ref) == text


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("strat", "unknown anchor 'strat'"),
        ("end+2x", "bad duration '2x'"),
        ("end+", "cannot read"),
        ("end+h", "bad duration 'h'"),
        ("end+2h3d", "bad duration '2h3d'"),
        ("end@25:00", "bad time of day '25:00'"),
        ("end@9:00", "bad time of day '9:00'"),
        ("end+2h@20:00", "use days or months"),
        ("end + 2h", "cannot read"),
    ],
)
def test_parse_ref_errors(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=re.escape(error)):
        TimeRef.parse(text)


@pytest.mark.parametrize(
    ("ref", "anchor", "tz", "expected"),
    [
        # Offsets are real elapsed time, also across DST changes.
        ("end+24h", "2026-03-28T15:15+00:00", LONDON, "2026-03-29T16:15+01:00"),
        ("end+24h", "2026-10-24T15:15+01:00", LONDON, "2026-10-25T14:15+00:00"),
        ("end+1d", "2026-03-07T15:15-05:00", NEW_YORK, "2026-03-08T16:15-04:00"),
        ("end+7d", "2026-10-31T15:15-04:00", NEW_YORK, "2026-11-07T14:15-05:00"),
        ("start-2h", "2026-12-03T14:30+00:00", LONDON, "2026-12-03T12:30+00:00"),
        ("end+1d12h30m", "2026-12-03T15:15+00:00", LONDON, "2026-12-05T03:45+00:00"),
        # @HH:MM is the wall clock on the local date, DST or not.
        ("start-3d@10:00", "2026-03-30T14:30+01:00", LONDON, "2026-03-27T10:00+00:00"),
        ("start-1d@18:00", "2026-03-30T14:30+01:00", LONDON, "2026-03-29T18:00+01:00"),
        ("end+3d@10:00", "2026-10-24T15:15+01:00", LONDON, "2026-10-27T10:00+00:00"),
        ("end+3d@10:00", "2026-03-07T15:15-05:00", NEW_YORK, "2026-03-10T10:00-04:00"),
        ("end+3d@10:00", "2026-10-31T15:15-04:00", NEW_YORK, "2026-11-03T10:00-05:00"),
        ("end+0d@20:00", "2026-12-03T15:15+00:00", LONDON, "2026-12-03T20:00+00:00"),
        # The local date, not the UTC date: 01:00 in Kolkata is the previous day in UTC.
        ("end+0d@20:00", "2026-12-03T01:00+05:30", KOLKATA, "2026-12-03T20:00+05:30"),
        # A time in the spring-forward gap resolves forward; an ambiguous one is the first.
        ("start@01:30", "2026-03-29T12:00+01:00", LONDON, "2026-03-29T02:30+01:00"),
        ("start@02:30", "2026-03-08T12:00-04:00", NEW_YORK, "2026-03-08T03:30-04:00"),
        ("start@01:30", "2026-10-25T12:00+00:00", LONDON, "2026-10-25T01:30+01:00"),
        ("start@01:30", "2026-11-01T12:00-05:00", NEW_YORK, "2026-11-01T01:30-04:00"),
        ("start@02:15", "2026-10-04T12:00+11:00", LORD_HOWE, "2026-10-04T02:45+11:00"),
        ("start@01:45", "2026-04-05T12:00+10:30", LORD_HOWE, "2026-04-05T01:45+11:00"),
        # Calendar months, clamped to the month's end, at the same wall time.
        ("last+3mo@10:00", "2026-11-30T15:15+00:00", LONDON, "2027-02-28T10:00+00:00"),
        ("last+4mo@10:00", "2026-12-03T15:15+00:00", LONDON, "2027-04-03T10:00+01:00"),
        ("last+1mo", "2028-01-31T15:15+00:00", LONDON, "2028-02-29T15:15+00:00"),
        ("last+3mo", "2026-01-10T15:15+00:00", LONDON, "2026-04-10T15:15+01:00"),
        ("last-1mo", "2026-03-31T09:00+01:00", LONDON, "2026-02-28T09:00+00:00"),
        ("last+12mo", "2026-12-03T15:15+00:00", LONDON, "2027-12-03T15:15+00:00"),
    ],
)
def test_resolve(ref: str, anchor: str, tz: ZoneInfo, expected: str) -> None:
    name = TimeRef.parse(ref).anchor
    result = resolve(ref, {name: datetime.fromisoformat(anchor)}, tz)
    assert result == at(expected)
    assert result is not None
    assert result.tzinfo is UTC


def test_resolve_absent_anchor_is_none() -> None:
    assert resolve("next-2d@10:00", {"start": at("2026-12-03T14:30+00:00")}, LONDON) is None


def test_resolve_refuses_naive() -> None:
    naive = datetime.fromisoformat("2026-12-03T14:30")
    with pytest.raises(ValueError, match="aware"):
        resolve("start", {"start": naive}, LONDON)


# --- the shipped protocol -------------------------------------------------------------------


def test_default_protocol_has_the_spec_timeline(protocol: Protocol) -> None:
    assert [s.key for s in protocol.steps] == [
        *TIMELINE,
        "course-next",
        "maintenance-3mo",
        "maintenance-4mo",
    ]
    assert {s.key: str(s.when) for s in protocol.steps} == {
        "booked": "booking",
        "prep-3d": "start-3d@10:00",
        "prep-1d": "start-1d@18:00",
        "prep-2h": "start-2h",
        "after-0": "end",
        "after-evening": "end+0d@20:00",
        "after-24h": "end+24h",
        "after-3d": "end+3d@10:00",
        "after-7d": "end+7d",
        "course-next": "next-2d@10:00",
        "maintenance-3mo": "last+3mo@10:00",
        "maintenance-4mo": "last+4mo@10:00",
    }
    step = protocol.step
    assert step("booked").quiet == "ignore"
    assert step("prep-3d").fold_into == "booked"
    assert str(step("prep-2h").expires) == "start"
    assert step("after-24h").buttons == step("after-3d").buttons == "checkin"
    # "Don't wash tonight" is worthless the next day.
    assert str(step("after-evening").expires) == "end+1d@00:00"


def test_default_protocol_data(protocol: Protocol) -> None:
    assert protocol.session_minutes == 45
    until = {r.key: str(r.until) for r in protocol.restrictions}
    assert until == {
        "aspirin": "start",
        "omega3": "start",
        "alcohol_before": "start",
        "wash": "end+24h",
        "workout": "end+1d",
        "heat_sun": "end+7d",
        "alcohol": "end+3d",
    }
    assert {str(r.since) for r in protocol.restrictions if r.phase == "before"} == {
        "start-3d@00:00"
    }
    assert {c.key: c.red_flag for c in protocol.checkin} == {
        "all_good": "never",
        "itching_redness": "never",
        "swelling_bruising": "after_day_3",
        "pain": "after_day_3",
        "nausea": "never",
        "urgent": "always",
        "other": "never",
    }
    assert protocol.checkin_option("other").describe
    assert [q.key for q in protocol.screening] == [
        "pregnant_or_breastfeeding",
        "menstruating_on_session_date",
        "endocrine_disorder",
        "tumour_history",
    ]
    assert protocol.course.interval_days == 14
    assert {p.key: p.sessions for p in protocol.course.plans} == {
        "mild": (1, 2),
        "noticeable": (4, 10),
    }
    assert protocol.course.maintenance_months == (3, 4)


def test_protocol_is_frozen(protocol: Protocol) -> None:
    with pytest.raises(ValueError, match="frozen"):
        protocol.steps[0].key = "other"


def test_red_flag_after_day_3(protocol: Protocol) -> None:
    end = at("2026-12-03T15:15+00:00")
    pain = protocol.checkin_option("pain")
    assert not pain.is_red_flag(end, at("2026-12-06T23:00+00:00"), LONDON)  # day 3
    assert pain.is_red_flag(end, at("2026-12-07T08:00+00:00"), LONDON)  # day 4
    assert protocol.checkin_option("urgent").is_red_flag(end, end, LONDON)
    assert not protocol.checkin_option("all_good").is_red_flag(end, end, LONDON)


def test_spec_instructions_are_all_in_the_texts(protocol: Protocol) -> None:
    """Every instruction of SPEC's protocol section reaches the patient in some text."""
    en = catalog("en")
    text = " ".join(en.raw(key) for _, _, key in protocol.text_keys()).lower()
    text += " " + en.raw("safety.red_flag").lower() + " " + en.raw("screening.flagged").lower()
    for phrase in [
        "aspirin",
        "omega-3",
        "alcohol",
        "tell the doctor about any medications or supplements",
        "wash your hair before your visit",
        "pregnant or breastfeeding",
        "period on the session date",
        "endocrine",
        "tumour",
        "physician",
        "don't wash or wet your hair",
        "washing or wetting your hair",
        "heavy workouts and sweating",
        "pools, saunas and direct sunlight",
        "itching or redness",
        "swelling or bruising",
        "slight pain",
        "nausea",
        "gets worse after day 3",
        "spreading redness",
        "warmth",
        "pus",
        "fever",
        "hives",
        "contact the clinic",
        "difficulty breathing, call emergency services",
    ]:
        assert phrase in text, phrase


# --- broken protocols -----------------------------------------------------------------------


def _broken(tmp_path: Path, old: str, new: str) -> Path:
    source = default_protocol_path().read_text(encoding="utf-8")
    assert old in source
    path = tmp_path / "mesotherapy.toml"
    path.write_text(source.replace(old, new, 1), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("old", "new", "error"),
    [
        (
            'when = "start-1d@18:00"',
            'when = "strat-1d@18:00"',
            "mesotherapy.toml: step 'prep-1d': when: unknown anchor 'strat'",
        ),
        (
            'key = "after-7d"',
            'key = "after-3d"',
            "mesotherapy.toml: step 'after-3d': duplicate key",
        ),
        (
            'key = "prep-2h"',
            'key = "prep-2h"\ntext = "step.nope"',
            "mesotherapy.toml: step 'prep-2h': text: no text 'step.nope' in the en catalog",
        ),
        (
            'key = "after-7d"',
            'key = "after-7d-extra"',
            "mesotherapy.toml: step 'after-7d-extra': text: no text 'step.after-7d-extra'",
        ),
        (
            'expires = "end+2d"',
            'expires = "end+2x"',
            "mesotherapy.toml: step 'after-24h': expires: bad duration '2x'",
        ),
        (
            'only_if_between = ["end+2h", "end+22h"]',
            'only_if_between = ["end+2h", "end+22hours"]',
            "mesotherapy.toml: step 'after-evening': only_if_between.1: bad duration '22hours'",
        ),
        (
            'fold_into = "booked"',
            'fold_into = "after-0"',
            "mesotherapy.toml: step 'prep-3d': fold_into: no earlier step 'after-0'",
        ),
        (
            'when = "end+7d"',
            'whn = "end+7d"',
            "mesotherapy.toml: step 'after-7d': when: Field required",
        ),
        (
            'key = "urgent"\nred_flag = "always"',
            'key = "urgent"\nred_flag = "sometimes"',
            "mesotherapy.toml: checkin 'urgent': red_flag: Input should be",
        ),
        (
            'key = "wash"',
            'key = "wash"\nkey2 = 1',
            "mesotherapy.toml: restriction 'wash': key2: Extra inputs are not permitted",
        ),
        (
            "session_minutes = 45",
            "session_minutes = 0",
            "mesotherapy.toml: session_minutes: Input should be greater than or equal to 1",
        ),
        ("session_minutes = 45", "session_minutes = = 45", "mesotherapy.toml: not valid TOML"),
    ],
)
def test_broken_protocol(tmp_path: Path, old: str, new: str, error: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        load_protocol(_broken(tmp_path, old, new))
    assert error in str(caught.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ProtocolError, match=r"nowhere\.toml: cannot read"):
        load_protocol(tmp_path / "nowhere.toml")


def test_unknown_placeholder_in_a_step_text() -> None:
    en = catalog("en")
    texts = {key: en.raw(key) for key in en}
    texts["step.after-7d"] = "Fine again from {until_sauna}."
    with pytest.raises(ProtocolError, match=r"step 'after-7d': text: .* \{until_sauna\}"):
        load_protocol(default_protocol_path(), texts=Catalog("en", texts))


# --- catalogs and rendering -----------------------------------------------------------------


def test_text_escapes_parameters_but_not_html_fragments() -> None:
    texts = Catalog("en", {"greet": "<b>Hello {name}</b> {extra} {n:d}"})
    result = texts.text("greet", name="<Ann & Bob>", extra=Html("<i>hi</i>"), n=3)
    assert result == "<b>Hello &lt;Ann &amp; Bob&gt;</b> <i>hi</i> 3"
    assert isinstance(result, Html)  # so it can be nested into another text as it is


def test_a_later_parameter_is_worked_out_only_for_a_text_that_states_it() -> None:
    worked: list[str] = []

    def clock(value: str) -> str:
        worked.append(value)
        return value

    texts = Catalog("en", {"plain": "Fine again.", "timed": "From {start} to {start}, {end}"})
    params = {"start": Later(clock, "<9:00>"), "end": Later(clock, "10:00")}
    assert texts.text("plain", **params) == "Fine again."
    assert worked == []
    assert texts.text("timed", **params) == "From &lt;9:00&gt; to &lt;9:00&gt;, 10:00"
    assert worked == ["<9:00>", "10:00"]  # escaped as any parameter, each worked out once
    with pytest.raises(KeyError, match="'start'"):
        texts.text("timed", end="10:00")


def test_missing_key_falls_back_to_english_then_fails() -> None:
    english = Catalog("en", {"a": "A", "b": "B"})
    persian = Catalog("fa", {"a": "الف"}, fallback=english)
    assert persian.text("a") == "الف"
    assert persian.text("b") == "B"
    assert "b" in persian
    with pytest.raises(KeyError, match="'c'"):
        persian.text("c")


def test_unknown_language_is_english() -> None:
    assert catalog("xx").lang == "en"
    assert catalog("../en").lang == "en"
    assert available_languages()[0] == "en"


def test_every_language_has_every_english_key() -> None:
    english = set(catalog("en"))
    for path in (p for p in LOCALES_DIR.iterdir() if p.is_dir()):
        missing = english - set(Catalog.load(path))
        assert not missing, f"{path.name} lacks {sorted(missing)}"


@pytest.mark.parametrize("lang", available_languages())
def test_every_language_fits_the_protocol(lang: str) -> None:
    """Every text key exists and uses only placeholders that the renderer passes."""
    texts = Catalog.load(LOCALES_DIR / lang)
    load_protocol(default_protocol_path(), texts=texts)


class _TagCheck(HTMLParser):
    ALLOWED = frozenset({"b", "i", "u", "s", "code", "a"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.open: list[str] = []
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in self.ALLOWED or (tag == "a") != bool(attrs):
            self.problems.append(f"<{tag}>")
        self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.open or self.open.pop() != tag:
            self.problems.append(f"</{tag}>")


@pytest.mark.parametrize("lang", available_languages())
def test_texts_are_telegram_html(lang: str) -> None:
    texts = Catalog.load(LOCALES_DIR / lang)
    for key in texts:
        raw = texts.raw(key)
        check = _TagCheck()
        check.feed(raw)
        check.close()
        assert not check.problems, (key, check.problems)
        assert not check.open, (key, check.open)
        stray = re.search(r"&(?!(amp|lt|gt|quot);)|<(?![/a-z])", raw)
        assert stray is None, (key, raw)


def test_step_texts_render(protocol: Protocol) -> None:
    """Every step text formats with the parameters the renderer passes."""
    params: dict[str, object] = dict.fromkeys(protocol.step_params, "x")
    for step in protocol.steps:
        assert catalog("en").text(step.text, **params)


def test_format_local() -> None:
    instant = at("2026-12-03T14:30+00:00")
    assert format_local(instant, LONDON, "en") == "Thu 3 Dec, 14:30"
    assert format_local(instant, LONDON, "en", "time") == "14:30"
    assert format_local(instant, NEW_YORK, "en", "datetime") == "Thu 3 Dec, 09:30"
    assert format_local(instant, KOLKATA, "en", "date") == "Thu 3 Dec"
    with pytest.raises(ValueError, match="aware"):
        format_local(datetime.fromisoformat("2026-12-03T14:30"), LONDON, "en")
