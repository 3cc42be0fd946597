"""Course and maintenance plans: which anchors a session's timeline gets.

A patient's sessions belong to their current course (mild: 1 to 2 sessions, noticeable: 4 to 10,
maintenance: one session at a time, recurring). A session before the course's last one is
planned with `next` (when the next course session is due), so the protocol's course-next
step exists; the course's last session (and every maintenance session) with `last`, so the
maintenance steps exist, unless the patient opted out. Booking the next session cancels
the earlier session's course-next and maintenance rows; opting out cancels maintenance.

Staff's due list reads `Patient.maintenance_from`, the instant a patient's maintenance counts
from, and a broadcast's course audience `Patient.last_session_start`, the start of their
latest booked session: every write that changes a patient's sessions, course links or
courses keeps both (`note_maintenance_from`), by the rules written here (`MAINTENANCE_FROM`,
`LAST_SESSION_START`).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any
from typing import Protocol as Structural

import msgspec
import sqlalchemy as sa
from sqlmodel import col, func, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from messages.protocol import Protocol
from messages.render import catalog
from scheduler.db import saved
from scheduler.models import (
    Clinic,
    Course,
    CoursePlanKind,
    CourseSession,
    MessageState,
    Patient,
    PlannedMessage,
    SessionState,
    TreatmentSession,
)
from scheduler.planner import SessionTimes
from scheduler.ports import Button
from scheduler.rows import COURSE, COURSE_SESSION, PATIENT, TREATMENTS, among, state_in

COURSE_NEXT = "course-next"
MAINTENANCE_PREFIX = "maintenance"


def is_course_step(step: str) -> bool:
    return step == COURSE_NEXT or step.startswith(MAINTENANCE_PREFIX)


def plan_range(protocol: Protocol, plan: str) -> tuple[int, int]:
    """How many sessions a plan may have (maintenance: one at a time)."""
    if plan == CoursePlanKind.MAINTENANCE:
        return (1, 1)
    for candidate in protocol.course.plans:
        if candidate.key == plan:
            return candidate.sessions
    raise KeyError(plan)


async def current_course(*, session: AsyncSession, patient_id: int) -> Course | None:
    return (
        await session.exec(
            select(Course).where(Course.patient_id == patient_id).order_by(col(Course.id).desc())
        )
    ).first()


async def set_plan(
    *, session: AsyncSession, patient_id: int, plan: str, sessions: int, now: datetime
) -> Course:
    """Start a new course for the patient (the staff's choice); later sessions belong to it.

    The patient's `maintenance_from` stays as it is: it follows the course of their last
    session, and the new course has none until one is booked (which notes it)."""
    course = Course(patient_id=patient_id, plan=plan, sessions=sessions, created_at=now)
    return await saved(session, course)


def unplanned(patient_id: int, now: datetime) -> dict[str, Any]:
    """The course a patient's first session gets when staff chose no plan yet (they set one
    with /course or the import): it brings no course reminders. As column values."""
    return {
        "patient_id": patient_id,
        "plan": CoursePlanKind.NONE.value,
        "sessions": 1,
        "created_at": now,
    }


async def attach_to_course(
    *, session: AsyncSession, treatment: TreatmentSession, now: datetime
) -> Course:
    """Put a newly booked session in the patient's course and cancel the reminders that
    asked for it (the earlier sessions' course-next and maintenance rows)."""
    assert treatment.id is not None
    course = await current_course(session=session, patient_id=treatment.patient_id)
    if course is None:
        # No plan chosen yet (staff set it with /course or the import): no course reminders.
        course = Course(**unplanned(treatment.patient_id, now))
        session.add(course)
        await session.flush()
    assert course.id is not None
    session.add(CourseSession(session_id=treatment.id, course_id=course.id))
    await cancel_course_rows(
        session=session, patient_ids=[treatment.patient_id], except_sessions=[treatment.id]
    )
    await note_maintenance_from(session=session, patient_ids=[treatment.patient_id])
    return course


async def cancel_course_rows(
    *, session: AsyncSession, patient_ids: list[int], except_sessions: list[int]
) -> None:
    """Sessions were booked: the reminders asking for them (the patients' other sessions'
    course-next and maintenance rows) are cancelled."""
    if not patient_ids:
        return
    await session.exec(
        _cancel_course_rows(
            col(PlannedMessage.patient_id).in_(patient_ids),
            col(PlannedMessage.session_id).not_in(except_sessions),
        )
    )


def _cancel_course_rows(*where: sa.ColumnElement[bool]) -> sa.Update:
    return (
        update(PlannedMessage)
        .where(
            *where,
            state_in(MessageState.PENDING),
            (col(PlannedMessage.step) == COURSE_NEXT)
            | col(PlannedMessage.step).startswith(MAINTENANCE_PREFIX),
        )
        .values(state=MessageState.CANCELLED.value, last_error="next session booked")
    )


CANCEL_COURSE_ROWS_OF_ONE = _cancel_course_rows(
    col(PlannedMessage.patient_id) == sa.bindparam("patient"),
    col(PlannedMessage.session_id) != sa.bindparam("session"),
)
"""`cancel_course_rows` for one patient and one session booked, as one booking's writes
run it (scheduler/care.py)."""


class Terms(Structural):
    """What a session's place in a course depends on: a `Course` row, or a `Plan`."""

    @property
    def plan(self) -> str: ...
    @property
    def sessions(self) -> int: ...
    @property
    def maintenance_stopped_at(self) -> datetime | None: ...


class Plan(msgspec.Struct, frozen=True):
    """A course's terms as the write path reads them (no ORM object to build per session)."""

    id: int
    plan: str
    sessions: int
    maintenance_stopped_at: datetime | None


class Position(msgspec.Struct, frozen=True):
    """Where a session stands in its course."""

    course: Terms
    number: int
    later_booked: bool

    @property
    def closes_course(self) -> bool:
        return self.course.plan == CoursePlanKind.MAINTENANCE or (
            self.number >= self.course.sessions
        )


def position_among(course: Terms, start: datetime, starts: Iterable[datetime]) -> Position:
    """Where the session starting at `start` stands among its course's booked sessions
    (`starts`, its own included)."""
    starts = list(starts)
    return Position(
        course=course,
        number=sum(1 for other in starts if other <= start),
        later_booked=any(other > start for other in starts),
    )


async def position_of(*, session: AsyncSession, treatment: TreatmentSession) -> Position | None:
    link = await session.get(CourseSession, treatment.id)
    if link is None:
        return None
    course = await session.get(Course, link.course_id)
    if course is None:
        return None
    in_course = (
        select(func.count())
        .select_from(TreatmentSession)
        .join(CourseSession, col(CourseSession.session_id) == col(TreatmentSession.id))
        .where(
            CourseSession.course_id == course.id,
            TreatmentSession.state == SessionState.BOOKED,
        )
    )
    number = (
        await session.exec(in_course.where(col(TreatmentSession.start_at) <= treatment.start_at))
    ).one()
    later = (
        await session.exec(in_course.where(col(TreatmentSession.start_at) > treatment.start_at))
    ).one()
    return Position(course=course, number=int(number), later_booked=bool(later))


async def course_times(
    *, session: AsyncSession, treatment: TreatmentSession, protocol: Protocol
) -> SessionTimes:
    """The planner's anchors for a session: its own times, plus `next` or `last`."""
    return anchored(
        SessionTimes(start=treatment.start_at, end=treatment.end_at),
        await position_of(session=session, treatment=treatment),
        protocol,
    )


def anchored(times: SessionTimes, position: Position | None, protocol: Protocol) -> SessionTimes:
    """A session's times with the course anchor its position gives: `next_due` while the
    course goes on, `last_end` when it closes the course (unless maintenance was stopped)."""
    if position is None or position.later_booked or position.course.plan == CoursePlanKind.NONE:
        return times
    if not position.closes_course:
        next_due = times.start + timedelta(days=protocol.course.interval_days)
        return msgspec.structs.replace(times, next_due=next_due)
    if position.course.maintenance_stopped_at is None:
        return msgspec.structs.replace(times, last_end=times.end)
    return times


async def stop_maintenance(*, session: AsyncSession, patient_id: int, now: datetime) -> int:
    """The patient wants no more maintenance reminders: stop them, cancel what is pending."""
    course = await current_course(session=session, patient_id=patient_id)
    if course is not None and course.maintenance_stopped_at is None:
        course.maintenance_stopped_at = now
        session.add(course)
        await note_maintenance_from(session=session, patient_ids=[patient_id])
    result = await session.exec(
        update(PlannedMessage)
        .where(
            col(PlannedMessage.patient_id) == patient_id,
            col(PlannedMessage.state) == MessageState.PENDING,
            col(PlannedMessage.step).startswith(MAINTENANCE_PREFIX),
        )
        .values(state=MessageState.CANCELLED, last_error="maintenance opt-out")
    )
    return int(result.rowcount or 0)


# -- when maintenance falls due -----------------------------------------------------------------
# The rule, once, in SQL: the write paths apply it to the patients they changed, the migration
# that made the column (0009) to every patient. A patient's last session is their latest
# booked one (start, then id); it closes its course when the course has a plan, and is a
# maintenance plan or has as many booked sessions as it plans (all of them before the last
# one). Maintenance counts from its end, unless the course's maintenance was stopped.

_LATEST = TREATMENTS.alias("latest")
_LAST_SESSION = (
    sa.select(_LATEST.c.id)
    .where(_LATEST.c.patient_id == PATIENT.c.id, _LATEST.c.state == SessionState.BOOKED.value)
    .order_by(_LATEST.c.start_at.desc(), _LATEST.c.id.desc())
    .limit(1)
    .correlate(PATIENT)
    .scalar_subquery()
)
_IN_COURSE, _LINK = TREATMENTS.alias("in_course"), COURSE_SESSION.alias("link")
_BOOKED_IN_COURSE = (
    sa.select(sa.func.count())
    .select_from(_LINK.join(_IN_COURSE, _IN_COURSE.c.id == _LINK.c.session_id))
    .where(_LINK.c.course_id == COURSE.c.id, _IN_COURSE.c.state == SessionState.BOOKED.value)
    .correlate(COURSE)
    .scalar_subquery()
)
MAINTENANCE_FROM = (
    sa.select(TREATMENTS.c.end_at)
    .select_from(
        TREATMENTS.join(COURSE_SESSION, COURSE_SESSION.c.session_id == TREATMENTS.c.id).join(
            COURSE, COURSE.c.id == COURSE_SESSION.c.course_id
        )
    )
    .where(
        TREATMENTS.c.id == _LAST_SESSION,
        COURSE.c.plan != CoursePlanKind.NONE.value,
        COURSE.c.maintenance_stopped_at.is_(None),
        (COURSE.c.plan == CoursePlanKind.MAINTENANCE.value)
        | (COURSE.c.sessions <= _BOOKED_IN_COURSE),
    )
    .correlate(PATIENT)
    .scalar_subquery()
)
"""A patient's `maintenance_from` (correlated to the `patient` row): the end of their last
session if it closes a course whose maintenance goes on; NULL otherwise."""

LAST_SESSION_START = (
    sa.select(TREATMENTS.c.start_at)
    .where(TREATMENTS.c.id == _LAST_SESSION)
    .correlate(PATIENT)
    .scalar_subquery()
)
"""A patient's `last_session_start` (correlated to the `patient` row): the start of their
latest booked session; NULL when none is booked."""

EVERY_MAINTENANCE_FROM = PATIENT.update().values(maintenance_from=MAINTENANCE_FROM)
"""Every patient's `maintenance_from` set by the rule (migration 0009's backfill)."""
EVERY_LAST_SESSION_START = PATIENT.update().values(last_session_start=LAST_SESSION_START)
"""Every patient's `last_session_start` (migration 0014's backfill)."""
_FROM_SESSIONS = PATIENT.update().values(
    maintenance_from=MAINTENANCE_FROM, last_session_start=LAST_SESSION_START
)
_SOME_MAINTENANCE_FROM = _FROM_SESSIONS.where(among(PATIENT.c.id, "patients"))
ONE_MAINTENANCE_FROM = _FROM_SESSIONS.where(PATIENT.c.id == sa.bindparam("patient"))
"""`note_maintenance_from` for one patient, as one booking's writes run it."""


async def note_maintenance_from(*, session: AsyncSession, patient_ids: Iterable[int]) -> None:
    """Set these patients' `maintenance_from` by the rule, and their `last_session_start`,
    from their sessions and courses as they now stand (the session's pending changes flushed
    first, if it holds any): one UPDATE, whatever the number of patients. Called by every
    write that books, cancels or moves a session, links one to a course, or changes a course
    that has sessions (a new course has none: `set_plan`; erasure takes the patient's row
    with it)."""
    ids = sorted(set(patient_ids))
    if not ids:
        return
    if session.new or session.dirty or session.deleted:
        await session.flush()
    await (await session.connection()).execute(_SOME_MAINTENANCE_FROM, {"patients": ids})


async def course_buttons(
    *, session: AsyncSession, patient: Patient, step: str, message_id: int
) -> tuple[tuple[Button, ...], ...]:
    """Under a course reminder: the clinic's booking page (if it has one); under a
    maintenance reminder also the way out of recurring maintenance."""
    texts = catalog(patient.language)
    clinic = await session.get(Clinic, patient.clinic_id)
    rows: list[tuple[Button, ...]] = []
    if clinic is not None and clinic.booking_url:
        rows.append((Button(texts.text("maint.book_button"), url=clinic.booking_url),))
    if step != COURSE_NEXT:
        rows.append((Button(texts.text("maint.stop_button"), f"mnt:stop:{message_id}"),))
    return tuple(rows)
