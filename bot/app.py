"""`build_application`: the PTB Application with its ordered handlers and services."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Sequence
from typing import Any

from telegram import BotCommand, Update
from telegram.ext import (
    AIORateLimiter,
    ApplicationBuilder,
    BaseHandler,
    BaseUpdateProcessor,
    CallbackQueryHandler,
    ChatMemberHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from bot.context import AftercareApp, AppContext, Services
from bot.handlers import patient
from bot.telegram_sender import TelegramSender
from messages.render import catalog
from scheduler import compose
from scheduler.dispatcher import Dispatcher

log = logging.getLogger("aftercare.app")

# The menu shown by Telegram; descriptions come from the catalog, per language.
MENU = ("book", "prep", "reminders", "help")


def handlers() -> Sequence[BaseHandler[Any, AppContext, Any]]:
    """Every handler, in the order PTB must try them (group 0, first match wins)."""
    private = filters.ChatType.PRIVATE
    return [
        CommandHandler("start", patient.start, filters=private),
        CommandHandler("help", patient.help_command, filters=private),
        CommandHandler("book", patient.book_command, filters=private),
        CommandHandler("prep", patient.prep_command, filters=private),
        CommandHandler("reminders", patient.reminders_command, filters=private),
        CallbackQueryHandler(patient.consent_button, pattern=r"^consent:(yes|no)$"),
        CallbackQueryHandler(patient.zone_button, pattern=r"^tz:"),
        CallbackQueryHandler(patient.screening_button, pattern=r"^scr:"),
        CallbackQueryHandler(patient.calendar_button, pattern=r"^(cal|day|at|ok):|^chg$"),
        # After every known pattern: inert labels, stale and forged buttons.
        CallbackQueryHandler(patient.stale_button),
        ChatMemberHandler(patient.chat_member, ChatMemberHandler.MY_CHAT_MEMBER),
        # Edited messages are ignored on purpose: the original was already answered.
        MessageHandler(
            private & filters.UpdateType.MESSAGE & filters.TEXT & ~filters.COMMAND,
            patient.text_message,
        ),
        MessageHandler(
            private & filters.UpdateType.MESSAGE & filters.COMMAND, patient.unknown_command
        ),
        MessageHandler(
            private & filters.UpdateType.MESSAGE & ~filters.COMMAND, patient.other_message
        ),
    ]


async def on_error(update: object, context: AppContext) -> None:
    """Log the failure (never the update's text) and tell the patient something went wrong."""
    log.error(
        "handler failed: %s",
        type(context.error).__name__,
        exc_info=(type(context.error), context.error, context.error.__traceback__)
        if context.error
        else None,
    )
    if (
        isinstance(update, Update)
        and update.effective_chat
        and update.effective_chat.type == "private"
    ):
        try:
            await update.effective_chat.send_message(catalog("en").text("chat.error"))
        except Exception:
            log.warning("could not tell the patient about the failure")


def build_application(
    services: Services,
    *,
    token: str,
    base_url: str,
    base_file_url: str | None = None,
    update_processor: BaseUpdateProcessor | None = None,
    rate_limit: bool = True,
) -> AftercareApp:
    """The whole bot: handlers, services, the dispatcher started and stopped with it."""
    builder = (
        ApplicationBuilder()
        .token(token)
        .base_url(base_url)
        .context_types(ContextTypes(context=AppContext))
        .post_init(start_services)
        .post_stop(stop_services)
    )
    if base_file_url:
        builder = builder.base_file_url(base_file_url)
    if rate_limit:
        builder = builder.rate_limiter(AIORateLimiter(max_retries=0))  # type: ignore[arg-type]
    if update_processor is not None:
        builder = builder.concurrent_updates(update_processor)
    application: AftercareApp = builder.build()
    application.bot_data["services"] = services
    application.add_handlers(list(handlers()))
    application.add_error_handler(on_error)
    return application


async def start_services(application: AftercareApp) -> None:
    """Menu and dispatcher (post_init for run_polling; called directly by the harness)."""
    services: Services = application.bot_data["services"]
    texts = catalog("en")
    await application.bot.set_my_commands(
        [BotCommand(name, texts.text(f"menu.{name}")) for name in MENU]
    )
    sender = TelegramSender(application.bot)
    services.dispatcher = Dispatcher(
        sessions=services.sessions,
        sender=sender,
        clock=services.clock,
        composer=compose.Composer(services.protocol, services.clinic),
        worker_id=f"{socket.gethostname()}:{os.getpid()}:{id(application):x}",
        batch=services.settings.dispatch_batch,
        is_postgres=services.settings.database_url.startswith("postgresql"),
    )
    await services.dispatcher.start()


async def stop_services(application: AftercareApp) -> None:
    """Stop the dispatcher after its in-flight batch is recorded (nothing left sending)."""
    services: Services = application.bot_data["services"]
    if services.dispatcher is not None:
        await services.dispatcher.stop()
