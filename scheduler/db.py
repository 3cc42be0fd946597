"""The async engine, the session factory, and the schema version check."""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import Connection, event, exc
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection
from sqlmodel.ext.asyncio.session import AsyncSession

from scheduler.models import dialect_options_for

if TYPE_CHECKING:
    from alembic.config import Config

# Alembic is imported only by what migrates or reads the migration files: at `aftercare run`
# it would cost 11 MB and about 90 ms for one version number (issue 11's start-up figures).
# So the schema this code needs is written here; tests/test_migrations.py checks that it
# is the newest migration (alembic's head), so a new migration must raise it.
SCHEMA_REVISION = "0018"

BY_STATEMENT = frozenset({("planned_message", "patient_id"), ("planned_message", "session_id")})
"""Foreign keys the models declare that PostgreSQL checks with triggers, once per statement,
instead of as constraints (migration 0018: PostgreSQL's own check is a query per row)."""


def compared(
    item: object, _name: str | None, kind: str, _reflected: bool, _compare_to: object
) -> bool:
    """Alembic's `include_object` on PostgreSQL: the schema comparison leaves out the foreign
    keys of `BY_STATEMENT`, which are triggers there."""
    if kind != "foreign_key_constraint" or not isinstance(item, sa.ForeignKeyConstraint):
        return True
    return not {(item.parent.name, column) for column in item.column_keys} <= BY_STATEMENT


MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"

SessionFactory = async_sessionmaker[AsyncSession]
_Row = TypeVar("_Row")


def written(session: AsyncSession, cls: type[_Row], values: Mapping[str, Any]) -> _Row:
    """A row written with Core (the write path's one statement per table), as a row of
    `session`'s unit of work with these values, its columns as written, the id included.

    Made as SQLAlchemy's loader makes a row it reads (the class's `__new__`, the values
    as read) rather than through `__init__`: SQLModel's `__init__` sets each field through
    the ORM's change events, work that would only mark as changed what was just written."""
    row = sa.inspect(cls).class_manager.new_instance()
    row.__dict__.update(values)
    make_transient_to_detached(row)
    session.add(row)
    return row  # type: ignore[no-any-return]


async def saved(session: AsyncSession, row: _Row) -> _Row:
    """`row` added and flushed, so that it has its id: for a function that creates it."""
    session.add(row)
    await session.flush()
    return row


SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=30000",
)


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def make_engine(url: str, *, echo: bool = False) -> AsyncEngine:
    """An async engine; for SQLite, WAL and a busy timeout so readers and the writer coexist."""
    if is_sqlite(url):
        # Imported here: a bot on PostgreSQL loads no SQLite module (scheduler/sqlite_loop.py).
        from scheduler.sqlite_checkpoints import NO_AUTOMATIC_CHECKPOINT, Checkpointer
        from scheduler.sqlite_driver import OneHopDBAPI, set_up

        # No rollback when a connection goes back to the pool: SQLAlchemy has already ended
        # its transaction (committed, or rolled back on close), and SQLite opens none for a
        # read. The reset would be one more round trip to the connection's thread each time.
        # A connection is used from the event loop's thread too (`sqlite_loop.on_the_loop`),
        # never by two threads at once: the adapter's mutex orders its statements.
        engine = create_async_engine(
            url,
            echo=echo,
            connect_args={"timeout": 30, "check_same_thread": False},
            module=OneHopDBAPI(),
            pool_reset_on_return=None,
        )

        pragmas: tuple[str, ...] = SQLITE_PRAGMAS
        path = engine.url.database
        if path and path != ":memory:" and not path.startswith("file:"):
            # Its checkpoints on a thread of their own, none in a commit on the event loop
            # (scheduler/sqlite_checkpoints.py).
            pragmas = (*SQLITE_PRAGMAS, NO_AUTOMATIC_CHECKPOINT)
            checkpointer = Checkpointer(Path(path))
            event.listen(engine.sync_engine, "commit", lambda _c: checkpointer.committed())
            event.listen(engine.sync_engine, "engine_disposed", lambda _e: checkpointer.close())

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_connection: object, _record: ConnectionPoolEntry) -> None:
            set_up(dbapi_connection, pragmas)

        dialect_options_for(engine.dialect.name)
        return engine
    # No JIT compilation (PostgreSQL's `jit`, on by default since 12): the server compiles a
    # statement whose estimated cost passes `jit_above_cost`, whatever it will really take.
    # The import's UPDATE of a batch's patients (`courses.note_maintenance_from`, with its
    # subqueries for each patient) passed it, and was compiled with LLVM at every batch: 37
    # ms a batch of 1,000, of which 16 ms compiling, against 24 ms without (PostgreSQL 15's
    # pg_stat_statements). None of the bot's statements is the long analytical query that
    # JIT pays back on. Sent in the connection's start-up packet: no round trip.
    engine = create_async_engine(
        url, echo=echo, pool_size=10, connect_args={"server_settings": {"jit": "off"}}
    )
    _ping_when_idle(engine)

    @event.listens_for(engine.sync_engine, "connect")
    def _instants(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        dbapi_connection.run_async(
            lambda raw: raw.set_type_codec(
                "timestamptz",
                schema="pg_catalog",
                encoder=_encoded_instant,
                decoder=_decoded_instant,
                format="tuple",
            )
        )

    dialect_options_for(engine.dialect.name)
    return engine


# PostgreSQL's instants (timestamptz) as asyncpg encodes them on this engine's connections:
# microseconds since 2000-01-01 UTC, which is what the column holds. asyncpg's own encoder
# takes a datetime only, and costs about a microsecond for each (two comparisons with
# infinity, `astimezone`, a subtraction, three attributes): four a planned row, 0.37-0.51 s
# of an import's 87,000 rows in its COPY (docs/performance-history.md). Its "tuple" codec format
# takes the microseconds themselves: the write path hands them over (`rows.converter`,
# each instant converted once), and everything else still gives and gets aware datetimes.
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_PG_INFINITY, _PG_MINUS_INFINITY = 2**63 - 1, -(2**63)


def pg_instant(value: datetime) -> int:
    """`value` as PostgreSQL's timestamptz holds it (a naive one is local time, as asyncpg
    takes it)."""
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return (value - _PG_EPOCH) // _MICROSECOND


def _encoded_instant(value: object) -> tuple[int]:
    if type(value) is int:
        return (value,)
    if isinstance(value, datetime):
        return (pg_instant(value),)
    raise TypeError(f"expected a datetime.datetime instance, got {type(value).__name__!r}")


def _decoded_instant(value: tuple[int]) -> datetime:
    microseconds = value[0]
    if microseconds == _PG_INFINITY:  # never written here; asyncpg's datetime.max, made aware
        return datetime.max.replace(tzinfo=UTC)
    if microseconds == _PG_MINUS_INFINITY:
        return datetime.min.replace(tzinfo=UTC)
    return _PG_EPOCH + timedelta(microseconds=microseconds)


# A pooled PostgreSQL connection is checked before use when it has sat idle this long or
# longer. SQLAlchemy's `pool_pre_ping` checks it at every checkout, and asyncpg's ping is
# three round trips (BEGIN, an empty query, ROLLBACK): a third of a booking's. Under load
# (the chat, the dispatcher, an import) connections come back within milliseconds and are
# not checked; a server restart usually takes longer than this, so the connections it broke
# have been idle longer and are checked. One broken and reused within the second fails its
# statement once (the patient gets the apology, the dispatcher tries again at its next
# round), and the pool replaces it and every older one (tests/test_pool.py).
PING_AFTER_IDLE = 1.0


def _ping_when_idle(engine: AsyncEngine) -> None:
    """`pool_pre_ping`, only for a connection idle `PING_AFTER_IDLE` seconds or more: one
    that fails is replaced, and the pool's older connections with it (as pre-ping does).
    The pool's checkout event is SQLAlchemy's hook for this ("Disconnect Handling")."""
    sync = engine.sync_engine

    @event.listens_for(sync, "checkin")
    def _idle_from(_dbapi_connection: object, record: ConnectionPoolEntry) -> None:
        record.info["idle_from"] = time.monotonic()

    @event.listens_for(sync, "checkout")
    def _ping(
        dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: PoolProxiedConnection
    ) -> None:
        idle_from = record.info.pop("idle_from", None)
        if idle_from is None or time.monotonic() - idle_from < PING_AFTER_IDLE:
            return  # new, or in use a moment ago
        try:
            sync.dialect.do_ping(dbapi_connection)
        except Exception as error:
            raise exc.InvalidatePoolError() from error


def make_session_factory(engine: AsyncEngine) -> SessionFactory:
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


def alembic_config(url: str) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision(url: str) -> str | None:
    """The newest migration's revision, read from the migration files."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


def migrate(url: str) -> None:
    """Apply every migration (synchronous: called from the command line, not the loop)."""
    from alembic import command

    command.upgrade(alembic_config(url), "head")


async def current_revision(engine: AsyncEngine) -> str | None:
    """The database's schema version, as alembic records it (None: never migrated)."""

    def _read(connection: Connection) -> str | None:
        if not sa.inspect(connection).has_table("alembic_version"):
            return None
        versions = connection.execute(sa.text("SELECT version_num FROM alembic_version"))
        return versions.scalar_one_or_none()

    async with engine.connect() as connection:
        return await connection.run_sync(_read)


class SchemaNotReady(Exception):
    """The database is not migrated to the code's schema."""


def unknown_schema(current: str | None) -> str | None:
    """Why a database's schema cannot be migrated by this version, when it was made by a
    newer one (a revision none of this version's migration files has); None otherwise."""
    if current is None or current in {
        path.name.partition("_")[0] for path in (MIGRATIONS_DIR / "versions").glob("*_*.py")
    }:
        return None
    return (
        f"the database has schema {current}, newer than this version's {SCHEMA_REVISION}: "
        "run the version of aftercare that migrated it"
    )


async def ensure_migrated(engine: AsyncEngine) -> None:
    current, head = await current_revision(engine), SCHEMA_REVISION
    if current == head:
        return
    newer = unknown_schema(current)
    if newer is not None:
        raise SchemaNotReady(newer)
    if current is None:
        raise SchemaNotReady(
            f"the database is empty; this version needs schema {head}: run `aftercare migrate`"
        )
    raise SchemaNotReady(
        f"the database has schema {current}; this version needs {head}: run `aftercare migrate`"
    )
