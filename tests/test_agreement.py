"""Texts and plans that agree: every time the bot states comes from the same planned instant,
across zones; and two sessions whose timelines overlap follow one rule (restrictions of the
same thing merge; an "allowed again" that would be false is reworded or dropped)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.offline.harness import Harness
from messages.calendars import format_local
from messages.protocol import default_protocol_path, load_protocol
from scheduler.compose import SessionView, aftercare, step_text, timeline
from scheduler.models import Clinic, Patient, PlannedMessage, TreatmentSession
from scheduler.planner import PlannedStep, Prefs, Restrictions, SessionTimes, plan
from tests.e2e import command, run_timeline
from tests.patient_flows import book_another, booked_patient, messages_of, sessions_of

PROTOCOL = load_protocol(default_protocol_path())
ZONES = ["Europe/London", "America/New_York", "Asia/Kolkata", "Asia/Tehran", "Australia/Lord_Howe"]
# English datetimes as the catalog formats them: "Thu 3 Dec, 14:30".
STATED = re.compile(r"[A-Z][a-z]{2} \d{1,2} [A-Z][a-z]{2}, \d{2}:\d{2}")
NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def minutes(n: int) -> timedelta:
    return timedelta(minutes=n)


def times(start: datetime) -> SessionTimes:
    return SessionTimes(start, start + minutes(PROTOCOL.session_minutes))


def view_of(
    session: SessionTimes, zone: str, others: tuple[SessionTimes, ...] = ()
) -> SessionView:
    tz = ZoneInfo(zone)
    patient = Patient(id=1, clinic_id=1, tg_user_id=1, chat_id=1, timezone=zone, created_at=NOW)
    treatment = TreatmentSession(
        id=1,
        patient_id=1,
        clinic_id=1,
        start_at=session.start,
        end_at=session.end,
        created_at=NOW,
    )
    clinic = Clinic(id=1, slug="c", name="Clinic", timezone=zone, address="1 Road", created_at=NOW)
    return SessionView(
        PROTOCOL, patient, treatment, clinic, Restrictions(PROTOCOL, session, tz, others)
    )


def rows_of(steps: list[PlannedStep]) -> list[PlannedMessage]:
    return [
        PlannedMessage(
            id=i,
            patient_id=1,
            session_id=1,
            step=s.key,
            seq=s.seq,
            due_at=s.due_at,
            not_before=s.not_before,
            expires_at=s.expires_at,
            extra={"extended": True} if s.extended else {},
            created_at=NOW,
        )
        for i, s in enumerate(steps)
        if s.state == "pending"
    ]


STARTS = [
    "2026-12-03T14:30",  # an afternoon
    "2026-12-03T08:00",  # early: prep-2h moves to the evening before
    "2026-12-03T21:30",  # late: the aftercare starts at night
    "2027-03-27T23:00",  # across Europe's spring DST change
    "2027-04-03T11:15",  # Lord Howe's autumn change (half an hour)
]


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize("start", STARTS)
def test_every_summary_line_and_text_state_the_same_times(zone: str, start: str) -> None:
    tz = ZoneInfo(zone)
    session = times(datetime.fromisoformat(start).replace(tzinfo=tz).astimezone(UTC))
    view = view_of(session, zone)
    steps = plan(session, PROTOCOL, Prefs(tz=tz), NOW)
    rows = rows_of(steps)
    assert rows
    lines = timeline(view, rows, NOW).splitlines()
    for row, line in zip(rows, lines, strict=True):
        step = PROTOCOL.step(row.step)
        stated_line = STATED.findall(line)
        text = step_text(view, step, row.due_at, extended=bool(row.extra.get("extended")))
        stated_text = set(STATED.findall(text))
        # The line's time is when the message arrives; every other time it names, the
        # message names too.
        assert stated_line[0] == view.reader.at(row.due_at), (row.step, line)
        assert set(stated_line[1:]) <= stated_text, (row.step, line, text)
        # An "allowed again" is true when it arrives, or says from when it will be.
        for key in step.ends:
            span = view.restrictions.span(PROTOCOL.restriction(key))
            assert span is not None
            assert row.due_at >= span[1] or view.reader.at(span[1]) in stated_text, (row.step, key)
        # /aftercare at that moment gives the same "until" for every restriction as any
        # text that states one.
        checklist = aftercare(view, row.due_at)
        for restriction in PROTOCOL.restrictions:
            span = view.restrictions.span(restriction)
            assert span is not None
            if restriction.phase == "after" and row.due_at < span[1]:
                assert view.reader.at(span[1]) in checklist


@pytest.mark.parametrize("zone", ZONES)
def test_the_session_length_is_stated_where_the_aftercare_counts_from(zone: str) -> None:
    tz = ZoneInfo(zone)
    session = times(datetime(2026, 12, 3, 14, 30, tzinfo=tz).astimezone(UTC))
    text = step_text(view_of(session, zone), PROTOCOL.step("booked"), NOW)
    end = format_local(session.end, tz, "en", "time")
    assert f"about {PROTOCOL.session_minutes} minutes" in text
    assert f"count from about {end}" in text


# -- two sessions whose timelines overlap -------------------------------------------------------

LONDON = ZoneInfo("Europe/London")
A_START = datetime(2026, 12, 3, 14, 30, tzinfo=UTC)  # ends 15:15


def _second(days: float) -> SessionTimes:
    return times(A_START + timedelta(days=days))


@pytest.mark.parametrize(
    ("days_later", "dropped", "extended", "alcohol_until"),
    [
        # Two weeks apart: nothing of the first changes.
        (14, set(), set(), "2026-12-06 15:15"),
        # Ten days: the second's "no alcohol from three days before" starts after the first
        # allowed it again; pools and sun of the first end before the second session.
        (10, set(), set(), "2026-12-06 15:15"),
        # Six days: the second's alcohol restriction meets the first's, so the first's "alcohol
        # fine again" becomes "keep avoiding until three days after the second"; its "pools
        # and sun allowed again" (day 7) falls inside the second's aftercare: dropped.
        (6, {"after-7d"}, {"after-3d"}, "2026-12-12 15:15"),
        # The next day: washing and workouts too.
        (1, {"after-7d"}, {"after-24h", "after-3d"}, "2026-12-07 15:15"),
    ],
)
def test_a_later_session_extends_the_earlier_ones_restrictions(
    days_later: float, dropped: set[str], extended: set[str], alcohol_until: str
) -> None:
    first, second = times(A_START), _second(days_later)
    alone = {s.key for s in plan(first, PROTOCOL, Prefs(tz=LONDON), NOW)}
    together = plan(first, PROTOCOL, Prefs(tz=LONDON), NOW, others=(second,))
    keys = {s.key for s in together}
    assert alone - keys == dropped
    assert {s.key for s in together if s.extended} == extended
    span = Restrictions(PROTOCOL, first, LONDON, (second,)).span(PROTOCOL.restriction("alcohol"))
    assert span is not None and span[1].strftime("%Y-%m-%d %H:%M") == alcohol_until
    # The later session is never changed by the earlier one.
    later = plan(second, PROTOCOL, Prefs(tz=LONDON), NOW, others=(first,))
    assert later == plan(second, PROTOCOL, Prefs(tz=LONDON), NOW)


async def test_two_sessions_six_days_apart_in_the_chat(h: Harness) -> None:
    anna = await booked_patient(h, 5001, "Anna", "3 Dec 14:30", "2026-12-03T14:30")
    await book_another(h, anna, "9 Dec 14:30", "2026-12-09T14:30")
    reminders = (await command(h, anna, "/reminders")).text
    first, second = await sessions_of(h, anna)
    of_first = {
        r.step: r
        for r in await messages_of(h, anna)
        if r.state == "pending" and r.session_id == first.id
    }
    await run_timeline(h, until=datetime(2026, 12, 6, 11, 0, tzinfo=UTC))
    day_3 = [m.text for m in anna.inbox if "How is your scalp today?" in m.text][-1]
    await command(h, anna, "/reminders")
    anna.press(anna.last().message_id, "rem:past")
    await h.settle()
    earlier = anna.last().text
    # The second session is cancelled: the first's own end of alcohol and sun comes back.
    await command(h, anna, "/sessions")
    anna.press(anna.last().message_id, f"ses:cx:{second.id}")
    await h.settle()
    anna.press(anna.last().message_id, f"ses:cy:{second.id}")
    await h.settle()
    after_cancel = {
        r.step: r
        for r in await messages_of(h, anna)
        if r.state == "pending" and r.session_id == first.id
    }

    assert "<b>" not in reminders
    assert (
        "Session of Thu 3 Dec, 14:30" in reminders and "Session of Wed 9 Dec, 14:30" in reminders
    )
    head, tail = reminders.split("Session of Wed 9 Dec, 14:30")
    assert "keep avoiding alcohol until Sat 12 Dec, 15:15" in head
    assert "Pools, saunas and sun allowed again" not in head  # the first's: dropped
    assert "Pools, saunas and sun allowed again" in tail  # the second's
    assert of_first["after-3d"].extra.get("extended") is True
    assert "after-7d" not in of_first
    assert day_3.startswith("Because of your next session, please keep avoiding alcohol until")
    assert "Sat 12 Dec, 15:15" in day_3
    assert "after-7d" in after_cancel
    assert "Check-in; keep avoiding alcohol until Sat 12 Dec, 15:15 (sent)" in earlier
