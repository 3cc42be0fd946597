"""Whose turn it is: how many updates the bot handles at once, and in which order.

python-telegram-bot handles one update at a time unless told otherwise, and a turn waits for
Telegram too (answering a button, sending the reply): with Telegram a continent away, a
patient who writes while forty others are answered waits for all forty. `ChatTurns` lets
turns of different chats run side by side, and keeps each chat's own in the order they came
(one chat's turn reads what the turn before it wrote).

Side by side only on PostgreSQL (`side_by_side`): its server runs each connection's
statements in a process of its own, and a patient's turn locks only that patient's rows.
SQLite runs a patient's turn on the event loop, one writer at a time, so it keeps one turn
at a time, as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from telegram import Update
from telegram.ext import BaseUpdateProcessor

from scheduler.db import is_sqlite

SIDE_BY_SIDE = 8
"""Turns at once on PostgreSQL. Each holds a pooled connection for its transaction (the
engine keeps 10, and the dispatcher's batch takes one)."""


def side_by_side(database_url: str) -> int:
    """How many turns the bot takes at once on this database."""
    return 1 if is_sqlite(database_url) else SIDE_BY_SIDE


def turn_key(update: object) -> int | None:
    """Whose turns an update joins: its chat's (a button's too), else its user's; None for
    an update of no one (handled whenever there is room)."""
    if not isinstance(update, Update):
        return None
    if update.effective_chat is not None:
        return update.effective_chat.id
    if update.effective_user is not None:
        return update.effective_user.id
    return None


class ChatTurns(BaseUpdateProcessor):
    """Up to `max_concurrent_updates` turns at once (PTB's semaphore), each chat's in the
    order PTB took them from its queue. `on_done` callbacks hear of each update handled (the
    poller writes the offset from them: bot/serve/polling.py)."""

    def __init__(self, max_concurrent_updates: int) -> None:
        super().__init__(max_concurrent_updates)
        self._chats: dict[int, asyncio.Lock] = {}
        self._waiting: dict[int, int] = {}
        self.on_done: list[Callable[[object], None]] = []

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        key = turn_key(update)
        try:
            if key is None:
                await coroutine
                return
            # Taken in queue order: PTB starts each update's task in the order it queued
            # them, both semaphores and locks wake their waiters first come, first served,
            # and nothing awaits between the semaphore and this lock.
            lock = self._chats.setdefault(key, asyncio.Lock())
            self._waiting[key] = self._waiting.get(key, 0) + 1
            try:
                async with lock:
                    await coroutine
            finally:
                self._waiting[key] -= 1
                if not self._waiting[key]:
                    del self._waiting[key], self._chats[key]
        finally:
            for done in self.on_done:
                done(update)

    async def initialize(self) -> None:
        """Nothing to set up."""

    async def shutdown(self) -> None:
        """Nothing to close."""
