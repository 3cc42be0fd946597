"""The due list reads each patient's `maintenance_from`, which the write path keeps: after
every step of a history of bookings, cancels, moves, course plans, an opt-out, imports, an
invite and an erasure, the stored values equal a recomputation from the rows in Python, and
/due and its audience equal the former per-patient computation (tests/test_staff_scale.py),
on each backend."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from messages.protocol import Protocol, default_protocol_path, load_protocol
from scheduler import broadcast, care, clinics, courses, importer, invites, patients
from scheduler.db import SessionFactory
from scheduler.models import Clinic, CoursePlanKind, Patient, TreatmentSession
from tests.staff_rows import due_reference

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
S = T0 - 200 * DAY
"""The history starts here; the due list is read a month after T0 at each step, and at T0
too at the end."""
LATER = T0 + 30 * DAY


@pytest.fixture(scope="module")
def protocol() -> Protocol:
    return load_protocol(default_protocol_path())


async def latest(db: AsyncSession, patient_id: int) -> TreatmentSession | None:
    """A patient's latest booked session (start, then id)."""
    return (
        await db.exec(
            care.booked(patient_id)
            .order_by(None)
            .order_by(col(TreatmentSession.start_at).desc(), col(TreatmentSession.id).desc())
        )
    ).first()


async def recomputed(db: AsyncSession, patient_id: int) -> datetime | None:
    """A patient's `maintenance_from` from their rows, in Python: the end of their latest
    booked session if it closes a planned course whose maintenance was not stopped."""
    last = await latest(db, patient_id)
    if last is None:
        return None
    position = await courses.position_of(session=db, treatment=last)
    if (
        position is None
        or position.course.plan == CoursePlanKind.NONE
        or not position.closes_course
        or position.course.maintenance_stopped_at is not None
    ):
        return None
    return last.end_at


async def in_course_reference(db: AsyncSession, clinic_id: int, now: datetime) -> int:
    """The former course audience, in Python: the clinic's reachable patients with a booked
    session that starts after `now`."""
    found = 0
    for patient in (await db.exec(select(Patient).where(Patient.clinic_id == clinic_id))).all():
        assert patient.id is not None
        reachable = patient.consent_at is not None and not (
            patient.blocked_at or patient.paused_at
        )
        booked = (await db.exec(care.booked(patient.id))).all()
        found += reachable and any(b.start_at > now for b in booked)
    return found


COURSE_READS = (S, S + 30 * DAY, S + 60 * DAY, LATER)
"""When the course audience is counted at each step: along the history's sessions."""


