"""Patients, sessions and their planned messages: the data functions every face shares.

Handlers, the command line and the dispatcher call these; each takes the database session
keyword-only and the current instant as an argument (time is passed in, never read here).
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.util import identity_key
from sqlmodel import col, select, update
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

from messages.protocol import Protocol
from scheduler.conversation import Idle, set_state
from scheduler.courses import (
    CANCEL_COURSE_ROWS_OF_ONE,
    ONE_MAINTENANCE_FROM,
    Plan,
    anchored,
    course_times,
    position_among,
    unplanned,
)
from scheduler.db import saved, written
from scheduler.models import (
    Clinic,
    MessageState,
    Patient,
    PlannedMessage,
    SessionState,
    TreatmentSession,
)
from scheduler.planner import PlannedStep, Prefs, SessionTimes, plan
from scheduler.protocols import protocol_file, protocol_of
from scheduler.rows import (
    CLINIC,
    COURSE,
    COURSE_COLUMNS,
    COURSE_SESSION,
    PATIENT,
    PLANNED,
    PLANNED_COLUMNS,
    SESSION_COLUMNS,
    TREATMENTS,
    Booked,
    Script,
    as_json,
    converter,
    insert_planned,
    instant_reader,
    planned_rows,
    planned_statement,
    prepared,
    run_script,
)

DEFAULT_CLINIC_SLUG = "default"
# How far back a typed session may lie and still start an aftercare.
PAST_SESSION_LIMIT = timedelta(days=7)


class ClinicInfo(msgspec.Struct, frozen=True):
    """The single-clinic set-up from settings."""

    name: str
    timezone: str
    address: str
    phone: str
    emergency_phone: str = "112"


async def ensure_default_clinic(
    *, session: AsyncSession, info: ClinicInfo, now: datetime
) -> Clinic:
    """The clinic described by the settings, created or refreshed. Two turns side by side
    that both find it missing (a new deployment's first patients, bot/turns.py) both create
    it: the second finds the first's row instead."""
    default = select(Clinic).where(Clinic.slug == DEFAULT_CLINIC_SLUG)
    clinic = (await session.exec(default)).first()
    if clinic is None:
        try:
            async with session.begin_nested():
                clinic = await saved(
                    session,
                    Clinic(
                        slug=DEFAULT_CLINIC_SLUG, created_at=now, name=info.name, timezone="UTC"
                    ),
                )
        except IntegrityError:  # another turn made it meanwhile
            clinic = (await session.exec(default)).one()
    clinic.name, clinic.timezone = info.name, info.timezone
    clinic.address, clinic.phone = info.address, info.phone
    clinic.emergency_phone = info.emergency_phone
    return await saved(session, clinic)


async def clinic_of(*, session: AsyncSession, patient: Patient) -> Clinic:
    """The patient's clinic (its row exists: a foreign key)."""
    clinic = await session.get(Clinic, patient.clinic_id)
    assert clinic is not None
    return clinic


async def find_patient(*, session: AsyncSession, tg_user_id: int) -> Patient | None:
    """The patient with this Telegram id, a row of `session`'s unit of work (the one it has
    already, as the ORM's load gives). Every update asks, so it is read with Core and made
    as the ORM's loader makes a row (`db.written`): the ORM's load cost about 100 µs more of
    the event loop's time, 8 % of a booking (3 December)."""
    db = await session.connection()
    found = (await db.execute(_BY_USER, {"user": tg_user_id})).first()
    if found is None:
        return None
    values = found._asdict()
    same: Patient | None = session.identity_map.get(identity_key(Patient, values["id"]))
    return same if same is not None else written(session, Patient, values)


_BY_USER = sa.select(*PATIENT.c).where(PATIENT.c.tg_user_id == sa.bindparam("user"))


async def start_patient(
    *,
    session: AsyncSession,
    tg_user_id: int,
    chat_id: int,
    first_name: str,
    language: str,
    clinic: Clinic,
    now: datetime,
    quiet: tuple[str, str] = ("22:00", "08:00"),
) -> tuple[Patient, bool]:
    """The patient behind a /start: created, or welcomed back (unblocked). True if new."""
    patient = await find_patient(session=session, tg_user_id=tg_user_id)
    created = patient is None
    if patient is None:
        assert clinic.id is not None
        patient = Patient(
            clinic_id=clinic.id,
            tg_user_id=tg_user_id,
            chat_id=chat_id,
            first_name=first_name[:128],
            language=language,
            timezone=clinic.timezone,
            quiet_start=quiet[0],
            quiet_end=quiet[1],
            created_at=now,
        )
    patient.blocked_at = None
    set_state(patient, Idle())
    session.add(patient)
    await session.flush()
    return patient, created


def booked(patient_id: int) -> SelectOfScalar[TreatmentSession]:
    """The patient's booked (not cancelled) sessions, soonest first; narrow it further."""
    return (
        select(TreatmentSession)
        .where(
            TreatmentSession.patient_id == patient_id,
            TreatmentSession.state == SessionState.BOOKED,
        )
        .order_by(col(TreatmentSession.start_at))
    )


def prefs_of(patient: Patient) -> Prefs:
    return Prefs.parse(patient.timezone, patient.quiet_start, patient.quiet_end)


def zone_of(patient: Patient) -> ZoneInfo:
    return ZoneInfo(patient.timezone)


class BookingError(Exception):
    """Why a session cannot be booked; `reason` is a catalog key suffix."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def book_session(
    *,
    session: AsyncSession,
    patient: Patient,
    protocol: Protocol,
    start: datetime,
    now: datetime,
    screening: dict[str, bool] | None = None,
) -> TreatmentSession:
    """Record a session and plan its whole timeline in one transaction.

    A session already over starts the aftercare from now (only the still-valid steps);
    one more than PAST_SESSION_LIMIT ago, or one on top of another session, is refused.
    `screening`: the answers (True: yes), which flag the session for the clinic. (The
    caller replans the patient's other sessions: `patients.replan_others`.)

    The write path of every chat booking, so it reads what it needs in one statement (the
    patient's booked sessions and their courses answer the clash, the course position and
    the planner's other sessions) and writes each table with one statement.
    """
    assert patient.id is not None
    db = await session.connection()
    asked = _Asked(
        patient.id,
        patient.clinic_id,
        prefs_of(patient),
        protocol,
        start,
        now,
        dict(screening or {}),
    )
    # On SQLite the read, the plan and the writes are one hop to the connection's thread.
    treatment_id, values = await run_script(db, _booking(db.dialect, asked))
    # The caller gets the session as a row of its unit of work (persistent, not inserted
    # again): the insert above was Core, to spare the ORM's flush on the hot path.
    return written(session, TreatmentSession, {"id": treatment_id, **values})


class _Asked(msgspec.Struct, frozen=True):
    """A booking as asked: whose, under which protocol (a clinic's own file replaces it),
    when, and the screening answers."""

    patient_id: int
    clinic_id: int
    prefs: Prefs
    protocol: Protocol
    start: datetime
    now: datetime
    screening: dict[str, bool]


def _booking(dialect: Dialect, asked: _Asked) -> Script[tuple[int, dict[str, Any]]]:
    """One booking as a script: the read that answers it, the checks, the plan, the writes.
    The new session's id and column values."""
    instant = instant_reader(dialect)
    context = prepared(_CONTEXT, dialect)
    found = yield context(patient=asked.patient_id, clinic=asked.clinic_id)
    if not found:  # another transaction holds the patient's row (PostgreSQL): wait, read again
        yield prepared(_LOCK_PATIENT, dialect)(patient=asked.patient_id)
        found = yield context(patient=asked.patient_id, clinic=asked.clinic_id)
    file, course_id, plan_kind, sessions, stopped = found[0][:5]
    others = [
        Booked(row[5], instant(row[6]), instant(row[7]), row[8])
        for row in found
        if row[5] is not None
    ]
    protocol = protocol_file(asked.clinic_id, file, asked.protocol)
    start, now = asked.start, asked.now
    end = start + timedelta(minutes=protocol.session_minutes)
    if end < now - PAST_SESSION_LIMIT:
        raise BookingError("too_old")
    if any(other.overlaps(start, end) for other in others):
        raise BookingError("clash")
    values: dict[str, Any] = {
        "patient_id": asked.patient_id,
        "clinic_id": asked.clinic_id,
        "start_at": start,
        "end_at": end,
        "state": SessionState.BOOKED.value,
        "screening": asked.screening,
        "flagged": any(asked.screening.values()),
        "created_at": now,
    }
    new_course = None
    if course_id is None:
        new_course = unplanned(asked.patient_id, now)
        plan_kind, sessions, stopped = new_course["plan"], new_course["sessions"], None
    # A course not written yet has a negative id until it is (as in the import's batches).
    if stopped is not None:
        stopped = instant(stopped)
    course = Plan(-1 if course_id is None else course_id, plan_kind, sessions, stopped)
    in_course = [
        start,
        *(o.start for o in others if course_id is not None and o.course_id == course_id),
    ]
    position = position_among(course, start, in_course)
    times = anchored(SessionTimes(start=start, end=end), position, protocol)
    steps = plan(times, protocol, asked.prefs, now, [o.times for o in others])
    booking = _Booking(values, course_id, new_course, steps)
    treatment_id = yield from _booking_writes(dialect, booking, cancel_others=bool(others))
    return treatment_id, values


# The write path's statements, built once: SQLAlchemy then reuses their compiled form
# without building and keying a new expression per booking. One read answers a booking: the
# clinic's protocol file and the patient's current course, on each of the patient's booked
# sessions (past ones included) with its course, or on one row when there is none.
#
# On PostgreSQL it locks the patient's row, unless another transaction holds it (a booking of
# the patient at the same moment, in another process or an import's batch): then it finds
# nothing, and the booking waits for that lock (`_LOCK_PATIENT`) and reads again, a new
# statement that sees what the other committed. (A read that waited for the lock itself
# would see the patient's sessions as they were when it began.) On SQLite a transaction that
# writes holds the database's one write lock.
_CONTEXT = (
    sa.select(
        CLINIC.c.protocol_file,
        COURSE.c.id,
        COURSE.c.plan,
        COURSE.c.sessions,
        COURSE.c.maintenance_stopped_at,
        TREATMENTS.c.id,
        TREATMENTS.c.start_at,
        TREATMENTS.c.end_at,
        COURSE_SESSION.c.course_id,
    )
    .select_from(
        CLINIC.join(
            PATIENT,
            sa.and_(PATIENT.c.id == sa.bindparam("patient"), PATIENT.c.clinic_id == CLINIC.c.id),
        )
        .outerjoin(
            COURSE,
            COURSE.c.id
            == sa.select(sa.func.max(COURSE.c.id))
            .where(COURSE.c.patient_id == sa.bindparam("patient"))
            .scalar_subquery(),
        )
        .outerjoin(
            TREATMENTS,
            sa.and_(
                TREATMENTS.c.patient_id == sa.bindparam("patient"),
                TREATMENTS.c.state == SessionState.BOOKED.value,
            ),
        )
        .outerjoin(COURSE_SESSION, COURSE_SESSION.c.session_id == TREATMENTS.c.id)
    )
    .where(CLINIC.c.id == sa.bindparam("clinic"))
    .with_for_update(of=PATIENT, skip_locked=True, key_share=True)
)
_LOCK_PATIENT = (
    sa.select(PATIENT.c.id)
    .where(PATIENT.c.id == sa.bindparam("patient"))
    .with_for_update(key_share=True)
)
_NEW_SESSION = TREATMENTS.insert().returning(TREATMENTS.c.id)
_NEW_COURSE = COURSE.insert().returning(COURSE.c.id)
_NEW_LINK = COURSE_SESSION.insert()


class _Booking(msgspec.Struct, frozen=True):
    """What one booking writes: the session's column values, the patient's course (its id,
    or the values of a new one), the planned steps."""

    values: dict[str, Any]
    course_id: int | None
    new_course: dict[str, Any] | None
    steps: list[PlannedStep]


def _booking_writes(dialect: Dialect, booking: _Booking, *, cancel_others: bool) -> Script[int]:
    """One booking's writes, one statement per table: the session, its course (when the
    patient has none), the link, the planned rows, the patient's maintenance_from, and the
    other sessions' course rows cancelled (when there are others). The session's id."""
    patient = booking.values["patient_id"]
    inserts = _inserts_pg if dialect.name == "postgresql" else _inserts
    session_id = yield from inserts(dialect, booking)
    yield prepared(ONE_MAINTENANCE_FROM, dialect)(patient=patient)
    if cancel_others:
        yield prepared(CANCEL_COURSE_ROWS_OF_ONE, dialect)(patient=patient, session=session_id)
    return session_id


def _inserts(dialect: Dialect, booking: _Booking) -> Script[int]:
    """The session, its course, its link and its planned rows, a statement each."""
    at = converter(dialect)
    values = booking.values
    found = yield prepared(_NEW_SESSION, dialect, SESSION_COLUMNS)(
        **{
            **values,
            "start_at": at(values["start_at"]),
            "end_at": at(values["end_at"]),
            "created_at": at(values["created_at"]),
            "screening": as_json(values["screening"]),
        }
    )
    session_id = int(found[0][0])
    course_id = booking.course_id
    if booking.new_course is not None:
        insert = prepared(_NEW_COURSE, dialect, COURSE_COLUMNS)
        created = at(booking.new_course["created_at"])
        found = yield insert(**{**booking.new_course, "created_at": created})
        course_id = int(found[0][0])
    link = prepared(_NEW_LINK, dialect, ("session_id", "course_id"))
    yield link(session_id=session_id, course_id=course_id)
    if booking.steps:
        rows = planned_rows(values["patient_id"], session_id, booking.steps, values["created_at"])
        yield planned_statement(dialect, rows)
    return session_id


def _inserts_pg(dialect: Dialect, booking: _Booking) -> Script[int]:
    """`_inserts` on PostgreSQL, where each statement is a round trip to the server: all
    four in one statement (data-modifying CTEs; the planned rows from arrays)."""
    values = booking.values
    rows = planned_rows(values["patient_id"], 0, booking.steps, values["created_at"])
    found = yield prepared(_pg_inserts(booking.new_course is not None), dialect)(
        **{f"s_{k}": v for k, v in {**values, "screening": as_json(values["screening"])}.items()},
        **{f"c_{k}": v for k, v in (booking.new_course or {}).items()},
        course_id=booking.course_id,
        **{
            f"p_{name}": [as_json(r[name]) if name == "extra" else r[name] for r in rows]
            for name in _PLANNED_ARRAYS
        },
    )
    return int(found[0][0])


# The planned rows' own columns, which the PostgreSQL insert takes as arrays (the session,
# the patient, the attempts and the creation time are one value for all of them).
_PLANNED_ARRAYS = tuple(
    c for c in PLANNED_COLUMNS if c not in ("patient_id", "session_id", "attempts", "created_at")
)


@functools.cache
def _pg_inserts(new_course: bool) -> sa.Select[Any]:
    """The statement of `_inserts_pg`; it returns the session's id."""
    # PostgreSQL's dialect is loaded when a PostgreSQL engine is made, not at every start.
    from sqlalchemy.dialects.postgresql import ARRAY

    def named(table: sa.Table, prefix: str, columns: tuple[str, ...]) -> dict[str, Any]:
        return {c: sa.bindparam(f"{prefix}{c}", type_=table.c[c].type) for c in columns}

    new_session = (
        TREATMENTS.insert()
        .values(named(TREATMENTS, "s_", SESSION_COLUMNS))
        .returning(TREATMENTS.c.id)
        .cte("new_session")
    )
    ctes: list[sa.CTE] = []
    course: Any = sa.bindparam("course_id", type_=sa.Integer)
    if new_course:
        made = (
            COURSE.insert()
            .values(named(COURSE, "c_", COURSE_COLUMNS))
            .returning(COURSE.c.id)
            .cte("new_course")
        )
        course = sa.select(made.c.id).scalar_subquery()
    ctes.append(
        COURSE_SESSION.insert()
        .from_select(["session_id", "course_id"], sa.select(new_session.c.id, course))
        .cte("new_link")
    )
    steps = (
        sa.func.unnest(
            *(
                sa.bindparam(
                    f"p_{name}",
                    type_=ARRAY(sa.Text if name == "extra" else PLANNED.c[name].type),
                )
                for name in _PLANNED_ARRAYS
            )
        )
        .table_valued(*_PLANNED_ARRAYS)
        .render_derived(name="step_values")
    )
    ctes.append(
        PLANNED.insert()
        .from_select(
            ["patient_id", "session_id", *_PLANNED_ARRAYS, "attempts", "created_at"],
            sa.select(
                sa.bindparam("s_patient_id", type_=sa.Integer),
                new_session.c.id,
                *(
                    sa.cast(steps.c[name], PLANNED.c.extra.type)
                    if name == "extra"
                    else steps.c[name]
                    for name in _PLANNED_ARRAYS
                ),
                sa.literal(0),
                sa.bindparam("s_created_at", type_=PLANNED.c.created_at.type),
            ).select_from(new_session.join(steps, sa.true())),
        )
        .cte("new_steps")
    )
    return sa.select(new_session.c.id).add_cte(*ctes)


async def check_booking(
    *, session: AsyncSession, patient_id: int, protocol: Protocol, start: datetime, now: datetime
) -> datetime:
    """The session's end if a session may be booked at `start`; BookingError otherwise
    ("too_old": over more than PAST_SESSION_LIMIT ago; "clash": on another session)."""
    end = start + timedelta(minutes=protocol.session_minutes)
    if end < now - PAST_SESSION_LIMIT:
        raise BookingError("too_old")
    await refuse_clash(session=session, patient_id=patient_id, start=start, end=end)
    return end


async def refuse_clash(
    *,
    session: AsyncSession,
    patient_id: int,
    start: datetime,
    end: datetime,
    moving: int | None = None,
) -> None:
    """BookingError("clash") if another booked session of the patient overlaps start..end
    (`moving`: the session being moved, which cannot clash with itself)."""
    query = booked(patient_id).where(
        col(TreatmentSession.start_at) < end, col(TreatmentSession.end_at) > start
    )
    if moving is not None:
        query = query.where(col(TreatmentSession.id) != moving)
    if (await session.exec(query)).first() is not None:
        raise BookingError("clash")


async def plan_sessions(
    *,
    session: AsyncSession,
    patient: Patient,
    treatments: Sequence[TreatmentSession],
    protocol: Protocol,
    now: datetime,
) -> None:
    """Insert the planned rows of these sessions of one patient (the planner decides, this
    only records)."""
    assert patient.id is not None
    # The patient's clinic may have a protocol of its own (issue 5): found once.
    protocol = await protocol_of(session=session, patient=patient, default=protocol)
    for treatment in treatments:
        assert treatment.id is not None
        steps = await session_steps(
            session=session, patient=patient, treatment=treatment, protocol=protocol, now=now
        )
        await insert_planned(
            await session.connection(), planned_rows(patient.id, treatment.id, steps, now)
        )


async def session_steps(
    *,
    session: AsyncSession,
    patient: Patient,
    treatment: TreatmentSession,
    protocol: Protocol,
    now: datetime,
) -> list[PlannedStep]:
    """The planner's steps for a session as it stands (its course, the patient's other
    sessions), under `protocol` as given."""
    assert patient.id is not None
    assert treatment.id is not None
    return plan(
        await course_times(session=session, treatment=treatment, protocol=protocol),
        protocol,
        prefs_of(patient),
        now,
        await other_sessions(session=session, patient_id=patient.id, session_id=treatment.id),
    )


async def other_sessions(
    *, session: AsyncSession, patient_id: int, session_id: int
) -> list[SessionTimes]:
    """The patient's other booked sessions, as the planner sees them (their restrictions may
    overlap this one's: scheduler.planner.Restrictions)."""
    rows = (
        await session.exec(
            select(TreatmentSession.start_at, TreatmentSession.end_at).where(
                TreatmentSession.patient_id == patient_id,
                TreatmentSession.state == SessionState.BOOKED,
                col(TreatmentSession.id) != session_id,
            )
        )
    ).all()
    return [SessionTimes(start=_aware(start), end=_aware(end)) for start, end in rows]


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


async def next_session(
    *, session: AsyncSession, patient_id: int, now: datetime
) -> TreatmentSession | None:
    """The next booked session that has not ended yet."""
    return (
        await session.exec(booked(patient_id).where(col(TreatmentSession.end_at) > now))
    ).first()


async def planned_messages(
    *, session: AsyncSession, patient_id: int, states: tuple[str, ...] = (MessageState.PENDING,)
) -> list[PlannedMessage]:
    """The messages planned for a patient's own chat in the given states, in delivery order
    (not those about them to staff)."""
    return list(
        (
            await session.exec(
                select(PlannedMessage)
                .where(
                    PlannedMessage.patient_id == patient_id,
                    col(PlannedMessage.state).in_(states),
                    col(PlannedMessage.chat_id).is_(None),
                )
                .order_by(col(PlannedMessage.due_at), col(PlannedMessage.seq))
            )
        ).all()
    )


async def session_messages(*, session: AsyncSession, session_id: int) -> list[PlannedMessage]:
    return list(
        (
            await session.exec(
                select(PlannedMessage)
                .where(PlannedMessage.session_id == session_id)
                .order_by(col(PlannedMessage.seq), col(PlannedMessage.id))
            )
        ).all()
    )


async def block_patient(*, session: AsyncSession, patient_id: int, now: datetime) -> None:
    """The patient blocked the bot: stop trying, and say so in the records (what staff are
    to be told about the patient still goes to them)."""
    await block_patients(session=session, patient_ids=[patient_id], now=now)


async def block_patients(
    *, session: AsyncSession, patient_ids: Collection[int], now: datetime
) -> None:
    """`block_patient` for each of `patient_ids` (a batch of deliveries answered 403), in
    two statements."""
    await session.exec(
        update(Patient)
        .where(col(Patient.id).in_(patient_ids), col(Patient.blocked_at).is_(None))
        .values(blocked_at=now)
    )
    await session.exec(
        update(PlannedMessage)
        .where(
            col(PlannedMessage.patient_id).in_(patient_ids),
            col(PlannedMessage.state) == MessageState.PENDING,
            col(PlannedMessage.chat_id).is_(None),
        )
        .values(state=MessageState.CANCELLED, last_error="blocked")
    )
