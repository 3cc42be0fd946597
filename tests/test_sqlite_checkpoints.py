"""SQLite's checkpoints (scheduler/sqlite_checkpoints.py): never in a commit, which may run
on the event loop, but in a worker thread a moment after it; and none left behind when the
engine is disposed."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from scheduler import sqlite_checkpoints
from scheduler.db import make_engine
from scheduler.sqlite_checkpoints import Checkpointer
from scheduler.sqlite_loop import on_the_loop

MB = 1024 * 1024


async def _until(condition: object, seconds: float = 10.0) -> bool:
    """Whether `condition()` came true within `seconds` (real time: a worker thread's work)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.02)
    return bool(condition())  # type: ignore[operator]


async def test_a_commit_on_the_loop_leaves_the_checkpoint_to_a_thread(tmp_path: Path) -> None:
    # 5 MB in one commit: past SQLite's 1,000 pages, where its automatic checkpoint would
    # have copied them into the database file inside the commit, on the event loop. The
    # file is measured at once, well within the second before the thread's checkpoint.
    path = tmp_path / "db.sqlite"
    engine = make_engine(f"sqlite+aiosqlite:///{path}")
    try:
        async with engine.begin() as db:
            await db.execute(sa.text("CREATE TABLE blob (data BLOB)"))
        await asyncio.sleep(sqlite_checkpoints.AFTER + 0.5)  # the table's own checkpoint
        before = path.stat().st_size
        with on_the_loop():
            async with engine.begin() as db:
                await db.execute(
                    sa.text("INSERT INTO blob VALUES (:data)"),
                    [{"data": bytes([i]) * 1000} for i in range(256)] * 20,
                )
        after_commit = path.stat().st_size
        async with engine.connect() as db:
            (autocheckpoint,) = (await db.execute(sa.text("PRAGMA wal_autocheckpoint"))).one()
        assert autocheckpoint == 0
        assert after_commit - before < MB, "the commit checkpointed"
        assert await _until(lambda: path.stat().st_size - before > 5 * MB)
    finally:
        await engine.dispose()


async def test_a_disposed_engine_leaves_no_connection_open(tmp_path: Path) -> None:
    # The checkpointer's connection is closed too: once every connection is closed, SQLite
    # checkpoints the log and deletes it.
    path = tmp_path / "db.sqlite"
    engine = make_engine(f"sqlite+aiosqlite:///{path}")
    async with engine.begin() as db:
        await db.execute(sa.text("CREATE TABLE t (x INTEGER)"))
    await asyncio.sleep(sqlite_checkpoints.AFTER + 0.5)  # its connection opened
    async with engine.begin() as db:
        await db.execute(sa.text("INSERT INTO t VALUES (1)"))
    await engine.dispose()
    wal = path.with_name(path.name + "-wal")
    assert await _until(lambda: not wal.exists()), "a connection was left open"


def test_a_failed_checkpoint_is_one_line_and_raises_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    checkpointer = Checkpointer(tmp_path / "gone" / "db.sqlite")
    with caplog.at_level(logging.WARNING, logger=sqlite_checkpoints.__name__):
        checkpointer.checkpoint()
    assert [r.getMessage() for r in caplog.records] == [
        "SQLite checkpoint failed: unable to open database file"
    ]
    assert not (tmp_path / "gone").exists()
    checkpointer.close()


def test_an_engine_used_in_a_second_event_loop_still_checkpoints(tmp_path: Path) -> None:
    # The first loop ends with its checkpoint still waiting: the second loop's commit asks
    # again, rather than counting on a timer that will never fire.
    path = tmp_path / "db.sqlite"
    checkpointer = Checkpointer(path)
    made: list[str] = []
    checkpointer.checkpoint = lambda: made.append("checkpoint")  # type: ignore[method-assign]

    async def commit(wait: float) -> None:
        checkpointer.committed()
        await asyncio.sleep(wait)

    asyncio.run(commit(0))
    asyncio.run(commit(sqlite_checkpoints.AFTER + 0.5))
    assert made == ["checkpoint"]
    checkpointer.close()


def test_an_engine_used_again_after_its_disposal_checkpoints_again(tmp_path: Path) -> None:
    # SQLAlchemy lets an engine be used after `dispose`: its connections still run with no
    # automatic checkpoint, so its commits must still get theirs.
    checkpointer = Checkpointer(tmp_path / "db.sqlite")
    made: list[str] = []
    checkpointer.checkpoint = lambda: made.append("checkpoint")  # type: ignore[method-assign]

    async def disposed_then_used() -> None:
        checkpointer.close()
        checkpointer.committed()
        await asyncio.sleep(sqlite_checkpoints.AFTER + 0.5)

    asyncio.run(disposed_then_used())
    assert made == ["checkpoint"]
    checkpointer.close()
