"""Helpers for the clinic-side tests (issue 5): staff, other clinics, invite links."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

from sqlmodel import select

from bot.offline.harness import Harness
from bot.offline.sandbox import SandboxUser, SentMessage
from bot.settings import Settings
from scheduler import clinics, invites
from scheduler.clock import FakeClock
from scheduler.models import Broadcast, Clinic, Patient, PlannedMessage
from tests.e2e import opened_link, running, say

STAFF_ID = 900  # staff of the default clinic, through the settings


async def add_clinic(h: Harness, slug: str, name: str, zone: str = "Europe/Berlin") -> Clinic:
    assert h.services is not None
    async with h.services.sessions() as db, db.begin():
        return await clinics.add_clinic(
            session=db,
            slug=slug,
            values={"name": name, "timezone": zone, "address": f"1 {name} Road"},
            now=h.clock.now(),
        )


async def staff_of_new_clinic(
    h: Harness, user_id: int, slug: str, name: str
) -> tuple[SandboxUser, Clinic]:
    """A clinic, and a staff member who joined it through a staff invite link."""
    clinic = await add_clinic(h, slug, name)
    assert h.services is not None and clinic.id is not None
    async with h.services.sessions() as db, db.begin():
        invite = await invites.staff_invite(session=db, clinic_id=clinic.id, now=h.clock.now())
    user = await opened_link(h, user_id, f"Staff {name}", invites.payload_of(invite))
    return user, clinic


def payload_in(message: SentMessage) -> str:
    """The start payload of the t.me link in a message (or a photo's caption)."""
    found = re.search(r"\?start=([A-Za-z0-9_-]+)", message.text)
    assert found, message.text
    return found.group(1)


async def patient_row(h: Harness, user: SandboxUser) -> Patient:
    assert h.services is not None
    async with h.services.sessions() as db:
        patient = (
            await db.exec(select(Patient).where(Patient.tg_user_id == user.user_id))
        ).first()
    assert patient is not None
    return patient


async def broadcast_rows(h: Harness) -> list[PlannedMessage]:
    assert h.services is not None
    async with h.services.sessions() as db:
        rows = await db.exec(select(PlannedMessage).where(PlannedMessage.step == "broadcast"))
        return list(rows.all())


async def broadcasts(h: Harness) -> list[Broadcast]:
    assert h.services is not None
    async with h.services.sessions() as db:
        return list((await db.exec(select(Broadcast))).all())


def texts_of(user: SandboxUser, since: int = 0) -> list[str]:
    return [m.text for m in user.inbox[since:]]


def local(at: str) -> datetime:
    return datetime.fromisoformat(at)


def fast_settings(**overrides: object) -> dict[str, object]:
    """Settings for clinic-side tests: staff of the default clinic, and no per-chat pacing
    in real time (a staff chat gets many edits in a row; the tests move a fake clock)."""
    values: dict[str, object] = {"staff_user_ids": [STAFF_ID], **overrides}
    if "rate_chat_per_second" in Settings.model_fields:
        values.setdefault("rate_chat_per_second", 1000.0)
        values.setdefault("rate_overall_per_second", 1000.0)
    return values


@asynccontextmanager
async def with_staff(
    db_url: str, clock: FakeClock, **overrides: object
) -> AsyncIterator[tuple[Harness, SandboxUser]]:
    """The bot (fast_settings) and the default clinic's staff member, who has not written
    to it yet."""
    async with running(db_url, clock, **fast_settings(**overrides)) as h:
        yield h, h.patient(STAFF_ID, "Sam")


@asynccontextmanager
async def clinic(
    db_url: str, clock: FakeClock, **overrides: object
) -> AsyncIterator[tuple[Harness, SandboxUser]]:
    """The bot (fast_settings) and the default clinic's staff member, who has opened it."""
    async with with_staff(db_url, clock, **overrides) as (h, staff):
        await say(h, staff, "/start")
        yield h, staff
