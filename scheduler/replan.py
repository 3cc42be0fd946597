"""Replanning a whole clinic (`aftercare replan --clinic SLUG`): after its protocol file, its
zone or its quiet hours changed, every booked session that still has pending messages is
planned again, as `patients.replan_patient` would plan it, but a batch at a time.

A run is a `replan_run` row. Each batch takes the next sessions in id order after the run's
cursor, moves their pending rows to the fresh plan (`rows.replace_planned`) and moves the
cursor, in one transaction: a killed run loses at most the batch in flight, and the next run of the
command finishes it from the cursor; no session gets two sets of pending rows.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from messages.protocol import Protocol
from scheduler.bulk import (
    Pending,
    booking_of,
    gil_shared,
    give_way,
    heap_kept,
    histories,
    pending_rows,
    steps_of,
    writers,
)
from scheduler.clock import Clock
from scheduler.db import SessionFactory
from scheduler.models import Clinic, MessageState, ReplanRun, SessionState
from scheduler.planner import Prefs
from scheduler.protocols import clinic_protocol
from scheduler.rows import (
    PATIENT,
    PLAN_TURN,
    PLANNED,
    TREATMENTS,
    in_turns,
    planned_rows,
    replace_planned,
    state_in,
)

BATCH = 1_000
REASON = "clinic replanned"
RUNS = ReplanRun.__table__  # type: ignore[attr-defined]


def _waiting() -> sa.ColumnElement[bool]:
    """The session still has a pending message (the sessions a replan changes)."""
    return sa.exists().where(
        PLANNED.c.session_id == TREATMENTS.c.id, state_in(MessageState.PENDING)
    )


def _still_waiting(query: sa.Select[Any], dialect: Dialect) -> sa.Select[Any]:
    """`query`'s sessions, only those still waiting (`_waiting`), as a batch reads them (in
    id order, the caller's limit).

    On PostgreSQL as a LATERAL probe of each session's rows, an index seek for each session
    the batch goes through. Its planner makes EXISTS a semi-join, which once the table has
    statistics reads every pending (or every) row of the table for each batch, in session
    order: a batch took 28 ms so among 88,000 pending rows, against 3 ms; 52-62 ms against
    26-32 ms with 875,000 sent rows besides (EXPLAIN ANALYZE). Without statistics (just
    after an import) both probe: 35 and 30 ms. (SQLite runs EXISTS as that probe already,
    and has no LATERAL.)"""
    if dialect.name != "postgresql":
        return query.where(_waiting())
    probe = (
        sa.select(sa.literal(1).label("one"))
        .where(PLANNED.c.session_id == TREATMENTS.c.id, state_in(MessageState.PENDING))
        .limit(1)
        .lateral("waiting")
    )
    return query.join(probe, sa.true())


def _sessions(clinic_id: int) -> sa.Select[tuple[int]]:
    return sa.select(TREATMENTS.c.id).where(
        TREATMENTS.c.clinic_id == clinic_id,
        TREATMENTS.c.state == SessionState.BOOKED.value,
        _waiting(),
    )


def _pending(clinic_id: int) -> sa.Select[int]:
    """How many pending messages the clinic's booked sessions have."""
    return (
        sa.select(sa.func.count())
        .select_from(PLANNED)
        .join(TREATMENTS, TREATMENTS.c.id == PLANNED.c.session_id)
        .where(
            TREATMENTS.c.clinic_id == clinic_id,
            TREATMENTS.c.state == SessionState.BOOKED.value,
            state_in(MessageState.PENDING),
        )
    )


class QuietChange(msgspec.Struct, frozen=True):
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


class Preview(msgspec.Struct, frozen=True):
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
    pending = (await db.execute(_pending(clinic.id))).scalar_one()
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


class Prepared(msgspec.Struct, frozen=True):
    """A batch planned ahead of its writes: the sessions' fresh rows, and the steps that
    were pending when it was read (if the dispatcher sent one since, the batch replans that
    session again under the write lock)."""

    ids: list[int]
    rows: dict[int, list[dict[str, Any]]]
    pending: Pending


def _batch(
    clinic_id: int, dialect: Dialect, after: int, size: int, only: list[int] | None = None
) -> sa.Select[Any]:
    """The clinic's booked sessions still waiting after session id `after`, the first `size`
    in id order (or the sessions `only`), with their patients' zones and quiet hours: a
    range of (clinic_id, state, id) (migration 0017), whatever the statistics."""
    query = (
        sa.select(
            TREATMENTS.c.id,
            TREATMENTS.c.patient_id,
            PATIENT.c.timezone,
            PATIENT.c.quiet_start,
            PATIENT.c.quiet_end,
        )
        .join(PATIENT, PATIENT.c.id == TREATMENTS.c.patient_id)
        .where(
            TREATMENTS.c.clinic_id == clinic_id,
            TREATMENTS.c.state == SessionState.BOOKED.value,
        )
        .order_by(TREATMENTS.c.id)
    )
    if only is not None:
        return query.where(TREATMENTS.c.id.in_(only))
    return _still_waiting(query.where(TREATMENTS.c.id > after), dialect).limit(size)


