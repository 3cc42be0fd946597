"""Patient-facing handlers: one thin async function per command or button.

Each handler parses, calls one data function from `scheduler.care`, and renders from
`messages/`. Conversation state lives in the patient's row (`awaiting`, `draft`), so a
restart never loses a patient mid-flow.
"""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from telegram import Update

from bot import keyboards
from bot.context import AppContext
from bot.dates import parse_when
from bot.handlers import checkins, control, invited, manage
from bot.handlers.base import (
    answer,
    consented_patient,
    edit,
    reply,
    reply_in_their_language,
    send,
    transaction,
    valid_zone,
)
from bot.handlers.base import current_patient as _patient
from messages.render import available_languages, catalog
from scheduler import care, compose, invites, patients

log = logging.getLogger("aftercare.bot")

# How far ahead a session may be booked: further is surely a typo (and near year 9999 the
# reminder arithmetic would overflow).
MAX_AHEAD = timedelta(days=2 * 366)

# Languages with a catalog (English only until translations land); a patient's choice is
# stored in patient.language and every text is rendered in it.
SUPPORTED_LANGUAGES = available_languages()


def language_for(code: str | None) -> str:
    base = (code or "en").split("-")[0].lower()
    return base if base in SUPPORTED_LANGUAGES else "en"


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
        # A deep link names the clinic, and a per-booking one the session (issue 5).
        invite = await invites.patient_invite(session=db, payload=(context.args or [""])[0])
        clinic = invite.clinic if invite is not None else clinic
        patient, _ = await care.start_patient(
            session=db,
            tg_user_id=user.id,
            chat_id=chat.id,
            first_name=user.first_name,
            language=language_for(user.language_code),
            clinic=clinic,
            now=now,
        )
        await invites.redeem_booking(
            session=db, found=invite, patient=patient, protocol=services.protocol, now=now
        )
        lang, consented = patient.language, patient.consent_at is not None
        clinic_name = await invites.clinic_name(session=db, patient=patient)
    services.poke()
    if consented:
        await reply(update, lang, "chat.welcome_back", name=user.first_name)
        return
    await reply(
        update,
        lang,
        "chat.welcome",
        keyboards.consent(lang),
        name=user.first_name,
        clinic=clinic_name,
    )


async def consent_button(update: Update, context: AppContext) -> None:
    """Consent given or refused."""
    query = update.callback_query
    assert query is not None and query.data is not None
    services = context.services
    async with transaction(services) as db:
        patient = await _patient(db, update)
        if patient is None:
            await answer(query, catalog("en").text("chat.stale_button"))
            return
        lang = patient.language
        if query.data == "consent:no":
            patient.consent_at = None
            db.add(patient)
            await answer(query)
            await edit(update, catalog(lang).text("chat.consent_refused"))
            return
        patient.consent_at = services.clock.now()
        zone = patient.timezone
        db.add(patient)
        # Sessions booked for them by an invite or an import are planned from now on.
        await invites.plan_waiting(
            session=db, patient=patient, protocol=services.protocol, now=patient.consent_at
        )
    services.poke()
    await answer(query)
    await edit(update, catalog(lang).text("chat.consent_thanks"))
    await reply(update, lang, "chat.ask_zone", keyboards.timezones(lang, zone), zone=zone)


async def zone_button(update: Update, context: AppContext) -> None:
    """Keep the clinic's zone, pick a common one, or type one."""
    query = update.callback_query
    assert query is not None and query.data is not None
    services = context.services
    async with transaction(services) as db:
        patient = await consented_patient(db, update)
        if patient is None:
            return
        lang = patient.language
        _, _, rest = query.data.partition(":")
        if rest == "type":
            patient.awaiting = "timezone"
            db.add(patient)
            await answer(query)
            await edit(update, catalog(lang).text("chat.type_zone"))
            return
        if rest.startswith("set:"):
            zone = rest.removeprefix("set:")
            if zone not in keyboards.COMMON_ZONES:
                await answer(query, catalog(lang).text("chat.stale_button"))
                return
            patient.timezone = zone
        db.add(patient)
        zone = patient.timezone
    await answer(query)
    await edit(update, catalog(lang).text("chat.zone_set", zone=zone))
    await ask_screening(update, context, 0, lang)


