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
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

import msgspec
import sqlalchemy as sa
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from scheduler import failures
from scheduler.care import block_patients
from scheduler.clock import Clock
from scheduler.db import SessionFactory
from scheduler.leader import Leadership
from scheduler.models import (
    MessageState,
    Patient,
    PlannedMessage,
    Priority,
    pending_due,
    planned_state_is,
)
from scheduler.planner import Prefs, apply_quiet_hours, in_quiet_hours
from scheduler.ports import DeliveryObserver, Outcome, Outgoing, Sender, SendResult
from scheduler.ratelimit import RateLimiter
from scheduler.sqlite_loop import on_the_loop

log = logging.getLogger("aftercare.dispatch")

WAKE_JOB_ID = "dispatcher-wake"
BULK_SLICE = timedelta(seconds=0.5)
# How often a run of batches sweeps what expired, and rows abandoned while sending back to
# pending: each wake's first batch, then at most this often. The sweep reads every due row
# (those left waiting past their validity are among them); the claim passes over an expired
# row meanwhile.
EXPIRY_SWEEP = timedelta(seconds=5)
# How late a message may go and still be "on time" for `night_hold`: a reminder due at
# 21:58 that the dispatcher reaches at 22:01 goes; one the bot could not send for an hour
# waits for the morning.
LATE = timedelta(minutes=5)
HELD_FOR_THE_NIGHT = "held: quiet hours"
POLL_JOB_ID = "dispatcher-poll"


class Composer(Protocol):
    """Renders claimed rows, in one session, into their messages in the same order (None
    for a row: nothing to send any more, e.g. erased)."""

    async def __call__(
        self, *, session: AsyncSession, rows: Sequence[PlannedMessage], now: datetime
    ) -> Sequence[Outgoing | None]: ...


PM = PlannedMessage.__table__  # type: ignore[attr-defined]
PATIENT = Patient.__table__  # type: ignore[attr-defined]


