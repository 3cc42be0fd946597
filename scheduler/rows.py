"""The rows the write path reads and writes, as plain values: a patient's booked sessions,
what a session's planned rows say about replanning it, and the planned rows of steps.

Shared by one booking (scheduler/care.py) and by batches (scheduler/bulk.py).
"""

from __future__ import annotations

import asyncio
import enum
import functools
import itertools
import json
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import CursorResult, Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.visitors import InternalTraversal

from messages.protocol import Protocol
from scheduler.db import pg_instant
from scheduler.models import (
    Clinic,
    Course,
    CourseSession,
    MessageState,
    Patient,
    PlannedMessage,
    Priority,
    TreatmentSession,
)
from scheduler.planner import PlannedStep, SessionTimes

if TYPE_CHECKING:
    import sqlite3

PLANNED = PlannedMessage.__table__  # type: ignore[attr-defined]
TREATMENTS = TreatmentSession.__table__  # type: ignore[attr-defined]
COURSE = Course.__table__  # type: ignore[attr-defined]
# A new session's and a new course's columns, in the order the write paths (a booking, the
# import) give their values.
SESSION_COLUMNS = (
    "patient_id",
    "clinic_id",
    "start_at",
    "end_at",
    "state",
    "screening",
    "flagged",
    "created_at",
)
COURSE_COLUMNS = ("patient_id", "plan", "sessions", "created_at")
COURSE_SESSION = CourseSession.__table__  # type: ignore[attr-defined]
CLINIC = Clinic.__table__  # type: ignore[attr-defined]
PATIENT = Patient.__table__  # type: ignore[attr-defined]
# Rows of these states are (or are about to be) in the patient's chat: never planned again.
DONE_STATES = (MessageState.SENT, MessageState.SENDING)


def state_in(*states: MessageState) -> sa.ColumnElement[bool]:
    """planned_message.state in `states`, in a form no index serves: for the queries that
    pick rows by a list of sessions or patients. SQLite, with no statistics, read those
    through the state's index instead (`(state, due_at)` before migration 0016), every
    pending row of the table, rather than seek each session's or patient's few rows
    (`column || ''` is the usual way to keep a column's index out of a plan). PostgreSQL
    does the same while a table has no statistics yet (just after an import, before
    autovacuum's analyze): it then ANDs the session index with the whole pending range of
    the state index for every session, and a replan's count of 10,000 sessions took 13 s
    instead of 25 ms. Named as `models.planned_state_is` does, the state would let it do
    so with the pending rows' partial index (tests/test_bulk.py checks the plans)."""
    # One bound value per state, not an expanding list: `prepared` hands the driver no lists.
    found: sa.ColumnElement[bool] = PLANNED.c.state.concat("").in_(
        [sa.literal(s.value) for s in states]
    )
    return found


class Among(sa.ColumnElement[bool]):
    """`column` among the values of the list parameter `name` (`among`)."""

    inherit_cache = True
    type = sa.Boolean()
    _is_implicitly_boolean = True  # a condition as it stands (SQLite: no "= 1" after it)
    # What the statement cache keys on (SQLAlchemy's own elements declare theirs so).
    _traverse_internals = [  # noqa: RUF012
        ("column", InternalTraversal.dp_clauseelement),
        ("name", InternalTraversal.dp_string),
    ]

    def __init__(self, column: sa.ColumnElement[Any], name: str) -> None:
        self.column, self.name = column, name


def among(column: sa.ColumnElement[Any], name: str) -> sa.ColumnElement[bool]:
    """`column IN` the list given as parameter `name`, the list as one parameter: on
    PostgreSQL `column = ANY(:name)`, an array; on SQLite `column IN (SELECT value FROM
    json_each(:name))`, its JSON text (SQLite has no arrays; it seeks the column's index
    for each value, as for an IN list). SQLAlchemy's expanding IN renders one parameter per
    value: for a batch's thousand ids that was about 2.5 ms more a query on PostgreSQL (the
    statement rendered with a thousand placeholders, each bound on its own), some seven
    times a batch. One parameter also lets a statement be compiled once (`prepared`) and
    run on the driver as it is (`fetched`)."""
    return Among(column, name)


@compiles(Among)
def _expanding(element: Among, compiler: SQLCompiler, **kw: Any) -> str:
    in_list = element.column.in_(sa.bindparam(element.name, expanding=True))
    return str(compiler.process(in_list, **kw))


