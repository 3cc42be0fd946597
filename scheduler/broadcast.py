"""Maintenance broadcasts: a staff text to many patients, through the same delivery rows.

Each recipient gets one `PlannedMessage` (step "broadcast", priority BROADCAST, so
time-critical reminders go first), and one `BroadcastRecipient` whose primary key
(broadcast, patient) makes a second copy impossible. The dispatcher sends them like any
row, so a broadcast survives a restart; progress and the report are read from the rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import col, func, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from messages import texts
from messages.protocol import Protocol
from scheduler.care import prefs_of
from scheduler.clinics import active_patients, due_for_maintenance, in_course
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
)
from scheduler.planner import apply_quiet_hours
from scheduler.ports import Outgoing

STEP = "broadcast"
AUDIENCES = ("due", "active", "course")
# A maintenance message is still worth reading a few days late; not after that.
VALIDITY = timedelta(days=3)
MAX_TEXT = 3500


async def audience_ids(
    *, session: AsyncSession, clinic_id: int, audience: str, protocol: Protocol, now: datetime
) -> list[int]:
    """The patients an audience reaches now (consenting, neither paused nor blocked)."""
    if audience == "due":
        return [
            d.patient.id
            for d in await due_for_maintenance(
                session=session, clinic_id=clinic_id, protocol=protocol, now=now
            )
            if d.patient.id is not None
        ]
    if audience == "course":
        return await in_course(session=session, clinic_id=clinic_id, now=now)
    if audience == "active":
        return await active_patients(session=session, clinic_id=clinic_id)
    raise ValueError(f"unknown audience {audience!r}")


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
    ids = await audience_ids(
        session=session, clinic_id=clinic_id, audience=audience, protocol=protocol, now=now
    )
    patients = (
        (await session.exec(select(Patient).where(col(Patient.id).in_(ids)))).all() if ids else []
    )
    rows = []
    for patient in patients:
        assert patient.id is not None
        rows.append(
            PlannedMessage(
                patient_id=patient.id,
                session_id=None,
                step=STEP,
                priority=Priority.BROADCAST,
                # The patient's night is respected: their copy waits for their morning.
                due_at=apply_quiet_hours(now, now, now + VALIDITY, prefs_of(patient)),
                not_before=now,
                expires_at=now + VALIDITY,
                extra={"broadcast_id": broadcast_id},
                created_at=now,
            )
        )
    session.add_all(rows)
    await session.flush()  # one multi-row INSERT, ids returned
    session.add_all(
        BroadcastRecipient(broadcast_id=broadcast_id, patient_id=row.patient_id, message_id=row.id)
        for row in rows
        if row.id is not None
    )
    broadcast.recipients = len(patients)
    broadcast.progress_chat_id = progress_chat_id
    broadcast.progress_message_id = progress_message_id
    broadcast.progress_at = now
    return await saved(session, broadcast)


@dataclass(frozen=True)
class Progress:
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


async def compose(*, session: AsyncSession, row: PlannedMessage) -> Outgoing | None:
    """A broadcast row as the patient reads it; None if it may no longer be sent."""
    patient = await session.get(Patient, row.patient_id)
    broadcast = await session.get(Broadcast, int(row.extra.get("broadcast_id", 0)))
    if patient is None or broadcast is None or patient.consent_at is None:
        return None
    clinic = await session.get(Clinic, broadcast.clinic_id)
    if clinic is None or patient.clinic_id != clinic.id:
        return None
    text = texts.broadcast(patient.language, clinic.name, broadcast.text)
    return Outgoing(chat_id=patient.chat_id, text=text, paid_broadcast=clinic.allow_paid_broadcast)


def report_params(p: Progress) -> dict[str, object]:
    return {
        "total": p.total,
        "sent": p.sent,
        "blocked": p.blocked,
        "failed": p.failed,
        "remaining": p.remaining,
    }
