"""SQLAlchemy's aiosqlite driver with one thread hop per statement instead of four.

aiosqlite runs every sqlite3 call on its connection's thread and hands each result back to
the event loop: a hop of tens of microseconds. SQLAlchemy's adapter makes four hops per
statement (open a cursor, execute, fetch, close), so a booking's seven statements cost about
thirty hops, more than SQLite's own work. This cursor does the four steps in one call on
the connection's thread (aiosqlite's own `Connection._execute`, the queue every aiosqlite
method goes through) and keeps the result; SQLAlchemy's server-side cursors (`stream`)
are left as they were. The gap is the adapter's (sqlalchemy.dialects.sqlite.aiosqlite), not
SQLite's: the same rows, errors and transactions, fewer round trips. (And a failed connect
waits for aiosqlite's thread to stop, see `OneHopDBAPI.connect`.)

Short work goes further, with no hop at all: inside `on_the_loop()` (scheduler/sqlite_loop.py;
a patient's turn in the chat, one booking) each statement, script and commit runs straight on
the event loop's thread, as a synchronous SQLite program (the plain APScheduler bot among
them) runs it.
A hop costs two thread wake-ups, about 250 µs on this 2-core machine: three of them were a
third of a booking. SQLite itself never waits there: those statements run with no busy
timeout, and one that finds the database locked by another writer (SQLITE_BUSY, before it
changed anything) is run again on the connection's thread, where it waits as every
statement did, the event loop free meanwhile. What runs on the loop holds it for as long
as SQLite works: a patient's rows through their indexes, a commit (never a checkpoint:
scheduler/sqlite_checkpoints.py), about a millisecond. The dispatcher's renders
and outcome writes, by key, run there too; its claims, bulk work and staff pages stay on
the thread.
"""

from __future__ import annotations

import asyncio
import collections
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import aiosqlite
from sqlalchemy.connectors.asyncio import AsyncIODBAPICursor
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.util.concurrency import await_only

from scheduler.sqlite_loop import ON_THE_LOOP

_T = TypeVar("_T")


def _locked(error: BaseException) -> bool:
    """SQLite found the database locked by another connection (SQLITE_BUSY and its
    extended codes): the statement changed nothing and may be run again."""
    code = getattr(error, "sqlite_errorcode", None)
    return (
        isinstance(error, sqlite3.OperationalError)
        and code is not None
        and (code & 0xFF == sqlite3.SQLITE_BUSY)
    )


class _Done:
    """What a statement left behind once its sqlite3 cursor is closed: SQLAlchemy reads
    these attributes off the adapted cursor."""

    __slots__ = ("arraysize", "description", "lastrowid", "rowcount")

    def __init__(self, cursor: sqlite3.Cursor | None = None) -> None:
        self.description = cursor.description if cursor is not None else None
        self.rowcount = cursor.rowcount if cursor is not None else -1
        self.lastrowid = cursor.lastrowid if cursor is not None else None
        self.arraysize = 1

    def close(self) -> None:
        """Closed already, on the connection's thread."""


def _run(
    connection: sqlite3.Connection, operation: str, parameters: Any, many: bool
) -> tuple[_Done, list[Any]]:
    """On the connection's thread: the whole statement, its rows read, its cursor closed."""
    cursor = connection.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        rows = cursor.fetchall() if cursor.description else []
        return _Done(cursor), rows
    finally:
        cursor.close()


class _OneHopCursor(AsyncAdapt_aiosqlite_cursor):
    __slots__ = ()
    _awaitable_cursor_close = False

    def _make_new_cursor(self, connection: Any) -> AsyncIODBAPICursor:  # noqa: ARG002
        return _Done()  # type: ignore[return-value]

    def _aenter_cursor(self, cursor: AsyncIODBAPICursor) -> AsyncIODBAPICursor:
        return cursor

    async def _execute_async(self, operation: Any, parameters: Any) -> Any:
        return await self._one_hop(operation, parameters, many=False)

    async def _executemany_async(self, operation: Any, seq_of_parameters: Any) -> Any:
        return await self._one_hop(operation, seq_of_parameters, many=True)

    async def _one_hop(self, operation: Any, parameters: Any, *, many: bool) -> None:
        adapted: _OneHopConnection = self._adapt_connection  # type: ignore[assignment]
        async with adapted._execute_mutex:
            done, rows = await adapted.run(lambda c: _run(c, operation, parameters, many))
        self._cursor = done  # type: ignore[assignment]
        self._rows = collections.deque(rows)


