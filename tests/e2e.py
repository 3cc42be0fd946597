"""Helpers for end-to-end tests: the real Application against the sandbox Bot API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

from sqlmodel import col, select

from bot.offline.harness import Harness
from bot.offline.sandbox import SandboxUser, SentMessage
from bot.settings import Settings
from scheduler.clock import FakeClock
from scheduler.models import PlannedMessage

# The steps the shipped protocol plans for one booked session, in order.
TIMELINE = [
    "booked",
    "prep-3d",
    "prep-1d",
    "prep-2h",
    "after-0",
    "after-evening",
    "after-24h",
    "after-3d",
    "after-7d",
]


def test_settings(db_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": db_url,
        "clinic_name": "Test Clinic",
        "clinic_address": "1 Test Street",
        "clinic_phone": "+44 1",
        "clinic_timezone": "Europe/London",
        **overrides,
    }
    return Settings.model_validate(values)


@asynccontextmanager
async def running(db_url: str, clock: FakeClock, **overrides: object) -> AsyncIterator[Harness]:
    async with Harness(test_settings(db_url, **overrides), clock) as harness:
        yield harness


async def press(h: Harness, user: SandboxUser, data: str) -> None:
    """Press the button with this callback data on the newest message that has it."""
    for message in reversed(user.inbox):
        if any(d == data for row in message.buttons for _, d in row):
            user.press(message.message_id, data)
            await h.settle()
            return
    raise AssertionError(f"no message offers {data!r}")


async def say(h: Harness, user: SandboxUser, text: str) -> None:
    user.send(text)
    await h.settle()


async def command(h: Harness, user: SandboxUser, text: str) -> SentMessage:
    """Send a command (or any text); the bot's newest message to this user."""
    await say(h, user, text)
    return user.last()


async def onboard(h: Harness, user: SandboxUser) -> None:
    """/start, consent, keep the clinic's zone (the bot then asks for the session's date)."""
    await say(h, user, "/start")
    await finish_onboarding(h, user)


async def finish_onboarding(h: Harness, user: SandboxUser) -> None:
    """Consent, keep the clinic's zone (after any /start)."""
    await press(h, user, "consent:yes")
    await press(h, user, "tz:keep")


def screening_buttons(user: SandboxUser) -> list[str]:
    """The health-question buttons of the newest message still showing some (answered
    questions lose theirs; empty: none is waiting)."""
    for message in reversed(user.inbox):
        found = [d for row in message.buttons for _, d in row if d.startswith("scr:")]
        if found:
            return found
    return []


async def answer_screening(
    h: Harness, user: SandboxUser, *, yes: tuple[str, ...] = (), na: tuple[str, ...] = ()
) -> list[str]:
    """Answer every health question the bot asks: "yes" to the keys in `yes`, "does not
    apply" to those in `na`, "no" to the rest; remembered answers are confirmed as still
    true. The question keys asked, in order."""
    asked: list[str] = []
    for _ in range(20):
        buttons = screening_buttons(user)
        if not buttons:
            return asked
        if "scr:confirm:keep" in buttons:
            asked.append("confirm")
            await press(h, user, "scr:confirm:keep")
            continue
        key = buttons[0].split(":")[1]
        asked.append(key)
        answer = "yes" if key in yes else "na" if key in na else "no"
        await press(h, user, f"scr:{key}:{answer}")
    raise AssertionError("the questions did not end")


async def opened_link(h: Harness, user_id: int, name: str, payload: str) -> SandboxUser:
    """A new user who opened the bot through a t.me link with this start payload."""
    user = h.patient(user_id, name)
    user.start(payload)
    await h.settle()
    return user


async def onboarded(h: Harness, user_id: int, name: str) -> SandboxUser:
    """A new patient who has gone through `onboard`."""
    user = h.patient(user_id, name)
    await onboard(h, user)
    return user


async def book(
    h: Harness,
    user: SandboxUser,
    typed: str,
    local_iso: str,
    *,
    yes: tuple[str, ...] = (),
    na: tuple[str, ...] = (),
) -> None:
    """Type a date, confirm it, answer the health questions (see `answer_screening`)."""
    await say(h, user, typed)
    await press(h, user, f"ok:{local_iso}")
    await answer_screening(h, user, yes=yes, na=na)


async def pending(h: Harness) -> list[PlannedMessage]:
    assert h.services is not None
    async with h.services.sessions() as db:
        rows = await db.exec(
            select(PlannedMessage)
            .where(PlannedMessage.state == "pending")
            .order_by(col(PlannedMessage.due_at), col(PlannedMessage.seq))
        )
        return list(rows.all())


async def all_rows(h: Harness) -> list[PlannedMessage]:
    assert h.services is not None
    async with h.services.sessions() as db:
        rows = await db.exec(select(PlannedMessage).order_by(col(PlannedMessage.seq)))
        return list(rows.all())


async def run_timeline(h: Harness, until: datetime | None = None) -> None:
    """Jump from one due time to the next (up to `until`), settling at each."""
    for _ in range(200):
        rows = await pending(h)
        if not rows or (until is not None and rows[0].due_at > until):
            break
        await h.advance_to(max(rows[0].due_at, h.clock.now()))
    if until is not None and until > h.clock.now():
        await h.advance_to(until)