class _JsonList(sa.types.TypeDecorator[Sequence[Any]]):
    """A list parameter of `among` on SQLite, bound as its JSON text."""

    impl = sa.String
    cache_ok = True

    def process_bind_param(
        self,
        value: Sequence[Any] | None,
        dialect: Dialect,  # noqa: ARG002
    ) -> str:
        return _json_list(value or ())


@compiles(Among, "sqlite")
def _json_each(element: Among, compiler: SQLCompiler, **kw: Any) -> str:
    column = compiler.process(element.column, **kw)
    values = compiler.process(sa.bindparam(element.name, type_=_JsonList()), **kw)
    return f"{column} IN (SELECT value FROM json_each({values}))"


def listed(dialect: Dialect, values: Iterable[Any]) -> Any:
    """A list parameter of `among` as the driver takes it: JSON text on SQLite (`_json_each`),
    a list (an array) on PostgreSQL."""
    return _json_list(values) if dialect.name == "sqlite" else list(values)


def _json_list(values: Iterable[Any]) -> str:
    return json.dumps(list(values))


@compiles(Among, "postgresql")
def _any_of_array(element: Among, compiler: SQLCompiler, **kw: Any) -> str:
    # PostgreSQL's dialect is loaded when a PostgreSQL engine is made, not at every start.
    from sqlalchemy.dialects.postgresql import ARRAY

    array = sa.bindparam(element.name, type_=ARRAY(element.column.type))
    return str(compiler.process(element.column == sa.any_(array), **kw))


class Booked(msgspec.Struct, frozen=True):
    """One of a patient's booked sessions, as the write path needs it."""

    id: int
    start: datetime
    end: datetime
    course_id: int | None

    @property
    def times(self) -> SessionTimes:
        return SessionTimes(start=self.start, end=self.end)

    def overlaps(self, start: datetime, end: datetime) -> bool:
        return self.start < end and self.end > start


def planned_rows(
    patient_id: int,
    session_id: int,
    steps: Iterable[PlannedStep],
    now: datetime,
    *,
    bulk: bool = False,
) -> list[dict[str, Any]]:
    """The planned_message rows of a session's planned steps, as column values.

    `bulk`: planned by the import or a clinic-wide replan. Their messages already due (an
    imported booking's confirmation) go at broadcast priority: ten thousand of them must not
    hold up the reminders falling due meanwhile. What falls due later is a reminder like
    any other."""
    return [
        {
            "patient_id": patient_id,
            "session_id": session_id,
            "step": key,
            "seq": seq,
            "priority": _BROADCAST if bulk and due <= now else _REMINDER,
            "state": _PENDING if state == "pending" else _EXPIRED,
            "due_at": due,
            "not_before": not_before,
            "expires_at": expires,
            "attempts": 0,
            "extra": _extra(folded, extended),
            "created_at": now,
        }
        for key, seq, due, not_before, expires, state, folded, _, extended in steps
    ]


def planned_values(
    at: Callable[[datetime], Any],
    patient_id: int,
    session_id: int,
    steps: Iterable[PlannedStep],
    now: datetime,
    *,
    bulk: bool = False,
) -> list[list[Any]]:
    """`planned_rows`' rows in the driver's form (`PLANNED_COLUMNS`, instants converted by
    `at`: `converter`), for `planned_insert`: what `planned_statement` makes of them, without
    a dict for each row on the way (the import makes ninety thousand a run). The steps are
    unpacked as tuples, not read by field name (each a descriptor call), and most have no
    extras: their JSON is the same "{}"."""
    created = at(now)
    return [
        [
            patient_id,
            session_id,
            key,
            seq,
            _BROADCAST if bulk and due <= now else _REMINDER,
            _PENDING if state == "pending" else _EXPIRED,
            at(due),
            at(not_before),
            at(expires),
            0,
            as_json(_extra(folded, extended)) if folded or extended else "{}",
            created,
        ]
        for key, seq, due, not_before, expires, state, folded, _, extended in steps
    ]


def _extra(folded: tuple[str, ...], extended: bool) -> dict[str, Any]:
    """A planned step's row's extras (`planned_rows`, `planned_values`): the steps whose texts
    it carries, and whether another session keeps its restriction in force."""
    extra: dict[str, Any] = {}
    if folded:
        extra["folded"] = list(folded)
    if extended:
        extra["extended"] = True
    return extra


# The enum members' values, read once (an enum attribute is a descriptor call, and a bulk
# replan makes ninety thousand rows).
_BROADCAST, _REMINDER = int(Priority.BROADCAST), int(Priority.REMINDER)
_PENDING, _EXPIRED = MessageState.PENDING.value, MessageState.EXPIRED.value


