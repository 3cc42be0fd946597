"""The SQLite driver (scheduler/sqlite_driver.py): a patient's turn runs on the event loop,
with no hop to the connection's thread, and what finds the database locked waits on the
thread, never on the loop."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.seed import seed_due
from messages.protocol import default_protocol_path, load_protocol
from scheduler.care import book_session, find_patient
from scheduler.clock import FakeClock
from scheduler.db import SessionFactory, make_engine, make_session_factory
from scheduler.ports import Outgoing, SendResult
from scheduler.rows import CLINIC, PATIENT, PLANNED
from scheduler.sqlite_driver import run_sqlite3
from scheduler.sqlite_loop import on_the_loop
from tests.conftest import new_database_url
from tests.fakes import FakeSender, make_dispatcher
from tests.test_dispatch_batches import statements

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
START = NOW + timedelta(days=3)
PROTOCOL = load_protocol(default_protocol_path())


@pytest.fixture
async def sqlite(tmp_path: Path) -> AsyncIterator[tuple[AsyncEngine, str]]:
    """An engine on a migrated SQLite database with patients 1 to 3, and the file's path."""
    url = await new_database_url("sqlite", tmp_path)
    engine = make_engine(url)
    async with engine.begin() as db:
        clinic = (
            await db.execute(
                CLINIC.insert().returning(CLINIC.c.id),
                {"slug": "kochi", "name": "Kochi", "timezone": "Asia/Kolkata", "created_at": NOW},
            )
        ).scalar_one()
        await db.execute(
            PATIENT.insert(),
            [
                {
                    "clinic_id": clinic,
                    "tg_user_id": user,
                    "chat_id": user,
                    "timezone": "Asia/Kolkata",
                    "draft": {},
                    "conditions": {},
                    "consent_at": NOW,
                    "created_at": NOW,
                }
                for user in (1, 2, 3)
            ],
        )
    yield engine, url.split("///", 1)[1]
    await engine.dispose()


async def _book(sessions: SessionFactory, user: int) -> None:
    async with sessions() as db, db.begin():
        patient = await find_patient(session=db, tg_user_id=user)
        assert patient is not None
        await book_session(session=db, patient=patient, protocol=PROTOCOL, start=START, now=NOW)


async def _planned(engine: AsyncEngine, user: int) -> list[tuple[Any, ...]]:
    """The patient's planned rows, by meaning."""
    async with engine.connect() as db:
        rows = await db.execute(
            sa.select(PLANNED.c.step, PLANNED.c.state, PLANNED.c.due_at, PLANNED.c.expires_at)
            .join(PATIENT, PATIENT.c.id == PLANNED.c.patient_id)
            .where(PATIENT.c.tg_user_id == user)
            .order_by(PLANNED.c.due_at, PLANNED.c.step)
        )
        return [tuple(row) for row in rows]


