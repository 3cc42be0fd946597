"""The patient-controls part of `aftercare demo`: a second patient moves their session,
asks /aftercare at two points of the timeline, and reports a red-flag side effect, which
reaches the clinic's nurse at once.

Everything goes through the real bot and the sandbox; the clock jumps from step to step.
"""

from __future__ import annotations

import textwrap
from datetime import datetime, timedelta
from typing import Protocol

from sqlmodel import col, select

from bot.harness import Harness
from bot.sandbox import SandboxUser, SentMessage
from scheduler.models import CheckIn, MessageState, PlannedMessage

DEMO_STAFF_ID = 800  # configured in the demo's settings (AFTERCARE_STAFF_USER_IDS)
PATIENT_ID = 502


class _Out(Protocol):
    """What this part needs of bot/demo.py's Transcript."""

    def stamp(self, at: datetime) -> str: ...
    def say(self, line: str) -> None: ...
    def scene(self, title: str) -> None: ...


class _Chat:
    """Prints one chat's new and edited bot messages once each."""

    def __init__(self, t: _Out, user: SandboxUser, who: str) -> None:
        self._t = t
        self.user = user
        self.who = who
        self._seen: dict[int, int] = {}

    def show(self) -> None:
        for message in self.user.inbox:
            edits = len(message.history)
            if self._seen.get(message.message_id) == edits:
                continue
            label = "bot" if message.message_id not in self._seen else "bot (edits its message)"
            self._print(message, f"{label} to {self.who}")
            self._seen[message.message_id] = edits

    def _print(self, message: SentMessage, label: str) -> None:
        at = message.edit_date or message.date
        self._t.say(f"[{self._t.stamp(at)}] {label}:\n{textwrap.indent(message.text, '    ')}")
        labels = [text for row in message.buttons for text, _ in row]
        if labels:
            self._t.say("    " + "  ".join(f"[{text}]" for text in labels[:12]))


async def _type(h: Harness, chat: _Chat, text: str) -> None:
    chat._t.say(f"[{chat._t.stamp(h.clock.now())}] {chat.who}: {text}")
    chat.user.send(text)
    await h.settle()
    chat.show()


async def _press(h: Harness, chat: _Chat, data: str) -> None:
    message = next(
        m for m in reversed(chat.user.inbox) if any(d == data for row in m.buttons for _, d in row)
    )
    label = next(lbl for row in message.buttons for lbl, d in row if d == data)
    chat._t.say(f"[{chat._t.stamp(h.clock.now())}] {chat.who}: presses [{label}]")
    chat.user.press(message.message_id, data)
    await h.settle()
    chat.show()


async def _rows(h: Harness, patient_chat: int) -> list[PlannedMessage]:
    assert h.services is not None
    async with h.services.sessions() as db:
        from scheduler.care import find_patient

        patient = await find_patient(session=db, tg_user_id=patient_chat)
        assert patient is not None
        rows = await db.exec(
            select(PlannedMessage)
            .where(PlannedMessage.patient_id == patient.id)
            .order_by(col(PlannedMessage.due_at), col(PlannedMessage.seq))
        )
        return list(rows.all())


async def _run_until(h: Harness, chats: list[_Chat], until: datetime) -> None:
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


async def patient_demo(h: Harness, t: _Out) -> int:
    """0 when the move, the /aftercare answers, the check-in and the staff alert all worked."""
    nurse = _Chat(t, h.patient(DEMO_STAFF_ID, "Nora"), "nurse Nora")
    ben = _Chat(t, h.patient(PATIENT_ID, "Ben"), "patient Ben")
    start = h.clock.now().replace(hour=9, minute=0, second=0, microsecond=0)
    await h.advance_to(start + timedelta(days=1))

    t.scene("The clinic's nurse opened the bot once (Telegram lets a bot write only then)")
    await _type(h, nurse, "/start")

    t.scene("A second patient books, then moves the session with /sessions")
    await _type(h, ben, "/start")
    await _press(h, ben, "consent:yes")
    await _press(h, ben, "tz:keep")
    assert h.services is not None
    for index in range(len(h.services.protocol.screening)):
        await _press(h, ben, f"scr:{index}:n")
    day = h.clock.now().date()
    first, moved = day + timedelta(days=5), day + timedelta(days=6)
    await _type(h, ben, f"{first:%d %b} 11:00")
    await _press(h, ben, f"ok:{first.isoformat()}T11:00")
    await _type(h, ben, "/sessions")
    session_button = next(d for row in ben.user.last().buttons for _, d in row if ":mv:" in d)
    await _press(h, ben, session_button)
    await _type(h, ben, f"{moved:%d %b} 15:00")
    await _press(h, ben, f"ok:{moved.isoformat()}T15:00")

    t.scene("The clock runs to the evening after the session; Ben asks /aftercare")
    session_end = next(
        r.due_at
        for r in await _rows(h, PATIENT_ID)
        if r.step == "after-0" and r.state == "pending"
    )
    await _run_until(h, [ben], session_end + timedelta(hours=3))
    await _type(h, ben, "/aftercare")

    t.scene("The next day's check-in: Ben reports a red flag; the nurse is alerted at once")
    checkin = next(
        r for r in await _rows(h, PATIENT_ID) if r.step == "after-24h" and r.state == "pending"
    )
    await _run_until(h, [ben], checkin.due_at)
    await _press(h, ben, f"ci:{checkin.id}:urgent")
    nurse.show()

    t.scene("Four days later, /aftercare again")
    await _run_until(h, [ben], session_end + timedelta(days=4))
    await _type(h, ben, "/aftercare")

    async with h.services.sessions() as db:
        answers = (await db.exec(select(CheckIn))).all()
    alerted = any("Side-effect alert" in m.text for m in nurse.user.inbox)
    ok = alerted and [a.red_flag for a in answers] == [True]
    t.scene("Patient controls")
    t.say(
        f"    moved: yes; red-flag check-ins: {sum(a.red_flag for a in answers)}; "
        f"staff alerted: {'yes' if alerted else 'NO'}"
    )
    return 0 if ok else 1