async def insert_planned(
    db: AsyncConnection, rows: list[dict[str, Any]], turn: asyncio.Event | None = None
) -> None:
    """Planned rows in one executemany (on SQLite: `wide` statements), not one ORM object and
    flush each. `turn`: given once the rows are on their way (`handed_over`)."""
    await write_many(db, planned_statement(db.dialect, rows), turn=turn)


async def write_many(
    db: AsyncConnection, *statements: Statement, turn: asyncio.Event | None = None
) -> None:
    """Executemany statements in one script (one hop on SQLite, as `wide` statements there),
    handed over (`handed_over`) with `turn`."""
    await handed_over(run_script(db, _script(db.dialect, *statements)), turn)


async def handed_over(work: Awaitable[_T], turn: asyncio.Event | None) -> _T:
    """`work` started, then `turn` given, then `work` awaited: a batch's last writes, sent
    to the database (SQLite: its connection's thread; PostgreSQL: the server) before the
    next batch's planner takes the event loop's thread, which it keeps until it is done, so
    that the database writes while the planner plans (the next batch awaits `turn`)."""
    if turn is None:
        return await work
    started = asyncio.ensure_future(work)
    try:
        await asyncio.sleep(0)  # one step of the task: its first statement is on its way
    except BaseException:  # cancelled: so is the work (as it would be while awaited)
        started.cancel()
        raise
    turn.set()
    return await started


def _script(dialect: Dialect, *statements: Statement) -> Script[None]:
    """Executemany statements in one script (none for no rows)."""
    for many in statements:
        yield from _returned(dialect, many)


def _as_run(dialect: Dialect, many: Statement) -> Iterator[Statement]:
    """An executemany as it is run: on SQLite as `wide` statements, on PostgreSQL as one
    statement over arrays where it has one (`Statement.arrays`); none for no rows."""
    if not many.params:
        return
    if dialect.name == "sqlite":
        yield from wide(many)
    elif many.copy is not None:
        yield many  # `run_script` copies it, or runs it `_over_arrays`
    else:
        yield _over_arrays(many)


def _over_arrays(many: Statement) -> Statement:
    """An executemany on PostgreSQL as its statement over arrays, where it has one."""
    if many.arrays is None:
        return many
    return Statement(many.arrays, tuple(map(list, zip(*many.params, strict=True))))


async def inserted_ids(
    db: AsyncConnection,
    insert: sa.Insert,
    columns: tuple[str, ...],
    rows: list[Any],
    key: tuple[str, ...],
) -> list[int]:
    """Rows in the driver's form (as `insert_many` takes them) inserted as `write_many`
    writes them; their ids, in the order of `rows`.

    `key`: columns whose values tell the rows apart. Neither SQLite nor PostgreSQL promises
    the order of RETURNING's rows, so the ids are matched back by them. SQLAlchemy's
    executemany with RETURNING processed every row's values in Python, and on SQLite ran a
    statement of at most 1,000 rows at a time (a tenth of an import batch's time)."""
    if not rows:
        return []
    where = [columns.index(name) for name in key]
    returning = f" RETURNING id, {', '.join(key)}"
    many = insert_many(insert, db.dialect, columns, rows)
    arrays = many.arrays + returning if many.arrays is not None else None
    # Not `many.copy`: COPY returns no rows.
    returned = await run_script(
        db, _returned(db.dialect, Statement(many.sql + returning, rows, arrays))
    )
    # The returned instants as the rows give them (`converter`): PostgreSQL returns datetimes.
    at = converter(db.dialect)
    ids = {
        tuple(at(v) if isinstance(v, datetime) else v for v in found[1:]): int(found[0])
        for found in returned
    }
    return [ids[tuple(row[i] for i in where)] for row in rows]


def _returned(dialect: Dialect, many: Statement) -> Script[list[Sequence[Any]]]:
    """An executemany with RETURNING, as it is run; every row it returned."""
    found: list[Sequence[Any]] = []
    for each in _as_run(dialect, many):
        found.extend((yield each))
    return found


# SQLite's most parameters in one statement (SQLITE_MAX_VARIABLE_NUMBER, 32,766 since 3.32;
# RETURNING, which the write path needs anyway, came in 3.35).
_SQLITE_PARAMETERS = 32_766


