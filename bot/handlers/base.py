"""What every patient handler shares, written once: the transaction, the patient behind the
update, the consent guard, and the answer, said only after the transaction is committed.

A handler is a `Turn` body: it parses, calls one function of `scheduler/`, and renders into
the turn's outbox. `@turn(...)` opens the transaction, finds the patient, refuses whoever
may not go on (a command: "send /start first"; a button: "no longer active"), runs the body,
commits, and only then talks to Telegram: the callback query is answered once, the pressed
message edited, new messages sent, the dispatcher poked. A slow network never holds a
database transaction open, and a failed body leaves nothing half-written.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager, nullcontext
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

import msgspec
from sqlmodel.ext.asyncio.session import AsyncSession
from telegram import CallbackQuery, InlineKeyboardMarkup, Message, Update
from telegram.constants import ParseMode
from telegram.error import BadRequest, Forbidden
from telegram.ext import CommandHandler, filters

from bot.context import AppContext, Services
from messages.protocol import Protocol
from messages.render import Html, available_languages, catalog
from messages.texts import Reader
from scheduler import care, compose
from scheduler.models import Clinic, Patient
from scheduler.protocols import clinic_protocol
from scheduler.sqlite_loop import on_the_loop

log = logging.getLogger("aftercare.bot")

Need = Literal["anyone", "known", "consented"]


@asynccontextmanager
async def transaction(services: Services, *, short: bool = False) -> AsyncIterator[AsyncSession]:
    """A transaction on the bot's database, committed unless the block raises. `short`: it
    reads and writes one patient's rows through their indexes (a patient's turn), so SQLite
    runs it on the event loop, with no hop to the connection's thread (sqlite_driver's
    `on_the_loop`); a staff turn, which pages and counts a clinic's rows, is not short."""
    with on_the_loop() if short else nullcontext():
        async with services.sessions() as db, db.begin():
            yield db


async def current_patient(db: AsyncSession, update: Update) -> Patient | None:
    """The patient behind the update (the user who wrote or pressed), if known."""
    user = update.effective_user
    if user is None:
        return None
    return await care.find_patient(session=db, tg_user_id=user.id)


class _Say(msgspec.Struct):
    text: str
    markup: InlineKeyboardMarkup | None
    edit: bool = False
    message_id: int | None = None  # edit this message of the chat instead of the pressed one
    photo: bytes | None = None  # a picture, with `text` as its caption


class Outbox(msgspec.Struct):
    """What a turn says, in order, once its transaction is committed."""

    items: list[_Say] = msgspec.field(default_factory=list)
    toast: str | None = None
    poke: bool = False
    calls: list[Callable[[], Awaitable[object]]] = msgspec.field(default_factory=list)

    async def flush(self, update: Update, services: Services) -> None:
        query = update.callback_query
        if query is not None:
            await answer(query, self.toast)
        for item in self.items:
            if item.photo is not None:
                await send_photo(update, item.photo, item.text)
            elif item.message_id is not None:
                await edit_message(update, item.message_id, item.text, item.markup)
            elif item.edit:
                await edit(update, item.text, item.markup)
            else:
                await send(update, item.text, item.markup)
        for call in self.calls:
            await call()
        if self.poke:
            services.poke()


class Turn(msgspec.Struct):
    """One update being handled: the open transaction, the patient, and the outbox."""

    update: Update
    context: AppContext
    db: AsyncSession
    now: datetime
    patient: Patient | None
    out: Outbox
    protocol: Protocol  # the patient's clinic's (the default one for a stranger)

    @property
    def services(self) -> Services:
        return self.context.services

    @property
    def lang(self) -> str:
        """The language the answer is in: the patient's (their Telegram's for a stranger),
        if their clinic speaks it."""
        if self.patient is not None:
            return self.protocol.language_for(self.patient.language)
        user = self.update.effective_user
        return self.protocol.language_for(language_for(user.language_code if user else None))

    @property
    def me(self) -> Patient:
        """The patient (the guard of `@turn("known")` or "consented" made sure of one)."""
        assert self.patient is not None
        return self.patient

    @property
    def data(self) -> str:
        query = self.update.callback_query
        return (query.data or "") if query is not None else ""

    @property
    def text(self) -> str:
        """What the person wrote: a message's text, or the caption of a photo or a file."""
        message = self.update.effective_message
        if message is None:
            return ""
        return message.text or message.caption or ""

    @property
    def zone(self) -> ZoneInfo:
        return care.zone_of(self.me)

    @property
    def reader(self) -> Reader:
        """Who reads the answer: their language, their clock (the clinic's for a stranger)."""
        zone = care.zone_of(self.patient) if self.patient else self.services.settings.zone
        return Reader.of(self.lang, zone, self.protocol)

    @property
    def staff_ids(self) -> list[int]:
        return list(self.services.settings.staff_user_ids)

    @property
    def pressed_html(self) -> str:
        """The pressed message's text, as HTML ("" when Telegram did not send it)."""
        query = self.update.callback_query
        message = query.message if query is not None else None
        return message.text_html if isinstance(message, Message) and message.text else ""

    @property
    def reading(self) -> compose.Reading:
        """What the patient's texts are read with, in this turn's transaction."""
        return compose.Reading(self.db, self.me, self.services.protocol, self.services.clinic)

    def pressed_with(self, said: str) -> Html:
        """The pressed message's text with `said` under it in italics (what was answered)."""
        shown = self.pressed_html
        return Html(f"{shown}\n<i>{said}</i>" if shown else f"<i>{said}</i>")

    def t(self, key: str, /, **params: object) -> Html:
        return self.protocol.catalog(self.lang).text(key, **params)

    def send(self, text: str, markup: InlineKeyboardMarkup | None = None) -> None:
        self.out.items.append(_Say(text, markup))

    def say(self, key: str, markup: InlineKeyboardMarkup | None = None, **params: object) -> None:
        self.send(self.t(key, **params), markup)

    def photo(self, image: bytes, caption: str) -> None:
        self.out.items.append(_Say(caption, None, photo=image))

    def edit(self, text: str, markup: InlineKeyboardMarkup | None = None) -> None:
        """Replace the pressed message (so its buttons cannot be pressed twice)."""
        self.out.items.append(_Say(text, markup, edit=True))

    def edit_message(
        self, message_id: int, text: str, markup: InlineKeyboardMarkup | None = None
    ) -> None:
        self.out.items.append(_Say(text, markup, message_id=message_id))

    def later(self, call: Callable[[], Awaitable[object]]) -> None:
        """Another Telegram call, made after the messages (e.g. a chat's command menu)."""
        self.out.calls.append(call)

    def toast(self, text: str) -> None:
        self.out.toast = text

    def stale(self) -> None:
        """A button from an old message, or data the bot never made: nothing happens."""
        self.toast(self.t("chat.stale_button"))

    def poke(self) -> None:
        """Something was planned: the dispatcher looks once the transaction is committed."""
        self.out.poke = True

    def refuse(self) -> None:
        if self.update.callback_query is not None:
            self.stale()
        else:
            self.say("chat.start_first")