def _count_hops(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every call that aiosqlite hands to a connection's thread, counted."""
    hops = [0]
    execute = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        hops[0] += 1
        return await execute(self, fn, *args, **kwargs)  # type: ignore[no-untyped-call]

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
    return hops


async def test_a_short_turn_books_on_the_loop_with_no_hop_and_the_same_rows(
    sqlite: tuple[AsyncEngine, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, _ = sqlite
    sessions = make_session_factory(engine)
    hops = _count_hops(monkeypatch)
    await _book(sessions, 1)
    on_thread = hops[0]
    with on_the_loop():
        await _book(sessions, 2)
    assert on_thread >= 3, "the read, the booking's script and the commit each hop"
    assert hops[0] == on_thread, "on the loop nothing went to the connection's thread"
    first, second = await _planned(engine, 1), await _planned(engine, 2)
    assert first and first == second


@asynccontextmanager
async def _locked_for_a_while(path: str) -> AsyncIterator[list[float]]:
    """Another writer holds the database's write lock for 0.3 s from the block's start; the
    gaps between the event loop's turns meanwhile (a probe every 5 ms), until the block ends."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    asyncio.get_running_loop().call_later(0.3, other.rollback)
    gaps: list[float] = []

    async def probe() -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    probing = asyncio.create_task(probe())
    try:
        yield gaps
    finally:
        probing.cancel()
        other.close()


async def test_what_finds_the_database_locked_waits_on_the_thread_and_the_loop_runs_on(
    sqlite: tuple[AsyncEngine, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, path = sqlite
    sessions = make_session_factory(engine)
    await _book(sessions, 1)  # the pool's connection is open, and the rows to compare with
    hops = _count_hops(monkeypatch)
    async with _locked_for_a_while(path) as gaps:
        began = time.perf_counter()
        with on_the_loop():
            await _book(sessions, 2)
        waited = time.perf_counter() - began

    assert waited >= 0.25, "the booking waited for the lock"
    assert hops[0] >= 1, "it waited on the connection's thread"
    assert max(gaps) < 0.15, f"the loop stalled {max(gaps):.3f} s"
    # The booking's script went on from the write that found the lock: every row, once.
    assert await _planned(engine, 2) == await _planned(engine, 1)
    assert await _busy_timeouts(engine) == (30000, 30000), "what waits has its own timeout"


async def _busy_timeouts(engine: AsyncEngine) -> tuple[int, int]:
    """The busy timeout a statement on the connection's thread runs with, and a stream's
    (aiosqlite's own cursor), on the pool's connection."""
    async with engine.connect() as db:
        plain = (await db.exec_driver_sql("PRAGMA busy_timeout")).scalar_one()
        with on_the_loop():  # the connection is left with no busy timeout
            assert (await db.exec_driver_sql("PRAGMA busy_timeout")).scalar_one() == 0
        streamed = await (await db.stream(sa.text("PRAGMA busy_timeout"))).scalar_one()
    return int(plain), int(streamed)


async def test_statements_on_the_loop_run_with_no_busy_timeout_and_the_rest_with_their_own(
    sqlite: tuple[AsyncEngine, str],
) -> None:
    """The loop's statements never wait for the lock; set once for a run of them, and the
    connection's own timeout is back for the next statement on the thread or stream."""
    engine, _ = sqlite
    with on_the_loop():
        await _book(make_session_factory(engine), 1)
    assert await _busy_timeouts(engine) == (30000, 30000)


async def test_a_connection_first_made_on_the_loop_waits_for_no_lock_there(
    sqlite: tuple[AsyncEngine, str],
) -> None:
    """A connection made inside `on_the_loop()` (a patient's turn when the pool has none
    free) gets its pragmas on its thread: they no longer give it back its busy timeout under
    the loop's, and a write that finds the lock goes on waiting on the thread, the loop free."""
    first, path = sqlite
    engine = make_engine(f"sqlite+aiosqlite:///{path}")  # no connection yet
    try:
        async with _locked_for_a_while(path) as gaps:
            with on_the_loop():
                async with engine.connect() as db:
                    assert (await db.exec_driver_sql("PRAGMA busy_timeout")).scalar_one() == 0
                    await db.execute(PATIENT.update().values(chat_id=PATIENT.c.chat_id))
                    await db.commit()
    finally:
        await engine.dispose()
    assert max(gaps) < 0.15, f"the loop stalled {max(gaps):.3f} s"
    await first.dispose()


async def test_a_new_connection_waits_for_a_database_another_holds_exclusively(
    sqlite: tuple[AsyncEngine, str],
) -> None:
    """A new connection's pragmas wait for the lock with the connection's busy timeout:
    `journal_mode` finds the file locked while another connection holds it exclusively (as
    one does while it closes the database's last connection and folds the WAL back in)."""
    first, path = sqlite
    await first.dispose()
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("PRAGMA locking_mode = EXCLUSIVE")
    other.execute("BEGIN EXCLUSIVE")
    other.execute("UPDATE patient SET chat_id = chat_id + 1")
    # In exclusive locking mode the lock lasts until the connection closes.
    asyncio.get_running_loop().call_later(0.3, other.close)
    engine = make_engine(f"sqlite+aiosqlite:///{path}")  # no connection yet
    began = time.perf_counter()
    try:
        async with engine.connect() as db:
            assert (await db.exec_driver_sql("SELECT count(*) FROM patient")).scalar_one() == 3
    finally:
        await engine.dispose()
    assert time.perf_counter() - began >= 0.25, "it waited for the lock"


async def test_a_stale_read_snapshot_is_not_waited_on(sqlite: tuple[AsyncEngine, str]) -> None:
    """A write in a transaction whose read another connection's commit made stale
    (SQLITE_BUSY_SNAPSHOT) can never go through: it fails at once on the connection's
    thread, not after the busy timeout."""
    engine, path = sqlite
    # Used on the pool's connection's thread, as the work below runs there.
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)

    def stale_write(raw: sqlite3.Connection) -> None:
        if not raw.in_transaction:
            raw.execute("BEGIN")
            raw.execute("SELECT count(*) FROM patient").fetchall()  # the snapshot
            other.execute("UPDATE patient SET chat_id = chat_id + 1")  # committed after it
        raw.execute("UPDATE patient SET chat_id = chat_id")

    try:
        async with engine.connect() as db:
            began = time.perf_counter()
            with pytest.raises(sqlite3.OperationalError, match="database is locked"):
                await run_sqlite3(db, stale_write)
            assert time.perf_counter() - began < 1.0
            await db.rollback()
    finally:
        other.close()


class _Answering(FakeSender):
    """Answers after a few turns of the event loop, so outcomes come back while others are
    written (several batched writes per claimed batch)."""

    async def send(self, message: Outgoing) -> SendResult:
        for _ in range(3):
            await asyncio.sleep(0)
        return await super().send(message)


async def test_the_dispatcher_renders_and_records_outcomes_on_the_loop(
    sqlite: tuple[AsyncEngine, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Per message, the dispatcher makes no hop: a claimed batch of 40 costs the hops of a
    batch of 5 (the claim's transaction and the load of its rows stay on the thread)."""
    engine, _ = sqlite
    sessions = make_session_factory(engine)
    clock = FakeClock(NOW)
    hops = _count_hops(monkeypatch)
    made: list[int] = []
    for count in (5, 40):
        await seed_due(engine, count=count, now=clock.now(), first_chat=1000 * count)
        sender = _Answering()
        before = hops[0]
        with statements(engine) as seen:
            sent = await make_dispatcher(sessions, clock, sender, batch=100).run_due()
        made.append(hops[0] - before)
        assert sent == count == len(sender.sent)
        writes = [n for sql, n in seen if sql.startswith("UPDATE planned_message SET state")]
        assert sum(writes) >= count and len(writes) > 1, "several batched writes"
    async with engine.connect() as db:
        states = (await db.execute(sa.select(PLANNED.c.state).distinct())).scalars().all()
    assert states == ["sent"]
    assert made[0] == made[1], f"hops for 5 and for 40 messages: {made}"
