"""What patients write reaches the clinic, and the clinic's answer reaches the patient: rows
all the way (delivery rows at reply priority), through the real bot and the sandbox."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

from sqlmodel import col, select

from bot.offline.harness import Harness
from bot.offline.sandbox import SandboxUser
from scheduler.clock import FakeClock
from scheduler.models import InboxKind, InboxMessage, PlannedMessage, Priority, StaffDraft
from tests.clinic_side import STAFF_ID, clinic, patient_row, staff_of_new_clinic
from tests.e2e import command, press, say
from tests.patient_flows import booked_patient, forge, forge_press, snapshot


async def inbox_rows(h: Harness) -> list[InboxMessage]:
    assert h.services is not None
    async with h.services.sessions() as db:
        return list((await db.exec(select(InboxMessage).order_by(col(InboxMessage.id)))).all())


def button_data(user: SandboxUser, prefix: str) -> str:
    """The newest button whose callback data starts with `prefix`."""
    for message in reversed(user.inbox):
        for row in message.buttons:
            for _, data in row:
                if data.startswith(prefix):
                    return data
    raise AssertionError(f"no button {prefix!r}")


@asynccontextmanager
async def desk(
    db_url: str, clock: FakeClock, user_id: int
) -> AsyncIterator[tuple[Harness, SandboxUser, SandboxUser]]:
    """The bot, the clinic's staff member (who has opened it), and a patient with a session."""
    async with clinic(db_url, clock) as (h, staff):
        anna = await booked_patient(h, user_id, "Anna", "3 Dec 14:30", "2026-12-03T14:30")
        yield h, staff, anna


async def send_to_clinic(h: Harness, patient: SandboxUser, text: str) -> str:
    """The patient types free text and presses "Send this to the clinic"; the bot's offer."""
    offer = (await command(h, patient, text)).text
    await press(h, patient, button_data(patient, "msg:send:"))
    return offer


async def test_a_message_to_the_clinic_and_its_answer_make_a_round_trip(
    db_url: str, clock: FakeClock
) -> None:
    async with desk(db_url, clock, 3001) as (h, staff, anna):
        staff_before = staff.sent_count
        offer = await send_to_clinic(h, anna, "Can I colour my hair next week?")
        sent = anna.last().text
        notice = staff.inbox[staff_before]
        shown = staff.sent_count
        await say(h, staff, "/inbox")
        listing = [m.text for m in staff.inbox[shown:]]
        await press(h, staff, button_data(staff, "ib:r:"))
        prompt = staff.last().text
        confirmation = (await command(h, staff, "Please wait two weeks, Anna.")).text
        answer = anna.last()
        await say(h, staff, "/inbox")
        after = "\n".join(m.text for m in staff.inbox[-2:])
        rows = await inbox_rows(h)
        assert h.services is not None
        async with h.services.sessions() as db:
            deliveries = (
                await db.exec(select(PlannedMessage).order_by(col(PlannedMessage.id)))
            ).all()

    assert "Shall I send your message to the clinic?" in offer
    assert sent == "Sent to the clinic. They will answer you here."
    assert "Anna" in notice.text and "“Can I colour my hair next week?”" in notice.text
    assert [label for row in notice.buttons for label, _ in row] == ["Reply", "Mark handled"]
    assert listing[0] == "Messages from patients: 1 not handled yet. The newest:"
    assert listing[1] == notice.text
    assert prompt.startswith("Write your answer to #") and "Anna" in prompt
    assert confirmation.startswith("Sent to #")
    assert answer.text == "Answer from Test Clinic\n\nPlease wait two weeks, Anna."
    assert [label for row in answer.buttons for label, _ in row] == ["Answer the clinic"]
    assert "Answered" in after and "(delivered)" in after and "Handled" in after
    message, reply = rows
    assert message.kind == InboxKind.MESSAGE and message.handled_at is not None
    assert reply.kind == InboxKind.REPLY and reply.reply_to == message.id
    assert reply.author_id == STAFF_ID
    by_step = {r.step: r for r in deliveries if r.step in ("staff-notice", "clinic-reply")}
    assert by_step["staff-notice"].chat_id == STAFF_ID
    assert by_step["staff-notice"].priority == Priority.REPLY
    assert by_step["clinic-reply"].chat_id is None and by_step["clinic-reply"].state == "sent"
    assert reply.delivery_id == by_step["clinic-reply"].id


