"""One conversation, in one place: the typed state, every path that changes the zone replans,
edits answer what is asked, finished flows leave no live buttons, and the health questions
fit the person. Through the real Application and the sandbox."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from bot.offline.harness import Harness
from bot.offline.sandbox import SandboxUser
from scheduler.clock import FakeClock
from scheduler.models import InboxKind, Patient
from scheduler.planner import Prefs, in_quiet_hours
from tests.clinic_side import clinic, fast_settings, patient_row, payload_in, with_staff
from tests.e2e import (
    answer_screening,
    book,
    command,
    onboarded,
    opened_link,
    pending,
    press,
    running,
    say,
    screening_buttons,
)
from tests.patient_flows import booked_patient, forge_press, messages_of, sessions_of
from tests.test_inbox import inbox_rows

NEW_YORK = ZoneInfo("America/New_York")


async def test_an_invited_patient_who_picks_another_zone_gets_every_reminder_in_it(
    db_url: str, clock: FakeClock
) -> None:
    async with with_staff(db_url, clock) as (h, staff):
        qr = await command(h, staff, "/invite 3 Dec 14:30")  # clinic time: London
        pia = await opened_link(h, 4001, "Pia", payload_in(qr))
        await press(h, pia, "consent:yes")  # this plans the invite's session, in London
        await press(h, pia, "tz:set:America/New_York")
        await answer_screening(h, pia)
        rows = [r for r in await pending(h) if r.chat_id is None]

    by_step = {r.step: r.due_at for r in rows}
    # prep-3d at 10:00 in New York (15:00 UTC), not at 10:00 UTC (05:00 in New York).
    assert by_step["prep-3d"] == datetime(2026, 11, 30, 15, 0, tzinfo=UTC)
    assert by_step["prep-1d"].astimezone(NEW_YORK).hour == 18
    night = Prefs(tz=NEW_YORK)
    assert not any(in_quiet_hours(r.due_at, night) for r in rows if r.step != "booked")


async def test_a_typed_zone_while_setting_up_replans_too(db_url: str, clock: FakeClock) -> None:
    async with with_staff(db_url, clock) as (h, staff):
        qr = await command(h, staff, "/invite 3 Dec 14:30")
        pia = await opened_link(h, 4002, "Pia", payload_in(qr))
        await press(h, pia, "consent:yes")
        await press(h, pia, "tz:type")
        unknown = (await command(h, pia, "Mars/Olympus")).text
        await say(h, pia, "America/New_York")
        asked = screening_buttons(pia)
        rows = {r.step: r.due_at for r in await pending(h) if r.chat_id is None}

    assert unknown.startswith("I don't know that time zone")
    assert asked and asked[0].startswith("scr:pregnant_or_breastfeeding:")
    assert rows["prep-3d"] == datetime(2026, 11, 30, 15, 0, tzinfo=UTC)


async def test_an_edited_date_is_the_new_answer_and_other_edits_are_ignored(
    db_url: str, clock: FakeClock
) -> None:
    async with running(db_url, clock, **fast_settings()) as h:
        anna = await onboarded(h, 4003, "Anna")
        typed = anna.send("3 Dec 14:30")
        await h.settle()
        first = anna.last().text
        anna.edit(typed, "4 Dec 11:00")
        await h.settle()
        corrected, corrected_buttons = anna.last().text, anna.last().buttons
        await press(h, anna, "ok:2026-12-04T11:00")
        await answer_screening(h, anna)
        (session,) = await sessions_of(h, anna)
        count = anna.sent_count
        anna.edit(typed, "5 Dec 09:00")  # nothing asks for a date any more
        await h.settle()
        ignored = anna.sent_count == count

    assert "Thu 3 Dec, 14:30" in first
    assert "Fri 4 Dec, 11:00" in corrected and corrected_buttons
    assert session.start_at == datetime(2026, 12, 4, 11, 0, tzinfo=UTC)
    assert ignored


async def test_an_edited_zone_is_the_new_answer(db_url: str, clock: FakeClock) -> None:
    async with running(db_url, clock, **fast_settings()) as h:
        anna = await booked_patient(h, 4004, "Anna", "3 Dec 14:30", "2026-12-03T14:30")
        await say(h, anna, "/settings")
        await press(h, anna, "set:tz")
        await press(h, anna, "set:tz:type")
        typed = anna.send("Europe/Pariss")
        await h.settle()
        wrong = anna.last().text
        anna.edit(typed, "Europe/Paris")
        await h.settle()
        right = anna.last().text
        row = await patient_row(h, anna)

    assert wrong.startswith("I don't know that time zone")
    assert right.startswith("Time zone: Europe/Paris")
    assert row.timezone == "Europe/Paris"


async def test_after_a_move_or_a_cancel_the_sessions_message_has_no_buttons_left(
    db_url: str, clock: FakeClock
) -> None:
    async with running(db_url, clock, **fast_settings()) as h:
        anna = await booked_patient(h, 4005, "Anna", "3 Dec 14:30", "2026-12-03T14:30")
        listing = await command(h, anna, "/sessions")
        (session,) = await sessions_of(h, anna)
        await press(h, anna, f"ses:mv:{session.id}")
        await say(h, anna, "10 Dec 15:00")  # typed: the confirmation is a new message
        await press(h, anna, "ok:2026-12-10T15:00")
        await answer_screening(h, anna)
        moved = anna.message(listing.message_id)
        second = await command(h, anna, "/sessions")
        await press(h, anna, f"ses:cx:{session.id}")
        await press(h, anna, f"ses:cy:{session.id}")
        cancelled = anna.message(second.message_id)

    assert moved.buttons == [] and "moved to Thu 10 Dec, 15:00" in moved.text
    assert cancelled.buttons == [] and "is cancelled" in cancelled.text


async def test_a_stored_state_that_no_longer_fits_reads_as_idle_and_old_ones_lapse(
    db_url: str, clock: FakeClock
) -> None:
    async with running(db_url, clock, **fast_settings()) as h:
        anna = await onboarded(h, 4006, "Anna")  # the bot now waits for a date
        assert h.services is not None
        clock.advance(timedelta(days=2))
        lapsed = (await command(h, anna, "hello, a question")).text
        async with h.services.sessions() as db, db.begin():
            patient = await db.get(Patient, (await patient_row(h, anna)).id)
            assert patient is not None
            patient.awaiting, patient.draft = "note:12", {"garbage": [1, 2]}
            db.add(patient)
        garbled = (await command(h, anna, "another question")).text

    assert lapsed.startswith("I am the clinic's reminder assistant")
    assert garbled.startswith("I am the clinic's reminder assistant")


# -- screening that fits the person ----------------------------------------------------------


async def _booking_questions(h: Harness, user: SandboxUser, typed: str, iso: str) -> None:
    await say(h, user, "/book")
    await say(h, user, typed)
    await press(h, user, f"ok:{iso}")


async def test_questions_that_do_not_apply_are_not_asked_and_lasting_ones_are_confirmed(
    db_url: str, clock: FakeClock
) -> None:
    async with clinic(db_url, clock) as (h, staff):
        ben = await onboarded(h, 4010, "Ben")
        await say(h, ben, "3 Dec 14:30")
        await press(h, ben, "ok:2026-12-03T14:30")
        first = await answer_screening(
            h, ben, yes=("endocrine_disorder",), na=("pregnant_or_breastfeeding",)
        )
        explained = next(m.text for m in ben.inbox if m.text.startswith("Thank you for telling"))
        booked = next(m.text for m in reversed(ben.inbox) if "Your session is booked" in m.text)

        await _booking_questions(h, ben, "10 Dec 10:00", "2026-12-10T10:00")
        confirm = ben.last()
        second = await answer_screening(h, ben)  # "Yes, still true"

        await _booking_questions(h, ben, "20 Dec 10:00", "2026-12-20T10:00")
        await press(h, ben, "scr:confirm:changed")
        third = ["confirm", *await answer_screening(h, ben)]
        sessions = await sessions_of(h, ben)
        notices = [m.text for m in staff.inbox if "answered yes before a session" in m.text]
        listing = (await command(h, staff, "/patients")).text

    assert first == ["pregnant_or_breastfeeding", "endocrine_disorder", "tumour_history"]
    assert "hormonal" in explained and "Your booking stands" in explained
    assert "Please see a physician before this treatment" in booked
    assert "Endocrine (hormonal) disorder: yes" in confirm.text
    assert "Pregnancy or breastfeeding: does not apply to me" in confirm.text
    assert "History of tumours: no" in confirm.text
    assert second == ["confirm"]
    assert third == [
        "confirm",
        "pregnant_or_breastfeeding",
        "menstruating_on_session_date",
        "endocrine_disorder",
        "tumour_history",
    ]
    assert [s.flagged for s in sessions] == [True, True, False]
    assert sessions[1].screening == {"endocrine_disorder": True, "tumour_history": False}
    assert len(notices) == 2  # the two flagged bookings
    assert "Ben ⚠" in listing


async def test_a_flag_on_a_session_already_over_reaches_the_clinic(
    db_url: str, clock: FakeClock
) -> None:
    async with clinic(db_url, clock) as (h, staff):
        before = staff.sent_count
        anna = await onboarded(h, 4011, "Anna")
        await book(h, anna, "today at 8", "2026-11-25T08:00", yes=("tumour_history",))
        notices = [m.text for m in staff.inbox[before:]]
        rows = await inbox_rows(h)
        (session,) = await sessions_of(h, anna)

    assert session.flagged and session.end_at < clock.now()
    assert len(notices) == 1 and "History of tumours" in notices[0] and "Anna" in notices[0]
    assert [r.kind for r in rows] == [InboxKind.SCREENING]


async def test_the_period_question_names_the_chosen_date_and_a_stale_answer_does_nothing(
    db_url: str, clock: FakeClock
) -> None:
    async with running(db_url, clock, **fast_settings()) as h:
        anna = await onboarded(h, 4012, "Anna")
        await say(h, anna, "3 Dec 14:30")
        await press(h, anna, "ok:2026-12-03T14:30")
        await press(h, anna, "scr:pregnant_or_breastfeeding:no")
        period = anna.last().text
        question = anna.last()
        # A second press on the first question, and a forged answer to a later one.
        forge_press(h, anna, "scr:pregnant_or_breastfeeding:yes", question)
        forge_press(h, anna, "scr:tumour_history:yes", question)
        forge_press(h, anna, "scr:menstruating_on_session_date:maybe", question)
        forge_press(h, anna, "ok:2026-12-03T14:30", question)  # Confirm pressed twice
        await h.settle()
        toasts = [a.text for a in anna.answers[-4:]]
        typed = (await command(h, anna, "what do you mean?")).text
        rest = await answer_screening(h, anna)
        (session,) = await sessions_of(h, anna)
        rows = await messages_of(h, anna)

    assert period == "Do you expect to have your period on the day of your session, Thu 3 Dec?"
    assert toasts == ["This button is no longer active."] * 4
    assert typed.startswith("Please answer the question above with its buttons")
    assert rest == ["menstruating_on_session_date", "endocrine_disorder", "tumour_history"]
    assert not session.flagged and session.screening["pregnant_or_breastfeeding"] is False
    assert any(r.step == "booked" for r in rows)