async def prepare(
    db: AsyncConnection,
    *,
    clinic: Clinic,
    default: Protocol,
    now: datetime,
    after: int = 0,
    only: list[int] | None = None,
    size: int = BATCH,
    turn: Callable[[], Awaitable[Any]] | None = None,
) -> Prepared | None:
    """The next batch of the clinic's waiting sessions after session id `after` (or the
    sessions `only`), read and planned; None when there are none left. Reads only."""
    assert clinic.id is not None
    batch = (await db.execute(_batch(clinic.id, db.dialect, after, size, only))).all()
    if not batch:
        return None
    ids = [row.id for row in batch]
    history, pending = await histories(db, ids)
    booking = await booking_of(db, (row.patient_id for row in batch))
    protocol = clinic_protocol(clinic, default)
    if turn is not None:
        await turn()
    rows = {}
    async for row in in_turns(batch, PLAN_TURN):
        booked = next(b for b in booking.sessions[row.patient_id] if b.id == row.id)
        prefs = Prefs.parse(row.timezone, row.quiet_start, row.quiet_end)
        steps = steps_of(booking, row.patient_id, booked, protocol, prefs, now, history[row.id])
        rows[row.id] = planned_rows(row.patient_id, row.id, steps, now, bulk=True)
    return Prepared(ids, rows, pending)


async def apply(
    db: AsyncConnection,
    *,
    run_id: int,
    batch: Prepared,
    clinic: Clinic,
    default: Protocol,
    now: datetime,
    turn: asyncio.Event | None = None,
    after: Awaitable[Any] | None = None,
) -> int:
    """A prepared batch written (the caller commits): the sessions' pending rows made their
    fresh rows (`rows.replace_planned`), the run's cursor moved past them. How many
    sessions. `after`: the write of the batch before, still under way (PostgreSQL writes
    two at once); the cursor moves once it has committed, so batches commit in order."""
    if db.dialect.name != "postgresql":
        # The first statement writes: on SQLite the batch holds the write lock from here
        # on, so what it checks stays true. (On PostgreSQL the pending rows are locked, and
        # the run's row only when the cursor moves, at the end.)
        await db.execute(sa.update(RUNS).where(RUNS.c.id == run_id).values(cursor=RUNS.c.cursor))
    pending = await pending_rows(db, batch.ids, lock=True)
    rows = dict(batch.rows)
    moved = [i for i in batch.ids if pending[i] != batch.pending[i]]
    if moved:
        # Sent, expired or replanned by a booking since the batch was read: plan them again
        # from what their rows say now.
        again = await prepare(db, clinic=clinic, default=default, now=now, only=moved)
        for i in moved:
            rows[i] = again.rows.get(i, []) if again is not None else []
    moving = (
        sa.update(RUNS)
        .where(RUNS.c.id == run_id)
        .values(cursor=batch.ids[-1], done=RUNS.c.done + len(batch.ids))
    )
    if after is None:
        await db.execute(moving)
    # The batch's rows, sent off as the next batch's planning begins (`turn`).
    await replace_planned(db, rows, pending, REASON, turn)
    if after is not None:
        await after
        await db.execute(moving)
    return len(batch.ids)


async def replan_batch(
    *,
    db: AsyncConnection,
    run_id: int,
    clinic: Clinic,
    default: Protocol,
    now: datetime,
    size: int = BATCH,
) -> int:
    """The run's next batch, read, planned and written on one connection (the caller
    commits); how many sessions (0: done, and the run is marked finished)."""
    cursor = (await db.execute(sa.select(RUNS.c.cursor).where(RUNS.c.id == run_id))).scalar_one()
    batch = await prepare(db, clinic=clinic, default=default, now=now, after=cursor, size=size)
    if batch is None:
        await _finish(db, run_id, now)
        return 0
    return await apply(db, run_id=run_id, batch=batch, clinic=clinic, default=default, now=now)


async def _finish(db: AsyncConnection, run_id: int, now: datetime) -> None:
    await db.execute(sa.update(RUNS).where(RUNS.c.id == run_id).values(finished_at=now))


@heap_kept
@gil_shared
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
        cursor = started.cursor
    advance(done, total)

    # Pipelined: while one connection writes a batch, another reads and plans the next (the
    # planner's Python and the database's writes overlap; `apply` checks what changed). On
    # PostgreSQL two batches are written at once (`bulk.writers`: their sessions differ),
    # and commit in order.
    async def write(batch: Prepared, turn: asyncio.Event, after: Awaitable[Any] | None) -> None:
        nonlocal done
        try:
            await asyncio.sleep(give_way(sessions))
            async with sessions() as db, db.begin():
                count = await apply(
                    await db.connection(),
                    run_id=run_id,
                    batch=batch,
                    clinic=clinic,
                    default=default,
                    now=clock.now(),
                    turn=turn,
                    after=after,
                )
            done += count
            advance(done, max(total, done))
        finally:
            turn.set()

    async def read(
        after: int, turn: Callable[[], Awaitable[Any]] | None = None
    ) -> Prepared | None:
        async with sessions() as reader, reader.begin():
            return await prepare(
                await reader.connection(),
                clinic=clinic,
                default=default,
                now=clock.now(),
                after=after,
                size=size,
                turn=turn,
            )

    most = writers(sessions)
    under_way: deque[asyncio.Task[None]] = deque()  # oldest first
    batch = await read(cursor)
    try:
        while batch is not None:
            while len(under_way) >= most:
                await under_way.popleft()
            turn = asyncio.Event()
            before = under_way[-1] if under_way else None
            under_way.append(asyncio.create_task(write(batch, turn, before)))
            # One writer: the next batch is planned while this one's rows are written (its
            # turn). Two: at once, while the two writes keep the server busy.
            batch = await read(batch.ids[-1], turn.wait if most == 1 else None)
        while under_way:
            await under_way.popleft()
    finally:
        # A failed batch (or read) stops the run: the writes under way are cancelled, their
        # transactions rolled back; the next run resumes from the cursor.
        for task in under_way:
            task.cancel()
        await asyncio.gather(*under_way, return_exceptions=True)
    async with sessions() as db, db.begin():
        await _finish(await db.connection(), run_id, clock.now())
    return done
