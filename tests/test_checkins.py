"""Check-ins: answers stored and acknowledged once, guidance, red flags alert the clinic."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest
from sqlmodel import select

from bot.offline.harness import Harness
from bot.offline.sandbox import SandboxUser, SentMessage
from scheduler.clock import FakeClock
from scheduler.models import Clinic, StaffMember
from tests.e2e import command, run_timeline, say
from tests.patient_flows import (
    booked_patient,
    bot,
    checkins_of,
    forge_press,
    messages_of,
    patient_of,
    with_nurse,
)

STAFF = 9001
UNREACHABLE_STAFF = 9002  # configured, but never wrote to the bot: 400 chat not found


def checkin_message(user: SandboxUser) -> SentMessage:
    return next(
        m
        for m in reversed(user.inbox)
        if any(d.startswith("ci:") for row in m.buttons for _, d in row)
    )


async def to_checkin(h: Harness, user: SandboxUser, step: str) -> tuple[SentMessage, int]:
    """Run the timeline until `step` (a check-in) is sent; its message and planned id."""
    rows = await messages_of(h, user)
    due = next(r.due_at for r in rows if r.step == step)
    await run_timeline(h, until=due)
    row = next(r for r in await messages_of(h, user) if r.step == step)
    assert row.state == "sent"
    return checkin_message(user), row.id or 0


async def test_an_answer_is_stored_acknowledged_once_and_guided(h: Harness) -> None:
    anna = await booked_patient(h, 701, "Anna", "3 Dec 14:30", "2026-12-03T14:30")
    message, row_id = await to_checkin(h, anna, "after-24h")
    labels = [label for row in message.buttons for label, _ in row]
    anna.press(message.message_id, f"ci:{row_id}:itching_redness")
    await h.settle()
    edited = anna.message(message.message_id)
    guidance = anna.last().text
    forge_press(h, anna, f"ci:{row_id}:pain", message)  # a second tap on old data
    await h.settle()
    second = anna.answers[-1].text
    stored = await checkins_of(h, anna)

    assert labels == [
        "All good", "Itching or redness", "Swelling or bruising", "Pain", "Nausea",
        "Fever, pus, hives, warmth or spreading redness", "Something else",
    ]  # fmt: skip
    assert edited.buttons == []  # no second tap possible
    assert edited.text.startswith("You can wash your hair")
    assert edited.text.endswith("Your answer: Itching or redness")
    assert guidance.startswith("Mild itching or redness of the scalp is common")
    assert second == "You have already answered this check-in."
    assert [(c.option, c.red_flag, c.message_id) for c in stored] == [
        ("itching_redness", False, row_id)
    ]


async def test_a_red_flag_alerts_every_staff_chat_and_tells_the_patient_whom_to_call(
    db_url: str, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with with_nurse(db_url, clock, STAFF, UNREACHABLE_STAFF) as (h, nurse):
        nurse_before = nurse.sent_count
        anna = await booked_patient(h, 702, "Anna", "3 Dec 14:30", "2026-12-03T14:30")
        message, row_id = await to_checkin(h, anna, "after-24h")
        with caplog.at_level(logging.INFO, logger="aftercare"):
            anna.press(message.message_id, f"ci:{row_id}:urgent")
            await h.settle()
        reply = anna.last().text
        alerts = nurse.inbox[nurse_before:]
        (stored,) = await checkins_of(h, anna)

    assert "Please contact the clinic now" in reply
    assert "Phone: +44 1" in reply and "Address: 1 Test Street" in reply
    assert len(alerts) == 1
    alert = alerts[0].text
    assert "Side-effect alert" in alert and "Anna" in alert
    assert "Session: Thu 3 Dec, 14:30" in alert
    assert "Answer: Fever, pus, hives, warmth or spreading redness" in alert
    assert stored.red_flag and stored.option == "urgent"
    # Each staff chat is a delivery row: the unreachable one is recorded as failed (and
    # logged without names); it never marks the patient as having blocked the bot.
    notices = [r for r in await messages_of(h, anna) if r.chat_id is not None]
    assert sorted((r.chat_id, r.state) for r in notices) == [
        (STAFF, "sent"),
        (UNREACHABLE_STAFF, "failed"),
    ]
    failures = [r for r in caplog.records if "step=staff-alert outcome=failed" in r.getMessage()]
    assert len(failures) == 1
    assert not any("Anna" in r.getMessage() for r in caplog.records)
    assert (await patient_of(h, anna)).blocked_at is None  # type: ignore[union-attr]


async def test_pain_is_a_red_flag_only_after_day_3(db_url: str, clock: FakeClock) -> None:
    async with with_nurse(db_url, clock, STAFF) as (h, nurse):
        anna = await booked_patient(h, 703, "Anna", "3 Dec 14:30", "2026-12-03T14:30")
        first, first_id = await to_checkin(h, anna, "after-24h")
        anna.press(first.message_id, f"ci:{first_id}:pain")
        await h.settle()
        day_1 = anna.last().text
        alerts_before = nurse.sent_count
        second, second_id = await to_checkin(h, anna, "after-3d")  # Sun 6 Dec 10:00: day 3
        await h.advance_to(datetime(2026, 12, 7, 9, 0, tzinfo=UTC))  # day 4
        anna.press(second.message_id, f"ci:{second_id}:pain")
        await h.settle()
        day_4 = anna.last().text
        stored = await checkins_of(h, anna)

    assert "contact the clinic now" not in day_1
    assert "Please contact the clinic now" in day_4
    assert [c.red_flag for c in stored] == [False, True]
    assert nurse.sent_count == alerts_before + 1


async def test_something_else_asks_for_a_short_description(h: Harness) -> None:
    anna = await booked_patient(h, 704, "Anna", "3 Dec 14:30", "2026-12-03T14:30")
    message, row_id = await to_checkin(h, anna, "after-24h")
    anna.press(message.message_id, f"ci:{row_id}:other")
    await h.settle()
    asked = anna.last().text
    thanks = (await command(h, anna, "  A small   bump\nbehind the ear " + "x" * 600)).text
    (stored,) = await checkins_of(h, anna)

    assert asked.startswith("Please describe in a few words")
    assert thanks.startswith("Thank you, I have passed your description on to the clinic")
    assert stored.option == "other" and not stored.red_flag
    assert stored.note is not None and stored.note.startswith("A small bump behind the ear x")
    assert len(stored.note) == 500


async def test_forged_check_in_data_never_touches_another_patients_message(h: Harness) -> None:
    anna = await booked_patient(h, 705, "Anna", "3 Dec 14:30", "2026-12-03T14:30")
    bob = await booked_patient(h, 706, "Bob", "3 Dec 16:00", "2026-12-03T16:00")
    message, anna_row = await to_checkin(h, anna, "after-24h")
    booked_row = next(r.id for r in await messages_of(h, bob) if r.step == "booked")
    for data in (
        f"ci:{anna_row}:urgent",  # Anna's check-in, pressed by Bob
        f"ci:{booked_row}:pain",  # Bob's own message, but not a check-in
        "ci:99999999:pain",
        "ci:1:nonsense",
        "ci:x:y",
        "ci::",
    ):
        forge_press(h, bob, data)
        await h.settle()
        assert bob.answers[-1].text == "This button is no longer active.", data
    anna_checkins = await checkins_of(h, anna)
    bob_checkins = await checkins_of(h, bob)
    still = anna.message(message.message_id)

    assert anna_checkins == [] and bob_checkins == []
    assert still.buttons  # Anna can still answer


async def test_alerts_reach_the_clinics_invited_staff_and_no_other_clinics(
    db_url: str, clock: FakeClock
) -> None:
    async with bot(db_url, clock, staff_user_ids=str(STAFF)) as h:
        assert h.services is not None
        nurse, member, stranger = (
            h.patient(i, n) for i, n in ((STAFF, "N"), (9011, "M"), (9012, "S"))
        )
        for user in (nurse, member, stranger):
            await say(h, user, "/start")
        anna = await booked_patient(h, 707, "Anna", "3 Dec 14:30", "2026-12-03T14:30")
        async with h.services.sessions() as db, db.begin():
            clinic = (await db.exec(select(Clinic).where(Clinic.slug == "default"))).one()
            other = Clinic(slug="other", name="Other", timezone="UTC", created_at=clock.now())
            db.add(other)
            await db.flush()
            assert clinic.id is not None and other.id is not None
            for user, clinic_id in ((member, clinic.id), (stranger, other.id)):
                db.add(
                    StaffMember(
                        clinic_id=clinic_id,
                        tg_user_id=user.user_id,
                        chat_id=user.chat_id,
                        created_at=clock.now(),
                    )
                )
        counts = [u.sent_count for u in (nurse, member, stranger)]
        message, row_id = await to_checkin(h, anna, "after-24h")
        anna.press(message.message_id, f"ci:{row_id}:urgent")
        await h.settle()
        after = [u.sent_count for u in (nurse, member, stranger)]

    assert [b - a for a, b in zip(counts, after, strict=True)] == [1, 1, 0]
