"""Seeding a database directly with patients and planned messages (fault tests, benchmarks).

Bulk core inserts, so that a million rows take seconds, not minutes. Every patient gets a
clinic, a treatment session and `per_patient` rows of the step `step`; chat ids are
`first_chat + i`, so a sandbox user per patient can count what it received.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from scheduler import broadcast
from scheduler.models import Broadcast, BroadcastRecipient, BroadcastState, MessageState, Priority
from scheduler.rows import CLINIC, PATIENT, PLANNED, TREATMENTS

BROADCAST = Broadcast.__table__  # type: ignore[attr-defined]
RECIPIENT = BroadcastRecipient.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Seeded:
    chat_ids: list[int]
    message_ids: list[int]


async def seed_due(
    engine: AsyncEngine,
    *,
    count: int,
    now: datetime,
    due: timedelta = timedelta(0),
    valid: timedelta = timedelta(hours=2),
    per_patient: int = 1,
    spread: timedelta = timedelta(0),
    first_chat: int = 500_000,
    step: str = "after-7d",
    priority: int = Priority.REMINDER,
    chunk: int = 5_000,
) -> Seeded:
    """`count` patients, each with `per_patient` rows due at `now + due` (+ i·spread/count).

    Ids are explicit (fast, and known without a round trip); PostgreSQL's sequences are
    moved past them afterwards so that later inserts do not collide.
    """
    async with engine.begin() as db:
        clinic_id = await _next_id(db, CLINIC)
        first_patient = await _next_id(db, PATIENT)
        first_treatment = await _next_id(db, TREATMENTS)
        first_message = await _next_id(db, PLANNED)
        await db.execute(
            CLINIC.insert(),
            [
                {
                    "id": clinic_id,
                    "slug": f"seed-{clinic_id}",
                    "name": "Seed clinic",
                    "timezone": "UTC",
                    "created_at": now,
                }
            ],
        )
        chat_ids = [first_chat + i for i in range(count)]
        message_ids: list[int] = []
        for start in range(0, count, chunk):
            part = range(start, min(count, start + chunk))
            await db.execute(
                PATIENT.insert(),
                [
                    {
                        "id": first_patient + i,
                        "clinic_id": clinic_id,
                        "tg_user_id": chat_ids[i],
                        "chat_id": chat_ids[i],
                        "timezone": "UTC",
                        "draft": {},
                        "consent_at": now,
                        "created_at": now,
                    }
                    for i in part
                ],
            )
            await db.execute(
                TREATMENTS.insert(),
                [
                    {
                        "id": first_treatment + i,
                        "patient_id": first_patient + i,
                        "clinic_id": clinic_id,
                        "start_at": now - timedelta(days=7, hours=1),
                        "end_at": now - timedelta(days=7),
                        "screening": {},
                        "created_at": now,
                    }
                    for i in part
                ],
            )
            rows: list[dict[str, object]] = []
            for i in part:
                at = now + due + (spread * i / count if count else timedelta(0))
                for k in range(per_patient):
                    message_id = first_message + i * per_patient + k
                    message_ids.append(message_id)
                    rows.append(
                        {
                            "id": message_id,
                            "patient_id": first_patient + i,
                            "session_id": first_treatment + i,
                            "step": step,
                            "seq": k,
                            "priority": priority,
                            "state": MessageState.PENDING,
                            "due_at": at + timedelta(days=k),
                            "not_before": at + timedelta(days=k),
                            "expires_at": at + timedelta(days=k) + valid,
                            "extra": {},
                            "created_at": now,
                        }
                    )
            await db.execute(PLANNED.insert(), rows)
        await move_sequences(db, ("clinic", "patient", "treatment_session", "planned_message"))
    return Seeded(chat_ids, message_ids)


@dataclass(frozen=True)
class Reminders:
    """`count` patients' reminders (chats from `first_chat` on) falling due one after another
    over `window` seconds, the first `first_due` seconds after they are seeded; and when each
    reached the sandbox."""

    count: int
    first_chat: int
    first_due: float
    window: float

    async def seed(self, engine: AsyncEngine, now: datetime) -> Seeded:
        return await seed_due(
            engine,
            count=self.count,
            now=now,
            due=timedelta(seconds=self.first_due),
            spread=timedelta(seconds=self.window),
            first_chat=self.first_chat,
        )

    def due(self, i: int, seeded: float) -> float:
        """When reminder `i` fell due on the monotonic clock, `seeded` being when they were."""
        return seeded + self.first_due + self.window * i / self.count

    def arrived(self, sends: list[Any]) -> dict[int, float]:
        """When each reminder first reached its chat (the sandbox's `sends`), by its number."""
        arrived: dict[int, float] = {}
        for chat, at, status, _paid in sends:
            if status == 200 and self.first_chat <= chat < self.first_chat + self.count:
                arrived.setdefault(int(chat) - self.first_chat, float(at))
        return arrived


async def _next_id(db: AsyncConnection, table: sa.Table) -> int:
    """The id after the table's largest (1 in an empty table)."""
    return ((await db.execute(sa.select(sa.func.max(table.c.id)))).scalar() or 0) + 1


async def move_sequences(db: AsyncConnection, tables: Sequence[str]) -> None:
    """PostgreSQL's id sequences of these tables moved past the ids inserted explicitly, so
    that later inserts do not collide (SQLite takes the largest id + 1 by itself)."""
    if db.dialect.name != "postgresql":
        return
    for table in tables:
        await db.execute(
            sa.text(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT max(id) FROM {table}))"
            )
        )


