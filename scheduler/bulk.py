"""Planning many sessions at once: the import and a clinic-wide replan.

The same planner and the same rules as one booking (scheduler/care.py), read and written a
batch at a time: one query for the patients' booked sessions and their courses, one for
the rows already planned, one UPDATE and one INSERT per table. The caller commits each
batch, so a long run makes progress that a kill does not undo.
"""

from __future__ import annotations

import functools
import gc
import sys
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from messages.protocol import Protocol
from scheduler.courses import Plan, Position, anchored, position_among, unplanned
from scheduler.db import SessionFactory
from scheduler.models import MessageState, SessionState
from scheduler.planner import PlannedStep, Prefs, SessionTimes, plan
from scheduler.rows import (
    COURSE,
    COURSE_COLUMNS,
    COURSE_SESSION,
    DONE_STATES,
    PLANNED,
    TREATMENTS,
    Booked,
    History,
    among,
    converter,
    fetched,
    from_json,
    inserted_ids,
    instant_reader,
    state_in,
)

GIVE_WAY = 0.05
"""Seconds a batch loop waits before each write on SQLite: SQLite has one writer at a time,
and the bot's dispatcher, waiting for the lock with SQLite's busy back-off, gets it between
two batches rather than after the whole run (its reminders stay on time: bench/lateness.py)."""


def _on_postgresql(sessions: SessionFactory) -> bool:
    bind = sessions.kw.get("bind")
    return bind is not None and bind.dialect.name == "postgresql"


def give_way(sessions: SessionFactory) -> float:
    """GIVE_WAY on SQLite; none on PostgreSQL, where a batch locks only its own rows and the
    dispatcher's claim skips locked rows (SKIP LOCKED) instead of waiting: a pause there only
    left the database and the planner idle (about 50 ms a batch, a fifth of a replan's)."""
    return 0.0 if _on_postgresql(sessions) else GIVE_WAY


def writers(sessions: SessionFactory) -> int:
    """How many batches a bulk run may write at once: one on SQLite (one writer at a time);
    two on PostgreSQL, whose server runs each connection's statements in its own process:
    one connection's statements, one after another, kept one core busy and left the rest
    idle (on a 2-core machine, three writers gained nothing over two:
    docs/performance-history.md)."""
    return 2 if _on_postgresql(sessions) else 1


_P = ParamSpec("_P")
_T = TypeVar("_T")


