"""The dispatcher's batched paths, on SQLite and PostgreSQL: a claimed batch is rendered a
window at a time with a few queries, its outcomes are written in batches (one statement for
many rows), and a crash in the middle of a batch loses nothing and duplicates at most the
in-flight window."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bench.seed import seed_broadcast, seed_due
from messages import texts
from messages.protocol import default_protocol_path, load_protocol
from scheduler import compose
from scheduler.care import ClinicInfo
from scheduler.clock import FakeClock
from scheduler.db import SessionFactory
from scheduler.models import Broadcast, Clinic, Patient, PlannedMessage
from scheduler.ports import Outcome, Outgoing, SendResult
from scheduler.rows import PLANNED as PM
from tests.fakes import FakeSender, make_dispatcher, text_of_id


@contextlib.contextmanager
def statements(engine: AsyncEngine) -> Iterator[list[tuple[str, int]]]:
    """Each SQL statement run on `engine` meanwhile, with its number of parameter sets."""
    seen: list[tuple[str, int]] = []

    def record(
        _conn: object,
        _cursor: object,
        statement: str,
        parameters: Sequence[object],
        _context: object,
        executemany: bool,
    ) -> None:
        seen.append((" ".join(statement.split()), len(parameters) if executemany else 1))

    sa.event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(engine.sync_engine, "before_cursor_execute", record)


@contextlib.asynccontextmanager
async def run_on(db: AsyncSession, engine: AsyncEngine) -> AsyncIterator[list[str]]:
    """Each SQL statement `db`'s connection runs meanwhile: on SQLite as SQLite traces them,
    those sent to sqlite3 directly (`rows.run_script`, not seen by SQLAlchemy's events)
    included, and its transaction's own BEGIN and COMMIT left out; elsewhere as
    `statements` sees them."""
    connection = await db.connection()
    traced: list[str] = []
    if connection.dialect.name != "sqlite":
        with statements(engine) as seen:
            yield traced
            traced += [sql for sql, _ in seen]
        return
    raw = (await connection.get_raw_connection()).dbapi_connection
    assert raw is not None
    sqlite = raw._connection._conn  # the sqlite3 connection under aiosqlite's

    def trace(sql: str) -> None:
        if not sql.startswith(("BEGIN", "COMMIT", "ROLLBACK")):
            traced.append(" ".join(sql.split()))

    sqlite.set_trace_callback(trace)
    try:
        yield traced
    finally:
        sqlite.set_trace_callback(None)


class ByChat(FakeSender):
    """Answers each chat as told (success otherwise), all at once: every send waits until
    `together` sends have started."""

    def __init__(self, answers: dict[int, SendResult], together: int) -> None:
        super().__init__(gate=asyncio.Event())
        self.answers = answers
        self.together = together
        self.started = 0

    async def send(self, message: Outgoing) -> SendResult:
        self.started += 1
        assert self.gate is not None
        if self.started == self.together:
            self.gate.set()
        await self.gate.wait()
        answer = self.answers.get(message.chat_id)
        return answer if answer is not None else await super().send(message)


async def test_a_mixed_batch_is_written_in_one_statement_each_row_as_its_answer_says(
    engine: AsyncEngine, sessions: SessionFactory, clock: FakeClock
) -> None:
    now = clock.now()
    # Four patients with a row due now and one tomorrow; a fifth whose row is valid 10 s.
    seeded = await seed_due(engine, count=4, per_patient=2, now=now, first_chat=100)
    short = await seed_due(engine, count=1, now=now, valid=timedelta(seconds=10), first_chat=200)
    sent, blocked, throttled, refused = seeded.message_ids[::2]
    expired = short.message_ids[0]
    async with sessions() as db:
        patients = {
            chat: patient or 0
            for chat, patient in (await db.exec(select(Patient.chat_id, Patient.id))).all()
        }
    too_many = SendResult(Outcome.RETRY, error="429 retry after", retry_after=30)
    answers = {
        patients[101]: SendResult(Outcome.BLOCKED, error="403 Forbidden: bot was blocked"),
        patients[102]: too_many,
        patients[103]: SendResult(Outcome.FAILED, error="400 Bad Request: chat not found"),
        patients[200]: too_many,  # its retry would fall past its validity
    }
    sender = ByChat(answers, together=5)
    with statements(engine) as seen:
        assert await make_dispatcher(sessions, clock, sender).run_due() == 1
    outcomes = [
        n for sql, n in seen if sql.startswith("UPDATE planned_message") and "coalesce(" in sql
    ]
    assert outcomes == [5], seen  # one statement for the five rows

    async with sessions() as db:
        rows = {r.id: r for r in (await db.exec(select(PlannedMessage))).all()}
        blocked_at = (
            await db.exec(select(Patient.blocked_at).where(Patient.chat_id == 101))
        ).one()
    assert (rows[sent].state, rows[sent].sent_at, rows[sent].last_error) == ("sent", now, None)
    assert rows[sent].tg_message_id is not None
    assert (rows[blocked].state, rows[blocked].last_error) == ("failed", "blocked")
    assert blocked_at == now
    assert (rows[blocked + 1].state, rows[blocked + 1].last_error) == ("cancelled", "blocked")
    assert (rows[throttled].state, rows[throttled].due_at) == (
        "pending",
        now + timedelta(seconds=30),
    )
    assert (rows[throttled].last_error, rows[throttled].attempts) == ("429 retry after", 1)
    assert rows[throttled].sent_at is None and rows[throttled].tg_message_id is None
    assert (rows[refused].state, rows[refused].last_error) == (
        "failed",
        "400 Bad Request: chat not found",
    )
    assert (rows[expired].state, rows[expired].due_at) == ("expired", now)
    later = [rows[i + 1] for i in (sent, throttled, refused)]
    assert [r.state for r in later] == ["pending"] * 3
    assert all(r.lease_until is None and r.state != "sending" for r in rows.values())


class Crashing(FakeSender):
    """A process that dies at its `crash_at`-th send: a send already under way has reached
    Telegram but its answer never comes back; a send that starts afterwards never leaves.
    Each send takes a few turns of the event loop, so several are under way at once."""

    def __init__(self, crash_at: int, delivered: list[int]) -> None:
        super().__init__()
        self.crash_at = crash_at
        self.delivered = delivered
        self.crashed = False
        self.stuck = 0
        self.all_stuck = asyncio.Event()
        self.window = 0

    async def _hang(self) -> SendResult:
        self.stuck += 1
        if self.stuck == self.window:
            self.all_stuck.set()
        await asyncio.Event().wait()
        raise AssertionError("a dead process sent on")

    async def send(self, message: Outgoing) -> SendResult:
        if self.crashed:
            return await self._hang()
        self.delivered.append(int(message.text))
        self.crashed = len(self.delivered) == self.crash_at
        for _ in range(3):
            await asyncio.sleep(0)
        if self.crashed:
            return await self._hang()
        return await super().send(message)


class Delivering(FakeSender):
    def __init__(self, delivered: list[int]) -> None:
        super().__init__()
        self.delivered = delivered

    async def send(self, message: Outgoing) -> SendResult:
        self.delivered.append(int(message.text))
        return await super().send(message)


@pytest.mark.parametrize("crash_at", [1, 17, 29, 44])
async def test_a_crash_mid_batch_loses_nothing_and_duplicates_at_most_the_window(
    engine: AsyncEngine, sessions: SessionFactory, clock: FakeClock, crash_at: int
) -> None:
    seeded = await seed_due(engine, count=60, now=clock.now())
    delivered: list[int] = []
    dying = Crashing(crash_at, delivered)
    dying.window = 10
    first = make_dispatcher(sessions, clock, dying, batch=40, concurrency=dying.window)
    running = asyncio.create_task(first.run_due())
    # Every place of the window holds a send that never answers: nothing more is written.
    await dying.all_stuck.wait()
    async with sessions() as db:
        unrecorded = (
            await db.exec(select(PlannedMessage.id).where(PlannedMessage.state == "sending"))
        ).all()
    in_flight = {i or 0 for i in unrecorded} & set(
        delivered
    )  # reached Telegram, not recorded as sent
    assert len(in_flight) <= dying.window

    clock.advance(timedelta(seconds=61))  # the dead process's lease runs out
    second = make_dispatcher(sessions, clock, Delivering(delivered), worker_id="w2")
    await second.run_due()
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)

    async with engine.connect() as db:
        found: dict[int, str] = dict((await db.execute(sa.select(PM.c.id, PM.c.state))).all())
    assert set(found.values()) == {"sent"}
    assert set(delivered) == set(seeded.message_ids)  # lost: none
    duplicates = [i for i in set(delivered) if delivered.count(i) > 1]
    assert sorted(duplicates) == sorted(in_flight)
    assert len(delivered) == len(seeded.message_ids) + len(in_flight)


class Recording:
    """A composer that notes the size of each batch it renders."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    async def __call__(
        self, *, session: AsyncSession, rows: Sequence[PlannedMessage], now: datetime
    ) -> list[Outgoing | None]:
        self.batches.append(len(rows))
        return [await text_of_id(session=session, row=row, now=now) for row in rows]


