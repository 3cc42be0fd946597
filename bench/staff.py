"""The staff side at size: 100,000 patients and 1,000,000 planned messages (issue 11, part 2).

Seeds a fresh database with Core bulk inserts (a clinic's patients in several zones and quiet
hours, some paused, blocked or without consent; their sessions past and ahead, some flagged,
in courses; their planned messages; check-ins; inbox messages and answers), sets each
patient's `maintenance_from` and `last_session_start` as migrations 0009 and 0014 do
(timed), then times each staff view's
first and a middle page, each count, a broadcast to everyone reachable (its rows planned,
then rolled back), and the delivery export (rows a second, peak memory). Medians of 3.
"""

from __future__ import annotations

import os
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

from bench.claim import fresh, memory
from bench.seed import move_sequences
from messages.protocol import Protocol, default_protocol_path, load_protocol
from scheduler import broadcast, clinics, importer, inbox
from scheduler.clock import SystemClock
from scheduler.courses import EVERY_LAST_SESSION_START, EVERY_MAINTENANCE_FROM
from scheduler.db import SessionFactory, make_engine, make_session_factory
from scheduler.models import CheckIn, InboxKind, InboxMessage, MessageState, SessionState
from scheduler.rows import CLINIC, COURSE, COURSE_SESSION, PATIENT, PLANNED, TREATMENTS

BENCH_DB = "aftercare_bench_staff"
PATIENTS = 100_000
MESSAGES_EACH = 10  # 1,000,000 planned messages
CHUNK = 5_000
TARGET_MS = 100
BROADCAST_TARGET_S = 10
EXPORT_TARGET = 50_000  # rows a second

ZONES = (
    ("Europe/London", 30),
    ("Europe/Berlin", 25),
    ("America/New_York", 15),
    ("Asia/Tehran", 10),
    ("Asia/Kolkata", 10),
    ("UTC", 5),
    ("Australia/Sydney", 5),
)
QUIET = ((("22:00", "08:00"), 85), (("23:00", "07:00"), 10), (("00:00", "00:00"), 5))
STEPS = (
    "prep-2d",
    "prep-1d",
    "after-1h",
    "after-24h",
    "after-3d",
    "after-7d",
    "after-14d",
    "course-next",
    "maintenance-3mo",
    "maintenance-4mo",
)
CHECKIN_OPTIONS = (("all_good", 80), ("redness", 12), ("swelling", 6), ("urgent", 2))
OFFSETS = (-2, -1, 0.04, 1, 3, 7, 14, 21, 91, 122)  # days from the patient's last session

T = TypeVar("T")


def _table(model: Any) -> sa.Table:
    table: sa.Table = model.__table__
    return table


def _weighted(rng: random.Random, choices: tuple[tuple[T, int], ...]) -> T:
    return rng.choices([c for c, _ in choices], weights=[w for _, w in choices])[0]


async def seed(engine: AsyncEngine, now: datetime, patients: int = PATIENTS) -> tuple[int, float]:
    """`patients` patients (one in fifty of a second clinic) and ten planned messages each,
    then each patient's `maintenance_from` and `last_session_start` set as migrations 0009
    and 0014 set them; the main clinic's id, and the seconds that last step took."""
    rng = random.Random(11)
    async with engine.begin() as db:
        await db.execute(
            CLINIC.insert(),
            [
                {
                    "id": n,
                    "slug": slug,
                    "name": slug.title(),
                    "timezone": "Europe/London",
                    "address": "",
                    "phone": "",
                    "emergency_phone": "112",
                    "allow_paid_broadcast": False,
                    "created_at": now - timedelta(days=800),
                }
                for n, slug in ((1, "bench"), (2, "other"))
            ],
        )
    ids = {"session": 0, "message": 0, "checkin": 0, "inbox": 0}
    for start in range(0, patients, CHUNK):
        rows: dict[str, list[dict[str, Any]]] = {
            name: [] for name in ("p", "s", "c", "cs", "m", "ci", "ib")
        }
        for i in range(start, min(patients, start + CHUNK)):
            _one_patient(rng, i + 1, patients, now, ids, rows)
        async with engine.begin() as db:
            for name, table in (
                ("p", PATIENT),
                ("s", TREATMENTS),
                ("c", COURSE),
                ("cs", COURSE_SESSION),
                ("m", PLANNED),
                ("ci", _table(CheckIn)),
                ("ib", _table(InboxMessage)),
            ):
                if rows[name]:
                    await db.execute(table.insert(), rows[name])
    async with engine.begin() as db:
        # Statistics, as a database that grew to this size has them: without, PostgreSQL
        # may plan the backfill's correlated reads as scans, over minutes (the plan then
        # depends on whether autovacuum's analyze happened to come first).
        await db.execute(sa.text("ANALYZE"))
    backfilled = await backfill(engine)
    async with engine.begin() as db:
        await move_sequences(
            db,
            (
                "clinic",
                "patient",
                "treatment_session",
                "course",
                "planned_message",
                "checkin",
                "inbox_message",
            ),
        )
        await db.execute(sa.text("ANALYZE"))
    return 1, backfilled


