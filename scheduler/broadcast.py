"""Maintenance broadcasts: a staff text to many patients, through the same delivery rows.

Each recipient gets one `PlannedMessage` (step "broadcast", priority BROADCAST, so
time-critical reminders go first), and one `BroadcastRecipient` whose primary key
(broadcast, patient) makes a second copy impossible. The dispatcher sends them like any
row, so a broadcast survives a restart; progress and the report are read from the rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import msgspec
import sqlalchemy as sa
from sqlmodel import col, func, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from messages import texts
from messages.protocol import Protocol
from scheduler import clinics
from scheduler.db import saved
from scheduler.models import (
    Broadcast,
    BroadcastRecipient,
    BroadcastState,
    Clinic,
    MessageState,
    Patient,
    PlannedMessage,
    Priority,
    UTCDateTime,
)
from scheduler.planner import Prefs, apply_quiet_hours
from scheduler.ports import Outgoing
from scheduler.rows import CLINIC, PATIENT, PLANNED_COLUMNS, among, fetched

STEP = "broadcast"
AUDIENCES = ("due", "active", "course")
# A maintenance message is still worth reading a few days late; not after that.
VALIDITY = timedelta(days=3)
MAX_TEXT = 3500
RECIPIENT_BATCH = 10_000


async def audience_query(
    *, session: AsyncSession, clinic_id: int, audience: str, protocol: Protocol, now: datetime
) -> clinics.Audience:
    """The patients an audience reaches now (consenting, neither paused nor blocked), as a
    query of their ids."""
    if audience == "due":
        return await clinics.due_query(
            session=session, clinic_id=clinic_id, protocol=protocol, now=now
        )
    if audience == "course":
        return clinics.in_course_query(clinic_id=clinic_id, now=now)
    if audience == "active":
        return clinics.active_query(clinic_id=clinic_id)
    raise ValueError(f"unknown audience {audience!r}")


async def audience_size(
    *, session: AsyncSession, clinic_id: int, audience: str, protocol: Protocol, now: datetime
) -> int:
    """How many patients an audience reaches now: one COUNT."""
    query = await audience_query(
        session=session, clinic_id=clinic_id, audience=audience, protocol=protocol, now=now
    )
    return await clinics.count_of(session=session, query=query)


async def create_draft(
    *, session: AsyncSession, clinic_id: int, created_by: int, text: str, now: datetime
) -> Broadcast:
    draft = Broadcast(
        clinic_id=clinic_id, created_by=created_by, text=text[:MAX_TEXT], created_at=now
    )
    return await saved(session, draft)


async def start(
    *,
    session: AsyncSession,
    broadcast_id: int,
    clinic_id: int,
    audience: str,
    protocol: Protocol,
    now: datetime,
    progress_chat_id: int | None = None,
    progress_message_id: int | None = None,
) -> Broadcast | None:
    """Plan one row per recipient, in one transaction; None if it was not a draft of this
    clinic any more (a second press of Confirm, or another clinic's broadcast)."""
    moved = await session.exec(
        update(Broadcast)
        .where(
            col(Broadcast.id) == broadcast_id,
            col(Broadcast.clinic_id) == clinic_id,
            col(Broadcast.state) == BroadcastState.DRAFT,
        )
        .values(state=BroadcastState.RUNNING, audience=audience, started_at=now)
    )
    if not moved.rowcount:
        return None
    broadcast = await session.get(Broadcast, broadcast_id)
    assert broadcast is not None
    await session.refresh(broadcast)
    ids = await audience_query(
        session=session, clinic_id=clinic_id, audience=audience, protocol=protocol, now=now
    )
    broadcast.recipients = await _plan_rows(
        session=session, broadcast_id=broadcast_id, ids=ids.subquery(), now=now
    )
    broadcast.progress_chat_id = progress_chat_id
    broadcast.progress_message_id = progress_message_id
    broadcast.progress_at = now
    return await saved(session, broadcast)


class Progress(msgspec.Struct, frozen=True):
    total: int
    sent: int
    blocked: int
    failed: int
    remaining: int

    @property
    def done(self) -> bool:
        return self.remaining == 0


async def progress(*, session: AsyncSession, broadcast_id: int) -> Progress:
    """Counts read from the rows: sent, blocked, failed (or expired), still to send."""
    rows = (
        await session.exec(
            select(PlannedMessage.state, PlannedMessage.last_error, func.count())
            .join(BroadcastRecipient, col(BroadcastRecipient.message_id) == col(PlannedMessage.id))
            .where(BroadcastRecipient.broadcast_id == broadcast_id)
            .group_by(col(PlannedMessage.state), col(PlannedMessage.last_error))
        )
    ).all()
    counts = {"sent": 0, "blocked": 0, "failed": 0, "remaining": 0}
    for state, error, n in rows:
        if state in (MessageState.PENDING, MessageState.SENDING):
            counts["remaining"] += n
        elif state == MessageState.SENT:
            counts["sent"] += n
        elif error == "blocked":
            counts["blocked"] += n
        else:
            counts["failed"] += n
    return Progress(total=sum(counts.values()), **counts)


async def running(*, session: AsyncSession) -> list[Broadcast]:
    return list(
        (
            await session.exec(select(Broadcast).where(Broadcast.state == BroadcastState.RUNNING))
        ).all()
    )


async def finish(*, session: AsyncSession, broadcast_id: int, now: datetime) -> bool:
    """Running -> done, once (True for the one caller that moved it)."""
    result = await session.exec(
        update(Broadcast)
        .where(col(Broadcast.id) == broadcast_id, col(Broadcast.state) == BroadcastState.RUNNING)
        .values(state=BroadcastState.DONE, finished_at=now)
    )
    return bool(result.rowcount)


async def allow_paid(*, session: AsyncSession, clinic: Clinic, allowed: bool) -> Clinic:
    """A clinic's choice of Telegram's paid broadcasts: its broadcasts then go at up to
    1,000 messages a second, each message past the free 30 billed in Stars."""
    clinic.allow_paid_broadcast = allowed
    return await saved(session, clinic)


async def cancel_draft(*, session: AsyncSession, draft: Broadcast) -> None:
    """A draft the staff member cancelled: it will never be sent."""
    draft.state = BroadcastState.CANCELLED
    session.add(draft)


# A batch's patients and broadcasts: each statement made and compiled once, and read through
# the driver (`rows.fetched`), not built again for each batch a broadcast renders (under
# py-spy, building them was about 3 % of a paid broadcast's event loop).
_BROADCAST = Broadcast.__table__  # type: ignore[attr-defined]
_RECIPIENTS = sa.select(
    PATIENT.c.id, PATIENT.c.chat_id, PATIENT.c.language, PATIENT.c.clinic_id
).where(among(PATIENT.c.id, "patients"), PATIENT.c.consent_at.is_not(None))
_BROADCASTS = (
    sa.select(
        _BROADCAST.c.id,
        _BROADCAST.c.text,
        CLINIC.c.id,
        CLINIC.c.name,
        CLINIC.c.allow_paid_broadcast,
    )
    .select_from(_BROADCAST.join(CLINIC, CLINIC.c.id == _BROADCAST.c.clinic_id))
    .where(among(_BROADCAST.c.id, "broadcasts"))
)


async def compose(
    *, session: AsyncSession, rows: Sequence[PlannedMessage]
) -> dict[int, Outgoing | None]:
    """Broadcast rows as their patients read them, by row id (None: it may no longer be
    sent); two queries for the whole batch, whatever its size."""
    db = await session.connection()
    patient_ids = sorted({row.patient_id for row in rows})
    broadcast_ids = sorted({_broadcast_id(row) for row in rows})
    patients = {
        patient_id: (chat_id, language, clinic_id)
        for patient_id, chat_id, language, clinic_id in await fetched(
            db, _RECIPIENTS, patients=patient_ids
        )
    }
    broadcasts = {
        broadcast_id: (text, clinic_id, name, bool(paid))
        for broadcast_id, text, clinic_id, name, paid in await fetched(
            db, _BROADCASTS, broadcasts=broadcast_ids
        )
    }
    found: dict[int, Outgoing | None] = {}
    for row in rows:
        assert row.id is not None
        patient = patients.get(row.patient_id)
        broadcast = broadcasts.get(_broadcast_id(row))
        found[row.id] = None
        if patient is None or broadcast is None:
            continue
        chat_id, language, patient_clinic = patient
        text, clinic_id, clinic_name, paid = broadcast
        if patient_clinic == clinic_id:  # never to another clinic's patient
            found[row.id] = Outgoing(
                chat_id=chat_id,
                text=texts.broadcast(language, clinic_name, text),
                paid_broadcast=paid,
            )
    return found


def _broadcast_id(row: PlannedMessage) -> int:
    return int(row.extra.get("broadcast_id", 0))


async def _plan_rows(
    *, session: AsyncSession, broadcast_id: int, ids: sa.Subquery, now: datetime
) -> int:
    """One delivery row and one recipient row per patient of `ids`, inserted by the database
    (INSERT ... SELECT); the number of recipients.

    The patient's night is respected: their copy waits for their morning. Its due time depends
    only on the patient's zone and quiet hours, so it is computed once per such group (few),
    and each group is one statement."""
    expires = now + VALIDITY
    db = await session.connection()
    patient = sa.select(
        col(Patient.id), col(Patient.timezone), col(Patient.quiet_start), col(Patient.quiet_end)
    ).join(ids, col(Patient.id) == ids.c.id)
    groups = (
        await db.execute(
            patient.with_only_columns(
                col(Patient.timezone), col(Patient.quiet_start), col(Patient.quiet_end)
            ).distinct()
        )
    ).all()
    total = 0
    for zone, quiet_start, quiet_end in groups:
        prefs = Prefs.parse(zone, quiet_start, quiet_end)
        due = apply_quiet_hours(now, now, expires, prefs)
        rows = patient.with_only_columns(
            col(Patient.id),
            sa.literal(STEP),
            sa.literal(0),
            sa.literal(Priority.BROADCAST),
            sa.literal(MessageState.PENDING.value),
            sa.literal(due, UTCDateTime()),
            sa.literal(now, UTCDateTime()),
            sa.literal(expires, UTCDateTime()),
            sa.literal(0),
            sa.literal({"broadcast_id": broadcast_id}, sa.JSON()),
            sa.literal(now, UTCDateTime()),
        ).where(
            col(Patient.timezone) == zone,
            col(Patient.quiet_start) == quiet_start,
            col(Patient.quiet_end) == quiet_end,
        )
        insert = (
            sa.insert(PlannedMessage)
            .from_select([c for c in PLANNED_COLUMNS if c != "session_id"], rows)
            .returning(col(PlannedMessage.id), col(PlannedMessage.patient_id))
        )
        if db.dialect.name == "postgresql":
            # The recipients from the inserted rows in the same statement (a data-modifying
            # CTE): no row travels to the client and back. SQLite has no such CTE.
            made = insert.cte("planned")
            total += (
                await db.execute(
                    sa.insert(BroadcastRecipient).from_select(
                        ["broadcast_id", "patient_id", "message_id"],
                        sa.select(sa.literal(broadcast_id), made.c.patient_id, made.c.id),
                    )
                )
            ).rowcount
            continue
        planned = (await db.execute(insert)).all()
        for start in range(0, len(planned), RECIPIENT_BATCH):
            await db.execute(
                sa.insert(BroadcastRecipient),
                [
                    {
                        "broadcast_id": broadcast_id,
                        "patient_id": patient_id,
                        "message_id": message_id,
                    }
                    for message_id, patient_id in planned[start : start + RECIPIENT_BATCH]
                ],
            )
        total += len(planned)
    return total


def report_params(p: Progress) -> dict[str, object]:
    return {
        "total": p.total,
        "sent": p.sent,
        "blocked": p.blocked,
        "failed": p.failed,
        "remaining": p.remaining,
    }
