"""SQLite's checkpoints on a thread of their own, never in a commit.

In WAL mode SQLite copies the log's pages back into the database file (a checkpoint) in
the commit that takes the log past 1,000 pages, and that commit then waits for two fsyncs.
A booking commits on the event loop's thread (`sqlite_loop.on_the_loop`), so the whole bot
waited with it: a few milliseconds on a quiet disk, and tens to hundreds when another
program was writing to the same disk. The bench's full runs showed it: PostgreSQL,
checkpointing what its import had written, stalled SQLite's bookings for 22-57 ms. A loop
writing 50 MB with fsync every half second beside rounds of 1,000 bookings: 21-44 ms before,
9-18 ms with the checkpoints here; and with none in the commits, 35 % more bookings a
second, disk busy or not (docs/performance-history.md).

So an engine's connections run with `wal_autocheckpoint=0`, and each commit asks its
engine's `Checkpointer` for a PASSIVE checkpoint, at most one every `AFTER` seconds, made in
a worker thread on a connection of its own: a PASSIVE checkpoint waits for no reader or
writer, and no statement waits for it. sqlite3 offers no hook for the log's size (SQLite's
`sqlite3_wal_hook` is not exposed), hence the time; a second of this bot's writes is a few
megabytes of log, as SQLite's 1,000 pages are.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from pathlib import Path
from urllib.parse import quote

log = logging.getLogger(__name__)

AFTER = 1.0
"""Seconds from a commit to the checkpoint it asks for; commits meanwhile ask for no other."""

NO_AUTOMATIC_CHECKPOINT = "PRAGMA wal_autocheckpoint=0"
"""The pragma of every connection of an engine that has a `Checkpointer`."""


class Checkpointer:
    """PASSIVE checkpoints of the database file at `path`, `AFTER` seconds after a commit, in
    the event loop's default executor (or at once where no loop runs)."""

    def __init__(self, path: Path) -> None:
        self._uri = f"file:{quote(str(path))}?mode=rw"  # never creates a file that is gone
        self._lock = threading.Lock()  # one checkpoint at a time on the one connection
        self._connection: sqlite3.Connection | None = None
        self._waiting: asyncio.TimerHandle | None = None
        self._waiting_in: asyncio.AbstractEventLoop | None = None
        self._closed = False

    def committed(self) -> None:
        """A commit was made (the engine's `commit` event): a checkpoint `AFTER` seconds from
        now, unless one is already waiting in this event loop (one waiting in a loop that
        has ended never runs: the engine outlived the loop it was first used in). A commit
        after `close` is the engine used again after its disposal, as SQLAlchemy allows:
        checkpoints resume."""
        self._closed = False
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a synchronous caller: no loop to leave the work to
            self.checkpoint()
            return
        if self._waiting is not None and self._waiting_in is loop:
            return
        self._waiting, self._waiting_in = loop.call_later(AFTER, self._start, loop), loop

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._waiting = self._waiting_in = None
        loop.run_in_executor(None, self.checkpoint)  # which skips it if closed meanwhile

    def checkpoint(self) -> None:
        """One PASSIVE checkpoint; any failure is logged (the database file removed, say),
        never raised: the next commit asks again."""
        with self._lock:
            try:
                if self._closed:
                    return
                if self._connection is None:
                    self._connection = sqlite3.connect(
                        self._uri, uri=True, check_same_thread=False, isolation_level=None
                    )
                self._connection.execute("PRAGMA wal_checkpoint(PASSIVE)").close()
            except sqlite3.Error as error:
                log.warning("SQLite checkpoint failed: %s", error)

    def close(self) -> None:
        """No checkpoint after this until the next commit (the engine's `engine_disposed`
        event; a checkpoint already handed to the executor is skipped). Its connection is
        closed in the executor as well: closed last, it checkpoints the whole log and
        deletes it (SQLite's checkpoint on close), fsyncs the event loop must not wait for."""
        self._closed = True
        if self._waiting is not None:
            self._waiting.cancel()
            self._waiting = self._waiting_in = None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._close_connection()
            return
        loop.run_in_executor(None, self._close_connection)

    def _close_connection(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None