class History:
    """Steps through the write path, each in its own transaction, each followed by the
    comparison; what each step left is kept for the test's own assertions."""

    users = itertools.count(5000)

    def __init__(self, sessions: SessionFactory, protocol: Protocol) -> None:
        self.sessions, self.protocol = sessions, protocol
        self.clinic_id = 0
        self.seen: list[dict[int, datetime | None]] = []
        self.due_counts: set[int] = set()
        self.course_counts: set[int] = set()

    async def clinic(self) -> None:
        async with self.sessions() as db, db.begin():
            clinic = Clinic(slug="home", name="Home", timezone="Europe/London", created_at=S)
            db.add(clinic)
            await db.flush()
            assert clinic.id is not None
            self.clinic_id = clinic.id

    async def patient(self, zone: str = "Europe/London") -> int:
        user = next(self.users)
        async with self.sessions() as db, db.begin():
            clinic = await db.get(Clinic, self.clinic_id)
            assert clinic is not None
            patient, _ = await care.start_patient(
                session=db,
                tg_user_id=user,
                chat_id=user,
                first_name=f"P{user}",
                language="en",
                clinic=clinic,
                now=S - DAY,
            )
            patient.timezone, patient.consent_at = zone, S - DAY
            db.add(patient)
            await db.flush()
            assert patient.id is not None
            return patient.id

    async def step(self, write: Callable[[AsyncSession], Awaitable[object]]) -> None:
        async with self.sessions() as db, db.begin():
            await write(db)
        await self.compare()

    async def compare(self, read_at: tuple[datetime, ...] = (LATER,)) -> None:
        async with self.sessions() as db:
            kept = (
                await db.exec(
                    select(Patient.id, Patient.maintenance_from, Patient.last_session_start)
                )
            ).all()
            stored = {pid: at for pid, at, _ in kept if pid is not None}
            assert stored == {pid: await recomputed(db, pid) for pid in stored}
            starts = {pid: start for pid, _, start in kept if pid is not None}
            assert starts == {
                pid: None if (last := await latest(db, pid)) is None else last.start_at
                for pid in starts
            }
            for at in COURSE_READS:
                size = await self.audience(db, "course", at)
                assert size == await in_course_reference(db, self.clinic_id, at), at
                self.course_counts.add(size)
            for now in read_at:
                found = await clinics.due_for_maintenance(
                    session=db, clinic_id=self.clinic_id, protocol=self.protocol, now=now
                )
                expected = await due_reference(db, self.clinic_id, self.protocol, now)
                size = await self.audience(db, "due", now)
                got = [(d.patient.id, d.last_end, d.due_since) for d in found.shown]
                assert got == expected, now
                assert found.total == size == len(expected)
                self.due_counts.add(size)
        self.seen.append(stored)

    async def audience(self, db: AsyncSession, name: str, now: datetime) -> int:
        return await broadcast.audience_size(
            session=db, clinic_id=self.clinic_id, audience=name, protocol=self.protocol, now=now
        )

    # The write paths, as the bot, the staff commands and the command line call them.

    async def changed(
        self, patient_id: int, write: Callable[[AsyncSession, Patient], Awaitable[object]]
    ) -> None:
        """A step that changes one patient, given their row."""

        async def step(db: AsyncSession) -> None:
            patient = await db.get(Patient, patient_id)
            assert patient is not None
            await write(db, patient)

        await self.step(step)

    async def book(self, patient_id: int, start: datetime, now: datetime) -> None:
        await self.changed(
            patient_id,
            lambda db, patient: care.book_session(
                session=db, patient=patient, protocol=self.protocol, start=start, now=now
            ),
        )

    async def invited(self, patient_id: int, start: datetime, now: datetime) -> None:
        await self.changed(
            patient_id,
            lambda db, patient: invites.book_unplanned(
                session=db, patient=patient, start=start, protocol=self.protocol, now=now
            ),
        )

    async def imported(self, lines: list[tuple[int, datetime]], now: datetime) -> None:
        """One batch of the CSV import: (patient id, start) a line."""

        async def write(db: AsyncSession) -> None:
            clinic = await db.get(Clinic, self.clinic_id)
            assert clinic is not None
            rows = []
            for patient_id, start in lines:
                patient = await db.get(Patient, patient_id)
                assert patient is not None
                rows.append({"start": start.isoformat(), "telegram_id": str(patient.tg_user_id)})
            report = await importer.import_appointments(
                session=db,
                rows=rows,
                importing=importer.Importing(clinic, self.protocol),
                now=now,
            )
            assert (report.booked, report.errors) == (len(lines), [])

        await self.step(write)

    async def plan(self, patient_id: int, plan: str, sessions: int, now: datetime) -> None:
        async def write(db: AsyncSession) -> None:
            await courses.set_plan(
                session=db, patient_id=patient_id, plan=plan, sessions=sessions, now=now
            )

        await self.step(write)

    async def cancel(self, patient_id: int, start: datetime, now: datetime) -> None:
        async def write(db: AsyncSession, patient: Patient) -> None:
            await patients.cancel_session(
                session=db,
                patient=patient,
                session_id=await _session_at(db, patient_id, start),
                protocol=self.protocol,
                now=now,
            )

        await self.changed(patient_id, write)

    async def move(self, patient_id: int, start: datetime, to: datetime, now: datetime) -> None:
        async def write(db: AsyncSession, patient: Patient) -> None:
            await patients.reschedule_session(
                session=db,
                patient=patient,
                session_id=await _session_at(db, patient_id, start),
                start=to,
                protocol=self.protocol,
                now=now,
            )

        await self.changed(patient_id, write)

    async def stop(self, patient_id: int, now: datetime) -> None:
        async def write(db: AsyncSession) -> None:
            await courses.stop_maintenance(session=db, patient_id=patient_id, now=now)

        await self.step(write)

    async def erase(self, patient_id: int) -> None:
        async def write(db: AsyncSession) -> None:
            await patients.erase_patient(session=db, patient_id=patient_id)

        await self.step(write)

    def value(self, patient_id: int) -> datetime | None:
        return self.seen[-1][patient_id]


async def _session_at(db: AsyncSession, patient_id: int, start: datetime) -> int:
    found = (
        await db.exec(
            select(TreatmentSession.id).where(
                TreatmentSession.patient_id == patient_id, TreatmentSession.start_at == start
            )
        )
    ).one()
    assert found is not None
    return found