def wide(many: Statement) -> Iterator[Statement]:
    """An executemany whose SQL holds its row's parameters as one `VALUES` group (an INSERT,
    or the rows `_moved` joins), as statements of as many rows each as SQLite takes.

    sqlite3's executemany lets go of the GIL for each row's step and waits to take it back,
    up to the interpreter's switch interval (5 ms) while another thread runs Python, such as
    the next batch's planner: 9,000 planned rows took 1.4-13 s so, instead of 0.1 s alone.
    A statement of 2,730 rows lets go of it once."""
    assert isinstance(many.params, list) and many.params, "an executemany"
    width = len(many.params[0])
    group = f"({', '.join('?' * width)})"
    head, found, tail = many.sql.partition(group)
    assert found and group not in tail, many.sql
    size = _SQLITE_PARAMETERS // width
    for start in range(0, len(many.params), size):
        part = many.params[start : start + size]
        yield Statement(
            f"{head}{', '.join([group] * len(part))}{tail}",
            tuple(itertools.chain.from_iterable(part)),
        )


def planned_statement(dialect: Dialect, rows: list[dict[str, Any]]) -> Statement:
    """The INSERT of planned rows, with the rows in the driver's form.

    SQLAlchemy's executemany builds and processes every row's parameters in Python (about
    ten microseconds a row here, as much as SQLite's own insert): the gap is filled by
    handing the driver rows already in its form, with the statement SQLAlchemy compiled.
    The values are converted as the columns' types would (tests/test_bulk.py reads them
    back through the ORM). Each row is a list: a batch sets its session ids in place once
    the sessions are written (the import plans them with stand-ins)."""
    at = converter(dialect)
    return planned_insert(
        dialect,
        [
            [
                r["patient_id"],
                r["session_id"],
                r["step"],
                r["seq"],
                r["priority"],
                r["state"],
                at(r["due_at"]),
                at(r["not_before"]),
                at(r["expires_at"]),
                r["attempts"],
                as_json(r["extra"]),
                at(r["created_at"]),
            ]
            for r in rows
        ],
    )


def planned_insert(dialect: Dialect, values: list[list[Any]]) -> Statement:
    """The INSERT of planned rows already in the driver's form (`planned_values`)."""
    return insert_many(_INSERT_PLANNED, dialect, PLANNED_COLUMNS, values)


async def replace_planned(
    db: AsyncConnection,
    fresh: Mapping[int, list[dict[str, Any]]],
    pending: Mapping[int, Mapping[str, int]],
    reason: str,
    turn: asyncio.Event | None = None,
) -> None:
    """Sessions' pending rows made what a replan planned (`fresh`, by session), in place: a
    step still planned keeps its row, its times, state, priority and extras rewritten; a
    step no longer planned is cancelled with `reason`; a new step gets a row. `pending`: the
    sessions' pending rows now (step -> row id), read under the write lock.

    A clinic-wide replan moves every pending row of the clinic: rewriting each row where it
    is costs the database about half of what cancelling it and inserting a new one does,
    and leaves no cancelled copy behind (the table does not grow with each replan)."""
    changed: list[tuple[Any, ...]] = []
    added: list[dict[str, Any]] = []
    dropped: list[int] = []
    convert = converter(db.dialect)
    for session_id, rows in fresh.items():
        left = dict(pending.get(session_id, {}))
        for r in rows:
            row_id = left.pop(r["step"], None)
            if row_id is None:
                added.append(r)
                continue
            changed.append(
                (
                    r["priority"],
                    r["state"],
                    convert(r["due_at"]),
                    convert(r["not_before"]),
                    convert(r["expires_at"]),
                    as_json(r["extra"]),
                    row_id,
                )
            )
        dropped += left.values()
    if dropped:
        await db.execute(
            sa.update(PLANNED)
            .where(PLANNED.c.id.in_(dropped))
            .values(state=MessageState.CANCELLED.value, last_error=reason)
        )
    moved = _moved(db.dialect, changed)
    await write_many(db, moved, planned_statement(db.dialect, added), turn=turn)


def as_json(extra: Mapping[str, Any]) -> str:
    """A row's extras as the JSON column stores them."""
    return json.dumps(extra) if extra else "{}"


def from_json(value: str | Mapping[str, Any] | None) -> Mapping[str, Any]:
    """A JSON column's value as the driver gives it (`fetched`): its text on SQLite, decoded
    already on PostgreSQL (the json codec SQLAlchemy's asyncpg dialect sets); {} for none."""
    if not value:
        return {}
    return json.loads(value) if isinstance(value, str) else value


