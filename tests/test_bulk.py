"""The write path in batches: the import and a clinic-wide replan plan exactly what one
booking and one patient's replan plan, and an interrupted replan is finished by the next run.

Each comparison runs the one-at-a-time path in a transaction that is rolled back, then the
batch path on the same data, and compares the planned rows by what they mean (patient,
session start, step, state, times, extras), not by id.
"""

from __future__ import annotations

import asyncio
import gc
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.dialects.sqlite.aiosqlite import SQLiteDialect_aiosqlite
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select, update
from sqlmodel.ext.asyncio.session import AsyncSession
from typer.testing import CliRunner

from bot.cli.commands import cli
from messages.protocol import default_protocol_path, load_protocol
from scheduler import bulk, care, clinics, courses, importer, invites, patients, replan, rows
from scheduler.care import book_session
from scheduler.clock import FakeClock
from scheduler.db import SessionFactory, make_engine, make_session_factory, pg_instant
from scheduler.models import (
    Clinic,
    CourseSession,
    MessageState,
    Patient,
    PlannedMessage,
    Priority,
    ReplanRun,
    SessionState,
    TreatmentSession,
)
from scheduler.planner import PlannedStep, apply_quiet_hours

PROTOCOL = load_protocol(default_protocol_path())
ZONES = ("Asia/Kolkata", "Europe/London", "America/New_York", "Asia/Tehran")
QUIET = (("22:00", "08:00"), ("21:00", "07:30"), ("00:00", "00:00"))


async def _seed(
    sessions: SessionFactory,
    now: datetime,
    count: int = 12,
    booked: Callable[[int], timedelta] | None = None,
) -> tuple[Clinic, list[Patient]]:
    """A clinic with patients in several zones and quiet hours; every third one without
    consent, every fourth one on a course of two sessions with one session booked. With
    `booked`, then a session for each consenting patient, the i-th at `now + booked(i)`."""
    async with sessions() as db, db.begin():
        clinic = await clinics.add_clinic(
            session=db, slug="kochi", values={"name": "Kochi", "timezone": "Asia/Kolkata"}, now=now
        )
        assert clinic.id is not None
        people = []
        for i in range(count):
            patient = Patient(
                clinic_id=clinic.id,
                tg_user_id=5000 + i,
                chat_id=5000 + i,
                first_name=f"P{i}",
                timezone=ZONES[i % len(ZONES)],
                quiet_start=QUIET[i % len(QUIET)][0],
                quiet_end=QUIET[i % len(QUIET)][1],
                consent_at=None if i % 3 == 2 else now,
                created_at=now,
            )
            db.add(patient)
            await db.flush()
            assert patient.id is not None
            if i % 4 == 0:
                await courses.set_plan(
                    session=db, patient_id=patient.id, plan="mild", sessions=2, now=now
                )
                if patient.consent_at is not None:
                    await book_session(
                        session=db,
                        patient=patient,
                        protocol=PROTOCOL,
                        start=now + timedelta(days=2, hours=i),
                        now=now,
                    )
            people.append(patient)
        for i, patient in enumerate(people):
            if booked is not None and patient.consent_at is not None:
                await book_session(
                    session=db, patient=patient, protocol=PROTOCOL, start=now + booked(i), now=now
                )
    return clinic, people


async def _one_booked(sessions: SessionFactory, now: datetime) -> tuple[Patient, int]:
    """One consenting patient with a session booked (`_seed`), and that session's id."""
    _, people = await _seed(sessions, now, count=1, booked=lambda _i: timedelta(days=3))
    patient = people[0]
    async with sessions() as db:
        session_id = (
            await db.exec(
                select(TreatmentSession.id).where(TreatmentSession.patient_id == patient.id)
            )
        ).first()
    assert patient.id is not None and session_id is not None
    return patient, session_id


def importing(clinic: Clinic) -> importer.Importing:
    """The import as these tests run it: the shipped protocol."""
    return importer.Importing(clinic, PROTOCOL)


async def _planned(db: AsyncSession) -> list[tuple[Any, ...]]:
    """Every planned row, by meaning."""
    pm = PlannedMessage.__table__  # type: ignore[attr-defined]
    patient = Patient.__table__  # type: ignore[attr-defined]
    treatment = TreatmentSession.__table__  # type: ignore[attr-defined]
    rows = await (await db.connection()).execute(
        sa.select(
            patient.c.tg_user_id,
            treatment.c.start_at,
            pm.c.step,
            pm.c.state,
            pm.c.due_at,
            pm.c.not_before,
            pm.c.expires_at,
            pm.c.extra,
            pm.c.last_error,
        )
        .select_from(pm)
        .join(patient, patient.c.id == pm.c.patient_id)
        .join(treatment, treatment.c.id == pm.c.session_id)
    )
    return sorted(tuple(str(v) for v in row) for row in rows)