async def backfill(engine: AsyncEngine) -> float:
    """Every patient's `maintenance_from` and `last_session_start` by the write path's rule,
    one statement each, as migrations 0009 and 0014 do for an existing database; the
    seconds it took."""
    began = time.perf_counter()
    async with engine.begin() as db:
        await db.execute(EVERY_MAINTENANCE_FROM)
        await db.execute(EVERY_LAST_SESSION_START)
    elapsed = time.perf_counter() - began
    if engine.dialect.name == "postgresql":
        # It rewrote every patient row: vacuumed, the table is what autovacuum soon leaves of
        # it, not twice its size in dead rows under the views timed next.
        async with engine.connect() as db:
            autocommit = await db.execution_options(isolation_level="AUTOCOMMIT")
            await autocommit.execute(sa.text("VACUUM patient"))
    return elapsed


def _one_patient(
    rng: random.Random,
    pid: int,
    patients: int,
    now: datetime,
    ids: dict[str, int],
    rows: dict[str, list[dict[str, Any]]],
) -> None:
    created = now - timedelta(days=400 * (patients - pid) / patients + 1)
    quiet_start, quiet_end = _weighted(rng, QUIET)
    roll = rng.random()
    rows["p"].append(
        {
            "id": pid,
            "clinic_id": 2 if pid % 50 == 0 else 1,
            "tg_user_id": 10_000_000 + pid,
            "chat_id": 10_000_000 + pid,
            "first_name": f"P{pid}",
            "language": "en",
            "timezone": _weighted(rng, ZONES),
            "quiet_start": quiet_start,
            "quiet_end": quiet_end,
            "consent_at": None if roll < 0.02 else created,
            "paused_at": now - timedelta(days=3) if 0.02 <= roll < 0.05 else None,
            "blocked_at": now - timedelta(days=9) if 0.05 <= roll < 0.07 else None,
            "draft": {},
            "conditions": {"endocrine_disorder": "yes"} if rng.random() < 0.01 else {},
            "created_at": created,
        }
    )
    count = rng.choice((1, 1, 2, 3, 4, 6))
    ahead = rng.random() < 0.3
    # The last session: a few days to a year ago, or in the coming month.
    last = (
        now + timedelta(days=rng.uniform(1, 30))
        if ahead
        else now - timedelta(days=rng.uniform(1, 365))
    )
    plan = _weighted(rng, (("mild", 45), ("noticeable", 35), ("maintenance", 10), ("none", 10)))
    course_id = pid
    rows["c"].append(
        {
            "id": course_id,
            "patient_id": pid,
            "plan": plan,
            "sessions": count if rng.random() < 0.8 else count + 2,
            "maintenance_stopped_at": now - timedelta(days=20) if rng.random() < 0.05 else None,
            "created_at": created,
        }
    )
    session_id = 0
    for k in range(count):
        ids["session"] += 1
        session_id = ids["session"]
        start = last - timedelta(days=14 * (count - 1 - k))
        flagged = rng.random() < 0.03
        rows["s"].append(
            {
                "id": session_id,
                "patient_id": pid,
                "clinic_id": 2 if pid % 50 == 0 else 1,
                "start_at": start,
                "end_at": start + timedelta(hours=1),
                "state": SessionState.CANCELLED if rng.random() < 0.03 else SessionState.BOOKED,
                "screening": {"pregnant_or_breastfeeding": True} if flagged else {},
                "flagged": flagged,
                "created_at": start - timedelta(days=7),
            }
        )
        rows["cs"].append({"session_id": session_id, "course_id": course_id})
    for k, days in enumerate(OFFSETS):
        ids["message"] += 1
        due = last + timedelta(days=days)
        past = due <= now
        failed = past and rng.random() < 0.02
        rows["m"].append(
            {
                "id": ids["message"],
                "patient_id": pid,
                "session_id": session_id,
                "step": STEPS[k],
                "seq": 0,
                "priority": 0,
                "state": (MessageState.FAILED if failed else MessageState.SENT)
                if past
                else MessageState.PENDING,
                "due_at": due,
                "not_before": due,
                "expires_at": due + timedelta(hours=12),
                "attempts": 1 if past else 0,
                "last_error": "blocked" if failed else None,
                "sent_at": due + timedelta(seconds=2) if past and not failed else None,
                "extra": {},
                "created_at": last - timedelta(days=7),
            }
        )
    if rng.random() < 0.5:
        ids["checkin"] += 1
        option = _weighted(
            rng, (("all_good", 80), ("redness", 12), ("swelling", 6), ("urgent", 2))
        )
        answered = last + timedelta(days=1) if last + timedelta(days=1) < now else now
        rows["ci"].append(
            {
                "id": ids["checkin"],
                "patient_id": pid,
                "session_id": session_id,
                "option": option,
                "red_flag": option == "urgent",
                "answered_at": answered,
                "handled_at": answered + timedelta(hours=2) if rng.random() < 0.5 else None,
            }
        )
    if rng.random() < 0.2:
        ids["inbox"] += 1
        asked = ids["inbox"]
        written = now - timedelta(days=rng.uniform(0, 60))
        rows["ib"].append(
            {
                "id": asked,
                "patient_id": pid,
                "clinic_id": 2 if pid % 50 == 0 else 1,
                "kind": _weighted(
                    rng,
                    (
                        (InboxKind.MESSAGE.value, 70),
                        (InboxKind.RED_FLAG.value, 5),
                        (InboxKind.NOTE.value, 15),
                        (InboxKind.SCREENING.value, 10),
                    ),
                ),
                "text": "a question about my session",
                "signs": [],
                "reply_to": None,
                "author_id": None,
                "created_at": written,
                "handled_at": written + timedelta(hours=3) if rng.random() < 0.4 else None,
            }
        )
        if rng.random() < 0.3:
            ids["inbox"] += 1
            rows["ib"].append(
                {
                    "id": ids["inbox"],
                    "patient_id": pid,
                    "clinic_id": 2 if pid % 50 == 0 else 1,
                    "kind": InboxKind.REPLY.value,
                    "text": "the clinic's answer",
                    "signs": [],
                    "reply_to": asked,
                    "author_id": 900,
                    "created_at": written + timedelta(hours=1),
                    "handled_at": None,
                }
            )


