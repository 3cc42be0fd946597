"""Whether this task's SQLite statements may run on the event loop's thread: the hint that
the handlers and the dispatcher give and the SQLite driver reads (scheduler/sqlite_driver.py,
its docstring says when and why). Nothing on PostgreSQL. Apart from the driver, so that
giving it imports no SQLite module: a bot on PostgreSQL loads none (sqlite3, aiosqlite,
SQLAlchemy's SQLite dialect: about 1.5 MB of its memory)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

ON_THE_LOOP: ContextVar[bool] = ContextVar("aftercare_sqlite_on_the_loop", default=False)


@contextmanager
def on_the_loop() -> Iterator[None]:
    """SQLite statements, scripts and commits made in this block (this task's) run on the
    event loop's thread, with no hop (scheduler/sqlite_driver.py). For short work only: a
    statement holds the loop for as long as SQLite works on it."""
    token = ON_THE_LOOP.set(True)
    try:
        yield
    finally:
        ON_THE_LOOP.reset(token)
