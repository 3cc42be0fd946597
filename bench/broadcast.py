"""A broadcast through the real limiter and sender, into a sandbox that enforces 30/s."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from datetime import timedelta
from pathlib import Path

from telegram.ext import ExtBot

from bench.seed import seed_due
from bot.delivery import limiter_of
from bot.offline.harness import SANDBOX_TOKEN
from bot.offline.sandbox import ApiError, SandboxBotAPI, _Params
from bot.pacing import PacedRateLimiter
from bot.settings import Settings
from bot.telegram_sender import TelegramSender
from messages.protocol import default_protocol_path, load_protocol
from scheduler import compose
from scheduler.care import ClinicInfo
from scheduler.clock import SystemClock
from scheduler.db import make_engine, make_session_factory, migrate
from scheduler.dispatcher import Dispatcher
from scheduler.models import Priority

TELEGRAM_PER_SECOND = 30


class StrictSandbox(SandboxBotAPI):
    """Answers 429 (retry after 1 s) to a sendMessage that would be the 31st in a second."""

    def __init__(self) -> None:
        super().__init__(SANDBOX_TOKEN, clock=SystemClock())
        self.window: deque[float] = deque()
        self.received_at: dict[int, float] = {}
        self.too_many = 0

    async def _send_message(self, params: _Params) -> dict[str, object]:
        now = time.perf_counter()
        while self.window and self.window[0] <= now - 1.0:
            self.window.popleft()
        if len(self.window) >= TELEGRAM_PER_SECOND:
            self.too_many += 1
            raise ApiError(429, "Too Many Requests: retry after 1", retry_after=1)
        self.window.append(now)
        result = await super()._send_message(params)
        self.received_at.setdefault(int(params.get_str("chat_id") or 0), now)
        return result


async def bench_broadcast(_url: str, recipients: int) -> dict[str, object]:
    """`recipients` broadcast rows due now, and 10 reminders falling due while it runs."""
    tmp = Path(_url.split("///", 1)[1]).parent / "broadcast.db"
    url = f"sqlite+aiosqlite:///{tmp}"
    await asyncio.to_thread(migrate, url)
    engine = make_engine(url)
    clock = SystemClock()
    duration = recipients / TELEGRAM_PER_SECOND
    start = clock.now()
    bulk = await seed_due(
        engine, count=recipients, now=start, priority=Priority.BROADCAST, first_chat=1_000_000
    )
    lead = timedelta(seconds=2)
    spread = timedelta(seconds=max(1.0, duration - 4))
    reminders = await seed_due(
        engine, count=10, now=start, due=lead, spread=spread, first_chat=2_000_000
    )
    api = StrictSandbox()
    limiter = limiter_of(Settings.model_validate({}), clock)
    async with api:
        for chat in bulk.chat_ids + reminders.chat_ids:
            api.user(chat).started = True
        bot: ExtBot[str] = ExtBot(
            SANDBOX_TOKEN, base_url=api.base_url, rate_limiter=PacedRateLimiter(limiter)
        )
        await bot.initialize()
        protocol = load_protocol(default_protocol_path())
        dispatcher = Dispatcher(
            sessions=make_session_factory(engine),
            sender=TelegramSender(bot),
            clock=clock,
            composer=compose.Composer(protocol, ClinicInfo("Bench", "UTC", "-", "-")),
            worker_id="bench",
            limiter=limiter,
        )
        started = time.perf_counter()
        await dispatcher.start()
        everyone = bulk.chat_ids + reminders.chat_ids
        await api.wait_for(
            lambda: all(c in api.received_at for c in everyone), timeout=duration * 3 + 30
        )
        await dispatcher.stop()
        await bot.shutdown()
    await engine.dispose()
    bulk_times = sorted(api.received_at[c] for c in bulk.chat_ids)
    rate = (len(bulk_times) - 1) / (bulk_times[-1] - bulk_times[0])
    delays = []
    for i, chat in enumerate(reminders.chat_ids):
        due = lead.total_seconds() + spread.total_seconds() * i / len(reminders.chat_ids)
        delays.append(api.received_at[chat] - started - due)
    return {
        "recipients": recipients,
        "rate_per_s": round(rate, 2),
        "of_allowed": f"{rate / TELEGRAM_PER_SECOND:.1%}",
        "429s": api.too_many,
        "reminder_delay_max_s": round(max(delays), 2),
        "reminder_delay_median_s": round(sorted(delays)[len(delays) // 2], 2),
    }