def _but_the_confirmation(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """`_planned`'s rows without the booking confirmations' due times."""
    return [row[:4] + row[5:] if row[2] == "booked" else row for row in rows]


def _csv(people: list[Patient], now: datetime) -> list[dict[str, str]]:
    """A session for each patient (by Telegram id), and one for somebody not on Telegram."""
    lines = [
        {
            "clinic": "kochi",
            "start": (now + timedelta(days=9 + i % 5, hours=i)).isoformat(),
            "telegram_id": str(patient.tg_user_id),
        }
        for i, patient in enumerate(people)
    ]
    start = (now + timedelta(days=10)).isoformat()
    return [*lines, {"clinic": "kochi", "start": start, "phone": "+91 98470 12345"}]


async def test_an_import_plans_each_session_as_one_booking_does(
    sessions: SessionFactory, clock: FakeClock
) -> None:
    now = clock.now()
    clinic, people = await _seed(sessions, now)
    lines = _csv(people, now)

    # One at a time, as a one-line import did before: book_unplanned per known patient.
    async with sessions() as db, db.begin():
        for line in lines[:-1]:
            patient = (
                await db.exec(
                    select(Patient).where(Patient.tg_user_id == int(line["telegram_id"]))
                )
            ).one()
            await invites.book_unplanned(
                session=db,
                patient=patient,
                start=datetime.fromisoformat(line["start"]),
                protocol=PROTOCOL,
                now=now,
            )
        expected = await _planned(db)
        await db.rollback()

    async def imported() -> tuple[importer.ImportReport, list[tuple[Any, ...]]]:
        async with sessions() as db, db.begin():
            report = await importer.import_appointments(
                session=db, rows=lines, importing=importing(clinic), now=now
            )
            return report, await _planned(db)

    report, got = await imported()
    assert (report.booked, report.invited, report.unchanged, report.errors) == (
        len(people),
        1,
        0,
        [],
    )
    # As one booking plans it, but for the confirmation: planned away from the chat, it keeps
    # the patient's quiet hours (a booking in the chat answers the patient at once).
    assert _but_the_confirmation(got) == _but_the_confirmation(expected)
    prefs = {str(p.tg_user_id): care.prefs_of(p) for p in people}
    confirmations = [row for row in got if row[2] == "booked" and row[3] == MessageState.PENDING]
    for row in confirmations:
        expires = datetime.fromisoformat(row[6])
        assert row[4] == str(apply_quiet_hours(now, now, expires, prefs[row[0]]))
    assert any(row[4] != str(now) for row in confirmations)  # someone's night, here
    # The course patients' earlier session loses its course reminder to the new one.
    assert any(row[2] == "course-next" and row[3] == MessageState.CANCELLED for row in got)
    # The consenting patients' sessions are planned; the others wait for consent.
    planned_for = {row[0] for row in got if row[3] == MessageState.PENDING}
    assert planned_for == {str(p.tg_user_id) for p in people if p.consent_at is not None}

    again, unchanged = await imported()
    assert unchanged == got
    # An imported booking's confirmation, due now, waits behind reminders falling due (the
    # seeded sessions, booked in the chat, keep theirs at reminder priority).
    async with sessions() as db:
        priorities = set(
            (
                await db.exec(
                    select(PlannedMessage.step, PlannedMessage.priority).where(
                        PlannedMessage.state == MessageState.PENDING,
                        col(PlannedMessage.created_at) == now,
                    )
                )
            ).all()
        )
    assert ("booked", Priority.BROADCAST) in priorities
    assert ("prep-3d", Priority.REMINDER) in priorities
    assert (again.booked, again.invited, again.unchanged) == (0, 0, len(lines))
    assert len(again.links) == 1  # the invite not opened yet is listed again


async def _change_and_replan_each(db: AsyncSession, clinic: Clinic, now: datetime) -> None:
    """The reference: every patient replanned one by one, as a resume does."""
    for patient in (await db.exec(select(Patient).where(Patient.clinic_id == clinic.id))).all():
        await patients.replan_patient(
            session=db, patient=patient, protocol=PROTOCOL, now=now, reason=replan.REASON
        )


async def test_a_clinic_replan_plans_what_replanning_each_patient_plans(
    sessions: SessionFactory, clock: FakeClock
) -> None:
    now = clock.now()
    clinic, _ = await _seed(sessions, now, booked=lambda i: timedelta(days=5 + i % 3, hours=2 * i))
    async with sessions() as db, db.begin():
        # Some steps went out already: a replan never plans them again.
        await db.exec(
            update(PlannedMessage)
            .where(col(PlannedMessage.step) == "booked", col(PlannedMessage.id) % 2 == 0)
            .values(state=MessageState.SENT)
        )
    later = now + timedelta(hours=30)
    async with sessions() as db, db.begin():
        await clinics.edit_clinic(session=db, slug="kochi", values={"timezone": "Europe/Berlin"})

    async with sessions() as db:
        before = await _planned(db)
    async with sessions() as db, db.begin():
        await _change_and_replan_each(db, clinic, later)
        expected = _live(await _planned(db))
        await db.rollback()

    # As the command runs it: batches of 3, each written while the next is read and planned.
    done = await replan.run(
        sessions=sessions, clinic=clinic, default=PROTOCOL, clock=FakeClock(later), size=3
    )
    async with sessions() as db:
        got = await _planned(db)
    assert done > 3 and _live(got) == expected
    assert _live(got) != _live(before), "the replan moved nothing: the test proves nothing"
    # Each pending step was moved in its row: the replan leaves no cancelled copies.
    rows_of = Counter(row[:3] for row in got)
    assert all(rows_of[row[:3]] == 1 for row in before if row[3] == MessageState.PENDING)


async def _pending_per_step(db: AsyncSession) -> list[int]:
    """How many pending rows each session's step has (a finished replan leaves one)."""
    found = await db.exec(
        select(sa.func.count())
        .where(PlannedMessage.state == MessageState.PENDING)
        .group_by(col(PlannedMessage.session_id), col(PlannedMessage.step))
    )
    return list(found.all())


def _live(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The rows that say what will be or was sent (a patient's replan cancels its old rows
    and adds new ones; the clinic's replan moves them)."""
    return [row for row in rows if row[3] != MessageState.CANCELLED]


async def test_a_killed_replan_is_finished_by_the_next_run_and_nothing_is_planned_twice(
    sessions: SessionFactory, clock: FakeClock
) -> None:
    now = clock.now()
    clinic, _ = await _seed(sessions, now, count=9, booked=lambda i: timedelta(days=6, hours=i))
    async with sessions() as db, db.begin():
        first = await replan.start(session=db, clinic=clinic, reason="test", now=now)
        assert first.id is not None
    run_id = first.id

    async def one_batch(*, killed: bool) -> int:
        async with sessions() as db, db.begin():
            count = await replan.replan_batch(
                db=await db.connection(),
                run_id=run_id,
                clinic=clinic,
                default=PROTOCOL,
                now=now,
                size=2,
            )
            if killed:  # in the middle of the batch: its transaction never commits
                await db.rollback()
            return count

    assert await one_batch(killed=False) == 2
    assert await one_batch(killed=True) == 2

    async with sessions() as db:
        preview = await replan.preview(session=db, clinic=clinic)
    assert preview.resuming is not None and preview.resuming.id == first.id
    assert preview.resuming.done == 2
    done = await replan.run(
        sessions=sessions, clinic=clinic, default=PROTOCOL, clock=clock, size=2
    )
    assert done == preview.sessions
    async with sessions() as db:
        run = await db.get(ReplanRun, first.id)
        assert run is not None and run.finished_at is not None
        assert run.done == run.total == preview.sessions
        pending = await _pending_per_step(db)
    assert pending and all(count == 1 for count in pending)


async def test_postgresql_writes_two_replan_batches_at_once_and_commits_them_in_order(
    sessions: SessionFactory, backend: str, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL a replan batch is written while the one before is still being written,
    yet commits only after it (the run's cursor never passes a batch not committed); when a
    batch fails, the one written beside it is rolled back too, and the next run does both."""
    now = clock.now()
    clinic, _ = await _seed(sessions, now, count=9, booked=lambda i: timedelta(days=6, hours=i))
    async with sessions() as db, db.begin():
        await clinics.edit_clinic(session=db, slug="kochi", values={"timezone": "Europe/Berlin"})
        found = await db.exec(select(TreatmentSession.id).order_by(col(TreatmentSession.id)))
        ids = list(found.all())
    apply = replan.apply
    writing: set[int] = set()
    beside: list[tuple[int, int]] = []  # (batch, batch being written meanwhile)
    finished: list[int] = []  # the batches in the order their writes returned
    batches: list[int] = []
    cursors: list[int] = []  # the run's cursor, as another connection saw it, per write
    fail = [False]

    second: asyncio.Event = asyncio.Event()

    async def watched(db: Any, *, batch: replan.Prepared, **kw: Any) -> int:
        # A batch's number is its place in the run (batches of 3 in id order), not the order
        # in which the writes get here: the second's connection may be ready first.
        number = ids.index(batch.ids[0]) // 3
        batches.append(number)
        beside.extend((number, other) for other in writing)
        writing.add(number)
        try:
            async with sessions() as other:
                run = (await other.exec(select(ReplanRun))).one()
                cursors.append(run.cursor)
            if number == 1:
                second.set()
            if number == 0 and backend == "postgres":
                # The first batch is slow: the second's write begins before it commits (it
                # times out if they are not written at once).
                await asyncio.wait_for(second.wait(), 10)
            if fail[0] and number == 0:
                raise RuntimeError("the database went away")
            count = await apply(db, batch=batch, **kw)
            finished.append(number)
            return count
        finally:
            writing.discard(number)

    def replanned() -> Awaitable[int]:
        return replan.run(sessions=sessions, clinic=clinic, default=PROTOCOL, clock=clock, size=3)

    monkeypatch.setattr(replan, "apply", watched)
    fail[0] = True
    with pytest.raises(RuntimeError):
        await replanned()
    async with sessions() as db:
        run = (await db.exec(select(ReplanRun))).one()
    assert (run.cursor, run.done, finished) == (0, 0, [])  # the second rolled back with it

    fail[0] = False
    for seen in (batches, beside, cursors):
        seen.clear()
    second.clear()
    done = await replanned()
    assert done > 3 and finished == list(range(len(batches))) and len(batches) > 1
    if backend == "postgres":
        assert sorted((max(p), min(p)) for p in beside) == [
            (i, i - 1) for i in range(1, len(batches))
        ]
        assert cursors[:2] == [0, 0]  # the second's write began before the first committed
    else:
        assert beside == []
        assert cursors == sorted(set(cursors))
    async with sessions() as db:
        run = (await db.exec(select(ReplanRun))).one()
        assert run.finished_at is not None and run.done == run.total == done
        pending = await _pending_per_step(db)
    assert pending and all(count == 1 for count in pending)


async def test_the_import_and_the_replan_keep_the_heap_they_found_out_of_full_collections(
    sessions: SessionFactory, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a bulk run writes, the objects alive at its start are frozen (scheduler.bulk's
    heap_kept: each full collection walked them all again); after it, nothing is. And the
    interpreter switches threads every 0.5 ms (`bulk.gil_shared`: SQLite's writing thread
    and the planner share the GIL), then as often as before."""
    now = clock.now()
    clinic, people = await _seed(sessions, now)
    frozen: list[int] = []
    switching: list[float] = []
    before = sys.getswitchinterval()

    def spying(cls: Any, name: str) -> None:
        original = getattr(cls, name)

        async def spy(*args: Any, **kwargs: Any) -> Any:
            frozen.append(gc.get_freeze_count())
            switching.append(sys.getswitchinterval())
            return await original(*args, **kwargs)

        monkeypatch.setattr(cls, name, spy)

    spying(importer._Batch, "write")
    spying(replan, "apply")
    report = await importer.import_batches(
        sessions=sessions, rows=_csv(people, now), importing=importing(clinic), clock=clock
    )
    assert report.booked and gc.get_freeze_count() == 0
    assert await replan.run(sessions=sessions, clinic=clinic, default=PROTOCOL, clock=clock)
    assert len(frozen) >= 2 and all(count > 0 for count in frozen)
    assert gc.get_freeze_count() == 0
    assert before > bulk.SWITCH_INTERVAL
    assert switching and all(interval == bulk.SWITCH_INTERVAL for interval in switching)
    assert sys.getswitchinterval() == before


async def test_find_patient_gives_the_row_the_orm_loads_and_its_changes_are_written(
    sessions: SessionFactory, clock: FakeClock
) -> None:
    """The patient read with Core (care.find_patient) is the row the ORM's load gives: the
    same values and types, the session's own copy when it has one, its changes flushed."""
    _, people = await _seed(sessions, clock.now(), count=3)
    user = people[1].tg_user_id
    async with sessions() as db:
        loaded = (await db.exec(select(Patient).where(Patient.tg_user_id == user))).one()
        expected = {k: v for k, v in loaded.__dict__.items() if not k.startswith("_")}
    async with sessions() as db, db.begin():
        found = await care.find_patient(session=db, tg_user_id=user)
        assert found is not None
        got = {k: v for k, v in found.__dict__.items() if not k.startswith("_")}
        assert got == expected
        assert {k: type(v) for k, v in got.items()} == {k: type(v) for k, v in expected.items()}
        assert await care.find_patient(session=db, tg_user_id=user) is found
        assert (await db.get(Patient, found.id)) is found
        found.first_name = "Renamed"
        found.conditions = {"endocrine": "no"}
        assert await care.find_patient(session=db, tg_user_id=99_999) is None
    async with sessions() as db:
        again = await care.find_patient(session=db, tg_user_id=user)
    assert again is not None
    assert (again.first_name, again.conditions) == ("Renamed", {"endocrine": "no"})


async def test_a_replan_batch_is_a_range_of_the_clinics_sessions_without_statistics(
    engine: AsyncEngine, sessions: SessionFactory, clock: FakeClock
) -> None:
    """A replan's batch reads the next range of (clinic, state, id) (migration 0017), not
    every remaining session of the clinic sorted by id: PostgreSQL's plan for tables without
    statistics yet (just after an import, as here) did that for each batch, 50 ms a batch
    among 10,000 sessions."""
    clinic, _ = await _seed(sessions, clock.now(), booked=lambda i: timedelta(days=4, hours=i))
    assert clinic.id is not None
    async with engine.connect() as db:
        query = replan._batch(clinic.id, db.dialect, after=0, size=1000)
        sql = query.compile(dialect=db.dialect, compile_kwargs={"literal_binds": True})
        if db.dialect.name == "sqlite":
            explain = "EXPLAIN QUERY PLAN "
        else:
            explain = "EXPLAIN "
            # A table this small is read whole: the plan asked for is the one a large one gets.
            await db.exec_driver_sql("SET LOCAL enable_seqscan = off")
        plan = "\n".join(str(row) for row in await db.exec_driver_sql(f"{explain}{sql}"))
    assert "ix_treatment_session_clinic_state_id" in plan, plan
    assert "Sort" not in plan and "TEMP B-TREE" not in plan, plan


async def test_the_replan_reads_each_sessions_own_rows_with_or_without_statistics(
    engine: AsyncEngine, sessions: SessionFactory, clock: FakeClock
) -> None:
    """Which sessions still wait, and how many messages they have, is read through each
    session's own rows, never through the whole pending range of the state's index (the
    pending rows' partial index, since migration 0016) once per session. PostgreSQL
    planned that for tables without statistics yet (as just after an import, before
    autovacuum analyzes them; as here): a replan's count of 10,000 sessions took 13 s, and
    each batch as long."""
    clinic, _ = await _seed(sessions, clock.now(), booked=lambda i: timedelta(days=4, hours=i))
    assert clinic.id is not None
    waiting = sa.select(sa.func.count()).select_from(replan._sessions(clinic.id).subquery())
    async with engine.connect() as db:
        explain = "EXPLAIN QUERY PLAN " if db.dialect.name == "sqlite" else "EXPLAIN "
        for query in (waiting, replan._pending(clinic.id)):
            sql = query.compile(dialect=db.dialect, compile_kwargs={"literal_binds": True})
            plan = "\n".join(str(row) for row in await db.exec_driver_sql(f"{explain}{sql}"))
            assert "planned_message" in plan
            # Not the pending rows' index (the state's, before migration 0016): `state_in`
            # names no state in a form it serves, so that PostgreSQL cannot AND it in again.
            others = ("ix_planned_message_pending", "_sending", "_due_at_id")
            assert not any(index in plan for index in others), plan


def test_the_replan_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As an operator: the preview, a refusal that changes nothing, the run, an interrupted
    run finished, the hint after a zone change, and a change of the default quiet hours."""
    db = tmp_path / "a.db"
    monkeypatch.chdir(tmp_path)
    env = {"AFTERCARE_DATABASE_URL": f"sqlite+aiosqlite:///{db}"}

    def run(*args: str, given: str = "") -> tuple[int, str, str]:
        result = CliRunner().invoke(cli, list(args), env=env, input=given)
        return result.exit_code, result.stdout, result.stderr

    assert run("migrate")[0] == 0
    assert run("replan", "--clinic", "default") == (
        0,
        "Nothing to replan: no session of default has pending reminders.\n",
        "",
    )
    now = datetime.now(UTC).replace(microsecond=0)

    async def seed() -> int:
        engine = make_engine(env["AFTERCARE_DATABASE_URL"])
        try:
            factory = make_session_factory(engine)
            await _seed(factory, now, count=6, booked=lambda i: timedelta(days=4, hours=i))
            async with factory() as session:
                return len((await session.exec(select(TreatmentSession))).all())
        finally:
            await engine.dispose()

    sessions = asyncio.run(seed())
    code, out, _ = run("replan", "--clinic", "kochi", given="n\n")
    assert code == 1
    assert f"Replan kochi: {sessions} sessions of 4 patients, " in out
    assert out.endswith("Replan now? [y/N]: n\nNothing replanned.\n")
    code, out, err = run("replan", "--clinic", "kochi", "--yes")
    assert (code, err) == (0, ""), err
    assert out.endswith(f"replanned {sessions} sessions of kochi\n")
    code, out, _ = run("replan", "--clinic", "nowhere", "--yes")
    assert code == 1
    code, out, err = run("replan", "--clinic", "kochi", "--previous-quiet-hours", "late")
    assert code == 1 and "--previous-quiet-hours: expected HH:MM-HH:MM" in err

    async def interrupted() -> None:
        engine = make_engine(env["AFTERCARE_DATABASE_URL"])
        try:
            factory = make_session_factory(engine)
            async with factory() as session, session.begin():
                clinic = await clinics.clinic_by_slug(session=session, slug="kochi")
                assert clinic is not None
                started = await replan.start(session=session, clinic=clinic, reason="", now=now)
                assert started.id is not None
                await replan.replan_batch(
                    db=await session.connection(),
                    run_id=started.id,
                    clinic=clinic,
                    default=PROTOCOL,
                    now=now,
                    size=1,
                )
        finally:
            await engine.dispose()

    asyncio.run(interrupted())
    code, out, _ = run("replan", "--clinic", "kochi", "--yes")
    assert code == 0
    assert f"is 1 of {sessions} sessions done: this run finishes it." in out
    assert out.endswith(f"replanned {sessions} sessions of kochi\n")

    code, out, _ = run("clinic", "edit", "kochi", "--timezone", "Asia/Dubai")
    assert code == 0
    assert f"Sessions with reminders planned before this change: {sessions}; " in out
    assert "`aftercare replan --clinic kochi`" in out

    # The default quiet hours changed: those who still had the old default get the new one.
    env["AFTERCARE_QUIET_HOURS"] = "21:00-07:00"
    code, out, _ = run("replan", "--clinic", "kochi", "--previous-quiet-hours", "22:00-08:00")
    assert code == 1  # not confirmed: nothing changed
    assert "Patients on the previous default quiet hours, who get the new default: 2." in out
    code, out, _ = run("replan", "--clinic", "kochi", "--previous-quiet-hours", "22-8", "--yes")
    assert code == 0
    code, out, _ = run("replan", "--clinic", "kochi", "--previous-quiet-hours", "22:00-08:00")
    assert "previous default" not in out  # nobody is left on it


@pytest.mark.parametrize(
    "dialect",
    [SQLiteDialect_aiosqlite(), PGDialect_asyncpg()],  # type: ignore[no-untyped-call]
)
def test_planned_rows_reach_the_driver_as_their_column_types_send_them(dialect: Any) -> None:
    """`insert_planned` hands the driver values itself (scheduler/rows.py): they must be what
    SQLAlchemy's own processing of each column would send (on PostgreSQL, the instants as
    the engine's timestamptz codec encodes a datetime: their microseconds, `pg_instant`)."""
    row = {
        "patient_id": 7,
        "session_id": 9,
        "step": "after-24h",
        "seq": 6,
        "priority": 0,
        "state": MessageState.PENDING.value,
        "due_at": datetime(2026, 12, 3, 10, 0, tzinfo=UTC),
        "not_before": datetime(2026, 12, 3, 15, 30, 0, 123, tzinfo=ZoneInfo("Asia/Kolkata")),
        "expires_at": datetime(2026, 12, 4, 10, 0, tzinfo=UTC),
        "attempts": 0,
        "extra": {"folded": ["after-0"], "extended": True},
        "created_at": datetime(2026, 12, 2, 9, 0, tzinfo=UTC),
    }
    sent = rows.planned_statement(dialect, [row, {**row, "extra": {}}]).params
    table = PlannedMessage.__table__  # type: ignore[attr-defined]
    for values, row_sent in zip([row, {**row, "extra": {}}], sent, strict=True):
        expected = []
        for name in rows.PLANNED_COLUMNS:
            column_type = table.c[name].type
            process = column_type.dialect_impl(dialect).bind_processor(dialect)
            value = process(values[name]) if process is not None else values[name]
            if dialect.name == "postgresql" and isinstance(value, datetime):
                value = pg_instant(value)
            expected.append(value)
        assert list(row_sent) == expected


@pytest.mark.parametrize(
    "dialect",
    [SQLiteDialect_aiosqlite(), PGDialect_asyncpg()],  # type: ignore[no-untyped-call]
)
@pytest.mark.parametrize("bulk_run", [False, True])
def test_planned_values_are_what_planned_statement_makes_of_planned_rows(
    dialect: Any, bulk_run: bool
) -> None:
    """The import's rows straight in the driver's form (`rows.planned_values`) are, value
    for value, what `planned_statement` makes of `planned_rows`: priorities (a bulk run's
    rows already due at broadcast priority), states, instants, extras."""
    now = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
    kolkata = ZoneInfo("Asia/Kolkata")
    steps = [
        PlannedStep(
            "pre-3d", 0, now - timedelta(hours=1), now, now + timedelta(hours=2), "pending"
        ),
        PlannedStep(
            "after-0",
            1,
            now + timedelta(hours=5),
            datetime(2026, 12, 2, 20, 0, 0, 123, tzinfo=kolkata),
            now + timedelta(days=1),
            "pending",
            folded=("pre-1d", "pre-2h"),
            extended=True,
        ),
        PlannedStep("after-24h", 2, now - timedelta(days=1), now, now, "expired"),
    ]
    at = rows.converter(dialect)
    values = rows.planned_values(at, 7, -3, steps, now, bulk=bulk_run)
    made = rows.planned_rows(7, -3, steps, now, bulk=bulk_run)
    assert values == rows.planned_statement(dialect, made).params
    assert rows.planned_insert(dialect, values).sql == rows.planned_statement(dialect, made).sql
    reminder, broadcast = int(Priority.REMINDER), int(Priority.BROADCAST)
    due = broadcast if bulk_run else reminder  # the first and the last are due already
    assert [v[4] for v in values] == [due, reminder, due]


async def test_a_row_sent_between_a_batchs_read_and_its_write_is_not_planned_again(
    sessions: SessionFactory, clock: FakeClock
) -> None:
    """The replan reads and plans a batch while the previous one is written; the dispatcher
    may send one of its rows meanwhile: the write notices and plans that session again."""
    now = clock.now()
    clinic, _ = await _seed(sessions, now, count=4, booked=lambda i: timedelta(days=3, hours=i))
    async with sessions() as db, db.begin():
        run = await replan.start(session=db, clinic=clinic, reason="test", now=now)
        assert run.id is not None
    async with sessions() as db, db.begin():
        batch = await replan.prepare(
            await db.connection(), clinic=clinic, default=PROTOCOL, now=now
        )
    assert batch is not None
    raced = batch.ids[0]
    async with sessions() as db, db.begin():  # the dispatcher sends one of its rows
        sent = (
            await db.exec(
                select(PlannedMessage).where(
                    PlannedMessage.session_id == raced,
                    PlannedMessage.state == MessageState.PENDING,
                )
            )
        ).first()
        assert sent is not None
        sent.state = MessageState.SENT
        db.add(sent)
    async with sessions() as db, db.begin():
        await replan.apply(
            await db.connection(),
            run_id=run.id,
            batch=batch,
            clinic=clinic,
            default=PROTOCOL,
            now=now,
        )
    async with sessions() as db:
        steps = (
            await db.exec(
                select(PlannedMessage.step).where(
                    PlannedMessage.session_id == raced,
                    col(PlannedMessage.state).in_([MessageState.PENDING, MessageState.SENT]),
                )
            )
        ).all()
    assert steps.count(sent.step) == 1
    assert len(steps) == len(set(steps)) > 1


async def _in_turn(
    sessions: SessionFactory,
    clinic: Clinic,
    batches: list[list[dict[str, str]]],
    now: datetime,
    before: Callable[[AsyncSession, int], Awaitable[None]] | None = None,
) -> list[tuple[Any, ...]]:
    """The planned rows of the batches (three lines each) imported one after another in one
    transaction, rolled back: what a pipelined import must leave. `before(db, number)` runs
    before each batch."""
    async with sessions() as db, db.begin():
        for number, part in enumerate(batches):
            if before is not None:
                await before(db, number)
            await importer.import_appointments(
                session=db,
                rows=part,
                importing=importing(clinic),
                now=now,
                first_line=2 + 3 * number,
            )
        expected = await _planned(db)
        await db.rollback()
    return expected


async def test_a_pipelined_import_plans_as_batches_one_after_another(
    sessions: SessionFactory, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The import reads and plans a batch while the previous one is written. A batch whose
    identities the previous batch also had (a patient's second session, a line repeated),
    or one of whose patients the bot booked meanwhile, is read and planned again under the
    write lock: the rows are those of the batches imported one after another."""
    now = clock.now()
    clinic, people = await _seed(sessions, now, count=6)

    def line(i: int, days: int) -> dict[str, str]:
        start = (now + timedelta(days=days, hours=i)).isoformat()
        return {"clinic": "kochi", "start": start, "telegram_id": str(people[i].tg_user_id)}

    phone = {"clinic": "kochi", "start": (now + timedelta(days=10)).isoformat(), "phone": "98470"}
    phone["phone"] = "+91 98470 12345"
    batches = [
        [line(0, 9), line(1, 9), line(2, 9)],
        [line(0, 20), line(3, 9), line(1, 9)],  # patient 0 again; patient 1's line repeated
        [line(4, 9), line(5, 9), phone],  # the bot books patient 4 while this one is read
    ]
    chat_start = now + timedelta(days=15)

    async def chat_booking(db: AsyncSession) -> None:
        patient = await db.get(Patient, people[4].id)
        assert patient is not None
        await book_session(
            session=db, patient=patient, protocol=PROTOCOL, start=chat_start, now=now
        )

    # The reference: each batch in turn, the chat's booking between the second and third.
    async def chat_before_third(db: AsyncSession, number: int) -> None:
        if number == 2:
            await chat_booking(db)

    expected = await _in_turn(sessions, clinic, batches, now, chat_before_third)

    monkeypatch.setattr(importer, "BATCH", 3)
    reads: list[int] = []
    read_batch, read = importer._read_batch, importer._Batch.read

    async def counted(self: Any, db: Any, turn: Any = None) -> None:
        reads.append(self.lines[0].number)
        await read(self, db, turn)

    async def racing(*args: Any) -> Any:
        found = await read_batch(*args)
        if args[4] == 2 + 3 * 2:  # the third batch was read (its first line): the bot books
            async with sessions() as db, db.begin():
                await chat_booking(db)
        return found

    monkeypatch.setattr(importer._Batch, "read", counted)
    monkeypatch.setattr(importer, "_read_batch", racing)
    report = await importer.import_batches(
        sessions=sessions,
        rows=[row for part in batches for row in part],
        importing=importing(clinic),
        clock=clock,
    )
    assert (report.booked, report.invited, report.unchanged, report.errors) == (7, 1, 1, [])
    # Each batch read once ahead; the second and third read again under the write lock.
    assert sorted(reads) == [2, 5, 5, 8, 8]
    async with sessions() as db:
        assert await _planned(db) == expected


async def test_postgresql_writes_two_batches_at_once_when_they_share_no_patient(
    sessions: SessionFactory, backend: str, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL a batch is written while the one before is still being written, unless
    they share an identity or a patient (then it waits, and reads again what it must); on
    SQLite one batch at a time. Either way the rows are those of the batches imported one
    after another."""
    now = clock.now()
    clinic, people = await _seed(sessions, now, count=9)

    def line(i: int, days: int) -> dict[str, str]:
        start = (now + timedelta(days=days, hours=i)).isoformat()
        return {"clinic": "kochi", "start": start, "telegram_id": str(people[i].tg_user_id)}

    batches = [
        [line(0, 9), line(1, 9), line(2, 9)],
        [line(3, 9), line(4, 9), line(5, 9)],  # apart from the first
        [line(6, 9), line(3, 20), line(7, 9)],  # patient 3 again: waits for the second
        [line(8, 9), line(0, 30), line(1, 30)],  # apart from the third, not from the first
    ]
    expected = await _in_turn(sessions, clinic, batches, now)

    monkeypatch.setattr(importer, "BATCH", 3)
    writing: set[int] = set()
    beside: list[tuple[int, int]] = []  # (batch, batch being written meanwhile)
    write = importer._Batch.write

    # On PostgreSQL the first batch's write waits until the second's has begun, the third's
    # until the fourth's has (it times out if they are not written at once).
    begun = {number: asyncio.Event() for number in range(len(batches))}

    async def watched(self: Any, session: Any, turn: Any = None) -> None:
        number = (self.lines[0].number - 2) // 3
        beside.extend((number, other) for other in writing)
        writing.add(number)
        begun[number].set()
        try:
            if backend == "postgres" and number in (0, 2):
                await asyncio.wait_for(begun[number + 1].wait(), 10)
            await write(self, session, turn)
        finally:
            writing.discard(number)

    monkeypatch.setattr(importer._Batch, "write", watched)
    report = await importer.import_batches(
        sessions=sessions,
        rows=[row for part in batches for row in part],
        importing=importing(clinic),
        clock=clock,
    )
    assert (report.booked, report.errors) == (12, [])
    pairs = {frozenset(pair) for pair in beside}  # either may be first to reach its write
    assert pairs == ({frozenset((0, 1)), frozenset((2, 3))} if backend == "postgres" else set())
    async with sessions() as db:
        assert await _planned(db) == expected


async def test_a_booking_writes_what_the_planner_plans_for_it_on_each_backend(
    sessions: SessionFactory, clock: FakeClock
) -> None:
    """One booking's writes go to the driver as one script (on PostgreSQL the session, course,
    link and planned rows in one statement): a session's rows are the planner's steps for
    it, read back through the ORM (times, states, extras), in the patient's one course; the
    earlier session's course reminder is cancelled by the later one."""
    now = clock.now()
    _clinic, people = await _seed(sessions, now, count=2)
    first, second = people  # the first is on a course of two, one session booked
    async with sessions() as db, db.begin():
        latest = [
            await book_session(
                session=db, patient=patient, protocol=PROTOCOL, start=start, now=now
            )
            for patient, start in (
                (first, now + timedelta(days=20)),
                (second, now + timedelta(hours=30)),  # soon: its pre-care steps fold
                (second, now + timedelta(days=40)),
            )
        ]
    async with sessions() as db:
        for patient, treatment in ((first, latest[0]), (second, latest[2])):
            assert treatment.id is not None
            steps = await care.session_steps(
                session=db, patient=patient, treatment=treatment, protocol=PROTOCOL, now=now
            )
            expected = [
                (s.key, s.state, s.due_at, s.not_before, s.expires_at, list(s.folded), s.extended)
                for s in steps
            ]
            written = [
                (
                    m.step,
                    m.state,
                    m.due_at,
                    m.not_before,
                    m.expires_at,
                    m.extra.get("folded", []),
                    m.extra.get("extended", False),
                )
                for m in await care.session_messages(session=db, session_id=treatment.id)
            ]
            assert sorted(written, key=str) == sorted(expected, key=str)
            assert len(expected) > 5
            links = (
                await db.exec(
                    select(CourseSession.course_id)
                    .join(TreatmentSession, col(TreatmentSession.id) == CourseSession.session_id)
                    .where(TreatmentSession.patient_id == patient.id)
                )
            ).all()
            assert len(links) == 2 and len(set(links)) == 1  # both sessions, one course
        extras = (
            await db.exec(
                select(PlannedMessage.extra).where(PlannedMessage.session_id == latest[1].id)
            )
        ).all()
        assert any(extra.get("folded") for extra in extras)
        cancelled = (
            await db.exec(
                select(PlannedMessage.step).where(
                    PlannedMessage.patient_id == first.id,
                    PlannedMessage.state == MessageState.CANCELLED,
                )
            )
        ).all()
        assert cancelled == ["course-next"]


async def test_thousands_of_planned_rows_are_written_and_moved_as_one_executemany_would(
    sessions: SessionFactory, clock: FakeClock
) -> None:
    """On SQLite planned rows go in statements of many rows each (`rows.wide`): 6,000 rows
    are three INSERTs of up to 2,730 and two UPDATEs of up to 4,680; on PostgreSQL the
    INSERT is a COPY (`Statement.copy`) and the UPDATE one statement over arrays
    (`Statement.arrays`). Every row is written once with its own values, and moved in place
    to its own new values."""
    now = clock.now()
    patient, session_id = await _one_booked(sessions, now)
    async with sessions() as db, db.begin():
        connection = await db.connection()
        before = set((await connection.execute(sa.select(rows.PLANNED.c.id))).scalars())
        steps: list[dict[str, Any]] = [
            {
                "patient_id": patient.id,
                "session_id": session_id,
                "step": f"s{i}",
                "seq": i,
                "priority": i % 3,
                "state": MessageState.PENDING.value,
                "due_at": now + timedelta(minutes=i),
                "not_before": now + timedelta(minutes=i),
                "expires_at": now + timedelta(days=1, minutes=i),
                "attempts": 0,
                "extra": {"folded": [f"f{i}"]} if i % 1000 == 0 else {},
                "created_at": now,
            }
            for i in range(6_000)
        ]
        await rows.insert_planned(connection, steps)
        written = (
            await connection.execute(
                sa.select(rows.PLANNED).where(rows.PLANNED.c.id.not_in(before))
            )
        ).all()
        assert sorted((r.step, r.priority, r.due_at, r.extra) for r in written) == sorted(
            (s["step"], s["priority"], s["due_at"], s["extra"]) for s in steps
        )
        pending = {session_id: {r.step: r.id for r in written}}
        later = [
            {**s, "priority": 1, "due_at": s["due_at"] + timedelta(hours=1), "extra": {}}
            for s in steps[1:]
        ]
        await rows.replace_planned(connection, {session_id: later}, pending, "moved")
        moved = {
            r.step: r
            for r in await connection.execute(
                sa.select(rows.PLANNED).where(rows.PLANNED.c.id.not_in(before))
            )
        }
    assert len(moved) == 6_000  # moved in place: no row added
    assert moved["s0"].state == MessageState.CANCELLED.value
    assert moved["s0"].last_error == "moved"
    for s in later:
        row = moved[s["step"]]
        assert (row.state, row.priority, row.due_at, row.extra) == (
            MessageState.PENDING.value,
            1,
            s["due_at"],
            {},
        ), s["step"]


async def test_a_replan_writes_only_the_rows_whose_values_change(
    sessions: SessionFactory, clock: FakeClock
) -> None:
    """`rows.replace_planned` leaves a row whose new values are its own as it is (no new
    version of it, nor of its index entries), extras compared by what they hold, and writes
    the others: on PostgreSQL a written row has a new `ctid`, on SQLite the connection's
    `total_changes()` counts the rows written."""
    now = clock.now()
    patient, session_id = await _one_booked(sessions, now)
    async with sessions() as db, db.begin():
        connection = await db.connection()
        mine = rows.PLANNED.c.session_id == session_id
        await connection.execute(sa.update(rows.PLANNED).where(mine).values(state="cancelled"))
        steps: list[dict[str, Any]] = [
            {
                "patient_id": patient.id,
                "session_id": session_id,
                "step": f"s{i}",
                "seq": i,
                "priority": 1,
                "state": MessageState.PENDING.value,
                "due_at": now + timedelta(hours=i),
                "not_before": now + timedelta(hours=i),
                "expires_at": now + timedelta(days=1, hours=i),
                "attempts": 0,
                "extra": {"folded": [f"f{i}"]} if i % 2 else {},
                "created_at": now,
            }
            for i in range(6)
        ]
        await rows.insert_planned(connection, steps)
        pending_ = rows.PLANNED.c.state == MessageState.PENDING.value
        ids = {
            r.step: r.id
            for r in await connection.execute(
                sa.select(rows.PLANNED.c.step, rows.PLANNED.c.id).where(mine, pending_)
            )
        }
        postgres = connection.dialect.name == "postgresql"
        version: sa.ColumnElement[Any] = sa.literal_column("ctid::text" if postgres else "0")

        async def versions() -> dict[str, Any]:
            found = await connection.execute(
                sa.select(rows.PLANNED.c.step, version).where(mine, pending_)
            )
            return dict(found.all())

        async def changes() -> int:
            if postgres:
                return 0
            return int((await connection.execute(sa.text("SELECT total_changes()"))).scalar_one())

        fresh = [
            s if i < 3 else {**s, "due_at": s["due_at"] + timedelta(minutes=i)}
            for i, s in enumerate(steps)
        ]
        fresh[1] = {**fresh[1], "extra": {"folded": ["f1"]}}  # equal, not the same object
        fresh[4] = {**fresh[4], "due_at": steps[4]["due_at"], "priority": 2}
        before, counted = await versions(), await changes()
        await rows.replace_planned(connection, {session_id: fresh}, {session_id: ids}, "moved")
        after, written = await versions(), await changes() - counted
        found = {
            r.step: r
            for r in await connection.execute(sa.select(rows.PLANNED).where(mine, pending_))
        }
    for s in fresh:
        row = found[s["step"]]
        assert (row.priority, row.due_at, row.extra) == (s["priority"], s["due_at"], s["extra"])
    if postgres:
        assert {step for step in after if after[step] != before[step]} == {"s3", "s4", "s5"}
    else:
        assert written == 3


async def test_planned_rows_are_written_in_the_transaction_they_are_given(
    engine: AsyncEngine, sessions: SessionFactory, clock: FakeClock
) -> None:
    """`rows.insert_planned` writes in its caller's transaction, committed or rolled back
    with it, also when the rows are its first statement (on PostgreSQL no transaction is
    under way then, and a COPY would commit on its own: `rows._copied` leaves the rows to
    the statement over arrays, which begins it)."""
    now = clock.now()
    patient, session_id = await _one_booked(sessions, now)
    row: dict[str, Any] = {
        "patient_id": patient.id,
        "session_id": session_id,
        "seq": 0,
        "priority": 1,
        "state": MessageState.PENDING.value,
        "due_at": now,
        "not_before": now,
        "expires_at": now + timedelta(days=1),
        "attempts": 0,
        "extra": {},
        "created_at": now,
    }

    async def steps() -> list[str]:
        async with engine.connect() as connection:
            found = await connection.execute(
                sa.select(rows.PLANNED.c.step).where(rows.PLANNED.c.step.like("t-%"))
            )
            return sorted(found.scalars())

    for first in (True, False):
        for commit in (True, False):
            step = f"t-{'first' if first else 'later'}-{'committed' if commit else 'rolled-back'}"
            async with engine.connect() as connection:
                if not first:
                    await connection.execute(sa.select(1))
                await rows.insert_planned(connection, [{**row, "step": step}])
                await (connection.commit() if commit else connection.rollback())
    assert await steps() == ["t-first-committed", "t-later-committed"]


async def test_rows_inserted_at_once_get_their_own_ids_back(
    sessions: SessionFactory, clock: FakeClock
) -> None:
    """`rows.inserted_ids`: 5,000 sessions of one patient go in two statements on SQLite
    (4,095 rows of eight values at most) and in one over arrays on PostgreSQL, and each
    row's id is matched back to it by its key (RETURNING's order is not promised)."""
    now = clock.now()
    _, people = await _seed(sessions, now, count=1, booked=lambda _i: timedelta(days=3))
    patient = people[0]
    assert patient.id is not None
    starts = [now + timedelta(days=30, hours=i) for i in range(5_000)]
    columns: tuple[str, ...] = ("patient_id", "clinic_id", "start_at", "end_at")
    columns += ("state", "screening", "flagged", "created_at")
    async with sessions() as db, db.begin():
        connection = await db.connection()
        at = rows.converter(connection.dialect)
        rest = ("booked", rows.as_json({}), False, at(now))
        values = [
            [patient.id, patient.clinic_id, at(start), at(start + timedelta(hours=1)), *rest]
            for start in reversed(starts)
        ]
        ids = await rows.inserted_ids(
            connection, rows.TREATMENTS.insert(), columns, values, key=("patient_id", "start_at")
        )
        found = {
            row.id: row.start_at
            for row in await connection.execute(
                sa.select(rows.TREATMENTS.c.id, rows.TREATMENTS.c.start_at).where(
                    rows.TREATMENTS.c.id.in_(ids)
                )
            )
        }
    assert len(set(ids)) == 5_000
    assert [found[i] for i in ids] == list(reversed(starts))


async def test_a_batchs_last_writes_give_the_turn_while_they_run() -> None:
    """`handed_over`: the next batch's planner gets its turn once the writes are on their
    way, not after them (the database writes while the planner plans)."""
    turn = asyncio.Event()

    async def writes() -> int:
        await asyncio.sleep(0)
        await turn.wait()  # never ends if the turn is given only after the writes
        return 7

    assert await asyncio.wait_for(rows.handed_over(writes(), turn), timeout=5) == 7


async def test_a_batch_cancelled_while_it_hands_over_cancels_its_writes() -> None:
    """Cancelled between starting its writes and giving the turn (an import stopped), the
    batch stops its writes too: none goes on alone on the connection."""
    written: list[int] = []

    async def writes() -> None:
        await asyncio.sleep(0.05)
        written.append(1)

    handing = asyncio.ensure_future(rows.handed_over(writes(), asyncio.Event()))
    await asyncio.sleep(0)  # it has started the writes and waits for their first step
    handing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await handing
    await asyncio.sleep(0.1)
    assert written == []


def test_batches_give_way_to_the_dispatcher_only_where_it_would_wait(
    sessions: SessionFactory, backend: str
) -> None:
    """SQLite has one writer: each batch pauses so that the bot's dispatcher gets the lock
    between two. PostgreSQL's dispatcher skips the rows a batch locks: no pause."""
    assert bulk.GIVE_WAY > 0
    assert bulk.give_way(sessions) == (0.0 if backend == "postgres" else bulk.GIVE_WAY)


async def test_a_batch_planned_in_turns_lets_the_other_tasks_run_between_its_steps() -> None:
    """`rows.in_turns`: the loop that plans a batch gives the event loop a turn after every
    `every` items, so the other batches' answers are taken up meanwhile, not after it."""
    seen = 0
    ran_at: list[int] = []

    async def other() -> None:
        while True:
            ran_at.append(seen)
            await asyncio.sleep(0)

    task = asyncio.create_task(other())
    try:
        async for item in rows.in_turns(range(100), 20):
            seen = item + 1
    finally:
        task.cancel()
    assert set(ran_at) == {20, 40, 60, 80, 100}


async def test_two_bulk_runs_at_once_put_the_switch_interval_back_when_the_last_ends() -> None:
    """`bulk.gil_shared`: the interval is SWITCH_INTERVAL while either run is under way, and
    the one from before when both have ended, whichever ends first."""
    before = sys.getswitchinterval()
    first_may_end, second_may_end = asyncio.Event(), asyncio.Event()
    seen: list[float] = []

    @bulk.gil_shared
    async def run(may_end: asyncio.Event) -> None:
        await may_end.wait()
        seen.append(sys.getswitchinterval())

    first = asyncio.ensure_future(run(first_may_end))
    second = asyncio.ensure_future(run(second_may_end))
    await asyncio.sleep(0)
    first_may_end.set()
    await first
    assert sys.getswitchinterval() == bulk.SWITCH_INTERVAL  # the second is under way
    second_may_end.set()
    await second
    assert seen == [bulk.SWITCH_INTERVAL, bulk.SWITCH_INTERVAL]
    assert sys.getswitchinterval() == before


async def test_a_list_of_ids_is_one_parameter_and_finds_what_in_finds(
    engine: AsyncEngine, sessions: SessionFactory, clock: FakeClock, backend: str
) -> None:
    """`rows.among`: the batches' `column IN (ids)` with the list as one parameter, not one
    placeholder per id: on PostgreSQL an array (`= ANY`), on SQLite a JSON text
    (`json_each`). Either way it finds what IN finds, none for an empty list, through
    SQLAlchemy and through `rows.fetched` (the driver's rows)."""
    _clinic, people = await _seed(sessions, clock.now(), count=5)
    ids = [p.id for p in people if p.id is not None]
    patient = Patient.__table__  # type: ignore[attr-defined]
    query = sa.select(patient.c.id).where(rows.among(patient.c.id, "ids")).order_by(patient.c.id)
    compiled = query.compile(dialect=engine.dialect)
    assert compiled.positiontup == ["ids"]
    assert ("= ANY" in str(compiled)) == (backend == "postgres")
    assert ("json_each" in str(compiled)) == (backend == "sqlite")
    async with engine.connect() as db:
        for wanted in ([ids[0], ids[3]], [ids[2], ids[2], -1], ids, []):
            found = (await db.execute(query, {"ids": wanted})).scalars().all()
            assert [row[0] for row in await rows.fetched(db, query, ids=wanted)] == found
            reference = (
                (
                    await db.execute(
                        sa.select(patient.c.id)
                        .where(patient.c.id.in_(wanted))
                        .order_by(patient.c.id)
                    )
                )
                .scalars()
                .all()
            )
            assert found == reference == sorted(set(wanted) & set(ids))


@pytest.mark.parametrize("backend", [pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_two_bookings_of_one_patient_at_once_on_postgresql_clash_not_both(
    sessions: SessionFactory, clock: FakeClock
) -> None:
    """Two transactions booking one patient at the same time at once (two processes, or the
    chat beside an import): the second waits for the first to commit and is refused as a
    clash; the patient never gets two sessions at one time. (On SQLite one writer at a time
    keeps them apart.)"""
    now = clock.now()
    _clinic, people = await _seed(sessions, now, count=1)
    start = now + timedelta(days=4)
    async with sessions() as first, first.begin():
        patient = await care.find_patient(session=first, tg_user_id=people[0].tg_user_id)
        assert patient is not None
        await book_session(session=first, patient=patient, protocol=PROTOCOL, start=start, now=now)

        async def second() -> None:
            async with sessions() as db, db.begin():
                again = await care.find_patient(session=db, tg_user_id=people[0].tg_user_id)
                assert again is not None
                await book_session(
                    session=db,
                    patient=again,
                    protocol=PROTOCOL,
                    start=start + timedelta(minutes=10),
                    now=now,
                )

        racing = asyncio.create_task(second())
        await asyncio.sleep(0.3)  # the second booking has read (or waits to) meanwhile
        assert not racing.done()
    with pytest.raises(care.BookingError, match="clash"):
        await racing
    async with sessions() as db:
        booked = (
            await db.exec(
                select(TreatmentSession.start_at).where(
                    TreatmentSession.patient_id == people[0].id,
                    TreatmentSession.state == SessionState.BOOKED,
                    col(TreatmentSession.start_at) >= start,
                )
            )
        ).all()
    assert booked == [start]


@pytest.mark.parametrize("backend", [pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_an_import_beside_a_chat_booking_of_the_same_session_books_it_once_on_postgresql(
    sessions: SessionFactory, clock: FakeClock
) -> None:
    """The chat books a patient's session while an import of the same appointment runs: the
    import's batch waits for the chat's transaction, sees its session and links the
    appointment to it; the patient has one session at that time, not two."""
    now = clock.now()
    clinic, people = await _seed(sessions, now, count=2)
    start = (now + timedelta(days=4)).replace(microsecond=0)
    async with sessions() as chat, chat.begin():
        patient = await care.find_patient(session=chat, tg_user_id=people[1].tg_user_id)
        assert patient is not None
        await book_session(session=chat, patient=patient, protocol=PROTOCOL, start=start, now=now)
        importing_it = asyncio.ensure_future(
            importer.import_batches(
                sessions=sessions,
                rows=[
                    {
                        "clinic": "kochi",
                        "start": start.isoformat(),
                        "telegram_id": str(people[1].tg_user_id),
                    }
                ],
                importing=importing(clinic),
                clock=clock,
            )
        )
        await asyncio.sleep(0.3)  # the import has read its line and waits for the patient
        assert not importing_it.done()
    report = await importing_it
    assert (report.booked, report.errors) == (1, [])
    async with sessions() as db:
        booked = (
            await db.exec(
                select(TreatmentSession.id).where(
                    TreatmentSession.patient_id == people[1].id,
                    TreatmentSession.start_at == start,
                )
            )
        ).all()
    assert len(booked) == 1
