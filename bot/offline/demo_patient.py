"""The patient-controls part of `aftercare demo`: a second patient moves their session,
asks /aftercare at two points of the timeline, and reports a red-flag side effect, which
reaches the clinic's nurse at once.

Everything goes through the real bot and the sandbox; the clock jumps from step to step.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlmodel import col, select

from bot.offline.harness import Harness
from bot.offline.script import Script
from bot.offline.transcript import Chat, Transcript
from scheduler.care import find_patient
from scheduler.inbox import ALERT_STEP, NOTIFY_STEP
from scheduler.models import CheckIn, InboxMessage, MessageState, PlannedMessage

DEMO_STAFF_ID = 800  # configured in the demo's settings (AFTERCARE_STAFF_USER_IDS)
PATIENT_ID = 502


async def _rows(h: Harness, patient_chat: int) -> list[PlannedMessage]:
    assert h.services is not None
    async with h.services.sessions() as db:
        patient = await find_patient(session=db, tg_user_id=patient_chat)
        assert patient is not None
        rows = await db.exec(
            select(PlannedMessage)
            .where(PlannedMessage.patient_id == patient.id)
            .order_by(col(PlannedMessage.due_at), col(PlannedMessage.seq))
        )
        return list(rows.all())


async def _run_until(h: Harness, chats: list[Chat], until: datetime) -> None:
    """Jump from one due message to the next up to `until`, printing what arrives."""
    for _ in range(50):
        pending = [r for r in await _rows(h, PATIENT_ID) if r.state == MessageState.PENDING]
        nxt = min((r.due_at for r in pending), default=None)
        if nxt is None or nxt > until:
            break
        await h.advance_to(max(nxt, h.clock.now()))
        for chat in chats:
            chat.show()
    if until > h.clock.now():
        await h.advance_to(until)


async def patient_demo(h: Harness, t: Transcript, script: Script) -> int:
    """0 when the move, the /aftercare answers, the check-in and the staff alert all worked."""
    nurse = Chat(
        t, h.patient(DEMO_STAFF_ID, script.nurse, script.lang), f"nurse {script.nurse}", named=True
    )
    ben = Chat(
        t,
        h.patient(PATIENT_ID, script.second, script.lang),
        f"patient {script.second}",
        named=True,
    )
    start = h.clock.now().replace(hour=9, minute=0, second=0, microsecond=0)
    await h.advance_to(start + timedelta(days=1))

    t.scene("The clinic's nurse opens the bot (Telegram lets a bot write to her only then)")
    await nurse.type(h, "/start")

    t.scene("A second patient books, then moves the session with /sessions")
    await ben.type(h, "/start")
    await ben.press(h, "consent:yes")
    await ben.press(h, "tz:keep")
    assert h.services is not None
    zone = h.settings.zone
    today = h.clock.now().astimezone(zone).replace(second=0, microsecond=0)
    first = (today + timedelta(days=5)).replace(hour=11, minute=0)
    moved = (today + timedelta(days=6)).replace(hour=15, minute=0)
    await ben.type(h, script.typed(first, zone))
    await ben.press(h, f"ok:{first:%Y-%m-%dT%H:%M}")
    await ben.answer_screening(h, na=("pregnant_or_breastfeeding",))
    await ben.type(h, "/sessions")
    session_button = next(d for row in ben.user.last().buttons for _, d in row if ":mv:" in d)
    await ben.press(h, session_button)
    await ben.type(h, script.typed(moved, zone))
    await ben.press(h, f"ok:{moved:%Y-%m-%dT%H:%M}")

    t.scene("The clock runs to the evening after the session; the patient asks /aftercare")
    session_end = next(
        r.due_at
        for r in await _rows(h, PATIENT_ID)
        if r.step == "after-0" and r.state == "pending"
    )
    await _run_until(h, [ben], session_end + timedelta(hours=3))
    await ben.type(h, "/aftercare")

    t.scene("The next day's check-in: a red flag is reported; the nurse is alerted at once")
    checkin = next(
        r for r in await _rows(h, PATIENT_ID) if r.step == "after-24h" and r.state == "pending"
    )
    await _run_until(h, [ben], checkin.due_at)
    await ben.press(h, f"ci:{checkin.id}:urgent")
    nurse.show()

    t.scene("Four days later, /aftercare again")
    await _run_until(h, [ben], session_end + timedelta(days=4))
    await ben.type(h, "/aftercare")

    t.scene("The patient writes in their own words; the nurse answers from her inbox")
    await ben.type(h, script.question)
    await ben.press_starting(h, "msg:send:")
    nurse.show()
    await nurse.press_starting(h, "ib:r:")
    await nurse.type(h, script.answer)
    ben.show()
    answered = script.answer in ben.user.last().text

    t.scene("A worrying message, typed in their own words")
    await ben.type(h, script.worry)
    nurse.show()

    async with h.services.sessions() as db:
        answers = (await db.exec(select(CheckIn))).all()
        sent = (
            await db.exec(select(PlannedMessage).where(PlannedMessage.state == MessageState.SENT))
        ).all()
        inbox = (await db.exec(select(InboxMessage))).all()
    told = {r.step for r in sent if r.chat_id == DEMO_STAFF_ID}
    alerted = ALERT_STEP in told
    red_notice = NOTIFY_STEP in told and any(m.signs for m in inbox)
    ok = alerted and answered and red_notice and [a.red_flag for a in answers] == [True]
    t.scene("Patient controls")
    t.say(
        f"    moved: yes; red-flag check-ins: {sum(a.red_flag for a in answers)}; "
        f"staff alerted: {'yes' if alerted else 'NO'}; "
        f"inbox round trip: {'yes' if answered else 'NO'}; "
        f"red flag in his words reached the nurse: {'yes' if red_notice else 'NO'}"
    )
    return 0 if ok else 1