async def test_a_batch_is_rendered_in_claim_order_a_window_first_then_as_fast_as_it_goes(
    engine: AsyncEngine, sessions: SessionFactory, clock: FakeClock
) -> None:
    seeded = await seed_due(engine, count=30, now=clock.now(), spread=timedelta(seconds=29))
    clock.advance(timedelta(seconds=30))
    composer = Recording()
    sender = FakeSender()
    await make_dispatcher(sessions, clock, sender, composer=composer, concurrency=4).run_due()
    # A window, then as many as were rendered before (the batch went that far meanwhile).
    assert composer.batches == [4, 4, 8, 14]
    assert [int(t) for t in sender.texts()] == seeded.message_ids


async def test_broadcast_rows_are_composed_with_two_queries_whatever_their_number(
    engine: AsyncEngine, sessions: SessionFactory, clock: FakeClock
) -> None:
    now = clock.now()
    paid = await seed_broadcast(engine, count=30, now=now, paid=True, first_chat=1000)
    free = await seed_broadcast(engine, count=20, now=now, paid=False, first_chat=2000)
    other_clinic = paid.message_ids[1]  # the first one's patient withdraws consent
    async with sessions() as db, db.begin():
        patient = (await db.exec(select(Patient).where(Patient.chat_id == 1000))).one()
        patient.consent_at = None
        db.add(patient)
        row = await db.get(PlannedMessage, other_clinic)
        free_id = (await db.exec(select(sa.func.max(Broadcast.id)))).one()
        assert row is not None
        row.extra = {"broadcast_id": free_id}  # another clinic's broadcast: never sent
        db.add(row)
    composer = compose.Composer(
        load_protocol(default_protocol_path()), ClinicInfo("C", "UTC", "-", "-")
    )
    async with sessions() as db:
        rows = (await db.exec(select(PlannedMessage).order_by(col(PlannedMessage.id)))).all()
        clinic_name = (await db.exec(select(Clinic.name))).first()
        async with run_on(db, engine) as seen:
            found = await composer(session=db, rows=rows, now=now)
    assert len(seen) == 2, seen
    assert found[:2] == [None, None]
    text = texts.broadcast(
        "en", clinic_name or "", "The spring maintenance session is open for booking."
    )
    expected = [Outgoing(1000 + i, text, paid_broadcast=True) for i in range(2, 30)]
    expected += [Outgoing(2000 + i, text, paid_broadcast=False) for i in range(20)]
    assert found[2:] == expected
    assert len(found) == len(paid.message_ids) + len(free.message_ids)