async def test_the_answer_waits_for_the_patients_morning_unless_they_just_wrote(
    db_url: str, clock: FakeClock
) -> None:
    async with desk(db_url, clock, 3002) as (h, staff, anna):
        await h.advance_to(datetime(2026, 11, 25, 20, 0, tzinfo=UTC))
        await send_to_clinic(h, anna, "Question about shampoo")
        # Staff answer at 23:30 London: Anna wrote 3.5 hours ago, it is her night.
        await h.advance_to(datetime(2026, 11, 25, 23, 30, tzinfo=UTC))
        await press(h, staff, button_data(staff, "ib:r:"))
        late = (await command(h, staff, "Any mild shampoo is fine.")).text
        received_at_night = anna.last().text
        await h.advance_to(datetime(2026, 11, 26, 8, 0, tzinfo=UTC))
        morning = anna.last().text
        # She writes again at 23:40 and is answered at once, night or not.
        await h.advance_to(datetime(2026, 11, 26, 23, 40, tzinfo=UTC))
        await send_to_clinic(h, anna, "And conditioner?")
        await press(h, staff, button_data(staff, "ib:r:"))
        now_sent = (await command(h, staff, "Conditioner too.")).text
        at_once = anna.last().text

    assert "after their quiet hours" in late and "Thu 26 Nov, 08:00" in late
    assert "Any mild shampoo" not in received_at_night
    assert "Any mild shampoo is fine." in morning
    assert now_sent.startswith("Sent to #")
    assert "Conditioner too." in at_once


async def test_nothing_is_lost_when_telegram_fails_and_the_bot_restarts(
    db_url: str, clock: FakeClock
) -> None:
    async with desk(db_url, clock, 3003) as (h, staff, anna):
        before = staff.sent_count
        await say(h, anna, "Is swimming OK after a week?")
        # The notice to staff is the next message sent: Telegram's gateway fails it.
        h.api.fail_next("sendMessage", error_code=502, description="Bad Gateway")
        await press(h, anna, button_data(anna, "msg:send:"))
        missed = staff.sent_count - before
        await h.restart_bot()
        await h.advance(timedelta(minutes=1))
        notices = [m.text for m in staff.inbox[before:]]

    assert missed == 0
    assert len(notices) == 1 and "“Is swimming OK after a week?”" in notices[0]


async def test_a_paused_patient_still_reaches_the_clinic_and_gets_the_answer(
    db_url: str, clock: FakeClock
) -> None:
    async with desk(db_url, clock, 3004) as (h, staff, anna):
        await say(h, anna, "/pause")
        before = staff.sent_count
        await send_to_clinic(h, anna, "I paused, but I have a question")
        notified = staff.sent_count - before
        await press(h, staff, button_data(staff, "ib:r:"))
        await say(h, staff, "Here is the answer.")
        answer = anna.last().text

    assert notified == 1
    assert "Here is the answer." in answer


async def test_delete_erases_what_the_patient_wrote_and_the_staff_drafts_on_it(
    db_url: str, clock: FakeClock
) -> None:
    async with desk(db_url, clock, 3005) as (h, staff, anna):
        await send_to_clinic(h, anna, "My private question")
        await say(h, anna, "I have a fever")
        await press(h, staff, button_data(staff, "ib:r:"))  # a reply begun, never sent
        await say(h, anna, "/delete")
        await press(h, anna, "del:yes")
        tables = await snapshot(h)
        late = (await command(h, staff, "Too late?")).text

    assert tables["inbox_message"] == []
    assert tables["staff_draft"] == []
    assert not any("My private question" in repr(rows) for rows in tables.values())
    assert late.startswith("Please send /start first")  # no reply open any more


