"""Patient-facing handlers: one thin async function per command or button.

Each handler parses, calls one data function from `scheduler.care`, and renders from
`messages/`. Conversation state lives in the patient's row (`awaiting`, `draft`), so a
restart never loses a patient mid-flow.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlmodel.ext.asyncio.session import AsyncSession
from telegram import InlineKeyboardMarkup, Update
from telegram.constants import ParseMode
from telegram.error import BadRequest

from bot import keyboards
from bot.context import AppContext, Services
from bot.dates import parse_when
from messages.render import catalog
from scheduler import care, compose
from scheduler.models import Patient

log = logging.getLogger("aftercare.bot")

SUPPORTED_LANGUAGES = ("en",)


def language_for(code: str | None) -> str:
    base = (code or "en").split("-")[0].lower()
    return base if base in SUPPORTED_LANGUAGES else "en"


@asynccontextmanager
async def transaction(services: Services) -> AsyncIterator[AsyncSession]:
    async with services.sessions() as db, db.begin():
        yield db


async def reply(
    update: Update,
    lang: str,
    key: str,
    markup: InlineKeyboardMarkup | None = None,
    **params: object,
) -> None:
    """Answer in the chat the update came from, with a catalog text."""
    chat = update.effective_chat
    if chat is None:
        return
    await chat.send_message(
        catalog(lang).text(key, **params), parse_mode=ParseMode.HTML, reply_markup=markup
    )


async def edit(update: Update, text: str, markup: InlineKeyboardMarkup | None = None) -> None:
    """Replace the pressed message (so a button cannot be pressed twice)."""
    query = update.callback_query
    if query is None:
        return
    try:
        await query.edit_message_text(text, parse_mode=ParseMode.HTML, reply_markup=markup)
    except BadRequest as exc:
        if "not modified" not in exc.message:
            raise


async def _patient(db: AsyncSession, update: Update) -> Patient | None:
    user = update.effective_user
    if user is None:
        return None
    return await care.find_patient(session=db, tg_user_id=user.id)


# -- /start, consent, time zone, screening --------------------------------------------------


async def start(update: Update, context: AppContext) -> None:
    """Greet, tie to the clinic, and ask for consent (or welcome back)."""
    user, chat = update.effective_user, update.effective_chat
    if user is None or chat is None:
        return
    services = context.services
    now = services.clock.now()
    async with transaction(services) as db:
        clinic = await care.ensure_default_clinic(session=db, info=services.clinic, now=now)
        patient, _ = await care.start_patient(
            session=db,
            tg_user_id=user.id,
            chat_id=chat.id,
            first_name=user.first_name,
            language=language_for(user.language_code),
            clinic=clinic,
            now=now,
        )
        lang, consented = patient.language, patient.consent_at is not None
    if consented:
        await reply(update, lang, "chat.welcome_back", name=user.first_name)
        return
    await reply(
        update,
        lang,
        "chat.welcome",
        keyboards.consent(lang),
        name=user.first_name,
        clinic=services.clinic.name,
    )


async def consent_button(update: Update, context: AppContext) -> None:
    """Consent given or refused."""
    query = update.callback_query
    assert query is not None and query.data is not None
    services = context.services
    async with transaction(services) as db:
        patient = await _patient(db, update)
        if patient is None:
            await query.answer(catalog("en").text("chat.stale_button"))
            return
        lang = patient.language
        if query.data == "consent:no":
            patient.consent_at = None
            db.add(patient)
            await query.answer()
            await edit(update, catalog(lang).text("chat.consent_refused"))
            return
        patient.consent_at = services.clock.now()
        zone = patient.timezone
        db.add(patient)
    await query.answer()
    await edit(update, catalog(lang).text("chat.consent_thanks"))
    await reply(update, lang, "chat.ask_zone", keyboards.timezones(lang, zone), zone=zone)


async def zone_button(update: Update, context: AppContext) -> None:
    """Keep the clinic's zone, pick a common one, or type one."""
    query = update.callback_query
    assert query is not None and query.data is not None
    services = context.services
    async with transaction(services) as db:
        patient = await _patient(db, update)
        if patient is None or patient.consent_at is None:
            await query.answer(catalog("en").text("chat.stale_button"))
            return
        lang = patient.language
        _, _, rest = query.data.partition(":")
        if rest == "type":
            patient.awaiting = "timezone"
            db.add(patient)
            await query.answer()
            await edit(update, catalog(lang).text("chat.type_zone"))
            return
        if rest.startswith("set:"):
            zone = rest.removeprefix("set:")
            if zone not in keyboards.COMMON_ZONES:
                await query.answer(catalog(lang).text("chat.stale_button"))
                return
            patient.timezone = zone
        db.add(patient)
        zone = patient.timezone
    await query.answer()
    await edit(update, catalog(lang).text("chat.zone_set", zone=zone))
    await ask_screening(update, context, 0, lang)


