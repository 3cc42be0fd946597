"""The write path: bookings as the chat makes them, the import and a clinic-wide replan,
against a plain APScheduler bot (bench/baseline.py), interleaved, medians of 3.

This project: one transaction per booking, `find_patient` + `care.book_session` (the clash
check, the course, the plan, the rows), as the chat's confirm does, run as a patient's turn
runs (on SQLite, on the event loop: scheduler/sqlite_loop.on_the_loop), each patient's
booking taken as the bot takes their turns (bot/turns.py: up to eight patients side by side
on PostgreSQL, one at a time on SQLite; on PostgreSQL one after another too); the import and the
replan as their commands run them (scheduler/importer.import_batches, scheduler/replan.run).
The baseline: one APScheduler 3 job per reminder in a `SQLAlchemyJobStore` on SQLite with
the same pragmas, per session booked, imported or replanned.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import configure_mappers
from telegram import CallbackQuery, Chat, Message, Update, User

from bench.baseline_writes import bench_baseline
from bench.claim import fresh
from bench.steal import cpu_ticks, percent, stolen
from bot.turns import ChatTurns, side_by_side
from messages.protocol import Protocol, default_protocol_path, load_protocol
from scheduler import clinics, importer, replan
from scheduler.care import book_session, find_patient
from scheduler.clock import SystemClock
from scheduler.db import SessionFactory, is_sqlite, make_engine, make_session_factory
from scheduler.models import Clinic
from scheduler.rows import CLINIC, PATIENT
from scheduler.sqlite_loop import on_the_loop


async def seed_patients(
    engine: AsyncEngine, *, count: int, now: datetime, first_user: int, chunk: int = 10_000
) -> tuple[list[int], int]:
    """`count` consenting patients of a new clinic (Kochi), with no sessions: their user ids,
    and the clinic's id."""
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
    return users, clinic_id


@dataclass(frozen=True)
class Figure:
    sessions_per_s: float
    rows_per_session: float
    max_stall_ms: float | None
    """The event loop's longest stall meanwhile; None when it was not probed."""
    began: float = 0.0
    """When the work began and ended, on the machine's monotonic clock."""
    ended: float = 0.0
    first_stall_ms: float | None = None
    """Bookings: the loop's longest stall in the engine's first booking, before the figure's
    (not in it): once in a bot's life, when its statements are compiled for the engine."""
    steal: float | None = None
    """The share of the machine's CPU time the hypervisor took meanwhile (bench/steal.py)."""


async def _stall_probe(stop: asyncio.Event, worst: list[float]) -> None:
    """The longest the event loop went without running this coroutine (a 1 ms tick)."""
    last = time.perf_counter()
    while not stop.is_set():
        await asyncio.sleep(0.001)
        now = time.perf_counter()
        worst[0] = max(worst[0], now - last - 0.001)
        last = now


async def timed(
    work: Callable[[], Awaitable[int]], sessions: int, *, stalls: bool = True
) -> Figure:
    """`work` timed; with `stalls`, the event loop's longest stall meanwhile too.

    The probe wakes the loop every millisecond, and that is work of its own in the process
    measured: only the bookings, whose stall is a target (they run in the bot's loop), are
    probed. An import or a replan runs in the command line's own process, where no one
    waits on its loop; probed, it printed about 3 % fewer sessions a second on PostgreSQL
    (docs/performance-history.md)."""
    # Each figure starts on a collected heap: the garbage the previous part left (10,000
    # sessions imported and replanned in this process) is not this part's pause.
    gc.collect()
    stop, worst = asyncio.Event(), [0.0]
    probe = asyncio.create_task(_stall_probe(stop, worst)) if stalls else None
    ticks = cpu_ticks()
    began = time.monotonic()
    rows = await work()
    ended = time.monotonic()
    steal = stolen(ticks, cpu_ticks())
    stop.set()
    if probe is not None:
        await probe
    stall = worst[0] * 1000 if probe is not None else None
    return Figure(sessions / (ended - began), rows / sessions, stall, began, ended, steal=steal)


