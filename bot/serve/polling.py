"""Long polling by the leader only, resuming where the last leader stopped.

Telegram answers a second concurrent getUpdates of one bot with 409 Conflict and cuts the
first one short: two processes that both poll keep cutting each other's polls. So only the
process whose dispatcher leads (it holds the PostgreSQL advisory lock, scheduler/leader.py;
with SQLite the one process always leads) polls, and a stand-by starts polling when it
takes the lead, within a lock try (`leader_poll_seconds`) of the leader stopping or dying.

PTB's own poller is not used: it asks Telegram for the next batch as soon as it has queued
one, which tells Telegram the queued updates were received, so a leader killed with updates
in its queue would lose them. Here each update goes through the application's queue and is
handled before its offset is written to the database (scheduler/updates.py); Telegram is
asked for more only after that. A process that takes over resumes from the stored offset:
Telegram still holds every update after it.

Updates of different chats are handled side by side on PostgreSQL (bot/turns.py: up to
`SIDE_BY_SIDE`, each chat's in order), one at a time on SQLite. The stored offset only ever
passes updates handled, all of them: an update finished while an earlier one is still in
hand waits for it (`Handled`). So the updates in hand when a leader died are handled again
by the next one: at most one per crash on SQLite, at most `SIDE_BY_SIDE` on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable
from typing import Any

from telegram import Update
from telegram.error import Conflict, NetworkError, RetryAfter, TelegramError

from bot.context import AftercareApp, Services
from bot.turns import ChatTurns
from scheduler import failures, updates

log = logging.getLogger("aftercare.polling")

LONG_POLL_SECONDS = 10  # how long Telegram holds a getUpdates open when nothing comes
LONGEST_WAIT = 30.0


def telegram_trouble(exc: BaseException) -> str:
    """Why Telegram did not answer, in a few words (never the token)."""
    if isinstance(exc, RetryAfter):
        return "too many requests"
    cause = exc.__cause__ or exc.__context__
    if isinstance(exc, NetworkError) and cause is not None:
        return type(cause).__name__
    return type(exc).__name__


class Handled:
    """The updates given to the application, in order, and the next one to ask Telegram for:
    the first of them still in hand (or after the last, when none is)."""

    def __init__(self) -> None:
        self._given: deque[int] = deque()
        self._in_hand: set[int] = set()
        self._done: set[int] = set()

    @property
    def in_hand(self) -> int:
        return len(self._in_hand)

    def give(self, update_id: int) -> None:
        self._given.append(update_id)
        self._in_hand.add(update_id)

    def done(self, update_id: int) -> None:
        """An update handled (one this poller did not give, say webhook's, is not counted)."""
        if update_id in self._in_hand:
            self._in_hand.remove(update_id)
            self._done.add(update_id)

    def next_offset(self) -> int | None:
        """The offset past every update handled with none in hand before it (None: no more
        than before)."""
        offset = None
        while self._given and self._given[0] in self._done:
            self._done.remove(self._given[0])
            offset = self._given.popleft() + 1
        return offset


async def _one_handled(progress: asyncio.Event) -> None:
    """Until one more update in hand is handled (`progress` is set for each)."""
    progress.clear()
    await progress.wait()


class LeaderPolling:
    """Polls while this process leads; `stop` ends it after the updates in hand."""

    def __init__(self, application: AftercareApp, *, retry_seconds: float) -> None:
        self._application = application
        self._services: Services = application.bot_data["services"]
        self._retry = retry_seconds
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # The next update this process asks for, once it has handled one: kept when its
        # write to the database fails. An offset below Telegram's (another leader confirmed
        # more since) is harmless: Telegram no longer has those updates.
        self._offset: int | None = None
        # Set once it has asked Telegram for updates (or stands by, or could not): `start`.
        self._asked = asyncio.Event()

    async def start(self) -> None:
        """Poll in a task; return once it has asked Telegram for updates for the first time,
        or stands by, or could not (the runner wakes the dispatcher then: bot/serve/runner.py)."""
        self._task = asyncio.create_task(self._run(), name="leader-polling")
        asked = asyncio.ensure_future(self._asked.wait())
        await asyncio.wait({self._task, asked}, return_when=asyncio.FIRST_COMPLETED)
        asked.cancel()

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def _run(self) -> None:
        dispatcher = self._services.dispatcher
        assert dispatcher is not None, "start the services first"
        while not self._stopping.is_set():
            if not dispatcher.active:
                self._asked.set()  # standing by: nothing to ask Telegram for
            if not await self._first(dispatcher.until_leading()):
                return
            log.info("polling Telegram for updates (this process leads)")
            try:
                await self._lead()
            except Exception as exc:  # the database, mostly: the update in hand is handled
                self._asked.set()
                failures.report(log, f"polling stopped; polling again in {self._retry:.0f} s", exc)
                await self._first(asyncio.sleep(self._retry))
                continue
            if not self._stopping.is_set():
                log.info("not polling: another process leads (standing by)")

    async def _lead(self) -> None:
        """Poll and handle until this process stops leading or is stopped."""
        dispatcher = self._services.dispatcher
        assert dispatcher is not None
        bot = self._application.bot
        async with self._services.sessions() as db:
            stored = await updates.next_update(session=db, bot_id=bot.id)
        offset = max((o for o in (stored, self._offset) if o is not None), default=None)
        delay = self._retry
        while dispatcher.active and not self._stopping.is_set():
            fetch = asyncio.ensure_future(
                bot.get_updates(
                    offset=offset, timeout=LONG_POLL_SECONDS, allowed_updates=Update.ALL_TYPES
                )
            )
            self._asked.set()
            if not await self._first(fetch, dispatcher.until_standing_by()):
                return
            try:
                batch = fetch.result()
            except TelegramError as exc:
                if isinstance(exc, Conflict) and "webhook" in exc.message.lower():
                    # As PTB's own poller does at its start: polling mode takes over from a
                    # webhook left set (webhook mode before, or someone's setWebhook).
                    log.warning("a webhook is set for this bot; deleting it to poll")
                    try:
                        await bot.delete_webhook()
                        continue
                    except TelegramError as failed:
                        exc = failed  # told below, and tried again after the wait
                if isinstance(exc, Conflict):
                    log.warning(
                        "another process is polling Telegram with this bot token (409 Conflict);"
                        " polling again in %.0f s: run one bot per token, or use webhook mode",
                        delay,
                    )
                else:
                    log.warning(
                        "Telegram is not reachable (%s); polling again in %.0f s",
                        telegram_trouble(exc),
                        delay,
                    )
                await self._first(asyncio.sleep(delay))
                delay = min(delay * 2, LONGEST_WAIT)
                continue
            delay = self._retry
            handled_all = await self._handle(batch)
            offset = self._offset
            if not handled_all:
                return

    async def _handle(self, batch: tuple[Update, ...]) -> bool:
        """Give the batch's updates to the application, as many at once as its turns allow,
        writing the offset as the ones handled allow; False if this process stopped leading,
        or is stopping, before it gave them all (the next leader asks for the rest again).
        The updates given are handled before it returns, even when a write fails."""
        turns = self._application.update_processor
        assert isinstance(turns, ChatTurns), "build_application sets the bot's turns"
        handled, progress = Handled(), asyncio.Event()

        def done(update: object) -> None:
            if isinstance(update, Update):
                handled.done(update.update_id)
                progress.set()

        dispatcher = self._services.dispatcher
        assert dispatcher is not None
        turns.on_done.append(done)
        stopped = False
        try:
            for update in batch:
                while handled.in_hand >= turns.max_concurrent_updates:
                    await self._progress(progress, handled)
                if not dispatcher.active or self._stopping.is_set():
                    stopped = True
                    break
                handled.give(update.update_id)
                await self._application.update_queue.put(update)
            while handled.in_hand:
                await self._progress(progress, handled)
            await self._write(handled)
            return not stopped
        finally:
            # After a failed write too: what is in hand is handled, and the offset in memory
            # passes it (the next write, or the next leader's read, starts from there).
            while handled.in_hand:
                await _one_handled(progress)
            self._offset = handled.next_offset() or self._offset
            turns.on_done.remove(done)

    async def _progress(self, progress: asyncio.Event, handled: Handled) -> None:
        """Until an update in hand is handled; then the offset written, if it moved."""
        await _one_handled(progress)
        await self._write(handled)

    async def _write(self, handled: Handled) -> None:
        offset = handled.next_offset()
        if offset is None:
            return
        self._offset = offset
        async with self._services.sessions() as db, db.begin():
            await updates.handled(
                session=db,
                bot_id=self._application.bot.id,
                next_update_id=offset,
                now=self._services.clock.now(),
            )

    async def _first(self, *waits: Awaitable[Any]) -> bool:
        """Until one of `waits` or a stop is done: True if the first of `waits` finished
        (the caller looks at it); otherwise it is cancelled and False. The rest are
        cancelled either way."""
        stop = asyncio.ensure_future(self._stopping.wait())
        tasks = [asyncio.ensure_future(w) for w in waits]
        await asyncio.wait({stop, *tasks}, return_when=asyncio.FIRST_COMPLETED)
        for task in (stop, *tasks[1:]):
            task.cancel()
        if not tasks[0].done():
            tasks[0].cancel()
            with contextlib.suppress(BaseException):
                await tasks[0]
            return False
        return True
