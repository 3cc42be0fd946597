"""The async engine, the session factory, and the schema version check."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, event
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry
from sqlmodel.ext.asyncio.session import AsyncSession

from scheduler.sqlite_driver import OneHopDBAPI

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"

SessionFactory = async_sessionmaker[AsyncSession]
_Row = TypeVar("_Row")


async def saved(session: AsyncSession, row: _Row) -> _Row:
    """`row` added and flushed, so that it has its id: for a function that creates it."""
    session.add(row)
    await session.flush()
    return row


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def make_engine(url: str, *, echo: bool = False) -> AsyncEngine:
    """An async engine; for SQLite, WAL and a busy timeout so readers and the writer coexist."""
    if is_sqlite(url):
        # No rollback when a connection goes back to the pool: SQLAlchemy has already ended
        # its transaction (committed, or rolled back on close), and SQLite opens none for a
        # read. The reset would be one more round trip to the connection's thread each time.
        engine = create_async_engine(
            url,
            echo=echo,
            connect_args={"timeout": 30},
            module=OneHopDBAPI(),
            pool_reset_on_return=None,
        )

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_connection: object, _record: ConnectionPoolEntry) -> None:
            cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return create_async_engine(url, echo=echo, pool_pre_ping=True, pool_size=10)


def make_session_factory(engine: AsyncEngine) -> SessionFactory:
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision(url: str) -> str | None:
    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


def migrate(url: str) -> None:
    """Apply every migration (synchronous: called from the command line, not the loop)."""
    command.upgrade(alembic_config(url), "head")


async def current_revision(engine: AsyncEngine) -> str | None:
    def _read(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async with engine.connect() as connection:
        return await connection.run_sync(_read)


class SchemaNotReady(Exception):
    """The database is not migrated to the code's schema."""


async def ensure_migrated(engine: AsyncEngine, url: str) -> None:
    current, head = await current_revision(engine), head_revision(url)
    if current == head:
        return
    if current is None:
        raise SchemaNotReady(
            f"the database is empty; this version needs schema {head}: run `aftercare migrate`"
        )
    raise SchemaNotReady(
        f"the database has schema {current}; this version needs {head}: run `aftercare migrate`"
    )