async def book_each(
    engine: AsyncEngine, users: list[int], protocol: Protocol, now: datetime, *, turns: int
) -> int:
    """Book one session per user, one transaction each, as the bot takes its patients'
    turns: each user's booking an update of their chat, up to `turns` of them at once
    (bot/turns.py); the planned rows written."""
    factory = make_session_factory(engine)
    taking = ChatTurns(turns)
    confirms = [_confirm(i, user) for i, user in enumerate(users)]
    try:

        async def turn(i: int, user: int) -> None:
            # A patient's turn is short: on SQLite it runs on the event loop (bot/handlers/
            # base.py: transaction).
            with on_the_loop():
                await _book_one(factory, user, protocol, _start(now, i), now)

        # As the poller gives them: a new one as soon as one of those in hand is handled.
        room = asyncio.Semaphore(turns)
        taken: set[asyncio.Task[None]] = set()

        def handled(task: asyncio.Task[None]) -> None:
            room.release()
            taken.discard(task)

        for i, (user, confirm) in enumerate(zip(users, confirms, strict=True)):
            await room.acquire()
            task = asyncio.create_task(taking.process_update(confirm, turn(i, user)))
            task.add_done_callback(handled)
            taken.add(task)
        await asyncio.gather(*taken)
        return await _planned(engine)
    finally:
        await engine.dispose()


async def opened(url: str, connections: int) -> AsyncEngine:
    """An engine whose pool holds `connections` open connections, as a running bot's does
    once its first turns have opened them (the pool keeps them). Opening one holds the event
    loop for a while (on PostgreSQL 5-15 ms on this machine: the authentication, and the
    driver's setup of each connection): once per connection in a bot's life, not per
    booking."""
    engine = make_engine(url)
    held = [engine.connect() for _ in range(connections)]
    await asyncio.gather(*(connection.start() for connection in held))
    for connection in held:
        await connection.close()
    return engine


def _confirm(update_id: int, user: int) -> Update:
    """The update of a patient's booking: a button pressed in their chat."""
    patient = User(id=user, first_name="P", is_bot=False)
    chat = Chat(id=user, type=Chat.PRIVATE)
    shown = Message(1, datetime.now(UTC), chat, text="confirm?")
    return Update(update_id, callback_query=CallbackQuery(str(update_id), patient, "ok", shown))


async def _book_one(
    factory: SessionFactory, user: int, protocol: Protocol, start: datetime, now: datetime
) -> None:
    async with factory() as session, session.begin():
        patient = await find_patient(session=session, tg_user_id=user)
        assert patient is not None
        await book_session(
            session=session, patient=patient, protocol=protocol, start=start, now=now
        )


def _start(now: datetime, i: int) -> datetime:
    return (now + timedelta(days=3, minutes=15 * (i % 2000))).replace(microsecond=0)


async def _planned(engine: AsyncEngine) -> int:
    async with engine.connect() as db:
        return int(
            (await db.execute(sa.text("SELECT count(*) FROM planned_message"))).scalar_one()
        )


