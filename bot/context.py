"""Services handed to every handler through a typed context (no module-level singletons)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import msgspec
from sqlalchemy.ext.asyncio import AsyncEngine
from telegram.ext import Application, CallbackContext, ExtBot

from bot.settings import Settings
from messages.protocol import Protocol
from scheduler.care import ClinicInfo
from scheduler.clock import Clock
from scheduler.db import SessionFactory
from scheduler.dispatcher import Dispatcher
from scheduler.ratelimit import RateLimiter

if TYPE_CHECKING:  # prometheus-client is loaded only by a process that serves HTTP
    from bot.serve.health import Metrics
    from bot.telegram_sender import PaidBroadcastBot


class Services(msgspec.Struct):
    """Built once in `build_application`; the dispatcher is attached at start-up."""

    settings: Settings
    engine: AsyncEngine
    sessions: SessionFactory
    clock: Clock
    protocol: Protocol
    clinic: ClinicInfo
    dispatcher: Dispatcher | None = None
    limiter: RateLimiter | None = None  # the process's one rate limiter (bot/delivery.py)
    paid_bot: PaidBroadcastBot | None = None  # the dispatcher's, for paid broadcasts
    metrics: Metrics | None = None  # counted when the process serves /metrics

    def poke(self) -> None:
        """Something was planned: let the dispatcher look now."""
        if self.dispatcher is not None:
            self.dispatcher.poke()


class AppContext(CallbackContext[ExtBot[None], dict[Any, Any], dict[Any, Any], dict[Any, Any]]):
    """`context.services` instead of reaching into `bot_data` by string everywhere."""

    @property
    def services(self) -> Services:
        return cast(Services, self.application.bot_data["services"])


AftercareApp = Application[
    ExtBot[None], AppContext, dict[Any, Any], dict[Any, Any], dict[Any, Any], Any
]