def converter(dialect: Dialect) -> Callable[[datetime], Any]:
    """Instants as the driver takes them, each converted once: every row of a batch has the
    same created_at, and a step's due time is often its not_before too (a text conversion
    costs about a microsecond). SQLite: `UTCDateTime`'s text; PostgreSQL: the microseconds
    of timestamptz, which the engine's codec takes as they are (`db.pg_instant`)."""
    convert = _sqlite_text if dialect.name == "sqlite" else pg_instant
    converted: dict[datetime, Any] = {}

    def at(value: datetime) -> Any:
        done = converted.get(value)
        if done is None:
            done = converted[value] = convert(value)
        return done

    return at


def instant_reader(dialect: Dialect) -> Callable[[Any], datetime]:
    """Instants as a script reads them back from the driver (no SQLAlchemy types on the
    way), aware UTC: `UTCDateTime`'s naive UTC text on SQLite, a datetime on PostgreSQL."""
    if dialect.name == "sqlite":
        return lambda value: datetime.fromisoformat(value).replace(tzinfo=UTC)
    return lambda value: value.astimezone(UTC)


def exported_instant(column: sa.ColumnElement[Any], dialect: Dialect) -> sa.ColumnElement[Any]:
    """An instant column as the export selects it, for `instant_text`: on SQLite the stored
    text as it is (not parsed through `UTCDateTime`); on PostgreSQL written by the server as
    `isoformat()` writes the aware UTC datetime, microseconds only when there are some."""
    if dialect.name == "sqlite":
        return sa.type_coerce(column, sa.String())
    utc = sa.func.timezone("UTC", column)
    fraction = sa.case(
        (sa.extract("microseconds", column) % 1_000_000 == 0, ""),
        else_=sa.func.to_char(utc, ".US", type_=sa.String()),
    )
    whole = sa.func.to_char(utc, 'YYYY-MM-DD"T"HH24:MI:SS', type_=sa.String())
    written: sa.ColumnElement[Any] = whole + fraction + "+00:00"
    return written


def instant_text(dialect: Dialect) -> Callable[[Any], str]:
    """The export's instants (selected by `exported_instant`) as `isoformat()` writes the
    aware UTC datetime: on SQLite the stored text (`_sqlite_text`'s "YYYY-MM-DD
    HH:MM:SS.ffffff") rewritten, without making a datetime of it; PostgreSQL wrote them so.

    Formatting two instants a row in Python was a third of the export's time on SQLite
    (parsed and formatted again) and on PostgreSQL (`astimezone` and `isoformat`)."""
    if dialect.name != "sqlite":
        return str

    def rewritten(text: str) -> str:
        fraction = text[19:26]
        if fraction == ".000000":  # isoformat leaves out a zero fraction
            fraction = ""
        return f"{text[:10]}T{text[11:19]}{fraction}+00:00"

    return rewritten


class Statement(msgspec.Struct, frozen=True):
    """A statement in the driver's own form: its SQL for the dialect, and its positional
    parameters (a list of them: executemany)."""

    sql: str
    params: tuple[Any, ...] | list[Any]
    arrays: str | None = None
    """For an executemany on PostgreSQL: the statement taking one array per parameter (its
    rows through `unnest`), run once instead of once per row."""
    copy: tuple[str, tuple[str, ...]] | None = None
    """For a plain INSERT's executemany on PostgreSQL (no RETURNING): its table and columns,
    which take its rows through `COPY` (`run_script`)."""


_T = TypeVar("_T")
Script = Generator[Statement, Sequence[Sequence[Any]], _T]
"""Statements to run in order in one transaction: each is sent the rows the one before it
returned (its RETURNING), and the script's return value is what `run_script` returns."""


async def in_turns(items: Iterable[_T], every: int) -> AsyncIterator[_T]:
    """`items`, with the event loop given a turn after every `every` of them.

    A bulk run plans one batch while the other batches' statements are on their way, all on
    one event loop: a batch's Python in one go (planning a thousand sessions, 50-90 ms; the
    encoding of its rows for COPY, 25 ms) left their answers waiting meanwhile, and on
    PostgreSQL the server idle. In turns of a few milliseconds, each answer is taken up as
    it comes (docs/performance-history.md)."""
    for count, item in enumerate(items, start=1):
        yield item
        if count % every == 0:
            await asyncio.sleep(0)


PLAN_TURN = 20
"""Sessions planned between two turns of the event loop (about 2 ms)."""


COPY_TURN = 1_000
"""Rows encoded for COPY between two turns (about 3 ms)."""


