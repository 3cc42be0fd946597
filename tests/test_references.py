"""A planned message's patient and session must exist, on both databases: SQLite checks them as
foreign keys, PostgreSQL with triggers once per statement (migration 0018). The same writes
are refused, with the same error, and a patient or session that planned messages name cannot
be deleted; on PostgreSQL, a concurrent delete and insert cannot leave a message behind."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from scheduler.db import pg_instant
from scheduler.rows import CLINIC, PATIENT, PLANNED, TREATMENTS

NOW = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)


async def _patient(db: AsyncConnection, clinic_id: int, user: int) -> int:
    values = {
        "clinic_id": clinic_id,
        "tg_user_id": user,
        "chat_id": user,
        "timezone": "Asia/Kolkata",
        "draft": {},
        "conditions": {},
        "created_at": NOW,
    }
    return int((await db.execute(PATIENT.insert().returning(PATIENT.c.id), values)).scalar_one())


async def _session(db: AsyncConnection, clinic_id: int, patient_id: int) -> int:
    values = {
        "patient_id": patient_id,
        "clinic_id": clinic_id,
        "start_at": NOW + timedelta(days=1),
        "end_at": NOW + timedelta(days=1, hours=1),
        "state": "booked",
        "screening": {},
        "flagged": False,
        "created_at": NOW,
    }
    insert = TREATMENTS.insert().returning(TREATMENTS.c.id)
    return int((await db.execute(insert, values)).scalar_one())


def message(patient_id: int, session_id: int | None, step: str = "pre_24h") -> dict[str, object]:
    return {
        "patient_id": patient_id,
        "session_id": session_id,
        "step": step,
        "seq": 0,
        "priority": 5,
        "state": "pending",
        "due_at": NOW,
        "not_before": NOW,
        "expires_at": NOW + timedelta(days=1),
        "attempts": 0,
        "extra": {},
        "created_at": NOW,
    }


async def seeded(engine: AsyncEngine) -> tuple[int, int, int]:
    """A clinic, a patient with a session: (clinic id, patient id, session id)."""
    async with engine.begin() as db:
        clinic = CLINIC.insert().returning(CLINIC.c.id)
        values = {"slug": "kochi", "name": "Kochi", "timezone": "Asia/Kolkata", "created_at": NOW}
        clinic_id = int((await db.execute(clinic, values)).scalar_one())
        patient_id = await _patient(db, clinic_id, 501)
        return clinic_id, patient_id, await _session(db, clinic_id, patient_id)


async def planned(engine: AsyncEngine) -> int:
    async with engine.connect() as db:
        count = sa.select(sa.func.count()).select_from(PLANNED)
        return int((await db.execute(count)).scalar_one())


async def refused(
    engine: AsyncEngine,
    statement: sa.Executable,
    values: list[dict[str, object]] | dict[str, object] | None = None,
) -> str:
    """The error's text when `statement` is refused as a foreign key violation."""
    with pytest.raises(IntegrityError) as caught:
        async with engine.begin() as db:
            await db.execute(statement, values)
    assert "foreign key" in str(caught.value).lower()
    return str(caught.value)


async def test_messages_for_a_missing_patient_or_session_are_refused_whole(
    engine: AsyncEngine,
) -> None:
    _, patient_id, session_id = await seeded(engine)
    good = [message(patient_id, session_id, f"step_{k}") for k in range(50)]

    await refused(engine, PLANNED.insert(), [*good, message(patient_id + 1000, None)])
    await refused(engine, PLANNED.insert(), [*good, message(patient_id, session_id + 1000)])
    await refused(engine, PLANNED.insert(), message(patient_id + 1000, session_id + 1000))
    assert await planned(engine) == 0

    async with engine.begin() as db:  # a broadcast's message has no session
        await db.execute(PLANNED.insert(), [*good, message(patient_id, None, "broadcast")])
    assert await planned(engine) == 51


async def test_a_message_moved_to_a_missing_session_or_patient_is_refused(
    engine: AsyncEngine,
) -> None:
    clinic_id, patient_id, session_id = await seeded(engine)
    async with engine.begin() as db:
        other = await _session(db, clinic_id, patient_id)
        await db.execute(PLANNED.insert(), message(patient_id, session_id))
    move = PLANNED.update().where(PLANNED.c.patient_id == patient_id)

    await refused(engine, move.values(session_id=other + 1000))
    await refused(engine, move.values(patient_id=patient_id + 1000))
    async with engine.begin() as db:  # to a session that exists, and off any session
        await db.execute(move.values(session_id=other))
        await db.execute(move.values(session_id=None))
        await db.execute(move.values(state="sent"))  # what the dispatcher changes


