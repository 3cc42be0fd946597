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
"""

from __future__ import annotations

import collections
import sqlite3
from collections.abc import Callable
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

_T = TypeVar("_T")


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
        connection: aiosqlite.Connection = self._connection  # type: ignore[assignment]
        async with self._adapt_connection._execute_mutex:
            done, rows = await connection._execute(  # type: ignore[no-untyped-call]
                _run, connection._conn, operation, parameters, many
            )
        self._cursor = done
        self._rows = collections.deque(rows)


class _OneHopConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()
    _cursor_cls = _OneHopCursor


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


async def on_thread(db: AsyncConnection, work: Callable[[sqlite3.Connection], _T]) -> _T:
    """`work` run on the connection's thread with its sqlite3 connection, in the transaction
    SQLAlchemy has open on it: several statements in one hop (the booking's writes). It
    runs under the adapter's mutex, as every statement of the connection does."""
    adapted = (await db.get_raw_connection()).dbapi_connection
    assert isinstance(adapted, _OneHopConnection), "an engine from scheduler.db.make_engine"
    connection: aiosqlite.Connection = adapted._connection
    async with adapted._execute_mutex:
        result: _T = await connection._execute(work, connection._conn)
    return result