async def run_script(db: AsyncConnection, script: Script[_T]) -> _T:
    """Run `script`'s statements on `db`, in its transaction.

    On SQLite the whole script runs in one go on the connection's thread (or on the loop,
    inside `on_the_loop()`), its Python too (a booking's checks and plan): a booking's read
    and writes cost one hop through aiosqlite's queue, or none, instead of six, and no
    SQLAlchemy execution each. Elsewhere each statement goes to the driver as it is, one
    after another.

    The script's statements bypass SQLAlchemy, whose connection begins its transaction at
    its first statement (autobegin): begun here if it has not, so that the caller's commit
    or rollback ends what the script wrote. Otherwise, were the script first, sqlite3's own
    transaction would outlive them, open on the pooled connection."""
    if not db.in_transaction():
        await db.begin()
    if db.dialect.name == "sqlite":
        # Imported here: a bot on PostgreSQL loads no SQLite module (scheduler/sqlite_loop.py).
        from scheduler.sqlite_driver import run_sqlite3

        return await run_sqlite3(db, _Running(script))
    try:
        statement = next(script)
        while True:
            if statement.copy is not None:
                if await _copied(db, statement):
                    statement = script.send([])
                    continue
                statement = _over_arrays(statement)
            params = statement.params
            if isinstance(params, list) and params and isinstance(params[0], list):
                params = [tuple(row) for row in params]  # SQLAlchemy takes rows as tuples
            statement = script.send(_driver_rows(await db.exec_driver_sql(statement.sql, params)))
    except StopIteration as done:
        return cast(_T, done.value)


async def fetched(
    db: AsyncConnection, statement: sa.Select[Any], **lists: Iterable[Any]
) -> Sequence[Sequence[Any]]:
    """`statement`'s rows as the driver gives them, its `among` lists given by name: compiled
    once (`prepared`; `statement` is made once too) and run through `run_script`, on SQLite
    in one hop to the connection's thread. SQLAlchemy's result rows and their values' types
    are left out: the callers convert what they need (`instant_reader`, `from_json`), and a
    replan reads nine rows a session twice, which SQLAlchemy's rows made about 15 ms a batch
    of the event loop's time on SQLite (docs/performance-history.md)."""
    made = prepared(statement, db.dialect)(
        **{name: listed(db.dialect, values) for name, values in lists.items()}
    )
    return await run_script(db, _read(made))


def _read(statement: Statement) -> Script[Sequence[Sequence[Any]]]:
    return (yield statement)


def _driver_rows(result: CursorResult[Any]) -> Sequence[Sequence[Any]]:
    """A statement's rows as the driver gave them (asyncpg's records, which index, slice and
    unpack as tuples do), not made into SQLAlchemy's rows: the scripts and `fetched` read
    them by position. Rows made for each record were about 40 % of the CPU of a bulk run's
    reads on PostgreSQL (docs/performance-history.md). SQLAlchemy still runs the
    statement: its errors, and the connection's invalidation after a disconnect, are as
    before."""
    if not result.returns_rows:
        return []
    rows: Sequence[Sequence[Any]] = result.cursor.fetchall()
    result.close()
    return rows


async def _copied(db: AsyncConnection, many: Statement) -> bool:
    """`many`'s rows written through asyncpg's `copy_records_to_table` (COPY, binary), in the
    transaction under way; False when none is under way on the driver's connection (the
    caller then runs the statement as it is).

    COPY encodes a row as its values; `unnest` over arrays checks every value for a nested
    array first (an `isinstance` against `collections.abc.Iterable` each, in asyncpg 0.32),
    and on this machine took 2.5 times as long for 90,000 planned rows."""
    assert many.copy is not None
    raw = (await db.get_raw_connection()).driver_connection
    if raw is None or not raw.is_in_transaction():
        return False
    table, columns = many.copy
    # Encoding 9,000 rows holds the event loop about 25 ms: in turns, the other batch's
    # statements are answered meanwhile (asyncpg takes an async iterable of rows).
    rows = in_turns(many.params, COPY_TURN)
    await raw.copy_records_to_table(table, columns=list(columns), records=rows)
    return True


class _Running(Generic[_T]):
    """A script run on a sqlite3 connection, statement by statement. Called again after a
    statement found the database locked (it changed nothing), it goes on from that one:
    `run_sqlite3` runs it on the loop first, then on the connection's thread."""

    def __init__(self, script: Script[_T]) -> None:
        self.script = script
        self.pending: Statement | None = None

    def __call__(self, connection: sqlite3.Connection) -> _T:
        try:
            statement = next(self.script) if self.pending is None else self.pending
            while True:
                self.pending = statement
                if isinstance(statement.params, list):
                    cursor = connection.executemany(statement.sql, statement.params)
                else:
                    cursor = connection.execute(statement.sql, statement.params)
                try:
                    rows = cursor.fetchall() if cursor.description else []
                finally:
                    cursor.close()
                statement = self.script.send(rows)
        except StopIteration as done:
            return cast(_T, done.value)


