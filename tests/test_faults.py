"""Fault tests with real bot processes: kill -9, SIGTERM, two processes, a lost database.

The sandbox Bot API runs in the test process on the system clock; the bot is `python -m bot
run`, a subprocess on the same database as the test, which seeds it directly. Each test
prints its figures (docs/delivery.md records them).
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.seed import Seeded, seed_due, states
from bot.offline.harness import SANDBOX_TOKEN
from bot.offline.sandbox import SandboxBotAPI
from messages.render import available_languages
from scheduler.clock import SystemClock
from tests.conftest import _admin
from tests.procs import BotProcess, all_recorded, open_chats, received, report

pytestmark = pytest.mark.slow

N = 2000
# Each process sets one command menu per language when it starts (bot/app.py).
MENUS = len(available_languages())
WINDOW = 10  # dispatch_concurrency: sends in flight at any instant (docs/delivery.md)


@dataclass(frozen=True)
class Rig:
    """What every fault test needs: the database, the sandbox, a folder, the terminal."""

    engine: AsyncEngine
    api: SandboxBotAPI
    db_url: str
    tmp_path: Path
    capsys: pytest.CaptureFixture[str]

    def report(self, title: str, figures: Mapping[str, object]) -> None:
        report(self.capsys, title, figures)


@pytest.fixture
def rig(
    engine: AsyncEngine,
    api: SandboxBotAPI,
    db_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> Rig:
    return Rig(engine, api, db_url, tmp_path, capsys)


async def seed(engine: AsyncEngine, api: SandboxBotAPI, count: int = N, **kw: object) -> Seeded:
    seeded = await seed_due(engine, count=count, now=SystemClock().now(), **kw)  # type: ignore[arg-type]
    open_chats(api, seeded.chat_ids)
    return seeded


def sends(api: SandboxBotAPI) -> int:
    return api.calls["sendMessage"]


async def all_received(api: SandboxBotAPI, seeded: Seeded, timeout: float) -> None:  # noqa: ASYNC109
    chats = seeded.chat_ids

    def done() -> bool:
        return sends(api) >= len(chats) and all(api.chat(c).sent_count for c in chats)

    await api.wait_for(done, timeout=timeout, what="every seeded patient's message")


def figures(api: SandboxBotAPI, seeded: Seeded, final: dict[int, str]) -> dict[str, int]:
    counts = received(api, seeded.chat_ids)
    return {
        "messages": len(seeded.chat_ids),
        "lost": sum(1 for n in counts.values() if n == 0),
        "duplicates": sum(n - 1 for n in counts.values() if n > 1),
        "not_sent": sum(1 for s in final.values() if s != "sent"),
        **{
            s: n for s in ("pending", "sending") if (n := sum(1 for v in final.values() if v == s))
        },
    }


def assert_clean_logs(*bots: BotProcess) -> None:
    secret = SANDBOX_TOKEN.partition(":")[2]
    for bot in bots:
        logs = bot.logs()
        assert "delivery message=" in logs
        assert SANDBOX_TOKEN not in logs and secret not in logs


async def test_kill_9_five_times_loses_nothing(rig: Rig) -> None:
    engine, api, db_url, tmp_path = rig.engine, rig.api, rig.db_url, rig.tmp_path
    seeded = await seed(engine, api)
    rng = random.Random(4)
    async with BotProcess(api, db_url, tmp_path) as bot:
        for _ in range(5):
            target = sends(api) + rng.randint(1, 150)
            await bot.start()
            await api.wait_for(lambda t=target: sends(api) >= t, timeout=30)  # type: ignore[misc]
            await asyncio.sleep(rng.uniform(0, 0.1))  # a random instant while delivering
            await bot.kill()
        before_final = sends(api)
        await bot.start()
        await all_received(api, seeded, timeout=60)
        await all_recorded(engine, timeout=30)
        assert await bot.terminate() == 0
    found = figures(api, seeded, await states(engine))
    rig.report(
        f"crash {engine.dialect.name}",
        {"kills": 5, **found, "window": WINDOW, "sent_before_last_start": before_final},
    )
    assert found["lost"] == 0 and found["not_sent"] == 0
    assert found["duplicates"] <= 5 * WINDOW
    assert_clean_logs(bot)


async def test_sigterm_leaves_nothing_sending_and_a_restart_finishes(rig: Rig) -> None:
    engine, api, db_url, tmp_path = rig.engine, rig.api, rig.db_url, rig.tmp_path
    seeded = await seed(engine, api, count=600)
    # A real rate (a few hundred a second) so that the stop lands mid-delivery.
    rate = {"AFTERCARE_RATE_OVERALL_PER_SECOND": "200"}
    async with BotProcess(api, db_url, tmp_path, env=rate) as bot:
        await bot.start()
        await api.wait_for(lambda: sends(api) >= 100, timeout=30)
        loop = asyncio.get_running_loop()
        asked = loop.time()
        assert await bot.terminate() == 0
        stop_seconds = loop.time() - asked
        midway = await states(engine)
        await bot.start()
        await all_received(api, seeded, timeout=60)
        assert await bot.terminate() == 0
    at_stop = {s: sum(1 for v in midway.values() if v == s) for s in set(midway.values())}
    found = figures(api, seeded, await states(engine))
    rig.report(
        f"sigterm {engine.dialect.name}",
        {**found, "at_stop": at_stop, "stop_seconds": round(stop_seconds, 2)},
    )
    assert "sending" not in at_stop
    assert 0 < at_stop.get("pending", 0) < 600
    assert found["lost"] == found["duplicates"] == found["not_sent"] == 0
    assert_clean_logs(bot)


@pytest.mark.parametrize("backend", ["postgres"])
async def test_two_processes_on_postgresql_send_nothing_twice_and_take_over(rig: Rig) -> None:
    engine, api, db_url, tmp_path = rig.engine, rig.api, rig.db_url, rig.tmp_path
    seeded = await seed(engine, api)
    env = {"AFTERCARE_RATE_OVERALL_PER_SECOND": "1000"}
    first = BotProcess(api, db_url, tmp_path, name="first", env=env)
    second = BotProcess(api, db_url, tmp_path, name="second", env=env)
    loop = asyncio.get_running_loop()
    async with first, second:
        await first.start()
        await api.wait_for(lambda: sends(api) >= 200, timeout=30)
        await second.start()
        await api.wait_for(lambda: api.calls["setMyCommands"] >= 2 * MENUS, timeout=30)
        await api.wait_for(lambda: sends(api) >= 800, timeout=30)
        # The active one stops; the stand-by takes over at its next try of the lock.
        assert await first.terminate() == 0
        stopped, at = loop.time(), sends(api)
        await api.wait_for(lambda: sends(api) > at, timeout=30)
        takeover = loop.time() - stopped
        # Both running again, then the active one dies (kill -9): the lock goes with its
        # connection, and the stand-by takes over at its next try.
        await first.start()
        await api.wait_for(lambda: api.calls["setMyCommands"] >= 3 * MENUS, timeout=30)
        await api.wait_for(lambda: sends(api) >= 1400, timeout=30)
        clean = figures(api, seeded, {})
        await second.kill()
        killed, at = loop.time(), sends(api)
        await api.wait_for(lambda: sends(api) > at, timeout=30)
        takeover_after_kill = loop.time() - killed
        await all_received(api, seeded, timeout=60)
        await all_recorded(engine, timeout=30)
        assert await first.terminate() == 0
    found = figures(api, seeded, await states(engine))
    rig.report(
        "two processes postgresql",
        {
            "messages": N,
            "duplicates_while_both_ran": clean["duplicates"],
            "takeover_after_stop_s": round(takeover, 2),
            "takeover_after_kill_s": round(takeover_after_kill, 2),
            "duplicates_after_kill": found["duplicates"],
            "lost": found["lost"],
            "not_sent": found["not_sent"],
        },
    )
    assert clean["duplicates"] == 0
    assert found["lost"] == found["not_sent"] == 0
    assert found["duplicates"] <= WINDOW  # only the killed process's sends in flight
    assert takeover < 5 and takeover_after_kill < 5
    assert "standing by" in second.logs() and "standing by" in first.logs()
    assert_clean_logs(first, second)


async def test_database_unavailable_then_back_catches_up(rig: Rig, backend: str) -> None:
    engine, api, db_url, tmp_path = rig.engine, rig.api, rig.db_url, rig.tmp_path
    # Due in 6 s: the bot is up and idle by then, and the database is gone when they fall due.
    loop = asyncio.get_running_loop()
    due = loop.time() + 6
    seeded = await seed(engine, api, count=300, due=timedelta(seconds=6))
    await engine.dispose()
    async with BotProcess(api, db_url, tmp_path) as bot:
        await bot.start()
        await api.wait_for(lambda: api.calls["getUpdates"] >= 1, timeout=30)
        assert loop.time() < due - 0.5, "the bot took too long to start"
        async with _unavailable(db_url, backend):
            gone = loop.time()
            await asyncio.sleep(due + 2 - gone)  # a real outage of the database, past due
            assert sends(api) == 0
        back = loop.time()
        await all_received(api, seeded, timeout=30)
        caught_up = loop.time() - back
        assert bot.running
        assert await bot.terminate() == 0
    found = figures(api, seeded, await states(engine))
    rig.report(
        f"database {'locked' if backend == 'sqlite' else 'unavailable'} {backend}",
        {
            **found,
            "outage_seconds": round(back - gone, 1),
            "caught_up_seconds": round(caught_up, 1),
        },
    )
    assert found["lost"] == found["duplicates"] == found["not_sent"] == 0
    assert_clean_logs(bot)


class _unavailable:
    """SQLite: an exclusive lock held by another connection; PostgreSQL: connections to the
    database refused and the open ones terminated."""

    def __init__(self, db_url: str, backend: str) -> None:
        self.url = db_url
        self.backend = backend
        self.name = db_url.rsplit("/", 1)[1]
        self.lock: sqlite3.Connection | None = None

    async def __aenter__(self) -> None:
        if self.backend == "sqlite":
            self.lock = sqlite3.connect(self.url.split("///", 1)[1], isolation_level=None)
            self.lock.execute("BEGIN EXCLUSIVE")
            return
        await _admin(f"ALTER DATABASE {self.name} ALLOW_CONNECTIONS false")
        await _admin(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{self.name}' AND pid <> pg_backend_pid()"
        )

    async def __aexit__(self, *exc: object) -> None:
        if self.lock is not None:
            self.lock.execute("ROLLBACK")
            self.lock.close()
            return
        await _admin(f"ALTER DATABASE {self.name} ALLOW_CONNECTIONS true")