async def _median(runs: int, measure: Callable[[], Awaitable[float]]) -> float:
    return statistics.median([await measure() for _ in range(runs)])


def _peak_rss_reset() -> None:
    """Start a new peak-RSS window for this process (Linux: VmHWM back to VmRSS)."""
    Path("/proc/self/clear_refs").write_text("5")


async def bench_staff(url: str, runs: int = 3, patients: int = PATIENTS) -> list[str]:
    """Seed, then time every staff view and count; printable lines, each with its target."""
    created = await fresh(url, name=BENCH_DB)
    kind = created.split("+")[0]
    engine = make_engine(created)
    sessions = make_session_factory(engine)
    now = SystemClock().now()
    protocol = load_protocol(default_protocol_path())
    lines: list[str] = []
    try:
        started = time.perf_counter()
        clinic_id, backfilled = await seed(engine, now, patients)
        lines.append(
            f"[staff {kind}] seeded {patients:,} patients, {patients * MESSAGES_EACH:,} "
            f"planned messages in {time.perf_counter() - started:.1f} s; every patient's "
            f"maintenance_from and last_session_start (migrations 0009 and 0014's "
            f"backfills) in {backfilled:.1f} s"
        )
        sizes, views = await _views(sessions, clinic_id, protocol, now, patients)
        lines.append(f"[staff {kind}] {sizes}")
        for name, run in views:

            async def measure(run: Callable[[AsyncSession], Awaitable[object]] = run) -> float:
                async with sessions() as db:
                    began = time.perf_counter()
                    await run(db)
                    return time.perf_counter() - began

            ms = await _median(runs, measure) * 1000
            lines.append(f"[staff {kind}] {name}: {ms:.1f} ms (target < {TARGET_MS} ms)")
        lines.append(await _broadcast(sessions, clinic_id, protocol, kind, runs))
        lines.extend(await _export(sessions, kind, runs, now))
    finally:
        await engine.dispose()
    return lines


Run = Callable[[AsyncSession], Awaitable[object]]


