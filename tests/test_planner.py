"""The pure planner: tables of sessions and times, and properties over random ones."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from messages.protocol import Protocol, default_protocol_path, load_protocol, resolve
from scheduler.planner import (
    PlannedStep,
    Prefs,
    SessionTimes,
    apply_quiet_hours,
    in_quiet_hours,
    plan,
)

PROTOCOL = load_protocol(default_protocol_path())
LONDON = ZoneInfo("Europe/London")
NEW_YORK = ZoneInfo("America/New_York")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")
ZONES = [
    ZoneInfo(name)
    for name in (
        "Europe/London",
        "America/New_York",
        "Asia/Kolkata",
        "Asia/Tehran",
        "Australia/Lord_Howe",
    )
]


def at(text: str) -> datetime:
    """An ISO instant with its offset, in UTC."""
    return datetime.fromisoformat(text).astimezone(UTC)


def local(text: str, tz: ZoneInfo) -> datetime:
    """A wall-clock time in `tz` (first occurrence), in UTC."""
    return datetime.fromisoformat(text).replace(tzinfo=tz).astimezone(UTC)


def session(start: str, tz: ZoneInfo, **extra: datetime | None) -> SessionTimes:
    begin = local(start, tz)
    return SessionTimes(begin, begin + timedelta(minutes=PROTOCOL.session_minutes), **extra)


def walls(steps: list[PlannedStep], tz: ZoneInfo) -> dict[str, str]:
    """Pending steps as local wall-clock times, for readable expectations."""
    return {
        s.key: s.due_at.astimezone(tz).strftime("%Y-%m-%d %H:%M")
        for s in steps
        if s.state == "pending"
    }


def states(steps: list[PlannedStep]) -> dict[str, str]:
    return {s.key: s.state for s in steps}


def by_key(steps: list[PlannedStep]) -> dict[str, PlannedStep]:
    return {s.key: s for s in steps}


# --- the SPEC's example and its variations -----------------------------------------------


def test_a_booking_confirmed_at_night_waits_for_the_morning_unless_the_patient_is_there() -> None:
    """Booked in the chat at 02:00, the confirmation answers the patient at once; planned at
    02:00 by an import (the patient is not in the chat), it waits for the end of the night
    like every other step."""
    now = local("2026-11-25 02:00", LONDON)
    booked = session("2026-12-03 14:30", LONDON)
    in_chat = plan(booked, PROTOCOL, Prefs(LONDON), now)
    imported = plan(booked, PROTOCOL, Prefs(LONDON), now, in_chat=False)
    assert walls(in_chat, LONDON)["booked"] == "2026-11-25 02:00"
    assert walls(imported, LONDON)["booked"] == "2026-11-25 08:00"
    assert {k: v for k, v in walls(imported, LONDON).items() if k != "booked"} == {
        k: v for k, v in walls(in_chat, LONDON).items() if k != "booked"
    }


def test_plan_booked_a_week_ahead() -> None:
    now = local("2026-11-25 11:02", LONDON)
    steps = plan(session("2026-12-03 14:30", LONDON), PROTOCOL, Prefs(LONDON), now)
    assert walls(steps, LONDON) == {
        "booked": "2026-11-25 11:02",
        "prep-3d": "2026-11-30 10:00",
        "prep-1d": "2026-12-02 18:00",
        "prep-2h": "2026-12-03 12:30",
        "after-0": "2026-12-03 15:15",
        "after-evening": "2026-12-03 20:00",
        "after-24h": "2026-12-04 15:15",
        "after-3d": "2026-12-06 10:00",
        "after-7d": "2026-12-10 15:15",
    }
    assert [s.seq for s in steps] == list(range(9))
    assert all(s.state == "pending" and not s.folded for s in steps)
    got = by_key(steps)
    assert got["after-24h"].buttons == "checkin"
    assert got["after-3d"].buttons == "checkin"
    assert got["after-0"].buttons is None
    # The windows are what the dispatcher stores.
    assert got["prep-2h"].not_before == local("2026-12-03 02:30", LONDON)
    assert got["prep-2h"].expires_at == local("2026-12-03 14:30", LONDON)
    assert got["after-evening"].expires_at == local("2026-12-04 00:00", LONDON)
    assert got["booked"].not_before == now
    assert all(s.due_at.tzinfo is UTC for s in steps)


def test_plan_course_and_maintenance() -> None:
    start = local("2026-12-03 14:30", LONDON)
    times = session(
        "2026-12-03 14:30",
        LONDON,
        next_due=start + timedelta(days=14),
        last_end=start + timedelta(minutes=45),
    )
    steps = plan(times, PROTOCOL, Prefs(LONDON), local("2026-11-25 11:00", LONDON))
    assert walls(steps, LONDON)["course-next"] == "2026-12-15 10:00"
    assert walls(steps, LONDON)["maintenance-3mo"] == "2027-03-03 10:00"
    assert walls(steps, LONDON)["maintenance-4mo"] == "2027-04-03 10:00"  # BST by then
    assert [s.key for s in steps][-3:] == ["course-next", "maintenance-3mo", "maintenance-4mo"]


@pytest.mark.parametrize(
    ("booked_at", "folded", "first_pending_after_booked"),
    [
        ("2026-11-30 09:59", (), "prep-3d"),
        ("2026-11-30 10:01", ("prep-3d",), "prep-1d"),
        ("2026-12-02 18:01", ("prep-3d", "prep-1d"), "prep-2h"),
        ("2026-12-03 13:00", ("prep-3d", "prep-1d", "prep-2h"), "after-0"),
    ],
)
def test_booking_late_folds_past_prep_steps_into_booked(
    booked_at: str, folded: tuple[str, ...], first_pending_after_booked: str
) -> None:
    now = local(booked_at, LONDON)
    steps = plan(session("2026-12-03 14:30", LONDON), PROTOCOL, Prefs(LONDON), now)
    assert steps[0].key == "booked"
    assert steps[0].due_at == now
    assert steps[0].folded == folded
    assert steps[1].key == first_pending_after_booked
    assert not set(folded) & {s.key for s in steps}


@pytest.mark.parametrize(
    ("start", "prep_2h"),
    [
        ("2026-12-03 10:30", "2026-12-03 08:30"),
        ("2026-12-03 09:00", "2026-12-03 08:00"),  # 07:00 is quiet: to the end of the night
        ("2026-12-03 08:00", "2026-12-02 21:59"),  # the night outlasts it: before the night
        ("2026-12-03 07:00", "2026-12-02 21:59"),
    ],
)
def test_early_morning_session_shifts_prep_2h(start: str, prep_2h: str) -> None:
    now = local("2026-11-25 11:00", LONDON)
    steps = plan(session(start, LONDON), PROTOCOL, Prefs(LONDON), now)
    assert walls(steps, LONDON)["prep-2h"] == prep_2h
    assert walls(steps, LONDON)["prep-1d"] == "2026-12-02 18:00"


def test_prep_2h_stays_in_the_night_when_its_window_leaves_no_choice() -> None:
    # The window [start-12h, start) = [19:00, 07:00) lies entirely in an 18:00-09:00 night.
    prefs = Prefs(LONDON, quiet_start=time(18), quiet_end=time(9))
    now = local("2026-11-25 11:00", LONDON)
    steps = plan(session("2026-12-03 07:00", LONDON), PROTOCOL, prefs, now)
    assert walls(steps, LONDON)["prep-2h"] == "2026-12-03 05:00"
    # prep-1d (18:00) may come from 12:00, so it goes just before the night.
    assert walls(steps, LONDON)["prep-1d"] == "2026-12-02 17:59"


def test_late_session_after_0_waits_for_the_morning() -> None:
    now = local("2026-11-25 11:00", LONDON)
    steps = plan(session("2026-12-03 21:45", LONDON), PROTOCOL, Prefs(LONDON), now)
    got = walls(steps, LONDON)
    assert got["after-0"] == "2026-12-04 08:00"
    assert "after-evening" not in got  # 20:00 is before the session ended
    assert got["after-24h"] == "2026-12-05 08:00"  # 22:30 is quiet too
    assert got["after-3d"] == "2026-12-06 10:00"


def test_no_quiet_hours() -> None:
    prefs = Prefs(LONDON, quiet_start=time(0), quiet_end=time(0))
    now = local("2026-11-25 11:00", LONDON)
    steps = plan(session("2026-12-03 21:45", LONDON), PROTOCOL, prefs, now)
    assert walls(steps, LONDON)["after-0"] == "2026-12-03 22:30"


@pytest.mark.parametrize(
    ("start", "planned"),
    [
        ("2026-12-03 16:00", True),  # ends 16:45: 20:00 is 3 h 15 min later
        ("2026-12-03 00:30", True),  # ends 01:15 (a night session): 20:00 is 18 h 45 min later
        ("2026-12-03 17:30", False),  # ends 18:15: right after the checklist, too close
        ("2026-12-03 19:30", False),  # ends 20:15: that evening has passed
    ],
)
def test_after_evening_only_between_2h_and_22h_after_the_end(start: str, planned: bool) -> None:
    now = local("2026-11-25 11:00", LONDON)
    steps = plan(session(start, LONDON), PROTOCOL, Prefs(LONDON), now)
    assert ("after-evening" in walls(steps, LONDON)) is planned


def test_session_recorded_after_the_fact_starts_aftercare_now() -> None:
    now = local("2026-12-03 18:00", LONDON)  # "I had it today at 14:30"
    steps = plan(session("2026-12-03 14:30", LONDON), PROTOCOL, Prefs(LONDON), now)
    assert states(steps) == {
        "booked": "expired",
        "prep-3d": "expired",
        "prep-1d": "expired",
        "prep-2h": "expired",
        "after-0": "pending",
        "after-evening": "pending",
        "after-24h": "pending",
        "after-3d": "pending",
        "after-7d": "pending",
    }
    assert walls(steps, LONDON)["after-0"] == "2026-12-03 18:00"
    assert walls(steps, LONDON)["after-evening"] == "2026-12-03 20:00"
    assert all(s.due_at >= now for s in steps if s.state == "pending")


def test_session_recorded_days_later() -> None:
    now = local("2026-12-06 03:15", LONDON)
    steps = plan(session("2026-12-03 14:30", LONDON), PROTOCOL, Prefs(LONDON), now)
    assert [s.key for s in steps if s.state == "pending"] == ["after-3d", "after-7d"]
    assert walls(steps, LONDON)["after-3d"] == "2026-12-06 10:00"
    expired = by_key(steps)["after-24h"]
    assert expired.expires_at == local("2026-12-05 15:15", LONDON)


def test_a_past_step_still_valid_is_due_now_out_of_quiet_hours() -> None:
    now = local("2026-12-03 23:00", LONDON)  # recorded late in the evening
    steps = plan(session("2026-12-03 19:00", LONDON), PROTOCOL, Prefs(LONDON), now)
    assert walls(steps, LONDON)["after-0"] == "2026-12-04 08:00"


def test_booking_in_the_night_is_answered_at_once() -> None:
    now = local("2026-11-25 23:30", LONDON)
    steps = plan(session("2026-12-03 14:30", LONDON), PROTOCOL, Prefs(LONDON), now)
    assert steps[0].key == "booked"
    assert steps[0].due_at == now


# --- DST weekends -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tz", "start", "expected"),
    [
        # London springs forward on Sun 29 Mar 2026: local steps keep their wall clock...
        (LONDON, "2026-03-30 14:30", {"prep-3d": "2026-03-27T10:00+00:00"}),
        (LONDON, "2026-03-30 14:30", {"prep-1d": "2026-03-29T18:00+01:00"}),
        # ...offset steps are real time: 24 h after 15:15 GMT is 16:15 BST.
        (LONDON, "2026-03-28 14:30", {"after-24h": "2026-03-29T16:15+01:00"}),
        (LONDON, "2026-03-28 14:30", {"after-evening": "2026-03-28T20:00+00:00"}),
        (LONDON, "2026-03-28 14:30", {"after-3d": "2026-03-31T10:00+01:00"}),
        (LONDON, "2026-03-28 14:30", {"after-7d": "2026-04-04T16:15+01:00"}),
        # London falls back on Sun 25 Oct 2026.
        (LONDON, "2026-10-24 14:30", {"after-24h": "2026-10-25T14:15+00:00"}),
        (LONDON, "2026-10-24 14:30", {"after-3d": "2026-10-27T10:00+00:00"}),
        (LONDON, "2026-10-26 14:30", {"prep-1d": "2026-10-25T18:00+00:00"}),
        (LONDON, "2026-10-26 14:30", {"prep-3d": "2026-10-23T10:00+01:00"}),
        # New York springs forward on Sun 8 Mar 2026 and falls back on Sun 1 Nov 2026.
        (NEW_YORK, "2026-03-07 14:30", {"after-24h": "2026-03-08T16:15-04:00"}),
        (NEW_YORK, "2026-03-07 14:30", {"after-3d": "2026-03-10T10:00-04:00"}),
        (NEW_YORK, "2026-03-09 14:30", {"prep-1d": "2026-03-08T18:00-04:00"}),
        (NEW_YORK, "2026-03-09 14:30", {"prep-3d": "2026-03-06T10:00-05:00"}),
        (NEW_YORK, "2026-10-31 14:30", {"after-24h": "2026-11-01T14:15-05:00"}),
        (NEW_YORK, "2026-10-31 14:30", {"after-3d": "2026-11-03T10:00-05:00"}),
        (NEW_YORK, "2026-11-02 14:30", {"prep-1d": "2026-11-01T18:00-05:00"}),
        (NEW_YORK, "2026-11-02 08:00", {"prep-2h": "2026-11-01T21:59-05:00"}),
    ],
)
def test_dst_weekends(tz: ZoneInfo, start: str, expected: dict[str, str]) -> None:
    now = local("2026-01-02 12:00", tz) if start < "2026-06" else local("2026-07-01 12:00", tz)
    steps = by_key(plan(session(start, tz), PROTOCOL, Prefs(tz), now))
    for key, when in expected.items():
        assert steps[key].state == "pending"
        assert steps[key].due_at == at(when), key


def test_after_24h_is_exactly_24_hours_across_dst() -> None:
    for tz, start in [
        (LONDON, "2026-03-28 14:30"),
        (LONDON, "2026-10-24 14:30"),
        (NEW_YORK, "2026-03-07 14:30"),
        (NEW_YORK, "2026-10-31 14:30"),
        (LORD_HOWE, "2026-10-03 14:30"),
        (LORD_HOWE, "2026-04-04 14:30"),
    ]:
        times = session(start, tz)
        steps = by_key(plan(times, PROTOCOL, Prefs(tz), times.start - timedelta(days=30)))
        assert steps["after-24h"].due_at - times.end == timedelta(hours=24)
        assert steps["after-3d"].due_at.astimezone(tz).time() == time(10)


# --- quiet hours ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quiet", "instant", "expected"),
    [
        ((time(22), time(8)), "2026-12-03 21:59", False),
        ((time(22), time(8)), "2026-12-03 22:00", True),
        ((time(22), time(8)), "2026-12-04 07:59", True),
        ((time(22), time(8)), "2026-12-04 08:00", False),
        ((time(1), time(6)), "2026-12-04 00:30", False),
        ((time(1), time(6)), "2026-12-04 05:30", True),
        ((time(8), time(8)), "2026-12-04 03:00", False),
    ],
)
def test_in_quiet_hours(quiet: tuple[time, time], instant: str, expected: bool) -> None:
    prefs = Prefs(LONDON, *quiet)
    assert in_quiet_hours(local(instant, LONDON), prefs) is expected


@pytest.mark.parametrize(
    ("tz", "quiet", "due", "lo", "hi", "expected"),
    [
        # To the end of the night if still valid then...
        (LONDON, (22, 8), "12-03 23:00", "12-03 20:00", "12-05 00:00", "12-04 08:00"),
        # ...else to one minute before it began...
        (LONDON, (22, 8), "12-03 23:00", "12-03 20:00", "12-04 08:00", "12-03 21:59"),
        # ...or to lo, if lo is in that last minute...
        (LONDON, (22, 8), "12-03 23:00", "12-03 21:59:30", "12-04 08:00", "12-03 21:59:30"),
        # ...else it stays.
        (LONDON, (22, 8), "12-03 23:00", "12-03 22:30", "12-04 07:00", "12-03 23:00"),
        (LONDON, (22, 8), "12-03 21:00", "12-03 20:00", "12-04 07:00", "12-03 21:00"),
        # New York's 02:30 does not exist on 8 Mar 2026: the night ends at the jump, 03:00 EDT.
        (NEW_YORK, (22, 2.5), "03-08 01:00", "03-07 20:00", "03-09 00:00", "03-08 03:00"),
        # New York's 01:00-02:00 happens twice on 1 Nov 2026: a 22:00-01:30 night ends at
        # 01:30 EDT, and its second 01:00-01:30 (EST) is a second, short night.
        (NEW_YORK, (22, 1.5), "11-01 00:10", "10-31 20:00", "11-02 00:00", "11-01 01:30"),
        # Lord Howe jumps from 02:00 to 02:30 on 4 Oct 2026: a night to 02:15 ends at 02:30.
        (LORD_HOWE, (22, 2.25), "10-04 01:00", "10-03 20:00", "10-05 00:00", "10-04 02:30"),
    ],
)
def test_apply_quiet_hours(
    tz: ZoneInfo,
    quiet: tuple[float, float],
    due: str,
    lo: str,
    hi: str,
    expected: str,
) -> None:
    qs, qe = (time(int(h), round(h % 1 * 60)) for h in quiet)
    due_at, lo_at, hi_at = (local(f"2026-{t}", tz) for t in (due, lo, hi))
    result = apply_quiet_hours(due_at, lo_at, hi_at, Prefs(tz, qs, qe))
    assert result == local(f"2026-{expected}", tz)


def test_apply_quiet_hours_second_night_at_fall_back() -> None:
    prefs = Prefs(NEW_YORK, time(22), time(1, 30))
    due = at("2026-11-01T01:10-05:00")  # the second 01:10, in EST: quiet again
    assert in_quiet_hours(due, prefs)
    assert not in_quiet_hours(at("2026-11-01T01:59-04:00"), prefs)
    assert apply_quiet_hours(due, due, due + timedelta(hours=3), prefs) == at(
        "2026-11-01T01:30-05:00"
    )
    # Its night began at the jump back (06:00 UTC); a minute before that is 01:59 EDT.
    assert apply_quiet_hours(due, due - timedelta(hours=2), due + timedelta(minutes=5), prefs) == (
        at("2026-11-01T01:59-04:00")
    )


def test_apply_quiet_hours_night_entered_by_the_clock_jumping_back() -> None:
    # A 01:00-00:59 night: 00:59 BST is day, then night from 01:00 BST; at 02:00 BST the
    # clock jumps back onto 01:00 GMT, still the same night (found by hypothesis).
    prefs = Prefs(LONDON, time(1), time(0, 59))
    due = at("2026-10-25T01:00+00:00")
    lo = at("2026-10-25T00:58:59+01:00")
    result = apply_quiet_hours(due, lo, due + timedelta(seconds=1), prefs)
    assert result == at("2026-10-25T00:59+01:00")


def test_apply_quiet_hours_rejects_a_due_outside_its_window() -> None:
    now = at("2026-12-03T12:00+00:00")
    with pytest.raises(ValueError, match="outside its window"):
        apply_quiet_hours(now, now + timedelta(hours=1), now + timedelta(hours=2), Prefs(LONDON))


def test_naive_input_is_refused() -> None:
    naive = datetime.fromisoformat("2026-12-03T14:30")
    aware = at("2026-12-03T14:30+00:00")
    with pytest.raises(ValueError, match="aware"):
        plan(SessionTimes(aware, aware), PROTOCOL, Prefs(LONDON), naive)
    with pytest.raises(ValueError, match="aware"):
        SessionTimes(naive, aware)
    with pytest.raises(ValueError, match="aware"):
        in_quiet_hours(naive, Prefs(LONDON))


def test_ordering_never_lets_a_step_overtake_the_one_before() -> None:
    # An 8-day course interval puts course-next (start+6d, 10:00) before after-7d: it waits.
    start = local("2026-12-03 14:30", LONDON)
    times = session("2026-12-03 14:30", LONDON, next_due=start + timedelta(days=8))
    steps = by_key(plan(times, PROTOCOL, Prefs(LONDON), start - timedelta(days=10)))
    assert steps["course-next"].state == "pending"
    assert steps["course-next"].due_at == steps["after-7d"].due_at
    # With 7 days, after-7d comes after the next session is due: course-next cannot wait.
    times = session("2026-12-03 14:30", LONDON, next_due=start + timedelta(days=7))
    steps = by_key(plan(times, PROTOCOL, Prefs(LONDON), start - timedelta(days=10)))
    assert steps["course-next"].state == "expired"


# --- properties -----------------------------------------------------------------------------


def ref_quiet(instant: datetime, prefs: Prefs) -> bool:
    """Quiet hours by definition: the patient's clock shows a time in [start, end)."""
    clock = instant.astimezone(prefs.tz).time()
    qs, qe = prefs.quiet_start, prefs.quiet_end
    if qs == qe:
        return False
    return qs <= clock < qe if qs < qe else (clock >= qs or clock < qe)