async def test_a_patient_or_session_that_messages_name_is_not_deleted(engine: AsyncEngine) -> None:
    clinic_id, patient_id, session_id = await seeded(engine)
    async with engine.begin() as db:
        free = await _session(db, clinic_id, patient_id)
        await db.execute(PLANNED.insert(), message(patient_id, session_id))

    await refused(engine, TREATMENTS.delete().where(TREATMENTS.c.id == session_id))
    await refused(engine, PATIENT.delete().where(PATIENT.c.id == patient_id))
    await refused(
        engine, TREATMENTS.update().where(TREATMENTS.c.id == session_id).values(id=session_id + 50)
    )
    async with engine.begin() as db:  # without their messages, they go
        await db.execute(TREATMENTS.delete().where(TREATMENTS.c.id == free))
        await db.execute(PLANNED.delete())
        await db.execute(TREATMENTS.delete())
        await db.execute(PATIENT.delete().where(PATIENT.c.id == patient_id))


async def waiting_on_a_lock(engine: AsyncEngine, pid: int) -> None:
    """Until the server's backend `pid` waits for a lock (polled: nothing to sleep on)."""
    query = sa.text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid")
    async with engine.connect() as db:
        for _ in range(2000):
            if (await db.execute(query, {"pid": pid})).scalar() == "Lock":
                return
            await asyncio.sleep(0.005)
    raise AssertionError("the other transaction never waited")


async def backend_pid(db: AsyncConnection) -> int:
    return int((await db.execute(sa.text("SELECT pg_backend_pid()"))).scalar_one())


@pytest.mark.parametrize("backend", [pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_a_delete_and_an_insert_at_once_leave_no_message_behind(
    engine: AsyncEngine,
) -> None:
    """As PostgreSQL's own check: an insert locks the patients and sessions it names, so a
    delete waits for it and then fails; an insert that waits for a delete then fails.
    (SQLite has one writer at a time.)"""
    clinic_id, patient_id, session_id = await seeded(engine)
    async with engine.begin() as db:
        leaving = await _patient(db, clinic_id, 502)

    # A delete under way first: the insert waits for it, then finds no patient.
    async with engine.connect() as deleting, engine.connect() as inserting:
        await deleting.execute(PATIENT.delete().where(PATIENT.c.id == leaving))
        pid = await backend_pid(inserting)
        insert = asyncio.create_task(inserting.execute(PLANNED.insert(), message(leaving, None)))
        await waiting_on_a_lock(engine, pid)
        await deleting.commit()
        with pytest.raises(IntegrityError):
            await insert

    # An insert under way first: the delete waits for it, then finds the message.
    async with engine.connect() as inserting, engine.connect() as deleting:
        await inserting.execute(PLANNED.insert(), message(patient_id, session_id))
        pid = await backend_pid(deleting)
        delete = asyncio.create_task(
            deleting.execute(TREATMENTS.delete().where(TREATMENTS.c.id == session_id))
        )
        await waiting_on_a_lock(engine, pid)
        await inserting.commit()
        with pytest.raises(IntegrityError):
            await delete
    assert await planned(engine) == 1


@pytest.mark.parametrize("backend", [pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_instants_go_both_ways_as_asyncpg_s_own_codec_takes_them(
    engine: AsyncEngine, db_url: str
) -> None:
    """The engine's timestamptz codec (scheduler/db.py) writes and reads what asyncpg's own
    does: instants written as datetimes of any zone and as microseconds (the write path's
    form) read back the same through an engine with asyncpg's own codecs, and the other way
    round; a value of another type is refused as asyncpg refuses it."""
    _, patient_id, session_id = await seeded(engine)
    kolkata = ZoneInfo("Asia/Kolkata")
    instants = [
        datetime(2026, 12, 5, 9, 30, 0, 123456, tzinfo=UTC),
        datetime(2026, 12, 5, 15, 0, 0, 1, tzinfo=kolkata),
        datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2093, 3, 1, 0, 0, tzinfo=kolkata),
    ]
    async with engine.begin() as db:
        for at in instants:
            await db.execute(PLANNED.insert(), {**message(patient_id, session_id), "due_at": at})
        # The write path's form: the microseconds, straight to the driver.
        await db.exec_driver_sql(
            "UPDATE planned_message SET expires_at = $1", (pg_instant(instants[3]),)
        )
    plain_engine = create_async_engine(db_url)  # asyncpg's own codecs
    try:
        async with plain_engine.begin() as raw:
            plain = list(
                await raw.exec_driver_sql(
                    "SELECT due_at, expires_at FROM planned_message ORDER BY id"
                )
            )
            await raw.exec_driver_sql("UPDATE planned_message SET not_before = $1", (instants[1],))
    finally:
        await plain_engine.dispose()
    async with engine.connect() as db:
        driven = await db.exec_driver_sql(
            "SELECT due_at, expires_at FROM planned_message ORDER BY id"
        )
        read: list[tuple[datetime, ...]] = [tuple(row) for row in driven.all()]
        moved = (await db.execute(sa.select(PLANNED.c.not_before).limit(1))).scalar_one()
        with pytest.raises(DBAPIError, match="expected a datetime"):  # as asyncpg says it
            await db.exec_driver_sql("SELECT $1::timestamptz", ("2026-12-05",))
    assert [tuple(row) for row in plain] == read == [(at, instants[3]) for at in instants]
    assert all(due.tzinfo is UTC for due, _ in read) and moved == instants[1]
