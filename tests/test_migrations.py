"""The migrations create exactly the tables the models describe; `run` refuses an old schema."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel

import scheduler.models  # noqa: F401  (registers the tables)
from scheduler.db import (
    SCHEMA_REVISION,
    SchemaNotReady,
    ensure_migrated,
    head_revision,
    make_engine,
)


async def test_migrations_match_the_models(engine: AsyncEngine) -> None:
    def diff(connection: Connection) -> list[object]:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": False}
        )
        return list(compare_metadata(context, SQLModel.metadata))

    async with engine.connect() as connection:
        differences = await connection.run_sync(diff)
    assert differences == [], "a model change needs a migration: " + repr(differences)


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