def heap_kept(run: Callable[_P, Awaitable[_T]]) -> Callable[_P, Awaitable[_T]]:
    """A bulk run with the objects alive at its start out of the garbage collector's full
    collections (`gc.freeze`; `gc.unfreeze` after): the modules, caches and the lines read
    are not garbage of the run, and each full collection walked all of them again. A run of
    10,000 sessions made six or seven, 670-810 ms of a 3 s import or replan (3 December);
    with them frozen, 70-110 ms, and both ran faster (bench/writes.py,
    docs/performance-history.md).
    What the run itself leaves is collected as before; the freeze ends with the run."""

    @functools.wraps(run)
    async def kept(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        gc.freeze()
        try:
            return await run(*args, **kwargs)
        finally:
            gc.unfreeze()

    return kept


SWITCH_INTERVAL = 0.0005
"""The interpreter's switch interval during a bulk run, in seconds (Python's default: 5 ms)."""


def gil_shared(run: Callable[_P, Awaitable[_T]]) -> Callable[_P, Awaitable[_T]]:
    """A bulk run with the interpreter's switch interval at SWITCH_INTERVAL
    (`sys.setswitchinterval`; the one before is back after the run).

    On SQLite a batch is written on the connection's thread while the event loop plans the
    next, and the GIL goes back and forth between them: the thread takes it for each row it
    binds, and at each turn the planner gives the loop (`rows.in_turns`) the thread may take
    it; the planner then waited out the default interval to get it back. With turns, the
    import and the replan were 10-15 % slower at 5 ms; at 0.5 ms the import is 8 % faster
    than with no turns (docs/performance-history.md). Only the command line's process runs a bulk
    run, and on PostgreSQL it has no other thread to share with."""

    @functools.wraps(run)
    async def shared(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        with _SWITCHING:
            return await run(*args, **kwargs)

    return shared


class _Switching:
    """SWITCH_INTERVAL while any bulk run is under way, and the interval from before the
    first when the last has ended (two runs at once may end in either order)."""

    def __init__(self) -> None:
        self.runs = 0
        self.before = sys.getswitchinterval()

    def __enter__(self) -> None:
        if self.runs == 0:
            self.before = sys.getswitchinterval()
            sys.setswitchinterval(SWITCH_INTERVAL)
        self.runs += 1

    def __exit__(self, *_exc: object) -> None:
        self.runs -= 1
        if self.runs == 0:
            sys.setswitchinterval(self.before)


_SWITCHING = _Switching()


class Booking(msgspec.Struct):
    """The patients' booked sessions with their courses, as one query found them."""

    sessions: dict[int, list[Booked]] = msgspec.field(default_factory=dict)
    courses: dict[int, Plan] = msgspec.field(default_factory=dict)

    def position(self, patient_id: int, booked: Booked) -> Position | None:
        """Where a session stands in its course (as `courses.position_of`)."""
        course = None if booked.course_id is None else self.courses.get(booked.course_id)
        if course is None:
            return None
        starts = [b.start for b in self.sessions[patient_id] if b.course_id == course.id]
        return position_among(course, booked.start, starts)

    def others(self, patient_id: int, session_id: int) -> list[SessionTimes]:
        return [b.times for b in self.sessions.get(patient_id, []) if b.id != session_id]


_BOOKED_OF = (
    sa.select(
        TREATMENTS.c.patient_id,
        TREATMENTS.c.id,
        TREATMENTS.c.start_at,
        TREATMENTS.c.end_at,
        COURSE_SESSION.c.course_id,
    )
    .select_from(
        TREATMENTS.outerjoin(COURSE_SESSION, COURSE_SESSION.c.session_id == TREATMENTS.c.id)
    )
    .where(
        among(TREATMENTS.c.patient_id, "patients"),
        TREATMENTS.c.state == SessionState.BOOKED.value,
    )
)
_TERMS = (COURSE.c.id, COURSE.c.plan, COURSE.c.sessions, COURSE.c.maintenance_stopped_at)
_COURSES = sa.select(*_TERMS).where(among(COURSE.c.id, "ids"))


async def booking_of(db: AsyncConnection, patient_ids: Iterable[int]) -> Booking:
    """The booked sessions (past ones included) of these patients, and their courses."""
    found = Booking()
    ids = sorted(set(patient_ids))
    if not ids:
        return found
    for patient_id in ids:
        found.sessions[patient_id] = []
    course_ids: set[int] = set()
    instant = instant_reader(db.dialect)
    for patient_id, session_id, start, end, course_id in await fetched(
        db, _BOOKED_OF, patients=ids
    ):
        found.sessions[patient_id].append(
            Booked(session_id, instant(start), instant(end), course_id)
        )
        if course_id is not None:
            course_ids.add(course_id)
    if course_ids:
        for course_id, *terms in await fetched(db, _COURSES, ids=sorted(course_ids)):
            found.courses[course_id] = _plan(instant, course_id, *terms)
    return found


def _plan(
    instant: Callable[[Any], datetime], course_id: int, kind: str, sessions: int, stopped: Any
) -> Plan:
    """A course's terms from its row as the driver gives it (`fetched`)."""
    return Plan(course_id, kind, sessions, None if stopped is None else instant(stopped))


async def current_courses(db: AsyncConnection, patient_ids: list[int]) -> dict[int, Plan]:
    """Each patient's current course (their latest), for those who have one."""
    instant = instant_reader(db.dialect)
    return {
        patient_id: _plan(instant, *terms)
        for patient_id, *terms in await fetched(db, _LATEST_COURSES, patients=patient_ids)
    }


_LATEST_COURSES = sa.select(COURSE.c.patient_id, *_TERMS).where(
    COURSE.c.id.in_(
        sa.select(sa.func.max(COURSE.c.id))
        .where(among(COURSE.c.patient_id, "patients"))
        .group_by(COURSE.c.patient_id)
    )
)


async def new_courses(db: AsyncConnection, patient_ids: list[int], now: datetime) -> list[int]:
    """A course with no plan yet for each of these patients (as `courses.attach_to_course`
    makes one for a first booking); their ids, in order."""
    created = converter(db.dialect)(now)
    rows = [
        [value[name] if name != "created_at" else created for name in COURSE_COLUMNS]
        for value in (unplanned(pid, now) for pid in patient_ids)
    ]
    return await inserted_ids(db, _INSERT_COURSE, COURSE_COLUMNS, rows, key=("patient_id",))


_INSERT_COURSE = COURSE.insert()


def steps_of(
    booking: Booking,
    patient_id: int,
    booked: Booked,
    protocol: Protocol,
    prefs: Prefs,
    now: datetime,
    history: History | None = None,
) -> list[PlannedStep]:
    """A session's steps as one booking or one replan would plan them, but for the patient's
    quiet hours: planned away from the chat, every step keeps them (`plan`'s `in_chat`)."""
    if history is not None:
        protocol = history.protocol(protocol)
    times = anchored(booked.times, booking.position(patient_id, booked), protocol)
    others = booking.others(patient_id, booked.id)
    steps = plan(times, protocol, prefs, now, others, in_chat=False)
    return history.still_to_plan(steps) if history is not None else steps


# Only the rows a History reads: sent, in flight, expired or pending (not the cancelled ones
# that every replan leaves behind), and `extra` (JSON) only where History reads it, the rows
# sent: a replan reads nine pending rows a session and would decode nine JSON texts.
_HISTORY = sa.select(
    PLANNED.c.session_id,
    PLANNED.c.id,
    PLANNED.c.step,
    PLANNED.c.state,
    sa.case((state_in(*DONE_STATES), PLANNED.c.extra), else_=sa.null()),
).where(
    among(PLANNED.c.session_id, "sessions"),
    state_in(*DONE_STATES, MessageState.EXPIRED, MessageState.PENDING),
)

Pending = dict[int, dict[str, int]]
"""Sessions' pending rows: session id -> step -> row id."""


async def histories(
    db: AsyncConnection, session_ids: list[int]
) -> tuple[dict[int, History], Pending]:
    """What each session's rows say about replanning it, and its pending rows."""
    rows: dict[int, list[tuple[str, str, Mapping[str, Any]]]] = defaultdict(list)
    pending: Pending = {session_id: {} for session_id in session_ids}
    for session_id, row_id, step, state, extra in await fetched(
        db, _HISTORY, sessions=session_ids
    ):
        rows[session_id].append((step, state, from_json(extra)))
        if state == MessageState.PENDING:
            pending[session_id][step] = row_id
    found = {session_id: History.of(rows.get(session_id, ())) for session_id in session_ids}
    return found, pending


_PENDING = sa.select(PLANNED.c.session_id, PLANNED.c.step, PLANNED.c.id).where(
    among(PLANNED.c.session_id, "sessions"),
    state_in(MessageState.PENDING),
)
_PENDING_LOCKED = _PENDING.with_for_update()


async def pending_rows(db: AsyncConnection, session_ids: list[int], *, lock: bool) -> Pending:
    """The sessions' pending rows now; `lock`: locked until the transaction ends (PostgreSQL:
    the dispatcher's claim skips them; SQLite has one writer, and the caller is it)."""
    query = _PENDING_LOCKED if lock else _PENDING
    pending: Pending = {session_id: {} for session_id in session_ids}
    for session_id, step, row_id in await fetched(db, query, sessions=session_ids):
        pending[session_id][step] = row_id
    return pending