async def seed_broadcast(
    engine: AsyncEngine, *, count: int, now: datetime, paid: bool, first_chat: int
) -> Seeded:
    """A running broadcast of a new clinic (`paid`: it allows Telegram's paid broadcasts) to
    `count` new patients, each with its row due now, as `scheduler.broadcast.start` plans."""
    seeded = await seed_due(
        engine,
        count=count,
        now=now,
        valid=broadcast.VALIDITY,
        step=broadcast.STEP,
        priority=Priority.BROADCAST,
        first_chat=first_chat,
    )
    async with engine.begin() as db:
        clinic_id = (await db.execute(sa.select(sa.func.max(CLINIC.c.id)))).scalar_one()
        await db.execute(
            CLINIC.update().where(CLINIC.c.id == clinic_id).values(allow_paid_broadcast=paid)
        )
        broadcast_id = await _next_id(db, BROADCAST)
        await db.execute(
            BROADCAST.insert(),
            [
                {
                    "id": broadcast_id,
                    "clinic_id": clinic_id,
                    "created_by": 0,
                    "text": "The spring maintenance session is open for booking.",
                    "audience": "active",
                    "state": BroadcastState.RUNNING,
                    "recipients": count,
                    "created_at": now,
                    "started_at": now,
                }
            ],
        )
        # The seeded rows' ids are consecutive: one range, not a list of 100,000 values.
        seeded_rows = PLANNED.c.id.between(seeded.message_ids[0], seeded.message_ids[-1])
        await db.execute(
            PLANNED.update().where(seeded_rows).values(extra={"broadcast_id": broadcast_id})
        )
        await db.execute(
            RECIPIENT.insert().from_select(
                ["broadcast_id", "patient_id", "message_id"],
                sa.select(sa.literal(broadcast_id), PLANNED.c.patient_id, PLANNED.c.id).where(
                    seeded_rows
                ),
            )
        )
    return seeded


async def states(engine: AsyncEngine) -> dict[int, str]:
    """Every planned message's state, by id."""
    async with engine.connect() as db:
        rows = await db.execute(sa.select(PLANNED.c.id, PLANNED.c.state))
        return {row[0]: row[1] for row in rows}
