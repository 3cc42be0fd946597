"""Delivers due messages: wake, expire, claim, send, record, re-arm.

The database is the source of truth. APScheduler only decides *when* to wake: its single
job carries no state (an id and a bound method in a memory store), so nothing that must be
sent lives only in memory. Every state change is one conditional UPDATE, so two processes
can never both move the same row (see docs/delivery.md).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from scheduler.care import block_patient
from scheduler.clock import Clock
from scheduler.db import SessionFactory
from scheduler.models import MessageState, Patient, PlannedMessage
from scheduler.ports import Outcome, Outgoing, Sender, SendResult

log = logging.getLogger("aftercare.dispatch")

WAKE_JOB_ID = "dispatcher-wake"

# Renders one claimed row into a message (None: nothing to send any more, e.g. erased).
Composer = Callable[[AsyncSession, PlannedMessage, datetime], Awaitable[Outgoing | None]]

PM = PlannedMessage.__table__  # type: ignore[attr-defined]
PATIENT = Patient.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential back-off with jitter for transient errors, while the message is valid."""

    base: float = 5.0
    factor: float = 2.0
    cap: float = 900.0

    def delay(self, attempts: int, retry_after: float | None) -> timedelta:
        if retry_after is not None:
            return timedelta(seconds=retry_after)
        ceiling = min(self.cap, self.base * self.factor ** max(0, attempts - 1))
        return timedelta(seconds=random.uniform(ceiling / 2, ceiling))


class Dispatcher:
    """One per process. `poke()` after planning; `stop()` leaves nothing in `sending`."""

    def __init__(
        self,
        *,
        sessions: SessionFactory,
        sender: Sender,
        clock: Clock,
        composer: Composer,
        worker_id: str,
        batch: int = 100,
        lease: timedelta = timedelta(seconds=60),
        concurrency: int = 30,
        retry: RetryPolicy | None = None,
        is_postgres: bool = False,
    ) -> None:
        self._sessions = sessions
        self._sender = sender
        self._clock = clock
        self._compose = composer
        self.worker_id = worker_id
        self._batch = batch
        self._lease = lease
        self._concurrency = concurrency
        self._retry = retry or RetryPolicy()
        self._postgres = is_postgres
        self._scheduler: AsyncIOScheduler | None = None
        self._running = False
        self._again = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = False
        self.last_run: datetime | None = None

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self._scheduler.start()
        self._clock.subscribe(self.poke)
        self.poke()

    async def stop(self) -> None:
        """Stop waking; wait for the batch in flight to be recorded."""
        self._stopping = True
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
        await self._idle.wait()

    def poke(self) -> None:
        """Wake now: something was planned, or the clock moved."""
        self._arm(self._clock.now())

    def _arm(self, at: datetime | None) -> None:
        if self._scheduler is None or self._stopping:
            return
        real = self._clock.real_time_for(at) if at is not None else None
        if real is None:
            job = self._scheduler.get_job(WAKE_JOB_ID)
            if job is not None and not self._running:
                job.remove()
            return
        self._idle.clear()
        self._scheduler.add_job(
            self._wake,
            "date",
            run_date=real,
            id=WAKE_JOB_ID,
            replace_existing=True,
            misfire_grace_time=None,
        )

    async def wait_idle(self) -> None:
        """Until nothing is due at the clock's current instant and no batch is in flight."""
        while True:
            await self._idle.wait()
            await asyncio.sleep(0)
            if self._idle.is_set():
                return

    async def _wake(self) -> None:
        if self._running:
            self._again = True
            return
        self._running = True
        try:
            self._again = True
            while self._again and not self._stopping:
                self._again = False
                await self.run_due()
        except Exception:
            # The database may be briefly unavailable: log, and try again shortly.
            log.exception("dispatcher wake failed; retrying in 5 s")
            self._running = False
            self._arm(self._clock.now() + timedelta(seconds=5))
            return
        finally:
            self._running = False
        await self._rearm()

    async def _rearm(self) -> None:
        nxt = await self.next_due()
        self._arm(nxt)
        job = self._scheduler.get_job(WAKE_JOB_ID) if self._scheduler else None
        if job is None and not self._running:
            self._idle.set()

    # -- the work ------------------------------------------------------------------------

    async def run_due(self) -> int:
        """Expire what is stale, then claim and send due rows until none is left."""
        sent_total = 0
        while not self._stopping:
            now = self._clock.now()
            self.last_run = now
            async with self._sessions() as db, db.begin():
                await expire_stale(db, now)
                claimed = await claim_due(
                    db,
                    now=now,
                    worker_id=self.worker_id,
                    lease=self._lease,
                    limit=self._batch,
                    skip_locked=self._postgres,
                )
            if not claimed:
                return sent_total
            sent_total += await self._deliver(claimed, now)
        return sent_total

    async def _deliver(self, ids: Sequence[int], now: datetime) -> int:
        async with self._sessions() as db:
            rows = (
                await db.exec(
                    select(PlannedMessage)
                    .where(PM.c.id.in_(ids))
                    .order_by(PM.c.priority, PM.c.due_at, PM.c.seq, PM.c.id)
                )
            ).all()
            by_chat: dict[int, list[tuple[PlannedMessage, Outgoing | None]]] = defaultdict(list)
            for row in rows:
                outgoing = await self._compose(db, row, now)
                by_chat[row.patient_id].append((row, outgoing))

        limit = asyncio.Semaphore(self._concurrency)
        sent = 0

        async def one_chat(items: list[tuple[PlannedMessage, Outgoing | None]]) -> None:
            nonlocal sent
            for row, outgoing in items:  # in order within a chat
                async with limit:
                    if outgoing is None:
                        await self._record(
                            row, SendResult(Outcome.FAILED, error="nothing to send")
                        )
                        continue
                    result = await self._sender.send(outgoing)
                    await self._record(row, result)
                    if result.outcome is Outcome.SENT:
                        sent += 1
                    elif result.outcome is Outcome.BLOCKED:
                        return

        await asyncio.gather(*(one_chat(items) for items in by_chat.values()))
        return sent

    async def _record(self, row: PlannedMessage, result: SendResult) -> None:
        assert row.id is not None
        now = self._clock.now()
        async with self._sessions() as db, db.begin():
            if result.outcome is Outcome.SENT:
                await transition(
                    db,
                    row.id,
                    self.worker_id,
                    state=MessageState.SENT,
                    sent_at=now,
                    tg_message_id=result.message_id,
                    last_error=None,
                )
            elif result.outcome is Outcome.RETRY:
                retry_at = now + self._retry.delay(row.attempts, result.retry_after)
                if retry_at < row.expires_at:
                    await transition(
                        db,
                        row.id,
                        self.worker_id,
                        state=MessageState.PENDING,
                        due_at=retry_at,
                        last_error=_short(result.error),
                    )
                    self._arm(retry_at)
                else:
                    await transition(
                        db,
                        row.id,
                        self.worker_id,
                        state=MessageState.EXPIRED,
                        last_error=_short(result.error),
                    )
            elif result.outcome is Outcome.BLOCKED:
                await transition(
                    db, row.id, self.worker_id, state=MessageState.FAILED, last_error="blocked"
                )
                await block_patient(session=db, patient_id=row.patient_id, now=now)
            else:
                await transition(
                    db,
                    row.id,
                    self.worker_id,
                    state=MessageState.FAILED,
                    last_error=_short(result.error),
                )
        log.info(
            "delivery message=%s patient=%s step=%s outcome=%s attempts=%s",
            row.id,
            row.patient_id,
            row.step,
            result.outcome.value,
            row.attempts,
        )

    async def next_due(self) -> datetime | None:
        """The earliest instant at which something may need doing."""
        async with self._sessions() as db:
            pending = (
                await db.exec(
                    select(sa.func.min(PM.c.due_at)).where(
                        PM.c.state == MessageState.PENDING, _deliverable()
                    )
                )
            ).one()
            lease = (
                await db.exec(
                    select(sa.func.min(PM.c.lease_until)).where(PM.c.state == MessageState.SENDING)
                )
            ).one()
        candidates = [_aware(t) for t in (pending, lease) if t is not None]
        return min(candidates) if candidates else None


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _short(error: str | None) -> str | None:
    return error[:500] if error else None