def window_all_quiet(lo: datetime, hi: datetime, prefs: Prefs) -> bool:
    """Whether every instant of [lo, hi) is quiet.

    Quietness can only change on whole minutes (quiet hours are whole minutes, and these
    zones' offsets and transitions too), so lo and every whole minute after it decide.
    """
    if ref_quiet(lo, prefs) is False:
        return False
    minute = lo.replace(second=0, microsecond=0) + timedelta(minutes=1)
    while minute < hi:
        if not ref_quiet(minute, prefs):
            return False
        minute += timedelta(minutes=1)
    return True


clock_times = st.builds(time, st.integers(0, 23), st.sampled_from([0, 1, 15, 30, 45, 59]))


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[SessionTimes, Prefs, datetime]:
    tz = draw(st.sampled_from(ZONES))
    day = draw(st.dates(date(2026, 1, 1), date(2028, 12, 31)))
    clock = draw(st.builds(time, st.integers(0, 23), st.sampled_from([0, 15, 30, 45])))
    start = datetime.combine(day, clock, tzinfo=tz).astimezone(UTC)
    end = start + timedelta(minutes=draw(st.integers(15, 180)))
    next_due = draw(st.none() | st.integers(7, 28).map(lambda d: start + timedelta(days=d)))
    last_end = draw(st.sampled_from([None, end]))
    now = start + timedelta(seconds=draw(st.integers(-60 * 86400, 10 * 86400)))
    prefs = Prefs(tz, draw(clock_times), draw(clock_times))
    return SessionTimes(start, end, next_due, last_end), prefs, now


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_plan_properties(scenario: tuple[SessionTimes, Prefs, datetime]) -> None:
    times, prefs, now = scenario
    steps = plan(times, PROTOCOL, prefs, now)
    check_plan(steps, times, prefs, now, PROTOCOL)


