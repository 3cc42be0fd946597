"""The claim of 1,000 due rows among many pending, and a bot's start-up on that database."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from bench.seed import seed_due
from bot.offline.harness import SANDBOX_TOKEN
from bot.offline.sandbox import SandboxBotAPI
from scheduler.clock import SystemClock
from scheduler.db import make_engine, migrate
from scheduler.dispatcher import claim_due, expire_stale
from scheduler.models import MessageState, Priority
from scheduler.rows import PLANNED

BENCH_DB = "aftercare_bench"


async def fresh(url: str, name: str = BENCH_DB) -> str:
    """A migrated database: SQLite as given, PostgreSQL a new database `name` beside it."""
    if url.startswith("sqlite"):
        await asyncio.to_thread(migrate, url)
        return url
    admin = create_async_engine(url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as db:
        await db.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        await db.execute(sa.text(f"CREATE DATABASE {name}"))
    await admin.dispose()
    created = url.rsplit("/", 1)[0] + "/" + name
    await asyncio.to_thread(migrate, created)
    return created


_urls: dict[str, str] = {}


async def prepare(url: str, rows: int) -> float:
    """Seed `rows` pending messages, 1,000 of them due now; the seconds it took."""
    created = _urls[url] = await fresh(url)
    engine = make_engine(created)
    started = time.perf_counter()
    now = SystemClock().now()
    await seed_due(engine, count=1000, now=now, first_chat=1_000)
    later = max(0, rows - 1000) // 10
    await seed_due(
        engine,
        count=later,
        per_patient=10,
        now=now,
        due=timedelta(days=1),
        first_chat=10_000_000,
        priority=Priority.REMINDER,
    )
    async with engine.begin() as db:
        await db.execute(sa.text("ANALYZE"))
    await engine.dispose()
    return time.perf_counter() - started


async def due_again(url: str) -> None:
    """The 1,000 rows seeded due now (the others are due a day later) pending and due again,
    as if never tried: every start-up measured starts with the same work."""
    engine = make_engine(_urls[url])
    now = SystemClock().now()
    async with engine.begin() as db:
        await db.execute(
            PLANNED.update()
            .where(PLANNED.c.due_at < now + timedelta(hours=1))
            .values(
                state=MessageState.PENDING,
                due_at=now,
                not_before=now,
                expires_at=now + timedelta(hours=2),
                attempts=0,
                claimed_by=None,
                lease_until=None,
                last_error=None,
                sent_at=None,
                tg_message_id=None,
            )
        )
    await engine.dispose()


async def bench_claim(url: str, repeat: int = 7) -> list[float]:
    """Seconds per claim of 1,000 (expire + claim, one transaction, rolled back), sorted."""
    engine = make_engine(_urls[url])
    postgres = engine.dialect.name == "postgresql"
    times = []
    try:
        for i in range(repeat):
            async with engine.connect() as connection:
                session = AsyncSession(bind=connection)
                transaction = await connection.begin()
                now = SystemClock().now()
                started = time.perf_counter()
                await expire_stale(session=session, now=now)
                claimed = await claim_due(
                    session=session,
                    now=now,
                    worker_id=f"bench-{i}",
                    lease=timedelta(seconds=60),
                    limit=1000,
                    skip_locked=postgres,
                )
                times.append(time.perf_counter() - started)
                if len(claimed) < 900:
                    raise RuntimeError(f"expected 1,000 due rows, claimed {len(claimed)}")
                await transaction.rollback()
                await session.close()
    finally:
        await engine.dispose()
    return sorted(times)


def memory(pid: int) -> tuple[float, float]:
    """(resident, peak resident) in MB, from /proc."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


async def startup(
    command: list[str], env_for: Callable[[str], dict[str, str]], workdir: Path
) -> tuple[float, float, float]:
    """`command` started against a sandbox Bot API (`env_for(base URL)` in its environment):
    seconds until it polls, then RSS and peak RSS in MB while it delivers what is due."""
    async with SandboxBotAPI(SANDBOX_TOKEN, clock=SystemClock()) as api:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AFTERCARE_")}
        env.update(env_for(api.base_url))
        started = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            *command,
            env=env,
            cwd=workdir,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            await api.wait_for(lambda: api.calls["getUpdates"] >= 1, timeout=120)
            ready = time.perf_counter() - started
            await asyncio.sleep(3)  # delivering the due rows meanwhile
            rss, peak = memory(proc.pid)
            if not api.calls["sendMessage"]:
                # The memory of a bot that delivers nothing is not a figure.
                raise RuntimeError(f"{' '.join(command[1:])} sent nothing in 3 s of due rows")
        finally:
            proc.send_signal(signal.SIGTERM)
            await proc.wait()
    return ready, rss, peak


async def bench_startup(url: str, workdir: Path) -> tuple[float, float, float]:
    """`python -m bot run` on the seeded database, its 1,000 due rows due again: seconds
    until it polls, RSS, peak RSS."""
    await due_again(url)

    def env(base_url: str) -> dict[str, str]:
        return bot_env(_urls[url], base_url)

    return await startup([sys.executable, "-m", "bot", "run"], env, workdir)


def bot_env(database_url: str, base_url: str) -> dict[str, str]:
    """The settings of `python -m bot run` against a sandbox Bot API at `base_url`."""
    return {
        "AFTERCARE_BOT_TOKEN": SANDBOX_TOKEN,
        "AFTERCARE_BOT_API_BASE_URL": base_url,
        "AFTERCARE_DATABASE_URL": database_url,
        "AFTERCARE_LOG_LEVEL": "WARNING",
    }