class Prepared(msgspec.Struct, frozen=True):
    """A Core statement compiled once for a dialect, that makes its positional parameters
    from named values: the values it bound itself (a state, a limit) are filled in. Values
    go as the driver takes them: instants through `converter`, JSON through `as_json`."""

    sql: str
    names: tuple[str, ...]
    fixed: Mapping[str, Any]

    def __call__(self, **values: Any) -> Statement:
        return Statement(
            self.sql, tuple(values[n] if n in values else self.fixed[n] for n in self.names)
        )


@functools.cache
def prepared(
    statement: sa.ClauseElement, dialect: Dialect, column_keys: tuple[str, ...] | None = None
) -> Prepared:
    """`statement` for `dialect` (an INSERT: with these columns), compiled once."""
    return _compiled(statement, dialect, column_keys)


def _compiled(
    statement: sa.ClauseElement, dialect: Dialect, column_keys: tuple[str, ...] | None = None
) -> Prepared:
    compiled = statement.compile(
        dialect=dialect,
        column_keys=list(column_keys) if column_keys else None,
    )
    assert isinstance(compiled, SQLCompiler)
    fixed = {
        name: _plain(bind.effective_value)
        for name, bind in compiled.binds.items()
        if not bind.required
    }
    return Prepared(str(compiled), tuple(compiled.positiontup or ()), fixed)


def bound(statement: sa.ClauseElement, dialect: Dialect) -> Statement:
    """`statement` with the values bound in it (no expanding IN), for `dialect`, its values
    in the driver's form (instants through `converter`): compiled at each call, for a
    statement made per call (a filter's values), which `prepared`'s cache would keep."""
    made = _compiled(statement, dialect)()
    at = converter(dialect)
    values = (at(value) if isinstance(value, datetime) else value for value in made.params)
    return Statement(made.sql, tuple(values))


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, enum.Enum) else value


_UPDATED = ("priority", "state", "due_at", "not_before", "expires_at", "extra")


_UPDATE_PLANNED = (
    sa.update(PLANNED)
    .where(PLANNED.c.id == sa.bindparam("row_id"))
    .values({name: sa.bindparam(f"new_{name}") for name in _UPDATED})
)
_INSERT_PLANNED = PLANNED.insert()


def _moved(dialect: Dialect, changed: list[tuple[Any, ...]]) -> Statement:
    """The UPDATE of `replace_planned`'s rows, (*_UPDATED, row id) each."""
    sql, arrays = _moved_sql(dialect)
    return Statement(sql, changed, arrays)


@functools.cache
def _moved_sql(dialect: Dialect) -> tuple[str, str | None]:
    """`_moved`'s statement and its form over arrays, made once: the rows joined to the
    table by key (UPDATE FROM), on SQLite from a `VALUES` group that `wide` repeats, on
    PostgreSQL from arrays (`Statement.arrays`)."""
    names = (*_UPDATED, "row_id")
    sets = ", ".join(f"{n} = v.{n}" for n in _UPDATED)
    if dialect.name == "sqlite":
        values = f"VALUES ({', '.join('?' * len(names))})"
        sql = f"WITH v({', '.join(names)}) AS ({values}) UPDATE planned_message SET {sets} "
        return f"{sql}FROM v WHERE planned_message.id = v.row_id AND {_changed(dialect)}", None
    types = [*(PLANNED.c[n].type for n in _UPDATED), PLANNED.c.id.type]
    return (
        _in_order(prepared(_UPDATE_PLANNED, dialect), (*(f"new_{n}" for n in _UPDATED), "row_id")),
        f"UPDATE planned_message SET {sets} FROM {_unnest(dialect, types, names)} "
        f"WHERE planned_message.id = v.row_id AND {_changed(dialect)}",
    )


def _changed(dialect: Dialect) -> str:
    """`_moved`'s condition that a row's new values differ from its own (NULLs alike): a row
    the replan leaves as it was is not written again. A write makes a new version of the row
    and, since its due time is indexed, an entry in each of its five indexes, changed or
    not. After a clinic's change of zone a quarter of the pending rows keep their values
    (steps timed from the session, not by the patient's clock: bench/writes.py's replan,
    20,950 of 87,545). JSON has no equality on PostgreSQL: the extras are compared as the
    text stored (`as_json` writes both)."""
    sqlite = dialect.name == "sqlite"
    cast = {} if sqlite else {"extra": "::text"}
    ours = ", ".join(f"planned_message.{n}{cast.get(n, '')}" for n in _UPDATED)
    theirs = ", ".join(f"v.{n}{cast.get(n, '')}" for n in _UPDATED)
    return f"({ours}) {'IS NOT' if sqlite else 'IS DISTINCT FROM'} ({theirs})"