def check_plan(
    steps: list[PlannedStep],
    times: SessionTimes,
    prefs: Prefs,
    now: datetime,
    protocol: Protocol,
) -> None:
    anchors = {"booking": now, "start": times.start, "end": times.end}
    if times.next_due is not None:
        anchors["next"] = times.next_due
    if times.last_end is not None:
        anchors["last"] = times.last_end
    tz = prefs.tz

    # Protocol order, each step at most once, folded steps nowhere else.
    assert [s.seq for s in steps] == sorted({s.seq for s in steps})
    folded = [key for s in steps for key in s.folded]
    assert not set(folded) & {s.key for s in steps}
    assert len(folded) == len(set(folded))

    previous: datetime | None = None
    for planned in steps:
        step = protocol.steps[planned.seq]
        assert step.key == planned.key
        for value in (planned.due_at, planned.not_before, planned.expires_at):
            assert value.tzinfo is UTC
        when = resolve(step.when, anchors, tz)
        assert when is not None
        lo, hi = planned.not_before, planned.expires_at
        assert lo >= now
        if planned.state == "expired":
            assert max(when, lo) >= hi or previous is not None
            continue
        # Inside the window; never before a message that comes earlier in the protocol.
        assert lo <= planned.due_at < hi
        assert previous is None or previous <= planned.due_at
        # Never in the night unless the whole window is night.
        if step.quiet == "shift" and ref_quiet(planned.due_at, prefs):
            assert window_all_quiet(lo, hi, prefs), (step.key, planned)
        # Exactly on time unless something moved it; local steps on their wall clock.
        moved = (
            when < lo
            or (step.quiet == "shift" and ref_quiet(when, prefs))
            or (previous is not None and when < previous)
        )
        if not moved:
            assert planned.due_at == when, step.key
            if step.when.at is not None:
                wall = planned.due_at.astimezone(tz)
                assert wall.time() == step.when.at, step.key
                anchor = anchors[step.when.anchor].astimezone(tz).date()
                if not step.when.months:
                    assert wall.date() == anchor + timedelta(days=step.when.days)
        for key in planned.folded:
            source = protocol.step(key)
            assert source.fold_into == planned.key
            source_when = resolve(source.when, anchors, tz)
            assert source_when is not None
            assert source_when < now
        previous = planned.due_at

    # Every step whose anchors exist is planned, folded, or left out by only_if_between.
    accounted = {s.key for s in steps} | set(folded)
    for step in protocol.steps:
        if resolve(step.when, anchors, tz) is None or step.key in accounted:
            continue
        assert step.only_if_between is not None, step.key