async def ask_screening(update: Update, context: AppContext, index: int, lang: str) -> None:
    """Ask screening question `index`, or move on to booking after the last one."""
    questions = context.services.protocol.screening
    if index >= len(questions):
        # A session booked by an invite takes the answers; no date to ask (issue 5).
        if await invited.screened_invited_session(update, context, lang):
            return
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
        _, raw_index, choice = query.data.split(":")
        index = int(raw_index)
        if index < 0 or choice not in ("y", "n"):
            raise ValueError(query.data)
        question = questions[index]
    except (ValueError, IndexError):
        await answer(query, catalog("en").text("chat.stale_button"))
        return
    async with transaction(context.services) as db:
        patient = await consented_patient(db, update)
        if patient is None:
            return
        lang = patient.language
        screening = dict(patient.draft.get("screening", {}))
        screening[question.key] = choice == "y"
        patient.draft = {**patient.draft, "screening": screening}
        db.add(patient)
    await answer(query)
    texts = catalog(lang)
    said = texts.text("button.yes" if choice == "y" else "button.no")
    await edit(
        update,
        texts.text(question.question, number=index + 1, total=len(questions)) + f"\n<i>{said}</i>",
    )
    if choice == "y":
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
        if patient is not None and patient.draft:
            patient.draft = {}  # a new booking: forget a half-done one or a pending move
            db.add(patient)
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
        patient = await consented_patient(db, update)
        if patient is None:
            return
        lang, zone = patient.language, care.zone_of(patient)
        moving = manage.moving(patient)
    texts = catalog(lang)
    today = services.clock.now().astimezone(zone).date()
    kind, _, value = query.data.partition(":")
    try:
        if kind == "cal":
            month = date.fromisoformat(value + "-01")
            await answer(query)
            await edit(
                update, texts.text("chat.ask_date"), keyboards.month_calendar(lang, month, today)
            )
        elif kind == "day":
            day = date.fromisoformat(value)
            await answer(query)
            await edit(
                update,
                texts.text("chat.ask_time", day=compose.local_day(day, lang)),
                keyboards.time_slots(lang, day),
            )
        elif kind in ("at", "ok") and beyond_reach(datetime.fromisoformat(value), today):
            await answer(query)
            await edit(update, texts.text("chat.booking_too_far"))
        elif kind == "at":
            local = datetime.fromisoformat(value)
            await answer(query)
            await propose(update, lang, zone, local, edit_message=True, moving=moving)
        elif kind == "ok":
            local = datetime.fromisoformat(value)
            await answer(query)
            await confirm(update, context, local)
        else:  # "chg"
            await answer(query)
            await edit(
                update, texts.text("chat.ask_date"), keyboards.month_calendar(lang, today, today)
            )
    except (ValueError, OverflowError):  # forged dates, or months beyond year 9999
        await answer(query, texts.text("chat.stale_button"))


def beyond_reach(local: datetime, today: date) -> bool:
    """A session too far ahead to plan reminders for (and dates near year 9999 overflow)."""
    return local.date() > today + MAX_AHEAD


async def propose(
    update: Update,
    lang: str,
    zone: ZoneInfo,
    local: datetime,
    *,
    edit_message: bool,
    moving: bool = False,
) -> None:
    """Show the chosen date and time back, with Confirm / Change."""
    texts = catalog(lang)
    when = compose.local_datetime(local.replace(tzinfo=zone), zone, lang)
    text = texts.text("sessions.confirm_move" if moving else "chat.confirm_booking", when=when)
    markup = keyboards.confirm_booking(lang, local.strftime("%Y-%m-%dT%H:%M"))
    if edit_message:
        await edit(update, text, markup)
    else:
        await send(update, text, markup)


async def confirm(update: Update, context: AppContext, local: datetime) -> None:
    """Book the session; the dispatcher sends the 'booked' message with the timeline."""
    if await manage.confirm_move(update, context, local):
        return  # it was a move of an existing session
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
        moving = patient is not None and manage.moving(patient)
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
        await typed_date(update, context, lang, zone, message.text, moving=moving)
    elif awaiting is not None and awaiting.startswith("note:"):
        await checkins.note_text(update, context, message.text)
    elif awaiting in control.TYPED_SETTINGS:
        await control.typed_setting(update, context, awaiting, message.text)
    else:
        await reply(update, lang, "chat.not_understood")


async def typed_date(
    update: Update,
    context: AppContext,
    lang: str,
    zone: ZoneInfo,
    text: str,
    *,
    moving: bool = False,
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
    elif beyond_reach(datetime.combine(parsed.day, parsed.at), now.astimezone(zone).date()):
        await reply(update, lang, "chat.booking_too_far")
    else:
        local = datetime.combine(parsed.day, parsed.at)
        await propose(update, lang, zone, local, edit_message=False, moving=moving)


# -- information ----------------------------------------------------------------------------


async def help_command(update: Update, context: AppContext) -> None:
    """/help: what the bot does and its commands."""
    await reply_in_their_language(update, context.services, "chat.help")


async def prep_command(update: Update, context: AppContext) -> None:
    """/prep: the preparation checklist for the next session."""
    services = context.services
    now = services.clock.now()
    async with transaction(services) as db:
        patient = await consented_patient(db, update)
        if patient is None:
            return
        assert patient.id is not None
        upcoming = await care.next_session(session=db, patient_id=patient.id, now=now)
        if upcoming is None:
            await reply(update, patient.language, "chat.no_session")
            return
        text = compose.prep_checklist(services.protocol, patient, upcoming, now)
    await send(update, text)


async def reminders_command(update: Update, context: AppContext) -> None:
    """/reminders: what is planned, in local time."""
    services = context.services
    async with transaction(services) as db:
        patient = await consented_patient(db, update)
        if patient is None:
            return
        assert patient.id is not None
        rows = await care.planned_messages(session=db, patient_id=patient.id)
        text = compose.reminder_list(patient, rows)
        lang = patient.language
    await send(update, text, manage.past_reminders_button(lang))


# -- everything else --------------------------------------------------------------------------


async def unknown_command(update: Update, context: AppContext) -> None:
    """A command the bot does not know."""
    await reply_in_their_language(update, context.services, "chat.unknown_command")


async def other_message(update: Update, context: AppContext) -> None:
    """Stickers, photos, voice...: say what the bot understands."""
    await reply_in_their_language(update, context.services, "chat.not_understood")


async def stale_button(update: Update, context: AppContext) -> None:  # noqa: ARG001
    """A button from an old message, or data the bot never made."""
    query = update.callback_query
    if query is not None:
        await answer(query, catalog("en").text("chat.stale_button"))


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
            return
        returned = await patients.welcome_back(
            session=db, patient=patient, protocol=services.protocol, now=services.clock.now()
        )
    if returned:
        services.poke()