async def bench_booking(url: str, count: int, first_user: int) -> tuple[Figure, Figure]:
    """`count` bookings, one transaction each (as the chat's confirm), as the bot takes its
    patients' turns (bot/turns.py: side by side on PostgreSQL); then, on PostgreSQL, `count`
    more one after another. (On SQLite the bot takes them one at a time: both are the one.)
    Each on an engine that has booked once already, as a running bot's has (`booking`)."""
    now = SystemClock().now()
    protocol = load_protocol(default_protocol_path())
    engine = make_engine(url)
    turns = side_by_side(url)
    seeded = count if turns == 1 else 2 * count
    # One more patient for each engine's first booking (below).
    users, _ = await seed_patients(engine, count=seeded + 2, now=now, first_user=first_user)
    await engine.dispose()
    first_patients = users[seeded:]

    # In the bot, a patient's first update has configured the ORM's mappers (about 10 ms,
    # once per process) before anything is booked.
    configure_mappers()

    async def booking(users: list[int], turns: int, first_patient: int) -> Figure:
        engine = await opened(url, turns)
        # A running bot has booked before: its first booking compiled the statements of a
        # booking for its engine (SQLAlchemy's cache and `rows.prepared` are per engine),
        # 10-40 ms of the loop once in the process's life. Booked here first, and its stall
        # printed apart, so that a round's figure is the bookings of a running bot.
        factory = make_session_factory(engine)

        async def first() -> int:
            with on_the_loop():
                await _book_one(factory, first_patient, protocol, _start(now, -1), now)
            return 0

        first_stall = (await timed(first, 1)).max_stall_ms
        before = await _planned(engine)

        async def work() -> int:
            return await book_each(engine, users, protocol, now, turns=turns) - before

        figure = await timed(work, len(users))
        return replace(figure, first_stall_ms=first_stall)

    as_the_bot = await booking(users[:count], turns, first_patients[0])
    if turns == 1:
        return as_the_bot, as_the_bot
    return as_the_bot, await booking(users[count:seeded], 1, first_patients[1])


@dataclass(frozen=True)
class Bulk:
    """Patients seeded for an import: its lines, their clinic."""

    rows: list[dict[str, str]]
    clinic: Clinic


async def prepared(engine: AsyncEngine, count: int, first_user: int) -> Bulk:
    """`count` consenting patients, and an export with one appointment each."""
    now = SystemClock().now()
    users, clinic_id = await seed_patients(engine, count=count, now=now, first_user=first_user)
    async with make_session_factory(engine)() as db:
        clinic = await db.get(Clinic, clinic_id)
    assert clinic is not None
    rows = [
        {"clinic": clinic.slug, "start": _start(now, i).isoformat(), "telegram_id": str(user)}
        for i, user in enumerate(users)
    ]
    return Bulk(rows, clinic)


async def import_and_replan(engine: AsyncEngine, bulk: Bulk) -> tuple[Figure, Figure]:
    """The import of the lines, then a replan of the clinic's sessions, as `aftercare import`
    and `aftercare replan` run them."""
    protocol = load_protocol(default_protocol_path())
    factory = make_session_factory(engine)
    count = len(bulk.rows)
    before = await _planned(engine)

    async def imported() -> int:
        report = await importer.import_batches(
            sessions=factory,
            rows=bulk.rows,
            importing=importer.Importing(bulk.clinic, protocol),
            clock=SystemClock(),
        )
        if report.booked != count or report.errors:
            raise RuntimeError(f"import: {report.booked} booked, errors {report.errors[:3]}")
        return await _planned(engine) - before

    async def replanned() -> int:
        done = await replan.run(
            sessions=factory, clinic=bulk.clinic, default=protocol, clock=SystemClock()
        )
        if done != count:
            raise RuntimeError(f"replan: {done} of {count} sessions")
        return count

    imports = await timed(imported, count, stalls=False)
    # As after `aftercare clinic edit --timezone`: every patient's zone moves with it.
    async with factory() as db, db.begin():
        await clinics.edit_clinic(
            session=db, slug=bulk.clinic.slug, values={"timezone": "Asia/Dubai"}
        )
    return imports, await timed(replanned, count, stalls=False)


async def bench_import_and_replan(url: str, count: int, first_user: int) -> tuple[Figure, Figure]:
    engine = make_engine(url)
    try:
        return await import_and_replan(engine, await prepared(engine, count, first_user))
    finally:
        await engine.dispose()


def fresh_round(url: str, run: int) -> Awaitable[str]:
    """A new, migrated database for one round (SQLite: a file beside `url`'s; PostgreSQL: a
    database on `url`'s server): each round starts empty, as the baseline's does, and not on
    the 11,000 sessions and 100,000 planned rows the round before left."""
    if is_sqlite(url):
        url = url.removesuffix(".db") + f"-{run}.db"
    return fresh(url, f"aftercare_bench_writes_{run}")


