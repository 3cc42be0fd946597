"""What every handler shares: the transaction, the patient behind an update, replies, edits
and callback answers that survive stale or forged updates."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlmodel.ext.asyncio.session import AsyncSession
from telegram import CallbackQuery, InlineKeyboardMarkup, Message, Update
from telegram.constants import ParseMode
from telegram.error import BadRequest, Forbidden

from bot.context import Services
from messages.render import catalog
from scheduler import care
from scheduler.models import Patient

log = logging.getLogger("aftercare.bot")


@asynccontextmanager
async def transaction(services: Services) -> AsyncIterator[AsyncSession]:
    async with services.sessions() as db, db.begin():
        yield db


async def current_patient(db: AsyncSession, update: Update) -> Patient | None:
    """The patient behind the update (the user who wrote or pressed), if known."""
    user = update.effective_user
    if user is None:
        return None
    return await care.find_patient(session=db, tg_user_id=user.id)


async def consented_patient(db: AsyncSession, update: Update) -> Patient | None:
    """The patient behind the update if they have consented; otherwise None, once they are
    told: a command is asked to /start first, a button press is answered as stale."""
    patient = await current_patient(db, update)
    if patient is None or patient.consent_at is None:
        if update.callback_query is not None:
            await answer(update.callback_query, catalog("en").text("chat.stale_button"))
        else:
            await reply(update, "en", "chat.start_first")
        return None
    return patient


async def send(
    update: Update, text: str, markup: InlineKeyboardMarkup | None = None
) -> Message | None:
    """Send rendered HTML to the chat the update came from (None if the patient blocked the
    bot in the meantime: the dispatcher marks them blocked at its next send)."""
    chat = update.effective_chat
    if chat is None:
        return None
    try:
        return await chat.send_message(text, parse_mode=ParseMode.HTML, reply_markup=markup)
    except Forbidden:
        log.info("reply not delivered: the user blocked the bot")
        return None


async def reply(
    update: Update,
    lang: str,
    key: str,
    markup: InlineKeyboardMarkup | None = None,
    **params: object,
) -> None:
    """Answer in the chat the update came from, with a catalog text."""
    await send(update, catalog(lang).text(key, **params), markup)


async def reply_in_their_language(update: Update, services: Services, key: str) -> None:
    """Answer with a catalog text in the language of the patient behind the update (English
    for someone the bot does not know)."""
    async with transaction(services) as db:
        patient = await current_patient(db, update)
    await reply(update, patient.language if patient else "en", key)


async def answer(query: CallbackQuery, text: str | None = None) -> None:
    """Answer a button press. A query that is too old (a backlog after a restart) or was never
    Telegram's cannot be answered: that is not worth failing the update for."""
    try:
        await query.answer(text)
    except BadRequest as exc:
        log.info("callback answer refused: %s", type(exc).__name__)


async def edit(update: Update, text: str, markup: InlineKeyboardMarkup | None = None) -> None:
    """Replace the pressed message (so a button cannot be pressed twice).

    A message that cannot be edited any more (deleted, too old, or named by forged data) is
    left alone: the action itself has been done and the patient gets the answer elsewhere.
    """
    query = update.callback_query
    if query is None or query.message is None:
        return
    try:
        await query.edit_message_text(text, parse_mode=ParseMode.HTML, reply_markup=markup)
    except BadRequest as exc:
        if "not modified" not in exc.message:
            log.info("could not edit the pressed message: %s", exc.message[:80])


def valid_zone(name: str) -> bool:
    """An IANA zone name as a patient may type it ("Europe/Paris"), never a path."""
    if not name or len(name) > 64 or "/" not in name or ".." in name:
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True
