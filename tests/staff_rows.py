"""Rows for the staff views' tests (issue 11), written straight to the database as the
booking path would leave them, and the former per-patient /due, kept as the specification
that the SQL views (tests/test_staff_scale.py) and `maintenance_from`
(tests/test_maintenance_from.py) are compared with."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from messages.protocol import Protocol, resolve
from scheduler.courses import note_maintenance_from, position_of
from scheduler.db import saved
from scheduler.models import (
    Clinic,
    Course,
    CourseSession,
    InboxKind,
    InboxMessage,
    Patient,
    SessionState,
    TreatmentSession,
)

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


class World:
    """Rows written straight to the database, as the booking path would leave them."""

    users = itertools.count(1000)

    def __init__(self, db: AsyncSession) -> None:
        self.db = db

    async def clinic(self, slug: str) -> int:
        clinic = Clinic(slug=slug, name=slug.title(), timezone="Europe/London", created_at=T0)
        self.db.add(clinic)
        await self.db.flush()
        assert clinic.id is not None
        return clinic.id

    async def patient(self, clinic_id: int, zone: str = "UTC", **values: object) -> Patient:
        user = next(self.users)
        patient = Patient(
            clinic_id=clinic_id,
            tg_user_id=user,
            chat_id=user,
            first_name=f"P{user}",
            timezone=zone,
            consent_at=T0 - timedelta(days=400),
            created_at=T0 - timedelta(days=400),
        )
        for name, value in values.items():
            setattr(patient, name, value)
        self.db.add(patient)
        await self.db.flush()
        return patient

    async def course(
        self,
        patient: Patient,
        ends: list[datetime],
        plan: str = "mild",
        sessions: int | None = None,
        *,
        cancelled: tuple[int, ...] = (),
        stopped: bool = False,
        flagged: tuple[int, ...] = (),
    ) -> list[TreatmentSession]:
        """A course with a one-hour session ending at each of `ends`."""
        assert patient.id is not None
        course = Course(
            patient_id=patient.id,
            plan=plan,
            sessions=len(ends) if sessions is None else sessions,
            maintenance_stopped_at=T0 if stopped else None,
            created_at=T0 - timedelta(days=400),
        )
        self.db.add(course)
        await self.db.flush()
        rows = []
        for n, end in enumerate(ends):
            treatment = TreatmentSession(
                patient_id=patient.id,
                clinic_id=patient.clinic_id,
                start_at=end - timedelta(hours=1),
                end_at=end,
                state=SessionState.CANCELLED if n in cancelled else SessionState.BOOKED,
                flagged=n in flagged,
                created_at=T0 - timedelta(days=400),
            )
            self.db.add(treatment)
            await self.db.flush()
            assert treatment.id is not None and course.id is not None
            self.db.add(CourseSession(session_id=treatment.id, course_id=course.id))
            rows.append(treatment)
        # As every write of sessions and courses does.
        await note_maintenance_from(session=self.db, patient_ids=[patient.id])
        return rows

    async def asked(self, patient: Patient, text: str, at: datetime) -> InboxMessage:
        """A message from the patient to their clinic."""
        assert patient.id is not None
        message = InboxMessage(
            patient_id=patient.id,
            clinic_id=patient.clinic_id,
            kind=InboxKind.MESSAGE,
            text=text,
            created_at=at,
        )
        return await saved(self.db, message)

    async def answered(self, message: InboxMessage, text: str, at: datetime) -> InboxMessage:
        """Staff's answer to a patient's message."""
        answer = InboxMessage(
            patient_id=message.patient_id,
            clinic_id=message.clinic_id,
            kind=InboxKind.REPLY,
            text=text,
            reply_to=message.id,
            author_id=1,
            created_at=at,
        )
        return await saved(self.db, answer)


async def due_reference(
    session: AsyncSession, clinic_id: int, protocol: Protocol, now: datetime
) -> list[tuple[int, datetime, datetime]]:
    """The former /due: every reachable patient in Python, their last session, its course."""
    months = min(protocol.course.maintenance_months or (3,))
    upcoming = select(TreatmentSession.patient_id).where(
        TreatmentSession.state == SessionState.BOOKED, col(TreatmentSession.end_at) > now
    )
    patients = (
        await session.exec(
            select(Patient).where(
                Patient.clinic_id == clinic_id,
                col(Patient.id).not_in(upcoming),
                col(Patient.consent_at).is_not(None),
                col(Patient.blocked_at).is_(None),
                col(Patient.paused_at).is_(None),
            )
        )
    ).all()
    due = []
    for patient in patients:
        last = (
            await session.exec(
                select(TreatmentSession)
                .where(
                    TreatmentSession.patient_id == patient.id,
                    TreatmentSession.state == SessionState.BOOKED,
                )
                .order_by(col(TreatmentSession.start_at).desc())
            )
        ).first()
        if last is None:
            continue
        position = await position_of(session=session, treatment=last)
        if (
            position is None
            or position.course.plan == "none"
            or not position.closes_course
            or position.course.maintenance_stopped_at is not None
        ):
            continue
        since = resolve(
            f"last+{months}mo@00:00", {"last": last.end_at}, ZoneInfo(patient.timezone)
        )
        if since is not None and since <= now:
            assert patient.id is not None
            due.append((patient.id, last.end_at, since))
    due.sort(key=lambda d: d[2])
    return due