async def ask_screening(update: Update, context: AppContext, index: int, lang: str) -> None:
    """Ask screening question `index`, or move on to booking after the last one."""
    questions = context.services.protocol.screening
    if index >= len(questions):
        await ask_date(update, context, lang)
        return
    await reply(
        update,
        lang,
        questions[index].question,
        keyboards.yes_no(lang, f"scr:{index}"),
        number=index + 1,
        total=len(questions),
    )


async def screening_button(update: Update, context: AppContext) -> None:
    """Record one screening answer; a yes never blocks booking, it flags the session."""
    query = update.callback_query
    assert query is not None and query.data is not None
    questions = context.services.protocol.screening
    try:
        _, raw_index, answer = query.data.split(":")
        index = int(raw_index)
        question = questions[index]
    except (ValueError, IndexError):
        await query.answer(catalog("en").text("chat.stale_button"))
        return
    async with transaction(context.services) as db:
        patient = await _patient(db, update)
        if patient is None or patient.consent_at is None:
            await query.answer(catalog("en").text("chat.stale_button"))
            return
        lang = patient.language
        screening = dict(patient.draft.get("screening", {}))
        screening[question.key] = answer == "y"
        patient.draft = {**patient.draft, "screening": screening}
        db.add(patient)
    await query.answer()
    texts = catalog(lang)
    said = texts.text("button.yes" if answer == "y" else "button.no")
    await edit(
        update,
        texts.text(question.question, number=index + 1, total=len(questions)) + f"\n<i>{said}</i>",
    )
    if answer == "y":
        await reply(update, lang, question.advice)
    await ask_screening(update, context, index + 1, lang)


# -- booking --------------------------------------------------------------------------------


async def ask_date(update: Update, context: AppContext, lang: str) -> None:
    services = context.services
    async with transaction(services) as db:
        patient = await _patient(db, update)
        if patient is None:
            return
        patient.awaiting = "date"
        db.add(patient)
        today = services.clock.now().astimezone(care.zone_of(patient)).date()
    await reply(update, lang, "chat.ask_date", keyboards.month_calendar(lang, today, today))


async def book_command(update: Update, context: AppContext) -> None:
    """/book: record a new session."""
    async with transaction(context.services) as db:
        patient = await _patient(db, update)
        lang = patient.language if patient else "en"
        ready = patient is not None and patient.consent_at is not None
    if not ready:
        await reply(update, lang, "chat.start_first")
        return
    await ask_screening(update, context, 0, lang)


async def calendar_button(update: Update, context: AppContext) -> None:
    """Month navigation, a day, a time slot, confirm, or change."""
    query = update.callback_query
    assert query is not None and query.data is not None
    services = context.services
    async with transaction(services) as db:
        patient = await _patient(db, update)
        if patient is None or patient.consent_at is None:
            await query.answer(catalog("en").text("chat.stale_button"))
            return
        lang, zone = patient.language, care.zone_of(patient)
    texts = catalog(lang)
    today = services.clock.now().astimezone(zone).date()
    kind, _, value = query.data.partition(":")
    try:
        if kind == "cal":
            month = date.fromisoformat(value + "-01")
            await query.answer()
            await edit(
                update, texts.text("chat.ask_date"), keyboards.month_calendar(lang, month, today)
            )
        elif kind == "day":
            day = date.fromisoformat(value)
            await query.answer()
            await edit(
                update,
                texts.text("chat.ask_time", day=compose.local_day(day, lang)),
                keyboards.time_slots(lang, day),
            )
        elif kind == "at":
            local = datetime.fromisoformat(value)
            await query.answer()
            await propose(update, lang, zone, local, edit_message=True)
        elif kind == "ok":
            local = datetime.fromisoformat(value)
            await query.answer()
            await confirm(update, context, local)
        else:  # "chg"
            await query.answer()
            await edit(
                update, texts.text("chat.ask_date"), keyboards.month_calendar(lang, today, today)
            )
    except ValueError:
        await query.answer(texts.text("chat.stale_button"))


async def propose(
    update: Update, lang: str, zone: ZoneInfo, local: datetime, *, edit_message: bool
) -> None:
    """Show the chosen date and time back, with Confirm / Change."""
    texts = catalog(lang)
    when = compose.local_datetime(local.replace(tzinfo=zone), zone, lang)
    text = texts.text("chat.confirm_booking", when=when)
    markup = keyboards.confirm_booking(lang, local.strftime("%Y-%m-%dT%H:%M"))
    if edit_message:
        await edit(update, text, markup)
    else:
        chat = update.effective_chat
        assert chat is not None
        await chat.send_message(text, parse_mode=ParseMode.HTML, reply_markup=markup)


async def confirm(update: Update, context: AppContext, local: datetime) -> None:
    """Book the session; the dispatcher sends the 'booked' message with the timeline."""
    services = context.services
    now = services.clock.now()
    async with transaction(services) as db:
        patient = await _patient(db, update)
        if patient is None:
            return
        lang = patient.language
        error: str | None = None
        try:
            await care.book_session(
                session=db,
                patient=patient,
                protocol=services.protocol,
                start=local.replace(tzinfo=care.zone_of(patient)),
                now=now,
            )
        except care.BookingError as exc:
            error = exc.reason
    if error is not None:
        await edit(update, catalog(lang).text(f"chat.booking_{error}"))
        return
    await edit(update, catalog(lang).text("chat.booking_saved"))
    services.poke()


