"""Helpers for the patient-conversation tests (issue 3): forged buttons, rows by patient."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from sqlalchemy.orm import Mapped
from sqlmodel import SQLModel, col, select

from bot.offline.harness import Harness
from bot.offline.sandbox import SandboxUser, SentMessage
from scheduler.clock import FakeClock
from scheduler.models import CheckIn, Patient, PlannedMessage, TreatmentSession
from tests.e2e import book, onboarded, running, say


@asynccontextmanager
async def bot(db_url: str, clock: FakeClock, **overrides: object) -> AsyncIterator[Harness]:
    """`running`, with the send rates raised: these tests are about the conversation, and the
    sandbox is a test server, so real-time pacing (1 message a second per chat, 30 overall)
    would only make them slow."""
    settings: dict[str, object] = {
        "rate_chat_per_second": 1000,
        "rate_overall_per_second": 10_000,
        **overrides,
    }
    async with running(db_url, clock, **settings) as harness:
        yield harness


@asynccontextmanager
async def with_nurse(
    db_url: str, clock: FakeClock, nurse_id: int, *other_staff: int
) -> AsyncIterator[tuple[Harness, SandboxUser]]:
    """`bot` with staff (through the settings: the nurse and `other_staff`), and the nurse,
    who has written to the bot once (staff must have, to be written to)."""
    staff_ids = ",".join(str(i) for i in (nurse_id, *other_staff))
    async with bot(db_url, clock, staff_user_ids=staff_ids) as h:
        nurse = h.patient(nurse_id, "Nurse")
        await say(h, nurse, "/start")
        yield h, nurse


def forge_press(
    h: Harness, user: SandboxUser, data: str, message: SentMessage | None = None
) -> str:
    """A callback query with any data, as if pressed on `message` (default: the user's last
    bot message), whether or not that message carries such a button. Its query id."""
    target = message or user.last()
    query_id = h.api._new_query(user)
    h.api.enqueue(
        "callback_query",
        {
            "id": query_id,
            "from": user.user,
            "message": h.api.message_json(target),
            "chat_instance": "42",
            "data": data,
        },
    )
    return query_id


async def forge(h: Harness, user: SandboxUser, data: str) -> None:
    forge_press(h, user, data)
    await h.settle()


async def patient_of(h: Harness, user: SandboxUser) -> Patient | None:
    assert h.services is not None
    async with h.services.sessions() as db:
        return (await db.exec(select(Patient).where(Patient.tg_user_id == user.user_id))).first()


_T = TypeVar("_T", TreatmentSession, PlannedMessage, CheckIn)


async def _rows_of(h: Harness, user: SandboxUser, table: type[_T], order: Mapped[Any]) -> list[_T]:
    """The user's rows of a table with a `patient_id`, in this order."""
    patient = await patient_of(h, user)
    assert patient is not None
    assert h.services is not None
    async with h.services.sessions() as db:
        rows = await db.exec(select(table).where(table.patient_id == patient.id).order_by(order))
        return list(rows.all())


async def sessions_of(h: Harness, user: SandboxUser) -> list[TreatmentSession]:
    return await _rows_of(h, user, TreatmentSession, col(TreatmentSession.start_at))


async def sessions_by_id(h: Harness, user: SandboxUser) -> list[TreatmentSession]:
    """The user's sessions in the order they were booked (a moved one keeps its place)."""
    return await _rows_of(h, user, TreatmentSession, col(TreatmentSession.id))


async def messages_of(h: Harness, user: SandboxUser) -> list[PlannedMessage]:
    return await _rows_of(h, user, PlannedMessage, col(PlannedMessage.id))


async def checkins_of(h: Harness, user: SandboxUser) -> list[CheckIn]:
    return await _rows_of(h, user, CheckIn, col(CheckIn.id))


async def snapshot(h: Harness) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, as plain tuples, sorted (to compare before and after)."""
    assert h.services is not None
    out: dict[str, list[tuple[Any, ...]]] = {}
    async with h.services.engine.connect() as connection:
        for table in SQLModel.metadata.sorted_tables:
            result = await connection.execute(table.select())
            out[table.name] = sorted((tuple(row) for row in result), key=repr)
    return out


async def booked_patient(
    h: Harness, user_id: int, name: str, typed: str, local_iso: str
) -> SandboxUser:
    """A patient who has onboarded and booked one session."""
    user = await onboarded(h, user_id, name)
    await book(h, user, typed, local_iso)
    return user


def texts_since(user: SandboxUser, count: int) -> list[str]:
    return [m.text for m in user.inbox[count:]]


async def book_another(h: Harness, user: SandboxUser, typed: str, local_iso: str) -> None:
    """/book, then a typed date, confirmed, and the health questions (all "no", remembered
    answers confirmed)."""
    await say(h, user, "/book")
    await book(h, user, typed, local_iso)