async def _views(
    sessions: SessionFactory,
    clinic_id: int,
    protocol: Protocol,
    now: datetime,
    patients: int,
) -> tuple[str, list[tuple[str, Run]]]:
    middle = patients // 2

    def audience(name: str) -> Run:
        async def count(db: AsyncSession) -> int:
            return await broadcast.audience_size(
                session=db, clinic_id=clinic_id, audience=name, protocol=protocol, now=now
            )

        return count

    async with sessions() as db:
        sizes = {name: await audience(name)(db) for name in broadcast.AUDIENCES}
        due = await clinics.due_for_maintenance(
            session=db, clinic_id=clinic_id, protocol=protocol, now=now
        )
        open_count = await inbox.unanswered(session=db, clinic_ids=[clinic_id])
    sizes_line = (
        f"audiences {', '.join(f'{k}={v:,}' for k, v in sizes.items())}; "
        f"/due lists {len(due.shown)} of {due.total:,}; inbox open={open_count:,}"
    )
    return sizes_line, [
        (
            "/patients first page",
            lambda db: clinics.patients_page(session=db, clinic_id=clinic_id, now=now),
        ),
        (
            f"/patients middle page (older than #{middle:,})",
            lambda db: clinics.patients_page(
                session=db, clinic_id=clinic_id, now=now, older_than=middle
            ),
        ),
        (
            f"/patients middle page (newer than #{middle:,})",
            lambda db: clinics.patients_page(
                session=db, clinic_id=clinic_id, now=now, newer_than=middle
            ),
        ),
        (
            "/upcoming (14 days)",
            lambda db: clinics.upcoming_sessions(
                session=db, clinic_id=clinic_id, now=now, days=14
            ),
        ),
        (
            "/due (count and first 50)",
            lambda db: clinics.due_for_maintenance(
                session=db, clinic_id=clinic_id, protocol=protocol, now=now
            ),
        ),
        ("/alerts", lambda db: clinics.alerts(session=db, clinic_id=clinic_id)),
        (
            "/inbox (first page and open count)",
            lambda db: inbox.entries(session=db, clinic_ids=[clinic_id]),
        ),
        *((f"audience count {name}", audience(name)) for name in broadcast.AUDIENCES),
    ]


async def _broadcast(
    sessions: SessionFactory, clinic_id: int, protocol: Protocol, kind: str, runs: int
) -> str:
    """A broadcast to every reachable patient: planned in one transaction, then rolled back
    (so that each run starts from the same database)."""
    recipients = 0

    async def measure() -> float:
        nonlocal recipients
        async with sessions() as db:
            began = time.perf_counter()
            async with db.begin():
                now = SystemClock().now()
                draft = await broadcast.create_draft(
                    session=db, clinic_id=clinic_id, created_by=900, text="Bench", now=now
                )
                assert draft.id is not None
                started = await broadcast.start(
                    session=db,
                    broadcast_id=draft.id,
                    clinic_id=clinic_id,
                    audience="active",
                    protocol=protocol,
                    now=now,
                )
                assert started is not None
                recipients = started.recipients
                await db.flush()
                elapsed = time.perf_counter() - began
                await db.rollback()
            return elapsed

    seconds = await _median(runs, measure)
    return (
        f"[staff {kind}] broadcast to {recipients:,} created in {seconds:.2f} s "
        f"(target < {BROADCAST_TARGET_S} s)"
    )


async def _export(sessions: SessionFactory, kind: str, runs: int, now: datetime) -> list[str]:
    """`aftercare export deliveries` of every row: rows a second, and the peak RSS growth."""
    rows = 0
    peak = 0.0

    async def measure() -> float:
        nonlocal rows, peak
        written = 0

        def write(text: str) -> None:
            nonlocal written
            written += len(text)

        async with sessions() as db:
            before, _ = memory(os.getpid())
            _peak_rss_reset()
            began = time.perf_counter()
            rows = await importer.export_deliveries(
                session=db, since=now - timedelta(days=800), write=write
            )
            elapsed = time.perf_counter() - began
            peak = max(peak, memory(os.getpid())[1] - before)
        return elapsed

    seconds = await _median(runs, measure)
    return [
        f"[staff {kind}] export deliveries: {rows:,} rows in {seconds:.1f} s = "
        f"{rows / seconds:,.0f} rows/s (target >= {EXPORT_TARGET:,} rows/s), "
        f"peak RSS +{peak:.0f} MB (target: flat, not growing with the rows)"
    ]