# -- typed text -----------------------------------------------------------------------------


async def text_message(update: Update, context: AppContext) -> None:
    """Free text: a typed date or zone when one is expected; otherwise a gentle pointer."""
    message = update.effective_message
    if message is None or message.text is None:
        return
    async with transaction(context.services) as db:
        patient = await _patient(db, update)
        awaiting = patient.awaiting if patient else None
        lang = patient.language if patient else "en"
        zone = care.zone_of(patient) if patient else None
        if patient is not None and awaiting == "timezone":
            typed = message.text.strip()
            if valid_zone(typed):
                patient.timezone = typed
                patient.awaiting = None
                db.add(patient)
            else:
                typed = ""
    if patient is None or patient.consent_at is None:
        await reply(update, lang, "chat.start_first")
    elif awaiting == "timezone":
        if typed:
            await reply(update, lang, "chat.zone_set", zone=typed)
            await ask_screening(update, context, 0, lang)
        else:
            await reply(update, lang, "chat.zone_unknown")
    elif awaiting == "date":
        assert zone is not None
        await typed_date(update, context, lang, zone, message.text)
    else:
        await reply(update, lang, "chat.not_understood")


def valid_zone(name: str) -> bool:
    if not name or len(name) > 64 or "/" not in name or ".." in name:
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


async def typed_date(
    update: Update, context: AppContext, lang: str, zone: ZoneInfo, text: str
) -> None:
    now = context.services.clock.now()
    parsed = parse_when(text, tz=zone, now=now, language=lang)
    if parsed is None:
        await reply(update, lang, "chat.date_not_understood")
    elif parsed.at is None:
        await reply(
            update,
            lang,
            "chat.ask_time",
            keyboards.time_slots(lang, parsed.day),
            day=compose.local_day(parsed.day, lang),
        )
    else:
        local = datetime.combine(parsed.day, parsed.at)
        await propose(update, lang, zone, local, edit_message=False)


# -- information ----------------------------------------------------------------------------


async def help_command(update: Update, context: AppContext) -> None:
    """/help: what the bot does and its commands."""
    async with transaction(context.services) as db:
        patient = await _patient(db, update)
    await reply(update, patient.language if patient else "en", "chat.help")


async def prep_command(update: Update, context: AppContext) -> None:
    """/prep: the preparation checklist for the next session."""
    services = context.services
    now = services.clock.now()
    async with transaction(services) as db:
        patient = await _patient(db, update)
        if patient is None or patient.consent_at is None:
            await reply(update, "en", "chat.start_first")
            return
        assert patient.id is not None
        upcoming = await care.next_session(session=db, patient_id=patient.id, now=now)
        if upcoming is None:
            await reply(update, patient.language, "chat.no_session")
            return
        text = compose.prep_checklist(services.protocol, patient, upcoming, now)
    chat = update.effective_chat
    assert chat is not None
    await chat.send_message(text, parse_mode=ParseMode.HTML)


async def reminders_command(update: Update, context: AppContext) -> None:
    """/reminders: what is planned, in local time."""
    services = context.services
    async with transaction(services) as db:
        patient = await _patient(db, update)
        if patient is None or patient.consent_at is None:
            await reply(update, "en", "chat.start_first")
            return
        assert patient.id is not None
        rows = await care.planned_messages(session=db, patient_id=patient.id)
        text = compose.reminder_list(patient, rows)
    chat = update.effective_chat
    assert chat is not None
    await chat.send_message(text, parse_mode=ParseMode.HTML)


# -- everything else --------------------------------------------------------------------------


async def unknown_command(update: Update, context: AppContext) -> None:
    """A command the bot does not know."""
    async with transaction(context.services) as db:
        patient = await _patient(db, update)
    await reply(update, patient.language if patient else "en", "chat.unknown_command")


async def other_message(update: Update, context: AppContext) -> None:
    """Stickers, photos, voice...: say what the bot understands."""
    async with transaction(context.services) as db:
        patient = await _patient(db, update)
    await reply(update, patient.language if patient else "en", "chat.not_understood")


async def stale_button(update: Update, context: AppContext) -> None:  # noqa: ARG001
    """A button from an old message, or data the bot never made."""
    query = update.callback_query
    if query is not None:
        await query.answer(catalog("en").text("chat.stale_button"))


async def chat_member(update: Update, context: AppContext) -> None:
    """The patient blocked (kicked) or unblocked the bot in their private chat."""
    member = update.my_chat_member
    if member is None or member.chat.type != "private":
        return
    services = context.services
    status = member.new_chat_member.status
    async with transaction(services) as db:
        patient = await care.find_patient(session=db, tg_user_id=member.from_user.id)
        if patient is None:
            return
        if status in ("kicked", "left"):
            assert patient.id is not None
            await care.block_patient(session=db, patient_id=patient.id, now=services.clock.now())
        else:
            patient.blocked_at = None
            db.add(patient)
    if status not in ("kicked", "left"):
        services.poke()