def end(start: datetime) -> datetime:
    return start + timedelta(minutes=45)  # the default protocol's session


async def test_every_write_keeps_maintenance_from_and_the_due_list_matches(
    sessions: SessionFactory, protocol: Protocol
) -> None:
    h = History(sessions, protocol)
    await h.clinic()
    anna, boris, chen, dara, emil, fay = [await h.patient() for _ in range(6)]
    await h.compare()

    # Anna: every chat path, one after another.
    await h.book(anna, S + DAY, now=S)  # no plan yet: a course without one
    assert h.value(anna) is None
    await h.plan(anna, "mild", 2, now=S + 2 * DAY)
    await h.book(anna, S + 15 * DAY, now=S + 2 * DAY)
    assert h.value(anna) is None  # one of two
    await h.book(anna, S + 29 * DAY, now=S + 2 * DAY)
    assert h.value(anna) == end(S + 29 * DAY)  # the course is booked in full
    await h.move(anna, S + 15 * DAY, to=S + 50 * DAY, now=S + 10 * DAY)
    assert h.value(anna) == end(S + 50 * DAY)  # the moved session is the last now
    await h.cancel(anna, S + 50 * DAY, now=S + 20 * DAY)
    assert h.value(anna) is None  # one of two again
    await h.book(anna, S + 31 * DAY, now=S + 20 * DAY)
    assert h.value(anna) == end(S + 31 * DAY)
    await h.move(anna, S + 31 * DAY, to=S + 45 * DAY, now=S + 21 * DAY)
    assert h.value(anna) == end(S + 45 * DAY)
    await h.stop(anna, now=S + 60 * DAY)
    assert h.value(anna) is None  # opted out

    # Boris: maintenance plan, a session booked through an invite, then one in the chat.
    await h.plan(boris, CoursePlanKind.MAINTENANCE, 1, now=S)
    assert h.value(boris) is None
    await h.invited(boris, S + 3 * DAY, now=S)
    assert h.value(boris) == end(S + 3 * DAY)
    await h.book(boris, S + 110 * DAY, now=S + 5 * DAY)
    assert h.value(boris) == end(S + 110 * DAY)

    # Chen and Dara: imported, several lines and patients in one batch.
    await h.imported([(chen, S + DAY)], now=S)
    assert h.value(chen) is None
    await h.plan(chen, "mild", 1, now=S + 2 * DAY)
    await h.plan(dara, "noticeable", 4, now=S + 2 * DAY)
    await h.imported(
        [(chen, S + 10 * DAY), (dara, S + 10 * DAY), (dara, S + 24 * DAY)], now=S + 5 * DAY
    )
    assert h.value(chen) == end(S + 10 * DAY)
    assert h.value(dara) is None  # two of four
    await h.imported([(dara, S + 38 * DAY)], now=S + 30 * DAY)
    await h.book(dara, S + 52 * DAY, now=S + 30 * DAY)
    assert h.value(dara) == end(S + 52 * DAY)

    # Emil: due, then erased (his row goes, with everything about him).
    await h.plan(emil, "mild", 1, now=S)
    await h.book(emil, S + DAY, now=S)
    assert h.value(emil) == end(S + DAY)
    await h.erase(emil)
    assert emil not in h.seen[-1]

    # Fay: a second course, whose session is cancelled: the first course's last session,
    # which closed it, is her last again.
    await h.plan(fay, "mild", 1, now=S)
    await h.book(fay, S + DAY, now=S)
    await h.plan(fay, "mild", 1, now=S + 10 * DAY)
    await h.book(fay, S + 80 * DAY, now=S + 10 * DAY)
    assert h.value(fay) == end(S + 80 * DAY)
    await h.cancel(fay, S + 80 * DAY, now=S + 20 * DAY)
    assert h.value(fay) == end(S + DAY)

    # The history meant something: the due list grew and shrank along it, and ends with
    # Boris, Chen, Dara and Fay due a month after T0 (Boris's maintenance is not due at T0).
    await h.compare((T0, LATER))
    assert len(h.due_counts) >= 3
    assert len(h.course_counts) >= 3
    async with sessions() as db:
        due = {
            now: {
                d.patient.id
                for d in (
                    await clinics.due_for_maintenance(
                        session=db, clinic_id=h.clinic_id, protocol=protocol, now=now
                    )
                ).shown
            }
            for now in (T0, LATER)
        }
    assert due == {T0: {chen, dara, fay}, LATER: {boris, chen, dara, fay}}