class RetryPolicy(msgspec.Struct, frozen=True):
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
        concurrency: int = 10,
        retry: RetryPolicy | None = None,
        is_postgres: bool = False,
        limiter: RateLimiter | None = None,
        leader: Leadership | None = None,
        poll_seconds: float = 1.0,
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
        self._limiter = limiter
        self._leader = leader
        self._poll_seconds = poll_seconds
        # Sends start only while this much of the lease is left; the rest go back to pending.
        self._margin = min(lease / 2, timedelta(seconds=10))
        self._active = leader is None
        # Set while this process leads (always without leader election), and while it does
        # not: long polling follows them (bot/serve/polling.py).
        self._leading = asyncio.Event()
        self._standing_by = asyncio.Event()
        self._ticked = False
        self._not_running = asyncio.Event()
        self._not_running.set()
        # Re-arms in flight (a run's read of the next due time, after the run): a stop waits
        # for them too, or the process closes the database under that query.
        self._rearming = 0
        self._no_rearm = asyncio.Event()
        self._no_rearm.set()
        self._stop_event = asyncio.Event()
        self.last_error: datetime | None = None
        self.released = 0  # claimed rows given back unsent (stop, lease running out)
        # Called after each delivered batch (broadcast progress); must not raise.
        self.after_batch: Callable[[], Awaitable[None]] | None = None
        self.observer: DeliveryObserver | None = None
        self._scheduler: AsyncIOScheduler | None = None
        self._running = False
        self._again = False
        self._pokes = 0  # how many pokes so far (`_rearm` sees one that came while it read)
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = False
        self.last_run: datetime | None = None

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self, *, wake: bool = True) -> None:
        """Start waking for due rows; `wake=False`: the first round waits for a `poke` (the
        runner's, once its receiver has asked Telegram for updates: bot/serve/runner.py)."""
        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self._scheduler.start()
        self._clock.subscribe(self.poke)
        self._lead(self._active)
        if self._leader is not None:
            # Several processes: the lock holder delivers; the others try every poll. The
            # holder also looks every poll, for rows that other processes planned.
            self._scheduler.add_job(
                self._tick,
                "interval",
                seconds=self._poll_seconds,
                id=POLL_JOB_ID,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=None,
            )
            await self._tick(wake=wake)
        if wake:
            self.poke()

    async def stop(self) -> None:
        """Stop waking; let in-flight sends finish and be recorded, release the rest.

        Rows of the claimed batch not yet sent go back to `pending`, so a clean stop leaves
        nothing in `sending`.
        """
        self._stopping = True
        self._stop_event.set()  # sends waiting for a slot (a long 429 pause) give up
        if self._scheduler is not None:
            # No new runs; the running one finishes first (shutdown cancels running jobs).
            self._scheduler.pause()
            await self._not_running.wait()
            await self._no_rearm.wait()
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
        await self._not_running.wait()
        await self._no_rearm.wait()
        if self._leader is not None:
            await self._leader.release()
        self._lead(False)
        self._idle.set()

    @property
    def active(self) -> bool:
        """This process delivers (True without leader election)."""
        return self._active

    def health(self) -> dict[str, object]:
        """What /healthz reports about the dispatcher."""
        alive = (
            self._scheduler is not None and bool(self._scheduler.running) and not self._stopping
        )
        failing = self.last_error is not None
        return {
            "alive": alive and not failing,
            "active": self._active,
            "last_run": self.last_run.isoformat() if self.last_run else None,
            "last_error": self.last_error.isoformat() if self.last_error else None,
        }

    async def _tick(self, *, wake: bool = True) -> None:
        """Try (or confirm) the leadership; when leading (and `wake`), look for due rows."""
        if self._leader is None or self._stopping:
            return
        try:
            active = await self._leader.acquire()
            self.last_error = None  # the database answers (a failing wake sets it again)
        except Exception:
            log.warning("leader election failed (database unavailable?); standing by")
            self.last_error = self._clock.now()
            active = False
        if active != self._active or not self._ticked:
            log.info("dispatcher %s", "active (holds the lock)" if active else "standing by")
        self._active, self._ticked = active, True
        self._lead(active)
        if active and wake:
            self.poke()  # a job, not awaited here: start() must not wait for a backlog

    def _lead(self, active: bool) -> None:
        (self._leading if active else self._standing_by).set()
        (self._standing_by if active else self._leading).clear()

    async def until_leading(self) -> None:
        """Until this process leads (at once without leader election)."""
        await self._leading.wait()

    async def until_standing_by(self) -> None:
        """Until this process no longer leads (lost the lock, or stopping)."""
        await self._standing_by.wait()

    def poke(self) -> None:
        """Wake now: something was planned, or the clock moved."""
        self._pokes += 1
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
            # A wake during a run only marks "look again" (see _wake); never skip it.
            max_instances=2,
        )

    async def wait_idle(self) -> None:
        """Until nothing is due at the clock's current instant and no batch is in flight."""
        while True:
            await self._idle.wait()
            await asyncio.sleep(0)
            if self._idle.is_set():
                return

    async def _wake(self) -> None:
        if not self._active:
            self._idle.set()  # standing by: the leader delivers
            return
        if self._running:
            self._again = True
            return
        self._running = True
        self._not_running.clear()
        try:
            self._again = True
            while self._again and not self._stopping:
                self._again = False
                await self.run_due()
        except Exception as exc:
            # The database may be briefly unavailable: log, and try again shortly.
            failures.report(log, "dispatcher wake failed; retrying in 5 s", exc)
            self.last_error = self._clock.now()
            self._running = False
            self._arm(self._clock.now() + timedelta(seconds=5))
            return
        finally:
            self._running = False
            self._not_running.set()
        self.last_error = None
        self._rearming += 1
        self._no_rearm.clear()
        try:
            await self._rearm()
        except Exception as exc:
            failures.report(log, "dispatcher re-arm failed; retrying in 5 s", exc)
            self.last_error = self._clock.now()
            self._arm(self._clock.now() + timedelta(seconds=5))
        finally:
            self._rearming -= 1
            if not self._rearming:
                self._no_rearm.set()

    async def _rearm(self) -> None:
        if self._stopping:
            self._idle.set()
            return
        pokes = self._pokes
        nxt = await self.next_due()
        if self._pokes != pokes:
            # Poked while reading: what was planned then may be missing from `nxt`, and
            # arming for `nxt` would replace (or remove) the poke's wake, due now. That wake
            # stands, and re-arms after its own run. (A red flag's notice to the nurse
            # waited for the next poke: the broadcast monitor's, every 5 s, or on
            # PostgreSQL the leader's tick, every second.)
            return
        self._arm(nxt)
        job = self._scheduler.get_job(WAKE_JOB_ID) if self._scheduler else None
        if job is None and not self._running:
            self._idle.set()

    # -- the work ------------------------------------------------------------------------

    async def run_due(self) -> int:
        """Expire what is stale, then claim and send due rows until none is left."""
        sent_total = 0
        swept: datetime | None = None
        while not self._stopping:
            now = self._clock.now()
            self.last_run = now
            began = time.perf_counter()
            async with self._sessions() as db, db.begin():
                expired = 0
                if swept is None or now - swept >= EXPIRY_SWEEP:
                    expired, swept = await expire_stale(session=db, now=now), now
                claimed = await claim_due(
                    session=db,
                    now=now,
                    worker_id=self.worker_id,
                    lease=self._lease,
                    limit=self._batch,
                    skip_locked=self._postgres,
                )
            if self.observer is not None:
                self.observer.expired(expired)
                self.observer.claimed(seconds=time.perf_counter() - began, rows=len(claimed))
            if not claimed:
                return sent_total
            sent_total += await self._deliver(claimed, now)
            if self.after_batch is not None:
                await self.after_batch()
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
            held = await _night_holds(db, rows, now)
        if held:
            await self._hold(held, rows)
            rows = [row for row in rows if row.id not in held]
        # In order within a chat: the patient's own, or a staff chat told about a patient.
        by_chat: dict[tuple[str, int], list[PlannedMessage]] = defaultdict(list)
        for row in rows:
            key = (
                ("staff", row.chat_id) if row.chat_id is not None else ("patient", row.patient_id)
            )
            by_chat[key].append(row)

        # The in-flight window: at most `concurrency` rows are between "may send" and
        # "recorded" at any instant; a crash can duplicate only those (docs/delivery.md).
        # A row's place in the window is held until the batched write of its outcome ends.
        limit = asyncio.Semaphore(self._concurrency)
        deadline = now + self._lease - self._margin
        # Bulk rows are handed out in short slices: what is left of a broadcast batch after
        # one goes back to pending, so a reminder that fell due meanwhile is claimed first.
        slice_end = now + BULK_SLICE
        # Rendered a window's worth at a time, in claim order, just before they go.
        texts = _Rendering(rows, self._render, size=self._concurrency)
        outcomes = _Outcomes(self._write_outcomes)
        give_back: list[PlannedMessage] = []
        sent = 0

        async def one_chat(items: list[PlannedMessage]) -> None:
            nonlocal sent
            for index, row in enumerate(items):  # in order within a chat
                async with limit:
                    bulk = row.priority > Priority.REMINDER
                    # Once an outcome could not be written (the database is gone?), start
                    # no more sends: each would be one more copy sent again after the lease.
                    if outcomes.failed or (bulk and self._clock.now() >= slice_end):
                        give_back.extend(items[index:])
                        return
                    outgoing = await texts.of(row)
                    if outgoing is None:
                        nothing = SendResult(Outcome.FAILED, error="nothing to send")
                        await outcomes.record(row, nothing)
                        continue
                    paid = outgoing.paid_broadcast
                    granted = await self._slot(outgoing.chat_id, row.priority, paid=paid)
                    if granted is None or self._stopping or self._clock.now() >= deadline:
                        # Stopping, or the lease is running out (a long 429 pause): give the
                        # rest back rather than risk a send after another worker reclaims it.
                        give_back.extend(items[index:])
                        return
                    result = await self._sender.send(outgoing)
                    if self._limiter is not None:
                        self._limiter.answered(granted, paid=paid)
                        if result.retry_after is not None:
                            self._limiter.pause(result.retry_after, paid=paid)
                    await outcomes.record(row, result)
                    if result.outcome is Outcome.SENT:
                        sent += 1
                    elif result.outcome is Outcome.BLOCKED:
                        return

        # Every chat's sends end (and are recorded) before a failure is raised: nothing of
        # this batch is still in flight when the dispatcher reports itself idle or stopped.
        results = await asyncio.gather(
            *(one_chat(items) for items in by_chat.values()), return_exceptions=True
        )
        if give_back:
            await self._release(give_back)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return sent

    async def _render(self, rows: list[PlannedMessage]) -> Sequence[Outgoing | None]:
        """Rows' messages as they read now, in one session (reads by key: on the event loop
        on SQLite, as the outcomes' writes)."""
        with on_the_loop():
            async with self._sessions() as db:
                return await self._compose(session=db, rows=rows, now=self._clock.now())

    async def _slot(self, chat_id: int, priority: int, *, paid: bool) -> float | None:
        """Wait for the rate limiter's go (the instant of the grant); None if the dispatcher
        is stopping meanwhile."""
        if self._limiter is None:
            return 0.0
        granted = asyncio.ensure_future(self._limiter.acquire(chat_id, priority, paid=paid))
        stopping = asyncio.ensure_future(self._stop_event.wait())
        await asyncio.wait({granted, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if granted.done() and not granted.cancelled():
            return granted.result()
        granted.cancel()
        return None

    async def _release(self, rows: Sequence[PlannedMessage]) -> None:
        """Unsent claimed rows back to `pending`, as if never claimed (one statement)."""
        self.released += len(rows)
        async with self._sessions() as db, db.begin():
            await transition(
                session=db,
                message_ids=[row.id for row in rows if row.id is not None],
                worker_id=self.worker_id,
                state=MessageState.PENDING,
                claimed_by=None,
                attempts=PM.c.attempts - 1,
            )
        if not self._stopping:
            self._again = True

    async def _hold(self, held: dict[int, datetime], rows: Sequence[PlannedMessage]) -> None:
        """Claimed rows back to pending, due again at the end of the patient's night
        (`night_hold`): not an attempt, so their count of tries is as it was."""
        async with self._sessions() as db, db.begin():
            connection = await db.connection()
            await connection.execute(
                _HOLD,
                [
                    {"h_id": message_id, "h_worker": self.worker_id, "h_due": until}
                    for message_id, until in held.items()
                ],
            )
        self._arm(min(held.values()))
        for row in rows:
            if row.id in held:
                log.info(
                    "delivery message=%s patient=%s step=%s outcome=held until=%s",
                    row.id,
                    row.patient_id,
                    row.step,
                    held[row.id].isoformat(),
                )

    def _move(self, row: PlannedMessage, result: SendResult, now: datetime) -> Move:
        """Where a sent (or unsendable) row goes, from its send's result."""
        assert row.id is not None
        error = _short(result.error)
        if result.outcome is Outcome.SENT:
            return Move(
                row.id, MessageState.SENT, None, sent_at=now, tg_message_id=result.message_id
            )
        if result.outcome is Outcome.RETRY:
            retry_at = now + self._retry.delay(row.attempts, result.retry_after)
            if retry_at < row.expires_at:
                return Move(row.id, MessageState.PENDING, error, due_at=retry_at)
            return Move(row.id, MessageState.EXPIRED, error)
        if result.outcome is Outcome.BLOCKED:
            return Move(row.id, MessageState.FAILED, "blocked")
        return Move(row.id, MessageState.FAILED, error)

    async def _write_outcomes(self, done: Sequence[tuple[PlannedMessage, SendResult]]) -> None:
        """Outcomes of sends in one transaction: one statement for the rows, one pair for
        the patients who blocked the bot (a staff chat's 403 blocks no patient).

        Short work by key, so on SQLite it runs on the event loop (`on_the_loop`, as a
        patient's turn): each hop to the connection's thread cost the loop more than the
        write, and a paid broadcast writes a hundred times a second. A write that finds the
        database locked (an import) waits on the thread as before. The claim, which scans
        the due end of an index, stays on the thread."""
        now = self._clock.now()
        moves = [self._move(row, result, now) for row, result in done]
        blocked = {
            row.patient_id
            for row, result in done
            if result.outcome is Outcome.BLOCKED and row.chat_id is None
        }
        with on_the_loop():
            async with self._sessions() as db, db.begin():
                await record_moves(session=db, worker_id=self.worker_id, moves=moves)
                if blocked:
                    await block_patients(session=db, patient_ids=blocked, now=now)
        if self.observer is not None:
            for (row, result), move in zip(done, moves, strict=True):
                late = (now - _aware(row.due_at)).total_seconds()
                blocked_now = result.outcome is Outcome.BLOCKED
                self.observer.recorded(
                    priority=row.priority,
                    state="blocked" if blocked_now else move.state.value,
                    lateness=late if move.state is MessageState.SENT else None,
                    throttled=result.retry_after is not None,
                )
        for (row, result), move in zip(done, moves, strict=True):
            if move.due_at is not None:
                self._arm(move.due_at)
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
        found: list[datetime] = []
        async with self._sessions() as db:
            # Each priority's first deliverable pending row in due order (a min() would read
            # them all: a million pending rows at start-up): the same statement for the three,
            # the priority its parameter (one compiled and cached, as the claim's).
            for priority in Priority.ALL:
                first = (
                    await db.exec(
                        select(PM.c.due_at)
                        .where(
                            planned_state_is(MessageState.PENDING),
                            PM.c.priority == priority,
                            _deliverable(),
                        )
                        .order_by(PM.c.due_at)
                        .limit(1)
                    )
                ).first()
                if first is not None:
                    found.append(first)
            # A lease that runs out: its row is swept back to pending then.
            lease = (
                await db.exec(
                    select(sa.func.min(PM.c.lease_until)).where(
                        planned_state_is(MessageState.SENDING)
                    )
                )
            ).one()
        candidates = [_aware(t) for t in (*found, lease) if t is not None]
        return min(candidates) if candidates else None


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _short(error: str | None) -> str | None:
    return error[:500] if error else None


def night_hold(
    *, due: datetime, expires: datetime, attempts: int, prefs: Prefs, now: datetime
) -> datetime | None:
    """When a patient's message claimed at `now` should go instead, if not now.

    The planner kept the message out of the patient's quiet hours for the time it planned.
    One that could not go then (the bot was down, a retry, the tail of a large broadcast)
    is not sent in the night either: it waits for the end of the night if it is still valid
    then, by the planner's own rule (`apply_quiet_hours`). What the plan put in the night on
    purpose goes as planned: a step whose window leaves no other time, a booking's
    confirmation (the patient is in the chat), an answer to what the patient just wrote.
    `attempts`: the claims so far, this one included (more than one: a retry)."""
    if not in_quiet_hours(now, prefs):
        return None
    retried = attempts > 1
    if not retried and (now - due <= LATE or in_quiet_hours(due, prefs)):
        return None
    later = apply_quiet_hours(now, now, expires, prefs)
    return later if later > now else None


async def _night_holds(
    db: AsyncSession, rows: Sequence[PlannedMessage], now: datetime
) -> dict[int, datetime]:
    """The claimed rows that wait for the end of their patient's night (`night_hold`), and
    until when. Rows to a staff chat never wait, nor do the messages of a conversation with
    the clinic (`Priority.REPLY`: an answer, the clinic's contact after a red flag), which
    the person is waiting for. Only late or retried rows are looked at, so a round of
    messages on time reads nothing more."""
    late = [
        row
        for row in rows
        if row.chat_id is None
        and row.priority > Priority.REPLY
        and (row.attempts > 1 or now - _aware(row.due_at) > LATE)
    ]
    if not late:
        return {}
    found = await (await db.connection()).execute(
        sa.select(
            PATIENT.c.id, PATIENT.c.timezone, PATIENT.c.quiet_start, PATIENT.c.quiet_end
        ).where(PATIENT.c.id.in_({row.patient_id for row in late}))
    )
    prefs = {patient: Prefs.parse(zone, start, end) for patient, zone, start, end in found}
    held: dict[int, datetime] = {}
    for row in late:
        if row.patient_id not in prefs or row.id is None:
            continue
        until = night_hold(
            due=_aware(row.due_at),
            expires=_aware(row.expires_at),
            attempts=row.attempts,
            prefs=prefs[row.patient_id],
            now=now,
        )
        if until is not None:
            held[row.id] = until
    return held


def _still_held(row: str, worker: str) -> sa.ColumnElement[bool]:
    """The row bound as `row` is still `sending` under the lease of the worker bound as
    `worker`: the condition for a claimed row to leave `sending` (one conditional UPDATE)."""
    return sa.and_(
        PM.c.id == sa.bindparam(row),
        PM.c.state == MessageState.SENDING,
        PM.c.claimed_by == sa.bindparam(worker, type_=PM.c.claimed_by.type),
    )


# `Dispatcher._hold`'s UPDATE, a row at a time (executemany), only while this worker holds it.
_HOLD = (
    sa.update(PM)
    .where(_still_held("h_id", "h_worker"))
    .values(
        state=MessageState.PENDING,
        lease_until=None,
        claimed_by=None,
        attempts=PM.c.attempts - 1,
        due_at=sa.bindparam("h_due", type_=PM.c.due_at.type),
        last_error=HELD_FOR_THE_NIGHT,
    )
)


def _deliverable() -> sa.ColumnElement[bool]:
    """Rows that may go now: to a staff chat always; to a patient who has not blocked the
    bot and, unless it is a reply to something they wrote, has not paused reminders.

    A scalar sub-select on purpose: one key lookup per due row. As EXISTS or IN, PostgreSQL
    turns it into a join that reads every patient (80 ms at 100,000 patients).
    """
    active = (
        sa.select(sa.literal(1))
        .where(
            PATIENT.c.id == PM.c.patient_id,
            PATIENT.c.blocked_at.is_(None),
            sa.or_(PATIENT.c.paused_at.is_(None), PM.c.priority <= Priority.REPLY),
        )
        .scalar_subquery()
    )
    condition: sa.ColumnElement[bool] = sa.or_(PM.c.chat_id.is_not(None), active.is_not(None))
    return condition


async def expire_stale(*, session: AsyncSession, now: datetime) -> int:
    """Pending rows past their validity, and abandoned `sending` rows past it, expire; the
    other abandoned rows (their process died while sending) go back to pending, claimed
    again in their turn: the only source of duplicates, bounded by the in-flight window.
    Returns how many expired."""
    expired = 0
    abandoned = sa.and_(planned_state_is(MessageState.SENDING), PM.c.lease_until < now)
    for stale in (*(pending_due(p, now) for p in Priority.ALL), abandoned):
        result = await session.exec(
            sa.update(PM)
            .where(stale, PM.c.expires_at <= now)
            .values(state=MessageState.EXPIRED, lease_until=None, claimed_by=None)
        )
        expired += int(result.rowcount or 0)
    await session.exec(
        sa.update(PM)
        .where(abandoned)
        .values(state=MessageState.PENDING, lease_until=None, claimed_by=None)
    )
    return expired


async def claim_due(
    *,
    session: AsyncSession,
    now: datetime,
    worker_id: str,
    lease: timedelta,
    limit: int,
    skip_locked: bool,
) -> list[int]:
    """Move up to `limit` due rows to `sending` under a lease, in claim order (priority, due
    time, seq, id); returns their ids.

    Priority by priority, each one's first due rows as the pending index holds them, as
    many as are still wanted: a batch reads about as many rows as it claims, however many
    are due (a broadcast to 100,000 waits behind the reminders) or wait for later. One
    statement, the priority and the count its parameters. Rows abandoned while sending come
    back through `expire_stale`.
    """
    claimed: list[int] = []
    for priority in Priority.ALL:
        wanted = limit - len(claimed)
        if wanted <= 0:
            break
        candidates = (
            sa.select(PM.c.id)
            .where(pending_due(priority, now), PM.c.expires_at > now, _deliverable())
            .order_by(PM.c.due_at, PM.c.seq, PM.c.id)
            .limit(wanted)
        )
        if skip_locked:
            candidates = candidates.with_for_update(skip_locked=True)
        # A materialized CTE, not `id IN (subquery)`: PostgreSQL may re-run such a
        # sub-select (LIMIT with SKIP LOCKED then yields other rows each time) and claim
        # more than `limit`.
        chosen = candidates.cte("chosen").prefix_with("MATERIALIZED", dialect="postgresql")
        result = await session.exec(
            sa.update(PM)
            .where(
                PM.c.id == chosen.c.id,
                # Re-checked here: the row may have moved since the sub-select read it.
                PM.c.state == MessageState.PENDING,
                PM.c.due_at <= now,
            )
            .values(
                state=MessageState.SENDING,
                lease_until=now + lease,
                claimed_by=worker_id,
                attempts=PM.c.attempts + 1,
            )
            .returning(PM.c.id)
        )
        claimed += [row[0] for row in result]
    return claimed


async def transition(
    *,
    session: AsyncSession,
    message_ids: Collection[int],
    worker_id: str,
    state: MessageState,
    **values: object,
) -> int:
    """Leave `sending` only for the rows this worker still holds the lease of (one
    conditional UPDATE); how many moved."""
    result = await session.exec(
        sa.update(PM)
        .where(
            PM.c.id.in_(message_ids),
            PM.c.state == MessageState.SENDING,
            PM.c.claimed_by == worker_id,
        )
        .values(state=state, lease_until=None, **values)
    )
    return int(result.rowcount or 0)


class Move(msgspec.Struct, frozen=True):
    """A claimed row's way out of `sending` after its send: the new state and what to record
    with it (None: left as it is)."""

    message_id: int
    state: MessageState
    last_error: str | None
    sent_at: datetime | None = None
    tg_message_id: int | None = None
    due_at: datetime | None = None  # due again then (back to pending, to retry)


def _record_moves_statement() -> sa.Update:
    """The UPDATE of `record_moves`, built once: a batch of outcomes is written every few
    sends (a paid broadcast: about a hundred times a second), and building the expression
    each time cost as much of the event loop as running it."""
    kept = sa.func.coalesce  # a move's None leaves the column as it is
    return (
        sa.update(PM)
        .where(_still_held("m_id", "m_worker"))
        .values(
            state=sa.bindparam("m_state"),
            lease_until=None,
            last_error=sa.bindparam("m_error", type_=PM.c.last_error.type),
            sent_at=kept(sa.bindparam("m_sent_at", type_=PM.c.sent_at.type), PM.c.sent_at),
            tg_message_id=kept(
                sa.bindparam("m_tg", type_=PM.c.tg_message_id.type), PM.c.tg_message_id
            ),
            due_at=kept(sa.bindparam("m_due", type_=PM.c.due_at.type), PM.c.due_at),
        )
    )


_RECORD_MOVES = _record_moves_statement()


async def record_moves(*, session: AsyncSession, worker_id: str, moves: Sequence[Move]) -> None:
    """Each row of `moves` out of `sending`, only while this worker still holds it: the
    conditional UPDATE of `transition`, one statement for the whole batch (executemany)."""
    if not moves:
        return
    connection = await session.connection()
    await connection.execute(
        _RECORD_MOVES,
        [
            {
                "m_id": move.message_id,
                "m_worker": worker_id,
                "m_state": move.state.value,
                "m_error": move.last_error,
                "m_sent_at": move.sent_at,
                "m_tg": move.tg_message_id,
                "m_due": move.due_at,
            }
            for move in moves
        ],
    )


class _Rendering:
    """A batch's messages, rendered in claim order (the order the window takes them in) just
    before they go: a few queries for many rows instead of several per message, and each text
    as it reads at the moment of sending. The first render takes a window's worth; each next
    one as many as were rendered before it (the batch is going fast enough to need them), so
    a batch of 100 is rendered in four, and a slice that sends a few rows renders few more."""

    def __init__(
        self,
        rows: Sequence[PlannedMessage],
        render: Callable[[list[PlannedMessage]], Awaitable[Sequence[Outgoing | None]]],
        *,
        size: int,
    ) -> None:
        self._ahead = deque(rows)
        self._render = render
        self._size = max(1, size)
        self._rendered: set[int | None] = set()
        self._ready: dict[int | None, Outgoing | None] = {}
        self._lock = asyncio.Lock()

    async def of(self, row: PlannedMessage) -> Outgoing | None:
        async with self._lock:
            if row.id not in self._rendered:
                wanted = [row]
                size = max(self._size, len(self._rendered))
                while len(wanted) < size and self._ahead:
                    following = self._ahead.popleft()
                    if following.id not in self._rendered and following is not row:
                        wanted.append(following)
                found = await self._render(wanted)
                for each, outgoing in zip(wanted, found, strict=True):
                    self._rendered.add(each.id)
                    self._ready[each.id] = outgoing
        return self._ready.pop(row.id)


class _Outcomes:
    """Sends' results written in batches (a group commit): while one batch is written, the
    results that come meanwhile queue, and the next write takes them all. `record` returns
    once its result is written (or raises what the write raised)."""

    def __init__(
        self, write: Callable[[Sequence[tuple[PlannedMessage, SendResult]]], Awaitable[None]]
    ) -> None:
        self._write = write
        self._queue: list[tuple[PlannedMessage, SendResult, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self.failed = False

    async def record(self, row: PlannedMessage, result: SendResult) -> None:
        written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((row, result, written))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain())
        await written

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                await self._write([(row, result) for row, result, _ in batch])
            except Exception as exc:
                self.failed = True
                for _, _, written in batch:
                    if not written.done():  # its sender gave up waiting (cancelled)
                        written.set_exception(exc)
            else:
                for _, _, written in batch:
                    if not written.done():
                        written.set_result(None)