class _OneHopConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ("_busy_timeout", "_not_waiting")
    _cursor_cls = _OneHopCursor

    def __init__(self, dbapi: Any, connection: Any) -> None:
        super().__init__(dbapi, connection)
        self._busy_timeout: int | None = None  # the connection's, read when first needed
        # Whether its busy timeout is 0 now, as statements on the loop need it. It is set
        # once for a run of them (a patient's turn, the dispatcher's outcomes), not around
        # each: that was two more statements for every one (5.5 µs each, about 2 % of a
        # booking's CPU). What runs on the connection's thread, where statements wait for
        # the lock, gets the connection's own timeout back first (`_waiting`, `cursor`).
        self._not_waiting = False

    async def run(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """`work` with the sqlite3 connection: on the loop inside `on_the_loop()`, with no
        busy timeout, and again on the connection's thread if SQLite found the database
        locked (`work`, called again, goes on from the statement that found it locked);
        else on the thread."""
        connection: aiosqlite.Connection = self._connection  # type: ignore[assignment]
        if ON_THE_LOOP.get():
            raw = connection._conn
            if not self._not_waiting:
                if self._busy_timeout is None:
                    self._busy_timeout = int(_pragma(raw, "busy_timeout"))
                _pragma(raw, "busy_timeout = 0")
                self._not_waiting = True
            try:
                done = work(raw)
            except sqlite3.OperationalError as error:
                if not _locked(error):
                    raise
            else:
                await asyncio.sleep(0)  # the other tasks' turn, as a hop gave them
                return done
        result: _T = await connection._execute(self._waiting(work), connection._conn)  # type: ignore[no-untyped-call]
        return result

    def _waiting(
        self, work: Callable[[sqlite3.Connection], _T]
    ) -> Callable[[sqlite3.Connection], _T]:
        """`work`, on the connection's thread, with the connection's own busy timeout."""
        if not self._not_waiting:
            return work

        def waiting(raw: sqlite3.Connection) -> _T:
            if self._not_waiting:
                _pragma(raw, f"busy_timeout = {self._busy_timeout:d}")
                self._not_waiting = False
            return work(raw)

        return waiting

    def cursor(self, server_side: bool = False) -> Any:
        """As the parent's; a server-side cursor (`stream`) runs its statements on aiosqlite's
        own cursor, not through `run`: the busy timeout is the connection's first."""
        if server_side and self._not_waiting:
            connection: aiosqlite.Connection = self._connection  # type: ignore[assignment]
            await_only(connection._execute(self._waiting(lambda _raw: None), connection._conn))  # type: ignore[no-untyped-call]
        return super().cursor(server_side)

    def commit(self) -> None:
        self._end(sqlite3.Connection.commit)

    def rollback(self) -> None:
        self._end(sqlite3.Connection.rollback)

    def _end(self, end: Callable[[sqlite3.Connection], None]) -> None:
        """The transaction committed or rolled back (as the parent's, through `run`)."""
        if not self._connection._connection:
            return
        try:
            await_only(self.run(end))
        except Exception as error:
            self._handle_exception(error)


def _pragma(connection: sqlite3.Connection, pragma: str) -> Any:
    """A PRAGMA's value (busy_timeout: set and read in memory, never waiting)."""
    cursor = connection.execute(f"PRAGMA {pragma}")
    try:
        found = cursor.fetchone()
    finally:
        cursor.close()
    return found[0] if found else None


class OneHopDBAPI(AsyncAdapt_aiosqlite_dbapi):
    """Pass as `module=` to create_async_engine for a `sqlite+aiosqlite` URL."""

    def __init__(self) -> None:
        super().__init__(aiosqlite, sqlite3)

    def connect(self, *arg: Any, **kw: Any) -> _OneHopConnection:
        # As the parent's connect (its adapter class is fixed there), with this adapter.
        connection = self.aiosqlite.connect(*arg, **kw)
        connection._thread.daemon = True
        try:
            return _OneHopConnection(self, await_only(connection))
        except BaseException:
            # After a failed connect aiosqlite queues its thread's stop without waiting for it;
            # if the event loop closes first, the thread raises on the closed loop. The stop is
            # one call (nothing to close): wait for it.
            connection._thread.join(timeout=5)
            raise


def set_up(adapted: object, pragmas: Sequence[str]) -> None:
    """A new connection's pragmas (the engine's connect event), run on its thread whatever
    the task's hint. A connection first made inside `on_the_loop()` ran them on the loop,
    after the hint had set its busy timeout to 0, and their `busy_timeout` set the
    connection's own back under it: the loop's statements on that connection then waited
    for the lock, up to 30 s, while the holder's answers waited for the loop."""
    assert isinstance(adapted, _OneHopConnection), "an engine from scheduler.db.make_engine"
    connection: aiosqlite.Connection = adapted._connection  # type: ignore[assignment]

    def run_all(raw: sqlite3.Connection) -> None:
        for pragma in pragmas:
            raw.execute(pragma).close()

    await_only(connection._execute(run_all, connection._conn))  # type: ignore[no-untyped-call]
    adapted._busy_timeout = None  # the connection's own, read again when first needed
    adapted._not_waiting = False


async def run_sqlite3(db: AsyncConnection, work: Callable[[sqlite3.Connection], _T]) -> _T:
    """`work` run on the connection's thread with its sqlite3 connection, in the transaction
    SQLAlchemy has open on it: several statements in one hop (the booking's writes); on the
    loop inside `on_the_loop()`, where `work` is called again on the thread if SQLite found
    the database locked (it must then go on from the statement that found it locked). It
    runs under the adapter's mutex, as every statement of the connection does."""
    adapted = (await db.get_raw_connection()).dbapi_connection
    assert isinstance(adapted, _OneHopConnection), "an engine from scheduler.db.make_engine"
    async with adapted._execute_mutex:
        return await adapted.run(work)