# Dates on which these zones change their offset, to aim the quiet-hours property at them.
TRANSITION_DAYS = [
    (LONDON, date(2026, 3, 29)),
    (LONDON, date(2026, 10, 25)),
    (NEW_YORK, date(2026, 3, 8)),
    (NEW_YORK, date(2026, 11, 1)),
    (LORD_HOWE, date(2026, 4, 5)),
    (LORD_HOWE, date(2026, 10, 4)),
    (ZoneInfo("Asia/Tehran"), date(2026, 6, 1)),
]


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(TRANSITION_DAYS),
    st.integers(-36 * 3600, 36 * 3600),
    st.integers(0, 30 * 3600),
    st.integers(1, 30 * 3600),
    clock_times,
    clock_times,
)
def test_apply_quiet_hours_properties(
    transition: tuple[ZoneInfo, date],
    offset: int,
    back: int,
    ahead: int,
    quiet_start: time,
    quiet_end: time,
) -> None:
    tz, day = transition
    prefs = Prefs(tz, quiet_start, quiet_end)
    due = datetime.combine(day, time(), tzinfo=tz).astimezone(UTC) + timedelta(seconds=offset)
    lo, hi = due - timedelta(seconds=back), due + timedelta(seconds=ahead)
    result = apply_quiet_hours(due, lo, hi, prefs)
    assert lo <= result < hi
    if not ref_quiet(due, prefs):
        assert result == due
    elif ref_quiet(result, prefs):
        assert result == due
        assert window_all_quiet(lo, hi, prefs)
    elif result > due:
        # The end of the night, exactly: quiet until then, not quiet at it.
        assert window_all_quiet(due, result, prefs)
    else:
        # Before the night: from a minute later (or from lo's next minute) quiet until due.
        assert window_all_quiet(min(result + timedelta(minutes=1), due), due, prefs)
        assert result == lo or not ref_quiet(result + timedelta(seconds=59), prefs)