def insert_many(
    insert: sa.Insert, dialect: Dialect, columns: tuple[str, ...], rows: list[Any]
) -> Statement:
    """An executemany of `insert` over `rows` (the values of `columns`, in the driver's form,
    in that order); on PostgreSQL with its form over arrays. `insert` is made once:
    `prepared` keeps its compiled form."""
    sql = _in_order(prepared(insert, dialect, columns), columns)
    table = insert.table
    assert isinstance(table, sa.Table)
    copy = (table.name, columns) if dialect.name == "postgresql" else None
    return Statement(sql, rows, _arrays(insert, dialect, columns), copy)


@functools.cache
def _arrays(insert: sa.Insert, dialect: Dialect, columns: tuple[str, ...]) -> str | None:
    """`insert_many`'s statement over arrays (PostgreSQL), made once."""
    if dialect.name != "postgresql":
        return None
    table = insert.table
    assert isinstance(table, sa.Table)
    return (
        f"INSERT INTO {table.name} ({', '.join(columns)}) SELECT * FROM "
        f"{_unnest(dialect, [table.c[name].type for name in columns])}"
    )


def _unnest(dialect: Dialect, types: list[Any], names: Sequence[str] = ()) -> str:
    """`unnest` of one array parameter per type (`$1::INTEGER[]`, ...), its columns named."""
    arrays = ", ".join(
        f"${i}::{column_type.compile(dialect=dialect)}[]" for i, column_type in enumerate(types, 1)
    )
    return f"unnest({arrays})" + (f" AS v({', '.join(names)})" if names else "")


def _in_order(found: Prepared, names: tuple[str, ...]) -> str:
    """The statement's SQL, once it is checked to take its parameters in the order of
    `names` (the tuples the callers build: both drivers take them positionally)."""
    assert found.names == names, found.names
    return found.sql


def _sqlite_text(value: datetime) -> str:
    """As `UTCDateTime` stores an instant in SQLite: naive UTC in SQLAlchemy's text format."""
    if value.tzinfo is not UTC:  # the planner's values are UTC already
        value = value.astimezone(UTC)
    return value.isoformat(" ", "microseconds")[:26]  # without its "+00:00"


PLANNED_COLUMNS = (
    "patient_id",
    "session_id",
    "step",
    "seq",
    "priority",
    "state",
    "due_at",
    "not_before",
    "expires_at",
    "attempts",
    "extra",
    "created_at",
)


class History(msgspec.Struct, frozen=True):
    """What a session's existing rows say about replanning it: the steps already sent (or in
    flight, or folded into a sent message), never planned again, and those that expired,
    which keep their one expired row."""

    done: frozenset[str]
    expired: frozenset[str]
    pending: frozenset[str] = frozenset()
    """The steps pending when the rows were read."""

    @classmethod
    def of(cls, rows: Iterable[tuple[str, str, Mapping[str, Any]]]) -> History:
        """From the session's rows as (step, state, extra)."""
        done: set[str] = set()
        expired: set[str] = set()
        pending: set[str] = set()
        for step, state, extra in rows:
            if state in DONE_STATES:
                done.add(step)
                done.update(extra.get("folded", []))
            elif state == MessageState.EXPIRED:
                expired.add(step)
            elif state == MessageState.PENDING:
                pending.add(step)
        return cls(frozenset(done), frozenset(expired), frozenset(pending))

    def protocol(self, protocol: Protocol) -> Protocol:
        """The protocol where no step folds into a step already sent: its text would be lost."""
        if not any(s.fold_into in self.done for s in protocol.steps):
            return protocol
        steps = tuple(
            s.model_copy(update={"fold_into": None}) if s.fold_into in self.done else s
            for s in protocol.steps
        )
        return protocol.model_copy(update={"steps": steps})

    def still_to_plan(self, steps: Iterable[PlannedStep]) -> list[PlannedStep]:
        """The fresh steps minus those sent, and minus a second expired row of a step."""
        kept = []
        for step in steps:
            if step.key in self.done or (step.state == "expired" and step.key in self.expired):
                continue
            if step.folded:
                step = step._replace(folded=tuple(k for k in step.folded if k not in self.done))
            kept.append(step)
        return kept