BOOKINGS = 1_000
IMPORTS = 10_000
BASELINE_SESSIONS = 1_000


async def bench_writes(urls: list[str], workdir: Path, repeat: int = 3) -> list[str]:
    """Every write figure, printed with its target (medians of `repeat` interleaved runs)."""
    lines = []
    booking: dict[str, list[tuple[Figure, Figure]]] = {url: [] for url in urls}
    bulk: dict[str, list[tuple[Figure, Figure]]] = {url: [] for url in urls}
    base: list[dict[str, float]] = []
    rows_per_session = 0.0
    for run in range(repeat):
        for url in urls:
            database = await fresh_round(url, run)
            booking[url].append(
                await bench_booking(database, BOOKINGS, 10_000_000 + run * 100_000)
            )
            bulk[url].append(
                await bench_import_and_replan(database, IMPORTS, 20_000_000 + run * 100_000)
            )
        rows_per_session = booking[urls[0]][-1][0].rows_per_session
        base.append(
            await bench_baseline(
                workdir / f"baseline-{run}.db",
                BASELINE_SESSIONS,
                round(rows_per_session),
                SystemClock().now(),
            )
        )
    base_book = median([b["book"] for b in base])
    base_replan = median([b["replan"] for b in base])
    lines.append(
        f"[baseline] APScheduler job per reminder, SQLite: booking {base_book:,.0f} sessions/s "
        f"({base_book * rows_per_session:,.0f} jobs/s), replan {base_replan:,.0f} sessions/s "
        f"({round(rows_per_session)} jobs per session, {BASELINE_SESSIONS:,} sessions)"
    )
    for url in urls:
        kind = url.split("+")[0]
        book = median([f.sessions_per_s for f, _ in booking[url]])
        # The stall is a median of 3 as every figure is: each round's longest gap, and the
        # hypervisor's share of the CPU in that round beside it (bench/steal.py: the longest
        # gaps measured came with the rounds it took most from, though not only with them).
        rounds = [f for f, _ in booking[url]]
        stalled = [(f.max_stall_ms, f.steal) for f in rounds if f.max_stall_ms is not None]
        stall = median([ms for ms, _ in stalled])
        each = ", ".join(f"{ms:.1f} ms ({percent(steal)} stolen)" for ms, steal in stalled)
        firsts = [f.first_stall_ms for pair in booking[url] for f in pair]
        first = max(s for s in firsts if s is not None)
        ratio = f", {book / base_book:.1f}x baseline (target >= 3x)" if kind == "sqlite" else ""
        turns = side_by_side(url)
        taken = (
            "one at a time"
            if turns == 1
            else f"up to {turns} patients side by side; one after another "
            f"{median([one.sessions_per_s for _, one in booking[url]]):,.0f} sessions/s"
        )
        lines.append(
            f"[booking {kind}] {BOOKINGS:,} bookings as the bot takes them ({taken}): "
            f"{book:,.0f} sessions/s (target >= 500), {book * rows_per_session:,.0f} rows/s, "
            f"loop stall {stall:.1f} ms (target < 20 ms; the median of the rounds' longest: "
            f"{each}; an engine's first booking, before them: {first:.1f} ms){ratio}"
        )
        imp = median([i.sessions_per_s for i, _ in bulk[url]])
        rep = median([r.sessions_per_s for _, r in bulk[url]])
        imp_ratio = (
            f", {imp / base_book:.0f}x baseline (target >= 20x)" if kind == "sqlite" else ""
        )
        rep_ratio = (
            f", {rep / base_replan:.0f}x baseline (target >= 20x)" if kind == "sqlite" else ""
        )
        lines.append(
            f"[import {kind}] {IMPORTS:,} appointments: {imp:,.0f} sessions/s "
            f"(target >= 5,000){imp_ratio}"
        )
        lines.append(
            f"[replan {kind}] {IMPORTS:,} sessions: {rep:,.0f} sessions/s "
            f"(target >= 5,000){rep_ratio}"
        )
    return lines


def median(values: list[float]) -> float:
    return statistics.median(values)