Body = Callable[[Turn], Awaitable[None]]
Handler = Callable[[Update, AppContext], Coroutine[Any, Any, None]]


def turn(need: Need = "consented", *, short: bool = True) -> Callable[[Body], Handler]:
    """Make a Turn body a PTB handler. `need`: who may go on ("anyone"; "known": a patient
    row exists; "consented": the patient agreed to reminders). `short`: its transaction is
    (see `transaction`); staff turns are not."""

    def wrap(body: Body) -> Handler:
        @functools.wraps(body)
        async def handler(update: Update, context: AppContext) -> None:
            await run_turn(update, context, body, need, short=short)

        return handler

    return wrap


def private_commands(commands: Mapping[str, Handler]) -> list[CommandHandler[AppContext, None]]:
    """A handler for each command (its name: its handler), in private chats only."""
    private = filters.ChatType.PRIVATE
    return [CommandHandler(name, handler, filters=private) for name, handler in commands.items()]


async def run_turn(
    update: Update, context: AppContext, body: Body, need: Need, *, short: bool = True
) -> None:
    services = context.services
    out = Outbox()
    async with transaction(services, short=short) as db:
        patient = await current_patient(db, update)
        clinic = await db.get(Clinic, patient.clinic_id) if patient is not None else None
        protocol = clinic_protocol(clinic, services.protocol)
        current = Turn(update, context, db, services.clock.now(), patient, out, protocol)
        allowed = need == "anyone" or (
            patient is not None and (need == "known" or patient.consent_at is not None)
        )
        if allowed:
            await body(current)
        else:
            current.refuse()
    await out.flush(update, services)


# -- talking to Telegram (after the commit) ---------------------------------------------------


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


async def send_photo(update: Update, image: bytes, caption: str) -> None:
    chat = update.effective_chat
    if chat is None:
        return
    try:
        await chat.send_photo(photo=image, caption=caption, parse_mode=ParseMode.HTML)
    except Forbidden:
        log.info("photo not delivered: the user blocked the bot")


async def reply(
    update: Update,
    lang: str,
    key: str,
    markup: InlineKeyboardMarkup | None = None,
    **params: object,
) -> None:
    """Answer in the chat the update came from, with a catalog text."""
    await send(update, catalog(lang).text(key, **params), markup)


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


async def edit_message(
    update: Update, message_id: int, text: str, markup: InlineKeyboardMarkup | None
) -> None:
    """Replace another bot message of this chat (one whose buttons started a finished flow)."""
    chat = update.effective_chat
    if chat is None:
        return
    try:
        await chat.get_bot().edit_message_text(
            text,
            chat_id=chat.id,
            message_id=message_id,
            parse_mode=ParseMode.HTML,
            reply_markup=markup,
        )
    except (BadRequest, Forbidden) as exc:
        log.info("could not edit an earlier message: %s", type(exc).__name__)


# -- small parsers -----------------------------------------------------------------------------


def language_for(code: str | None) -> str:
    """A Telegram language code ("fa-IR") as a catalog language (English when none fits)."""
    base = (code or "en").split("-")[0].lower()
    return base if base in available_languages() else "en"


def callback_int(value: str) -> int | None:
    """A row id from callback data (None if it is not one: forged or stale data)."""
    return int(value) if value.isdigit() and len(value) <= 12 else None
