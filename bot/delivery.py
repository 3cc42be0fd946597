"""Building the delivery side of a process: the rate limiter and the dispatcher."""

from __future__ import annotations

import os
import socket
from datetime import timedelta

from telegram import Bot

from bot.context import Services
from bot.settings import Settings
from bot.telegram_sender import PaidBroadcastBot, TelegramSender
from bot.transport import AiohttpRequest
from scheduler import compose
from scheduler.clock import Clock
from scheduler.dispatcher import Dispatcher, RetryPolicy
from scheduler.leader import AdvisoryLockLeader
from scheduler.ratelimit import Limits, RateLimiter

# The overall window is stretched a little (30 per 1.03 s rather than per 1 s): requests
# reach Telegram with some jitter, and one 429 pauses every send.
SAFETY = 0.97


def limiter_of(settings: Settings, clock: Clock) -> RateLimiter:
    """Telegram's limits from the settings.

    Under a simulated clock (the demo, tests through the harness) a day of the patient's
    time passes in milliseconds, so real-time pacing per chat and per group would only make
    them wait for nothing: there only the overall limit applies. The per-chat and group
    limits are tested on virtual time (tests/test_ratelimit.py) and by real processes.
    """
    allowed = settings.rate_overall_per_second
    simulated = clock.real_time_for(clock.now() + timedelta(days=1)) is None
    unlimited = 1_000_000.0
    return RateLimiter(
        Limits(
            overall_per_second=allowed * SAFETY,
            overall_burst=max(1, round(allowed)),
            paid_per_second=settings.rate_paid_broadcast_per_second * SAFETY,
            chat_per_second=unlimited if simulated else settings.rate_chat_per_second,
            group_per_minute=unlimited if simulated else settings.rate_group_per_minute,
        )
    )


def paid_broadcast_bot(token: str, base_url: str) -> PaidBroadcastBot:
    """The bot the dispatcher sends paid broadcasts with: the application's token and Bot API,
    connections of its own over aiohttp (bot/transport.py: httpx's CPU per request alone
    would keep a paid broadcast far below Telegram's 1,000 a second; aiohttp is loaded at
    the first paid message, so a process that sends none never pays its 8 MB). No limiter
    hook: the dispatcher waits for each send's slot itself. It needs no getMe: only its
    connections are opened and closed (`bot.request`)."""
    transport = AiohttpRequest()
    return PaidBroadcastBot(
        token, base_url=base_url, request=transport, get_updates_request=transport
    )


def dispatcher_for(services: Services, bot: Bot, *, tag: str) -> Dispatcher:
    """The process's dispatcher, sending with `bot` (paid broadcasts with the services'
    `paid_bot`); on PostgreSQL it delivers only while it holds the lock."""
    settings = services.settings
    postgres = settings.database_url.startswith("postgresql")
    dispatcher = Dispatcher(
        sessions=services.sessions,
        sender=TelegramSender(
            bot, timeout=settings.send_timeout_seconds, paid_bot=services.paid_bot
        ),
        clock=services.clock,
        composer=compose.Composer(services.protocol, services.clinic),
        worker_id=f"{socket.gethostname()}:{os.getpid()}:{tag}"[:64],
        batch=settings.dispatch_batch,
        lease=timedelta(seconds=settings.lease_seconds),
        concurrency=settings.dispatch_concurrency,
        retry=RetryPolicy(base=settings.retry_base_seconds),
        is_postgres=postgres,
        limiter=services.limiter,
        leader=AdvisoryLockLeader(services.engine) if postgres else None,
        poll_seconds=settings.leader_poll_seconds,
    )
    dispatcher.observer = services.metrics
    return dispatcher