async def test_staff_of_another_clinic_see_and_answer_nothing(
    db_url: str, clock: FakeClock
) -> None:
    async with clinic(db_url, clock) as (h, _):
        north_staff, _ = await staff_of_new_clinic(h, 3010, "north", "North Clinic")
        anna = await booked_patient(h, 3011, "Anna", "3 Dec 14:30", "2026-12-03T14:30")
        await send_to_clinic(h, anna, "Only for my clinic")
        (message,) = await inbox_rows(h)
        north_before = len(north_staff.inbox)
        listing = (await command(h, north_staff, "/inbox")).text
        for data in (f"ib:r:{message.id}", f"ib:h:{message.id}", "ib:r:x", "ib:zz:1"):
            await forge(h, north_staff, data)
        toasts = [a.text for a in north_staff.answers[-4:]]
        typed = (await command(h, north_staff, "Hello Anna, from North")).text
        patient_sees = [m.text for m in anna.inbox]
        (after,) = await inbox_rows(h)
        assert h.services is not None
        async with h.services.sessions() as db:
            drafts = (await db.exec(select(StaffDraft))).all()
        not_staff = (await command(h, anna, "/inbox")).text

    assert listing == "No messages from patients yet."
    assert len(north_staff.inbox) == north_before + 2  # /inbox, then the typed text
    assert toasts == ["This button is no longer active."] * 4
    assert typed.startswith("Please send /start first")
    assert not any("North" in t for t in patient_sees)
    assert after.handled_at is None and drafts == []
    assert not_staff == "This command is for the clinic's staff."


async def test_free_text_gets_useful_buttons_and_only_what_is_sent_reaches_the_clinic(
    db_url: str, clock: FakeClock
) -> None:
    async with clinic(db_url, clock) as (h, staff):
        before = staff.sent_count
        anna = await booked_patient(h, 3020, "Anna", "3 Dec 14:30", "2026-12-03T14:30")
        first = await command(h, anna, "hello there")
        await say(h, anna, "second thought")
        labels = [label for row in first.buttons for label, _ in row]
        first_send = next(d for row in first.buttons for _, d in row if d.startswith("msg:send"))
        anna.press(first.message_id, first_send)  # the first offer sends the first text
        await h.settle()
        forge_press(h, anna, first_send, first)  # pressed again (a stale copy of the button)
        await h.settle()
        toast = anna.answers[-1].text
        told = staff.sent_count - before
        clock.advance(timedelta(days=3))
        await say(h, anna, "a later note")  # drafts older than two days are dropped
        await press(h, anna, "msg:aftercare")
        aftercare = anna.last().text
        await press(h, anna, "msg:help")
        helped = anna.last().text
        await press(h, anna, "msg:book")
        booking = anna.last().text
        rows = await inbox_rows(h)

    assert labels == ["Send this to the clinic", "Book a session", "My aftercare", "Help"]
    assert toast == "This button is no longer active."
    assert told == 1 and "“hello there”" in staff.last().text
    assert aftercare.startswith("Your aftercare starts after your session")
    assert helped.startswith("I send you the clinic's preparation")
    assert booking.startswith("When is your session?")
    assert [(r.kind, r.text) for r in rows] == [
        (InboxKind.MESSAGE, "hello there"),
        (InboxKind.DRAFT, "a later note"),
    ]


async def test_answer_the_clinic_sends_the_next_text_as_it_is(
    db_url: str, clock: FakeClock
) -> None:
    async with desk(db_url, clock, 3030) as (h, staff, anna):
        await send_to_clinic(h, anna, "First question")
        await press(h, staff, button_data(staff, "ib:r:"))
        await say(h, staff, "First answer")
        await press(h, anna, "msg:write")
        asked = anna.last().text
        sent = (await command(h, anna, "Thank you, one more thing")).text
        notice = staff.last().text
        anna_row = await patient_row(h, anna)

    assert asked.startswith("Please write your message to the clinic now")
    assert sent == "Sent to the clinic. They will answer you here."
    assert "“Thank you, one more thing”" in notice
    assert anna_row.awaiting is None
