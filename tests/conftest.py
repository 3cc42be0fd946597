"""Shared fixtures: a migrated database per test (SQLite always, PostgreSQL when available).

PostgreSQL tests run when AFTERCARE_TEST_PG_URL points at a server where the user may
create databases (`.ci/run` starts one); otherwise they are skipped, and say so.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Generator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bot.offline.harness import SANDBOX_TOKEN, Harness
from bot.offline.sandbox import SandboxBotAPI
from scheduler.clock import FakeClock, SystemClock
from scheduler.db import SessionFactory, make_engine, make_session_factory, migrate
from tests.patient_flows import bot

PG_URL = os.environ.get("AFTERCARE_TEST_PG_URL")
# Debian's chromium, which the browser tests drive (`.ci/run` installs it).
CHROMIUM = Path("/usr/bin/chromium")
# One template per pytest process: two runs on one server must not drop each other's.
PG_TEMPLATE = f"aftercare_test_template_{os.getpid()}"
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def pytest_sessionfinish() -> None:
    if PG_URL and _template_ready:
        asyncio.run(_admin(f"DROP DATABASE IF EXISTS {PG_TEMPLATE} WITH (FORCE)"))


def pytest_report_header() -> list[str]:
    pg = (
        "PostgreSQL tests: on"
        if PG_URL
        else "PostgreSQL tests: SKIPPED (set AFTERCARE_TEST_PG_URL; .ci/run starts a server)"
    )
    browser = (
        "browser tests: on"
        if CHROMIUM.exists()
        else f"browser tests: SKIPPED (no {CHROMIUM}; .ci/run installs Debian's chromium)"
    )
    return [pg, browser]


REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item,
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Each phase's report on the test item, so that a fixture can tell the test failed (the
    browser tests then take a screenshot)."""
    report = yield
    item.stash.setdefault(REPORTS, {})[report.when] = report
    return report


def _pg(database: str) -> str:
    assert PG_URL is not None
    return PG_URL.rsplit("/", 1)[0] + "/" + database


async def _admin(statement: str) -> None:
    engine = create_async_engine(_pg("postgres"), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(sa.text(statement))
    finally:
        await engine.dispose()


_template_ready = False


async def new_database_url(backend: str, tmp_path: Path) -> str:
    """A fresh, migrated database of the given backend."""
    global _template_ready
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'aftercare.db'}"
        await asyncio.to_thread(migrate, url)
        return url
    if not PG_URL:
        pytest.skip("PostgreSQL not available: set AFTERCARE_TEST_PG_URL")
    if not _template_ready:
        await _admin(f"DROP DATABASE IF EXISTS {PG_TEMPLATE}")
        await _admin(f"CREATE DATABASE {PG_TEMPLATE}")
        await asyncio.to_thread(migrate, _pg(PG_TEMPLATE))
        _template_ready = True
    name = f"aftercare_t_{uuid.uuid4().hex[:12]}"
    await _admin(f"CREATE DATABASE {name} TEMPLATE {PG_TEMPLATE}")
    return _pg(name)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def db_url(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    url = await new_database_url(backend, tmp_path)
    yield url
    if backend == "postgres":
        await _admin(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(db_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> SessionFactory:
    return make_session_factory(engine)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 11, 25, 9, 0, tzinfo=UTC))


@pytest.fixture
async def h(db_url: str, clock: FakeClock) -> AsyncIterator[Harness]:
    """The bot on the test's database and clock (`tests.patient_flows.bot`), for the
    conversation tests that need no other settings."""
    async with bot(db_url, clock) as harness:
        yield harness


@pytest.fixture
async def api() -> AsyncIterator[SandboxBotAPI]:
    """The sandbox Bot API on the system clock, for tests that run real bot processes
    (tests/procs.py); tests on a simulated clock bring their own."""
    async with SandboxBotAPI(SANDBOX_TOKEN, clock=SystemClock()) as sandbox:
        yield sandbox