def _deliverable() -> sa.ColumnElement[bool]:
    """Rows whose patient is neither paused nor blocked."""
    active = sa.select(PATIENT.c.id).where(
        PATIENT.c.paused_at.is_(None), PATIENT.c.blocked_at.is_(None)
    )
    condition: sa.ColumnElement[bool] = PM.c.patient_id.in_(active)
    return condition


async def expire_stale(db: AsyncSession, now: datetime) -> int:
    """Pending rows past their validity, and abandoned `sending` rows past it, expire."""
    result = await db.exec(
        sa.update(PM)
        .where(
            sa.or_(
                PM.c.state == MessageState.PENDING,
                sa.and_(PM.c.state == MessageState.SENDING, PM.c.lease_until < now),
            ),
            PM.c.expires_at <= now,
        )
        .values(state=MessageState.EXPIRED, lease_until=None, claimed_by=None)
    )
    return int(result.rowcount or 0)


async def claim_due(
    db: AsyncSession,
    *,
    now: datetime,
    worker_id: str,
    lease: timedelta,
    limit: int,
    skip_locked: bool,
) -> list[int]:
    """Move up to `limit` due rows to `sending` under a lease; returns their ids.

    A row in `sending` whose lease ran out belongs to a process that died: it is claimed
    again (this is the only source of duplicates, bounded by the in-flight window).
    """
    candidates = (
        sa.select(PM.c.id)
        .where(
            sa.or_(
                sa.and_(PM.c.state == MessageState.PENDING, PM.c.due_at <= now),
                sa.and_(PM.c.state == MessageState.SENDING, PM.c.lease_until < now),
            ),
            _deliverable(),
        )
        .order_by(PM.c.priority, PM.c.due_at, PM.c.seq, PM.c.id)
        .limit(limit)
    )
    if skip_locked:
        candidates = candidates.with_for_update(skip_locked=True)
    result = await db.exec(
        sa.update(PM)
        .where(
            PM.c.id.in_(candidates.scalar_subquery()),
            # Re-checked here: the row may have moved since the sub-select read it.
            sa.or_(
                PM.c.state == MessageState.PENDING,
                sa.and_(PM.c.state == MessageState.SENDING, PM.c.lease_until < now),
            ),
        )
        .values(
            state=MessageState.SENDING,
            lease_until=now + lease,
            claimed_by=worker_id,
            attempts=PM.c.attempts + 1,
        )
        .returning(PM.c.id)
    )
    return [row[0] for row in result]


async def transition(
    db: AsyncSession, message_id: int, worker_id: str, *, state: MessageState, **values: object
) -> bool:
    """Leave `sending` only if this worker still holds the lease (one conditional UPDATE)."""
    result = await db.exec(
        sa.update(PM)
        .where(
            PM.c.id == message_id,
            PM.c.state == MessageState.SENDING,
            PM.c.claimed_by == worker_id,
        )
        .values(state=state, lease_until=None, **values)
    )
    return bool(result.rowcount)
