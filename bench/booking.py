"""The write path: single bookings as the chat makes them, against a plain APScheduler bot.

This project: one transaction per booking, `find_patient` + `care.book_session` (the clash
check, the course, the plan, the rows), as the chat's confirm does. The baseline: what a
typical python-telegram-bot reminder bot does per booking, one APScheduler 3 job per
reminder in a `SQLAlchemyJobStore` on SQLite with the same pragmas (scheduler/db.py).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from messages.protocol import Protocol, default_protocol_path, load_protocol
from scheduler.care import book_session, find_patient
from scheduler.clock import SystemClock
from scheduler.db import make_engine, make_session_factory
from scheduler.models import Clinic, Patient

CLINIC = Clinic.__table__  # type: ignore[attr-defined]
PATIENT = Patient.__table__  # type: ignore[attr-defined]


async def seed_patients(
    engine: AsyncEngine, *, count: int, now: datetime, first_user: int, chunk: int = 10_000
) -> list[int]:
    """`count` consenting patients of a new clinic (UTC), with no sessions: their user ids."""
    async with engine.begin() as db:
        clinic_id = int(
            (
                await db.execute(
                    CLINIC.insert().returning(CLINIC.c.id),
                    {
                        "slug": f"bench-{first_user}",
                        "name": "Bench clinic",
                        "timezone": "Asia/Kolkata",
                        "created_at": now,
                    },
                )
            ).scalar_one()
        )
        users = list(range(first_user, first_user + count))
        for start in range(0, count, chunk):
            await db.execute(
                PATIENT.insert(),
                [
                    {
                        "clinic_id": clinic_id,
                        "tg_user_id": user,
                        "chat_id": user,
                        "timezone": "Asia/Kolkata",
                        "draft": {},
                        "conditions": {},
                        "consent_at": now,
                        "created_at": now,
                    }
                    for user in users[start : start + chunk]
                ],
            )
    return users


@dataclass(frozen=True)
class Figure:
    sessions_per_s: float
    rows_per_session: float
    max_stall_ms: float


async def _stall_probe(stop: asyncio.Event, worst: list[float]) -> None:
    """The longest the event loop went without running this coroutine (a 1 ms tick)."""
    last = time.perf_counter()
    while not stop.is_set():
        await asyncio.sleep(0.001)
        now = time.perf_counter()
        worst[0] = max(worst[0], now - last - 0.001)
        last = now


async def timed(work: Callable[[], Awaitable[int]], sessions: int) -> Figure:
    stop, worst = asyncio.Event(), [0.0]
    probe = asyncio.create_task(_stall_probe(stop, worst))
    started = time.perf_counter()
    rows = await work()
    seconds = time.perf_counter() - started
    stop.set()
    await probe
    return Figure(sessions / seconds, rows / sessions, worst[0] * 1000)


async def book_each(url: str, users: list[int], protocol: Protocol, now: datetime) -> int:
    """Book one session per user, one transaction each; the planned rows written."""
    engine = make_engine(url)
    factory = make_session_factory(engine)
    rows = 0
    try:
        for i, user in enumerate(users):
            start = (now + timedelta(days=3, minutes=15 * (i % 2000))).replace(microsecond=0)
            async with factory() as session, session.begin():
                patient = await find_patient(session=session, tg_user_id=user)
                assert patient is not None
                await book_session(
                    session=session, patient=patient, protocol=protocol, start=start, now=now
                )
        async with engine.connect() as db:
            rows = int(
                (await db.execute(sa.text("SELECT count(*) FROM planned_message"))).scalar_one()
            )
    finally:
        await engine.dispose()
    return rows


async def bench_booking(url: str, count: int, first_user: int) -> Figure:
    now = SystemClock().now()
    protocol = load_protocol(default_protocol_path())
    engine = make_engine(url)
    users = await seed_patients(engine, count=count, now=now, first_user=first_user)
    async with engine.connect() as db:
        before = int(
            (await db.execute(sa.text("SELECT count(*) FROM planned_message"))).scalar_one()
        )
    await engine.dispose()

    async def work() -> int:
        return await book_each(url, users, protocol, now) - before

    return await timed(work, count)


def median(values: list[float]) -> float:
    return statistics.median(values)


if __name__ == "__main__":
    import sys
    import tempfile

    from scheduler.db import migrate

    async def _main() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite+aiosqlite:///{Path(tmp) / 'b.db'}"
            await asyncio.to_thread(migrate, url)
            n = int(sys.argv[1]) if len(sys.argv) > 1 else 500
            print(await bench_booking(url, n, 1_000_000))

    asyncio.run(_main())
