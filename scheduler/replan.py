"""Replanning a whole clinic (`aftercare replan --clinic SLUG`): after its protocol file, its
zone or its quiet hours changed, every booked session that still has pending messages is
planned again, as `patients.replan_patient` would plan it, but a batch at a time.

A run is a `replan_run` row. Each batch takes the next sessions in id order after the run's
cursor, cancels their pending rows, inserts the fresh ones and moves the cursor, in one
transaction: a killed run loses at most the batch in flight, and the next run of the
command finishes it from the cursor; no session gets two sets of pending rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from messages.protocol import Protocol
from scheduler.bulk import booking_of, cancel_pending, histories, prefs_from, steps_of
from scheduler.clock import Clock
from scheduler.db import SessionFactory
from scheduler.models import Clinic, MessageState, Patient, ReplanRun, SessionState
from scheduler.protocols import clinic_protocol
from scheduler.rows import PLANNED, TREATMENTS, insert_planned, planned_rows

BATCH = 1_000
REASON = "clinic replanned"
PATIENT = Patient.__table__  # type: ignore[attr-defined]
RUNS = ReplanRun.__table__  # type: ignore[attr-defined]


def _waiting() -> sa.ColumnElement[bool]:
    """The session still has a pending message (the sessions a replan changes)."""
    return sa.exists().where(
        PLANNED.c.session_id == TREATMENTS.c.id,
        PLANNED.c.state == MessageState.PENDING.value,
    )


def _sessions(clinic_id: int) -> sa.Select[tuple[int]]:
    return sa.select(TREATMENTS.c.id).where(
        TREATMENTS.c.clinic_id == clinic_id,
        TREATMENTS.c.state == SessionState.BOOKED.value,
        _waiting(),
    )


@dataclass(frozen=True)
class QuietChange:
    """The deployment's default quiet hours changed (AFTERCARE_QUIET_HOURS): the clinic's
    patients who still have the previous default get the new one (those who chose their own
    keep them)."""

    previous: tuple[str, str]
    current: tuple[str, str]

    def patients(self, clinic_id: int) -> sa.ColumnElement[bool]:
        return sa.and_(
            PATIENT.c.clinic_id == clinic_id,
            PATIENT.c.quiet_start == self.previous[0],
            PATIENT.c.quiet_end == self.previous[1],
        )


@dataclass(frozen=True)
class Preview:
    sessions: int
    patients: int
    pending: int
    resuming: ReplanRun | None
    quiet_moved: int = 0
    """Patients whose quiet hours follow the new default (QuietChange)."""


async def preview(
    *, session: AsyncSession, clinic: Clinic, quiet: QuietChange | None = None
) -> Preview:
    """What a replan of the clinic would touch, and the unfinished run it would resume."""
    assert clinic.id is not None
    db = await session.connection()
    moved = 0
    if quiet is not None and quiet.previous != quiet.current:
        moved = (
            await db.execute(
                sa.select(sa.func.count()).select_from(PATIENT).where(quiet.patients(clinic.id))
            )
        ).scalar_one()
    waiting = _sessions(clinic.id).subquery()
    sessions, patients = (
        await db.execute(
            sa.select(sa.func.count(), sa.func.count(sa.distinct(TREATMENTS.c.patient_id))).where(
                TREATMENTS.c.id.in_(sa.select(waiting.c.id))
            )
        )
    ).one()
    pending = (
        await db.execute(
            sa.select(sa.func.count())
            .select_from(PLANNED)
            .join(TREATMENTS, TREATMENTS.c.id == PLANNED.c.session_id)
            .where(
                TREATMENTS.c.clinic_id == clinic.id,
                TREATMENTS.c.state == SessionState.BOOKED.value,
                PLANNED.c.state == MessageState.PENDING.value,
            )
        )
    ).scalar_one()
    resuming = await unfinished(session, clinic)
    return Preview(int(sessions), int(patients), int(pending), resuming, int(moved))


async def unfinished(session: AsyncSession, clinic: Clinic) -> ReplanRun | None:
    return (
        await session.exec(
            select(ReplanRun)
            .where(ReplanRun.clinic_id == clinic.id, col(ReplanRun.finished_at).is_(None))
            .order_by(col(ReplanRun.id).desc())
        )
    ).first()


async def start(
    *,
    session: AsyncSession,
    clinic: Clinic,
    reason: str,
    now: datetime,
    quiet: QuietChange | None = None,
) -> ReplanRun:
    """The clinic's unfinished run, or a new one over every session waiting now (after the
    patients on the previous default quiet hours moved to the new one)."""
    assert clinic.id is not None
    run = await unfinished(session, clinic)
    if run is not None:
        return run
    db = await session.connection()
    if quiet is not None and quiet.previous != quiet.current:
        await db.execute(
            sa.update(PATIENT)
            .where(quiet.patients(clinic.id))
            .values(quiet_start=quiet.current[0], quiet_end=quiet.current[1])
        )
    total = (
        await db.execute(sa.select(sa.func.count()).select_from(_sessions(clinic.id).subquery()))
    ).scalar_one()
    run = ReplanRun(clinic_id=clinic.id, reason=reason[:200], total=int(total), started_at=now)
    session.add(run)
    await session.flush()
    return run


async def replan_batch(
    *,
    db: AsyncConnection,
    run_id: int,
    clinic: Clinic,
    default: Protocol,
    now: datetime,
    size: int = BATCH,
) -> int:
    """The run's next batch replanned (the caller commits); how many sessions (0: done, and
    the run is marked finished)."""
    assert clinic.id is not None
    # The first statement writes: on SQLite the batch holds the write lock from here, so the
    # dispatcher cannot send a row between the read of what was sent and its cancellation.
    cursor = (
        await db.execute(
            sa.update(RUNS)
            .where(RUNS.c.id == run_id)
            .values(cursor=RUNS.c.cursor)
            .returning(RUNS.c.cursor)
        )
    ).scalar_one()
    batch = (
        await db.execute(
            sa.select(
                TREATMENTS.c.id,
                TREATMENTS.c.patient_id,
                TREATMENTS.c.start_at,
                TREATMENTS.c.end_at,
                PATIENT.c.timezone,
                PATIENT.c.quiet_start,
                PATIENT.c.quiet_end,
            )
            .join(PATIENT, PATIENT.c.id == TREATMENTS.c.patient_id)
            .where(
                TREATMENTS.c.clinic_id == clinic.id,
                TREATMENTS.c.state == SessionState.BOOKED.value,
                TREATMENTS.c.id > cursor,
                _waiting(),
            )
            .order_by(TREATMENTS.c.id)
            .limit(size)
        )
    ).all()
    if not batch:
        await db.execute(sa.update(RUNS).where(RUNS.c.id == run_id).values(finished_at=now))
        return 0
    ids = [row.id for row in batch]
    postgres = db.dialect.name == "postgresql"
    history = await histories(db, ids, lock=postgres)
    booking = await booking_of(db, (row.patient_id for row in batch))
    protocol = clinic_protocol(clinic, default)
    rows = []
    for row in batch:
        booked = next(b for b in booking.sessions[row.patient_id] if b.id == row.id)
        prefs = prefs_from(row.timezone, row.quiet_start, row.quiet_end)
        steps = steps_of(booking, row.patient_id, booked, protocol, prefs, now, history[row.id])
        rows += planned_rows(row.patient_id, row.id, steps, now)
    await cancel_pending(db, ids, REASON)
    await insert_planned(db, rows)
    await db.execute(
        sa.update(RUNS)
        .where(RUNS.c.id == run_id)
        .values(cursor=ids[-1], done=RUNS.c.done + len(ids))
    )
    return len(ids)


async def run(
    *,
    sessions: SessionFactory,
    clinic: Clinic,
    default: Protocol,
    clock: Clock,
    quiet: QuietChange | None = None,
    reason: str = "",
    advance: Callable[[int, int], None] = lambda _done, _total: None,
    size: int = BATCH,
) -> int:
    """The clinic's replan run (its unfinished one, or a new one), every batch in its own
    transaction; `advance(done, total)` after each. The sessions done, in all runs."""
    async with sessions() as db, db.begin():
        started = await start(
            session=db, clinic=clinic, quiet=quiet, reason=reason, now=clock.now()
        )
        assert started.id is not None
        run_id, done, total = started.id, started.done, started.total
    advance(done, total)
    while True:
        async with sessions() as db, db.begin():
            count = await replan_batch(
                db=await db.connection(),
                run_id=run_id,
                clinic=clinic,
                default=default,
                now=clock.now(),
                size=size,
            )
        if not count:
            return done
        done += count
        advance(done, max(total, done))
