"""Broadcasts through the real limiter, Telegram sender and dispatcher, into a sandbox Bot API
in a process of its own (bench/sandbox_process.py) that enforces Telegram's limits: 429 past
30 messages in any second, or past 1,000 for messages sent with `allow_paid_broadcast`.

A broadcast to 100,000 patients is queued (issue 11: far more than the window delivers, so
each claim has the whole backlog behind it), and the rate is measured over a window after
the first second; reminders fall due all through the window, and their lateness
is measured. Once without, once with the clinic's paid broadcasts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from telegram.ext import ExtBot

from bench.seed import Reminders, seed_broadcast
from bot.delivery import limiter_of, paid_broadcast_bot
from bot.offline.harness import SANDBOX_TOKEN
from bot.pacing import PacedRateLimiter
from bot.settings import Settings
from bot.telegram_sender import TelegramSender
from messages.protocol import default_protocol_path, load_protocol
from scheduler import compose
from scheduler.care import ClinicInfo
from scheduler.clock import SystemClock
from scheduler.db import make_engine, make_session_factory, migrate
from scheduler.dispatcher import Dispatcher
from scheduler.models import MessageState
from scheduler.rows import PLANNED

FREE_PER_SECOND = 30
PAID_PER_SECOND = 1000
BULK_CHAT = 1_000_000
REMINDER_CHAT = 9_000_000
REMINDERS = 10


@contextlib.asynccontextmanager
async def delivering(engine: AsyncEngine, base_url: str) -> AsyncIterator[Dispatcher]:
    """The delivery side as `aftercare run` builds it (the limiter from the settings, the
    Telegram sender, the dispatcher), over `engine`, against the Bot API at `base_url`."""
    clock = SystemClock()
    limiter = limiter_of(Settings.model_validate({}), clock)
    bot: ExtBot[str] = ExtBot(
        SANDBOX_TOKEN, base_url=base_url, rate_limiter=PacedRateLimiter(limiter)
    )
    await bot.initialize()
    paid_bot = paid_broadcast_bot(SANDBOX_TOKEN, base_url)
    dispatcher = Dispatcher(
        sessions=make_session_factory(engine),
        sender=TelegramSender(bot, paid_bot=paid_bot),
        clock=clock,
        composer=compose.Composer(
            load_protocol(default_protocol_path()), ClinicInfo("Bench", "UTC", "-", "-")
        ),
        worker_id="bench",
        limiter=limiter,
    )
    await dispatcher.start()
    try:
        yield dispatcher
    finally:
        await dispatcher.stop()
        await paid_bot.request.shutdown()
        await bot.shutdown()


async def undelivered(engine: AsyncEngine) -> int:
    """Rows still pending or being sent."""
    async with engine.connect() as db:
        query = sa.select(sa.func.count()).where(
            PLANNED.c.state.in_([MessageState.PENDING, MessageState.SENDING])
        )
        return int((await db.execute(query)).scalar_one())


@dataclass(frozen=True)
class Mode:
    name: str
    paid: bool
    allowed: int  # messages a second Telegram takes
    queued: int  # more than the window can deliver
    window: float  # seconds measured, after the first second's burst


FREE = Mode("free", paid=False, allowed=FREE_PER_SECOND, queued=100_000, window=15.0)
PAID = Mode("paid", paid=True, allowed=PAID_PER_SECOND, queued=100_000, window=8.0)


@contextlib.asynccontextmanager
async def sandbox_process(users: list[tuple[int, int]]) -> AsyncIterator[SandboxProcess]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.sandbox_process",
        *(f"--user={first}:{count}" for first, count in users),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        limit=1 << 26,  # a report is one JSON line with every send
    )
    try:
        yield SandboxProcess(proc)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        await proc.wait()


class SandboxProcess:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self._proc = proc

    async def _line(self) -> bytes:
        assert self._proc.stdout is not None
        line = await asyncio.wait_for(self._proc.stdout.readline(), 30)
        if not line:
            raise RuntimeError("the sandbox process ended")
        return line

    async def base_url(self) -> str:
        return (await self._line()).decode().strip()

    async def report(self) -> dict[str, object]:
        assert self._proc.stdin is not None
        self._proc.stdin.write(b"report\n")
        await self._proc.stdin.drain()
        report: dict[str, object] = json.loads(await self._line())
        return report


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def bench_mode(workdir: Path, mode: Mode) -> dict[str, object]:
    """A broadcast of `mode.queued` from a clinic that (does not) allow paid broadcasts, with
    reminders falling due meanwhile: its rate over the window, 429s, reminders' lateness."""
    url = f"sqlite+aiosqlite:///{workdir / f'broadcast-{mode.name}.db'}"
    await asyncio.to_thread(migrate, url)
    engine = make_engine(url)
    clock = SystemClock()
    await seed_broadcast(
        engine, count=mode.queued, now=clock.now(), paid=mode.paid, first_chat=BULK_CHAT
    )
    users = [(BULK_CHAT, mode.queued), (REMINDER_CHAT, REMINDERS)]
    async with sandbox_process(users) as sandbox:
        base_url = await sandbox.base_url()
        # Reminders due from the first second to the end of the window, relative to now.
        reminders = Reminders(REMINDERS, REMINDER_CHAT, first_due=1.0, window=mode.window)
        await reminders.seed(engine, clock.now())
        started = time.monotonic()
        async with delivering(engine, base_url):
            await asyncio.sleep(1.0 + mode.window + 0.5)
        report = await sandbox.report()
    await engine.dispose()
    sends = report["sends"]
    assert isinstance(sends, list)
    ok = [(int(c), float(t), bool(paid)) for c, t, status, paid in sends if status == 200]
    low, high = started + 1.0, started + 1.0 + mode.window
    window = [(c, t) for c, t, _ in ok if low <= t < high]
    rate = sum(1 for c, _ in window if c < REMINDER_CHAT) / mode.window
    late = [at - reminders.due(i, started) for i, at in reminders.arrived(sends).items()]
    return {
        "queued": mode.queued,
        "rate_per_s": round(rate, 1),
        "of_allowed": round(rate / mode.allowed, 3),
        # With the reminders, which share the budget in the free mode.
        "all_sends_of_allowed": round(len(window) / mode.window / mode.allowed, 3),
        "429s": report["too_many"],
        "paid_flags": sum(1 for _, _, paid in ok if paid),
        "paid_messages": report["paid_messages"],
        "stars": report["stars"],
        "reminders_delivered": f"{len(late)}/{REMINDERS}",
        "reminder_late_p99_s": round(p99(late), 2) if late else None,
    }


async def bench_broadcast(workdir: Path) -> list[str]:
    """One line of figures per mode, with the targets."""
    lines = []
    for mode in (FREE, PAID):
        figures = await bench_mode(workdir, mode)
        shown = ", ".join(f"{k}={v}" for k, v in figures.items())
        lines.append(
            f"[broadcast {mode.name}] {mode.allowed}/s allowed: {shown} "
            "(target: of_allowed >= 0.93, 429s = 0, reminder_late_p99_s < 2)"
        )
    return lines
