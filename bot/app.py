"""`build_application`: the PTB Application with its ordered handlers and services."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Sequence
from typing import Any

import httpx
from telegram import BotCommand, Update
from telegram.ext import (
    ApplicationBuilder,
    BaseHandler,
    CallbackQueryHandler,
    ChatMemberHandler,
    ContextTypes,
    MessageHandler,
    TypeHandler,
    filters,
)
from telegram.request import HTTPXRequest

from bot import broadcasting
from bot.context import AftercareApp, AppContext, Services
from bot.delivery import dispatcher_for, limiter_of, paid_broadcast_bot
from bot.handlers import chat, checkins, control, manage, patient, staff
from bot.handlers.base import language_for, private_commands
from bot.pacing import PacedRateLimiter
from bot.turns import ChatTurns, side_by_side
from messages.render import DEFAULT_LANGUAGE, available_languages, catalog
from scheduler import failures

log = logging.getLogger("aftercare.app")

# The menu shown by Telegram; descriptions come from the catalog, per language.
MENU = (
    "book",
    "sessions",
    "prep",
    "aftercare",
    "reminders",
    "settings",
    "pause",
    "resume",
    "privacy",
    "delete",
    "help",
)


def handlers() -> Sequence[BaseHandler[Any, AppContext, Any]]:
    """Every handler, in the order PTB must try them (group 0, first match wins)."""
    private = filters.ChatType.PRIVATE
    return [
        # The clinic side first: a staff invite is a /start too, and a staff member's typed
        # answer to a patient is text (bot/handlers/staff.py).
        *staff.handlers(),
        *private_commands(
            {
                "start": patient.start,
                "help": patient.help_command,
                "book": patient.book_command,
                "prep": patient.prep_command,
                "reminders": patient.reminders_command,
                "sessions": manage.sessions_command,
                "aftercare": manage.aftercare_command,
                "settings": control.settings_command,
                "pause": control.pause_command,
                "resume": control.resume_command,
                "privacy": control.privacy_command,
                "delete": control.delete_command,
            }
        ),
        CallbackQueryHandler(patient.consent_button, pattern=r"^consent:(yes|no)$"),
        CallbackQueryHandler(patient.zone_button, pattern=r"^tz:"),
        CallbackQueryHandler(patient.screening_button, pattern=r"^scr:"),
        CallbackQueryHandler(patient.calendar_button, pattern=r"^(cal|day|at|ok):|^chg$"),
        CallbackQueryHandler(manage.session_button, pattern=r"^ses:"),
        CallbackQueryHandler(manage.reminders_button, pattern=r"^rem:past$"),
        CallbackQueryHandler(checkins.checkin_button, pattern=r"^ci:"),
        CallbackQueryHandler(chat.message_button, pattern=r"^msg:"),
        CallbackQueryHandler(control.settings_button, pattern=r"^set:"),
        CallbackQueryHandler(control.delete_button, pattern=r"^del:(yes|no)$"),
        # After every known pattern: inert labels, stale and forged buttons.
        CallbackQueryHandler(patient.stale_button),
        ChatMemberHandler(patient.chat_member, ChatMemberHandler.MY_CHAT_MEMBER),
        # Free text, new or edited: one router decides what it means (bot/handlers/chat.py).
        # A photo's or a file's caption is the patient's own words too: a red flag in it
        # must not be answered with "I can only read text".
        MessageHandler(
            private & (filters.TEXT | filters.CAPTION) & ~filters.COMMAND, chat.text_message
        ),
        MessageHandler(
            private & filters.UpdateType.MESSAGE & filters.COMMAND, patient.unknown_command
        ),
        MessageHandler(
            private & filters.UpdateType.MESSAGE & ~filters.COMMAND, patient.other_message
        ),
    ]


async def on_error(update: object, context: AppContext) -> None:
    """An unexpected failure: one log line with an error id (the traceback at DEBUG, never the
    update's text), and a short apology to the person, with the same id."""
    error = context.error or RuntimeError("unknown")
    error_id = failures.report(log, "handler failed", error)
    if (
        isinstance(update, Update)
        and update.effective_chat
        and update.effective_chat.type == "private"
    ):
        user = update.effective_user
        lang = language_for(user.language_code if user else None)
        try:
            await update.effective_chat.send_message(
                catalog(lang).text("chat.error", error=error_id)
            )
        except Exception:
            log.warning("could not tell the patient about the failure (error %s)", error_id)


def build_application(
    services: Services,
    *,
    token: str,
    base_url: str,
    base_file_url: str | None = None,
    update_processor: ChatTurns | None = None,
    rate_limit: bool = True,
    tls: ssl.SSLContext | None = None,
) -> AftercareApp:
    """The whole bot: handlers, services, the dispatcher started and stopped with it."""
    # PTB's two HTTP clients (getUpdates, everything else), as it builds them by default, but
    # with one TLS context (`tls`, else a new one as httpx makes it): each would read the CA
    # bundle itself, 20 ms and 1 MB of start-up for the same certificates.
    verify = {"verify": tls or httpx.create_ssl_context()}
    builder = (
        ApplicationBuilder()
        .token(token)
        .base_url(base_url)
        .request(HTTPXRequest(httpx_kwargs=verify))
        .get_updates_request(HTTPXRequest(connection_pool_size=1, httpx_kwargs=verify))
        .context_types(ContextTypes(context=AppContext))
        .post_init(start_services)
        .post_stop(stop_services)
    )
    if base_file_url:
        builder = builder.base_file_url(base_file_url)
    services.limiter = limiter_of(services.settings, services.clock)
    services.paid_bot = paid_broadcast_bot(token, base_url)
    if rate_limit:
        # One limiter per process for replies and deliveries alike (bot/pacing.py).
        builder = builder.rate_limiter(PacedRateLimiter(services.limiter))  # type: ignore[arg-type]
    # Turns of different chats side by side on PostgreSQL, each chat's in order (bot/turns.py).
    turns = update_processor
    if turns is None:
        turns = ChatTurns(side_by_side(services.settings.database_url))
    builder = builder.concurrent_updates(turns)
    application: AftercareApp = builder.build()
    application.bot_data["services"] = services
    application.add_handlers(list(handlers()))
    # Group -1 runs before every handler: a patient who had blocked the bot is back.
    application.add_handler(TypeHandler(Update, control.returning), group=-1)
    application.add_error_handler(on_error)
    return application


async def start_services(
    application: AftercareApp, *, wake: bool = True, menus: bool = True
) -> None:
    """Menus and dispatcher (the runner's and the harness's start); `wake=False`: the
    dispatcher's first round waits for a `poke` (`Dispatcher.start`); `menus=False`: the
    caller sets them (`set_menus`; the runner, once the bot takes updates)."""
    services: Services = application.bot_data["services"]
    if menus:
        await set_menus(application)
    services.dispatcher = dispatcher_for(services, application.bot, tag=f"{id(application):x}")
    await services.dispatcher.start(wake=wake)
    broadcasting.attach(application)


async def set_menus(application: AftercareApp) -> None:
    """One menu per language; Telegram shows a user the one of their app's language, and the
    default (English) to everyone else. Sent side by side: one round trip to Telegram, not
    one per language; the first failure is raised once all are answered."""
    sent = await asyncio.gather(
        *(set_menu(application, lang) for lang in available_languages()),
        return_exceptions=True,
    )
    for outcome in sent:
        if isinstance(outcome, BaseException):
            raise outcome


async def set_menu(application: AftercareApp, lang: str) -> None:
    texts = catalog(lang)
    await application.bot.set_my_commands(
        [BotCommand(name, texts.text(f"menu.{name}")) for name in MENU],
        language_code=None if lang == DEFAULT_LANGUAGE else lang,
    )


async def stop_services(application: AftercareApp) -> None:
    """Stop the dispatcher after its in-flight batch is recorded (nothing left sending)."""
    services: Services = application.bot_data["services"]
    if services.dispatcher is not None:
        await services.dispatcher.stop()
    if services.paid_bot is not None:
        await services.paid_bot.request.shutdown()
