"""The PostgreSQL pool: a connection idle `PING_AFTER_IDLE` or longer is checked before use,
and one the server dropped meanwhile is replaced; one in use a moment ago is not checked; every
connection runs without JIT compilation (scheduler/db.py says why)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler import db as database
from tests.conftest import _admin

PID = sa.text("SELECT pg_backend_pid()")


async def _pid(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(PID)).scalar_one())


async def _dropped_by_the_server(pid: int) -> None:
    await _admin(f"SELECT pg_terminate_backend({pid})")


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_an_idle_connection_the_server_dropped_is_replaced_before_use(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database, "PING_AFTER_IDLE", 0.0)  # every pooled connection is idle
    first = await _pid(engine)
    await _dropped_by_the_server(first)
    assert await _pid(engine) != first


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_a_connection_in_use_a_moment_ago_goes_unchecked_and_a_failure_replaces_it(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database, "PING_AFTER_IDLE", 3600.0)  # none idle that long
    first = await _pid(engine)
    await _dropped_by_the_server(first)
    with pytest.raises(sa.exc.DBAPIError) as failed:
        await _pid(engine)
    assert failed.value.connection_invalidated
    assert await _pid(engine) != first


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_every_connection_runs_without_jit_compilation(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever the server's default (on, since PostgreSQL 12), and on a connection that
    replaced a dropped one too."""
    monkeypatch.setattr(database, "PING_AFTER_IDLE", 0.0)  # a dropped one is replaced
    show = sa.text("SHOW jit")
    async with engine.connect() as connection:
        assert (await connection.execute(show)).scalar_one() == "off"
        first = int((await connection.execute(PID)).scalar_one())
    await _dropped_by_the_server(first)
    async with engine.connect() as connection:
        assert (await connection.execute(show)).scalar_one() == "off"
        assert int((await connection.execute(PID)).scalar_one()) != first
