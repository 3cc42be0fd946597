"""Reminders stay on time while an import and a clinic-wide replan run.

The bot runs as `python -m bot run` (its own process), against the sandbox Bot API in another
process (bench/sandbox_process.py); reminders fall due all through the window, a few a
second; meanwhile this process runs `aftercare import` of 10,000 appointments and then
`aftercare replan` of those sessions, as the commands run them (their batches commit as they
go, on the same database: SQLite, and PostgreSQL when the bench has one). Lateness: when the
sandbox received each reminder, against its due time (both on the machine's monotonic clock).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

from bench.broadcast import p99, sandbox_process
from bench.claim import bot_env, fresh
from bench.seed import Reminders
from bench.writes import IMPORTS, Figure, import_and_replan, prepared
from scheduler.clock import SystemClock
from scheduler.db import make_engine

REMINDER_CHAT = 8_000_000
IMPORTED_CHAT = 30_000_000
REMINDERS = 300
WINDOW = 30.0  # seconds over which the reminders fall due
FIRST_DUE = 3.0  # the bot is polling by then


async def bench_lateness(url: str, workdir: Path) -> str:
    """The figure on the database at `url` (SQLite: that file; PostgreSQL: a new database
    beside it)."""
    url = await fresh(url, "aftercare_bench_lateness")
    clock = SystemClock()
    engine = make_engine(url)
    backend = engine.dialect.name
    bulk = await prepared(engine, IMPORTS, IMPORTED_CHAT)
    reminders = Reminders(REMINDERS, REMINDER_CHAT, FIRST_DUE, WINDOW)
    await reminders.seed(engine, clock.now())
    seeded = time.monotonic()
    # The imported patients are on Telegram too: their booking confirmations go out as well.
    chats = [(REMINDER_CHAT, REMINDERS), (IMPORTED_CHAT, IMPORTS)]
    # The bot's own log (warnings and errors only) is kept in the work folder.
    async with sandbox_process(chats) as sandbox:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AFTERCARE_")}
        env.update(bot_env(url, await sandbox.base_url()))
        with (workdir / "bot.log").open("w") as log:
            bot = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bot",
                "run",
                env=env,
                cwd=workdir,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )
        try:
            await asyncio.sleep(max(0.0, seeded + FIRST_DUE - time.monotonic()))
            imported, replanned = await import_and_replan(engine, bulk)
            await asyncio.sleep(max(0.0, seeded + FIRST_DUE + WINDOW + 2 - time.monotonic()))
            report = await sandbox.report()
        finally:
            bot.send_signal(signal.SIGTERM)
            await bot.wait()
    await engine.dispose()
    sends = report["sends"]
    assert isinstance(sends, list)
    arrived = reminders.arrived(sends)

    def late(figure: Figure) -> str:
        """The lateness of the reminders due while `figure`'s work ran."""
        values = []
        for i, at in arrived.items():
            due = reminders.due(i, seeded)
            if figure.began <= due <= figure.ended:
                values.append(at - due)
        if not values:
            return "no reminder due meanwhile"
        return (
            f"{len(values)} due meanwhile, p99 late {p99(values):.2f} s, max {max(values):.2f} s"
        )

    return (
        f"[lateness {backend}] the bot running, reminders due while importing {IMPORTS:,}"
        " appointments"
        f" ({imported.sessions_per_s:,.0f} sessions/s): {late(imported)}; while replanning"
        f" them ({replanned.sessions_per_s:,.0f} sessions/s): {late(replanned)} (target:"
        f" p99 < 2 s); {len(arrived)}/{REMINDERS} reminders delivered"
    )
