"""Live progress and the final report of running broadcasts, read from the rows.

The dispatcher delivers broadcast rows like any other; this only watches. It looks after
every delivered batch (the dispatcher's `after_batch` hook) and every few seconds (a
JobQueue job, for rows that expired or were cancelled without a batch, and to resume after
a restart; the same job pokes the dispatcher, for rows that the command line planned). The
progress message is edited at most once per `every`; the report is sent
by the one process that moves the broadcast from running to done.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from telegram import Bot
from telegram.constants import ParseMode
from telegram.error import BadRequest, TelegramError

from bot.context import AftercareApp, AppContext, Services
from messages.render import catalog
from scheduler import broadcast, clinics, failures

log = logging.getLogger("aftercare.broadcast")

POLL_SECONDS = 5.0


class BroadcastMonitor:
    def __init__(self, services: Services, bot: Bot, every: timedelta) -> None:
        self._services = services
        self._bot = bot
        self._every = every
        self._lock = asyncio.Lock()

    async def tick(self) -> None:
        """Edit progress messages that are due an update; report finished broadcasts."""
        async with self._lock:
            try:
                await self._tick()
            except Exception as exc:
                failures.report(log, "broadcast progress check failed", exc)

    async def _tick(self) -> None:
        services = self._services
        now = services.clock.now()
        edits: list[tuple[int, int, str]] = []
        reports: list[tuple[int, str]] = []
        async with services.sessions() as db, db.begin():
            for item in await broadcast.running(session=db):
                assert item.id is not None
                counts = await broadcast.progress(session=db, broadcast_id=item.id)
                params = broadcast.report_params(counts)
                chat, message = item.progress_chat_id, item.progress_message_id
                # In the language of the staff member who sent it.
                lang = await clinics.staff_language(session=db, chat_id=chat or 0)
                texts = catalog(lang)
                if counts.done:
                    if not await broadcast.finish(session=db, broadcast_id=item.id, now=now):
                        continue
                    log.info(
                        "broadcast finished id=%s sent=%s blocked=%s failed=%s",
                        item.id,
                        counts.sent,
                        counts.blocked,
                        counts.failed,
                    )
                    if chat is not None and message is not None:
                        edits.append(
                            (chat, message, texts.text("broadcast.final", id=item.id, **params))
                        )
                    if chat is not None:
                        reports.append(
                            (chat, texts.text("broadcast.report", id=item.id, **params))
                        )
                elif item.progress_at is None or now - item.progress_at >= self._every:
                    item.progress_at = now
                    db.add(item)
                    if chat is not None and message is not None:
                        edits.append(
                            (chat, message, texts.text("broadcast.progress", id=item.id, **params))
                        )
        for chat, message, text in edits:
            try:
                await self._bot.edit_message_text(
                    text, chat_id=chat, message_id=message, parse_mode=ParseMode.HTML
                )
            except BadRequest as exc:
                if "not modified" not in exc.message:
                    log.info("could not edit a broadcast's progress: %s", exc.message[:80])
            except TelegramError as exc:
                log.info("could not edit a broadcast's progress: %s", type(exc).__name__)
        for chat, text in reports:
            try:
                await self._bot.send_message(chat, text, parse_mode=ParseMode.HTML)
            except TelegramError as exc:
                log.warning("could not send a broadcast report: %s", type(exc).__name__)


def attach(application: AftercareApp) -> BroadcastMonitor:
    """Watch broadcasts in this process: after each dispatcher batch, and every few seconds."""
    services: Services = application.bot_data["services"]
    monitor = BroadcastMonitor(
        services,
        application.bot,
        timedelta(seconds=services.settings.broadcast_progress_seconds),
    )
    if services.dispatcher is not None:
        services.dispatcher.after_batch = monitor.tick
    if application.job_queue is not None:

        async def job(_context: AppContext) -> None:
            # Rows the command line planned (import, broadcast) wake no dispatcher: look.
            services.poke()
            await monitor.tick()

        application.job_queue.run_repeating(
            job, interval=POLL_SECONDS, first=POLL_SECONDS, name="broadcast-progress"
        )
    return monitor
