"""The migrations create exactly the tables the models describe; `run` refuses an old schema."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel

import scheduler.models  # noqa: F401  (registers the tables)
from scheduler.db import (
    SCHEMA_REVISION,
    SchemaNotReady,
    compared,
    ensure_migrated,
    head_revision,
    make_engine,
)


async def test_migrations_match_the_models(engine: AsyncEngine) -> None:
    def diff(connection: Connection) -> list[object]:
        opts: dict[str, object] = {"compare_type": True, "compare_server_default": False}
        if connection.dialect.name == "postgresql":
            opts["include_object"] = compared
        context = MigrationContext.configure(connection, opts=opts)
        return list(compare_metadata(context, SQLModel.metadata))

    async with engine.connect() as connection:
        differences = await connection.run_sync(diff)
    assert differences == [], "a model change needs a migration: " + repr(differences)


def bare(sql: str) -> str:
    """A condition without what the databases add or leave out: brackets, spaces, casts to
    text, the table's name."""
    return re.sub(r"[()\s]|::text|planned_message\.", "", sql)


async def test_the_partial_indexes_have_the_models_conditions(engine: AsyncEngine) -> None:
    """Alembic's comparison leaves out an index's condition: each partial index the models
    describe has, in the migrated database, the condition the models give it."""
    partial = [
        index
        for table in SQLModel.metadata.tables.values()
        for index in table.indexes
        if "where" in index.info
    ]
    assert {index.name for index in partial} == {
        "ix_planned_message_pending",
        "ix_planned_message_sending",
    }
    if engine.dialect.name == "sqlite":
        query = "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = :name"
    else:
        query = "SELECT indexdef FROM pg_indexes WHERE indexname = :name"
    async with engine.connect() as connection:
        for index in partial:
            found = (await connection.execute(sa.text(query), {"name": index.name})).scalar_one()
            condition = str(index.info["where"].compile(dialect=engine.dialect))
            assert bare(found.split("WHERE")[1]) == bare(condition), found


async def test_migrated_database_is_accepted(engine: AsyncEngine) -> None:
    await ensure_migrated(engine)


async def test_an_empty_database_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    engine = make_engine(url)
    try:
        with pytest.raises(
            SchemaNotReady, match=r"the database is empty; .* run `aftercare migrate`"
        ):
            await ensure_migrated(engine)
    finally:
        await engine.dispose()


def test_the_schema_the_code_needs_is_the_newest_migration(db_url: str) -> None:
    """`aftercare run` checks the database against SCHEMA_REVISION without reading the
    migration files: a new migration must raise it."""
    assert head_revision(db_url) == SCHEMA_REVISION
