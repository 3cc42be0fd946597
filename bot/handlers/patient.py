"""Patient-facing handlers: setting up, booking, the health questions, information.

Each handler is a Turn body (bot/handlers/base.py): it parses, calls one transition of
`scheduler/` (scheduler/booking.py for the way to a booked session), and renders its result
from `messages/`. Conversation state lives in the patient's row (scheduler/conversation.py),
so a restart never loses a patient mid-flow.
"""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta

from telegram import Update

from bot import keyboards
from bot.context import AppContext
from bot.dates import parse_when
from bot.handlers import staff
from bot.handlers.base import Turn, answer, language_for, transaction, turn
from messages import texts
from messages.protocol import ScreeningQuestion
from messages.render import Html, catalog
from scheduler import booking, care, compose, invites, patients
from scheduler.booking import Ask, AskDate, Booked, Refused, Screened, Stale
from scheduler.conversation import TypingZone, expect, moving
from scheduler.models import PlannedMessage, TreatmentSession

log = logging.getLogger("aftercare.bot")

# How far ahead a session may be booked: further is surely a typo (and near year 9999 the
# reminder arithmetic would overflow).
MAX_AHEAD = timedelta(days=2 * 366)


# -- /start, consent, time zone -------------------------------------------------------------


@turn("anyone")
async def start(t: Turn) -> None:
    """Greet, tie to the clinic (a deep link names it, and maybe a session), ask consent."""
    user, chat = t.update.effective_user, t.update.effective_chat
    if user is None or chat is None:
        return
    services = t.services
    colleague = await staff.staff_in(t)
    if colleague is not None and t.patient is None:  # staff, not a patient: their commands
        await staff.staff_help(t, colleague)
        return
    clinic = await care.ensure_default_clinic(session=t.db, info=services.clinic, now=t.now)
    invite = await invites.patient_invite(session=t.db, payload=(t.context.args or [""])[0])
    clinic = invite.clinic if invite is not None else clinic
    patient, _ = await care.start_patient(
        session=t.db,
        tg_user_id=user.id,
        chat_id=chat.id,
        first_name=user.first_name,
        language=language_for(user.language_code),
        clinic=clinic,
        now=t.now,
        quiet=services.settings.quiet,
    )
    await invites.redeem_booking(
        session=t.db, found=invite, patient=patient, protocol=services.protocol, now=t.now
    )
    t.patient = patient
    t.poke()
    if patient.consent_at is not None:
        t.say("chat.welcome_back", name=user.first_name)
        return
    name = await invites.clinic_name(session=t.db, patient=patient)
    t.say("chat.welcome", keyboards.consent(t.lang), name=user.first_name, clinic=name)


@turn("known")
async def consent_button(t: Turn) -> None:
    """Consent given or refused."""
    if t.data == "consent:no":
        await booking.refuse_consent(session=t.db, patient=t.me, now=t.now)
        t.edit(t.t("chat.consent_refused"))
        return
    await booking.consent(session=t.db, patient=t.me, protocol=t.services.protocol, now=t.now)
    t.poke()
    t.edit(t.t("chat.consent_thanks"))
    zone = t.me.timezone
    t.say("chat.ask_zone", keyboards.timezones(t.lang, zone), zone=zone)


@turn()
async def zone_button(t: Turn) -> None:
    """While setting up: keep the clinic's zone, pick a common one, or type one."""
    _, _, rest = t.data.partition(":")
    if rest == "type":
        await expect(session=t.db, patient=t.me, state=TypingZone(onboarding=True), now=t.now)
        t.edit(t.t("chat.type_zone"))
        return
    zone = t.me.timezone
    if rest.startswith("set:"):
        zone = rest.removeprefix("set:")
        if zone not in keyboards.COMMON_ZONES:
            t.stale()
            return
    await set_zone_and_go_on(t, zone, edit=True)


async def set_zone_and_go_on(t: Turn, zone: str, *, edit: bool) -> None:
    """The zone chosen while setting up (button or typed): every pending reminder follows it
    (an invite's session is planned already), then the booking or the invite's questions."""
    await patients.set_preferences(
        session=t.db, patient=t.me, protocol=t.services.protocol, now=t.now, timezone=zone
    )
    t.poke()
    text = t.t("chat.zone_set", zone=zone)
    if edit:
        t.edit(text)
    else:
        t.send(text)
    shown = await booking.after_setup(
        session=t.db, patient=t.me, protocol=t.services.protocol, staff=t.staff_ids, now=t.now
    )
    await render(t, shown)


# -- booking --------------------------------------------------------------------------------


async def book(t: Turn) -> None:
    """/book (and the "Book a session" button): record a new session."""
    await render(t, await booking.begin_booking(session=t.db, patient=t.me, now=t.now))


book_command = turn()(book)


def beyond_reach(local: datetime, today: date) -> bool:
    """A session too far ahead to plan reminders for (and dates near year 9999 overflow)."""
    return local.date() > today + MAX_AHEAD


@turn()
async def calendar_button(t: Turn) -> None:
    """Month navigation, a day, a time slot, confirm, or change."""
    today = t.now.astimezone(t.zone).date()
    kind, _, value = t.data.partition(":")
    try:
        if kind == "cal":
            # A day of the month to show; "YYYY-MM" from keyboards sent before calendars had
            # other languages' months.
            anchor = date.fromisoformat(value if len(value) > 7 else value + "-01")
            t.edit(t.t("chat.ask_date"), keyboards.month_calendar(t.lang, anchor, today))
        elif kind == "day":
            day = date.fromisoformat(value)
            day_text = t.reader.calendar_day(day)
            t.edit(t.t("chat.ask_time", day=day_text), keyboards.time_slots(t.lang, day))
        elif kind in ("at", "ok") and beyond_reach(datetime.fromisoformat(value), today):
            t.edit(t.t("chat.booking_too_far"))
        elif kind == "at":
            propose(t, datetime.fromisoformat(value), edit=True)
        elif kind == "ok":
            local = datetime.fromisoformat(value)
            outcome = await booking.choose(
                session=t.db,
                patient=t.me,
                protocol=t.services.protocol,
                local=local,
                staff=t.staff_ids,
                now=t.now,
            )
            if not isinstance(outcome, Stale):
                t.edit(t.t("chat.session_chosen", when=local_when(t, local)))
            await render(t, outcome)
        else:  # "chg"
            t.edit(t.t("chat.ask_date"), keyboards.month_calendar(t.lang, today, today))
    except (ValueError, OverflowError):  # forged dates, or months beyond year 9999
        t.stale()


def local_when(t: Turn, local: datetime) -> str:
    return t.reader.at(local.replace(tzinfo=t.zone))


def propose(t: Turn, local: datetime, *, edit: bool) -> None:
    """Show the chosen date and time back (with how long the session lasts), Confirm/Change."""
    key = "sessions.confirm_move" if moving(t.me) else "chat.confirm_booking"
    minutes = t.services.protocol.session_minutes
    text = t.t(key, when=local_when(t, local), minutes=minutes)
    markup = keyboards.confirm_booking(t.lang, local.strftime("%Y-%m-%dT%H:%M"))
    if edit:
        t.edit(text, markup)
    else:
        t.send(text, markup)


def typed_date(t: Turn, text: str) -> bool:
    """A date typed while one is expected: proposed back, or what was missing asked for.
    False if the text is no date."""
    parsed = parse_when(text, tz=t.zone, now=t.now, language=t.lang)
    if parsed is None:
        return False
    if parsed.at is None:
        day = t.reader.calendar_day(parsed.day)
        t.say("chat.ask_time", keyboards.time_slots(t.lang, parsed.day), day=day)
    elif beyond_reach(datetime.combine(parsed.day, parsed.at), t.now.astimezone(t.zone).date()):
        t.say("chat.booking_too_far")
    else:
        propose(t, datetime.combine(parsed.day, parsed.at), edit=False)
    return True


@turn()
async def screening_button(t: Turn) -> None:
    """One health answer (or the remembered ones confirmed); a yes never blocks booking."""
    parts = t.data.split(":")
    if len(parts) != 3:
        t.stale()
        return
    _, key, value = parts
    outcome = await booking.answer(
        session=t.db,
        patient=t.me,
        protocol=t.services.protocol,
        key=key,
        value=value,
        staff=t.staff_ids,
        now=t.now,
    )
    if isinstance(outcome, Stale):
        t.stale()
        return
    t.edit(t.pressed_with(t.t(ANSWER_LABELS[value])))
    await render(t, outcome)


# The label of each answer, as shown under the question once answered.
ANSWER_LABELS = {
    "yes": "button.yes",
    "no": "button.no",
    "na": "button.not_applicable",
    "keep": "button.still_true",
    "changed": "button.something_changed",
}


async def render(t: Turn, shown: AskDate | Ask | Booked | Screened | Refused | Stale) -> None:
    """Say what a booking transition decided."""
    match shown:
        case AskDate(today=today, moving=None):
            t.say("chat.ask_date", keyboards.month_calendar(t.lang, today, today))
        case AskDate(today=today, moving=TreatmentSession() as session):
            when = t.reader.at(session.start_at)
            t.say(
                "sessions.ask_new_date", keyboards.month_calendar(t.lang, today, today), when=when
            )
        case Ask():
            _advice(t, shown.advice)
            _ask(t, shown)
        case Booked(advice=advice):
            _advice(t, advice)
            t.say("chat.booking_saved")
            t.poke()
        case Screened(treatment=treatment, moved=True, rows=rows, advice=advice):
            _advice(t, advice)
            await moved(t, treatment, rows, shown.anchor)
        case Screened(treatment=treatment, advice=advice):
            _advice(t, advice)
            t.say("invited.screened", when=t.reader.at(treatment.start_at))
            t.poke()
        case Refused(reason=reason, today=today):
            if reason in ("past", "clash"):
                key = f"sessions.{reason}" if moving(t.me) else f"chat.booking_{reason}"
                t.say(key, keyboards.month_calendar(t.lang, today, today))
            elif reason == "not_found":
                t.say("sessions.not_found")
            else:
                t.say(f"chat.booking_{reason}")
        case Stale():
            t.stale()


async def moved(
    t: Turn, treatment: TreatmentSession, rows: list[PlannedMessage], anchor: int | None
) -> None:
    """A session was moved: say so with its new plan, and take the buttons off the message
    that started the move (the /sessions list)."""
    when = t.reader.at(treatment.start_at)
    if anchor is not None:
        t.edit_message(anchor, t.t("sessions.move_done", when=when))
    t.say("sessions.moved", when=when)
    if rows:
        view = await t.reading.view(treatment)
        title = t.t("chat.timeline_title", zone=t.me.timezone)
        t.send(texts.lines(title, compose.timeline(view, rows, t.now)))
    t.poke()


def _advice(t: Turn, question: ScreeningQuestion | None) -> None:
    if question is not None:
        t.say("screening.yes_reply", advice=t.t(question.advice))


def _ask(t: Turn, ask: Ask) -> None:
    protocol = t.services.protocol
    if ask.remembered is not None:
        lines = []
        for key, value in ask.remembered.items():
            try:
                short = t.t(protocol.question(key).short)
            except KeyError:
                continue
            answer = t.t(f"screening.answer.{value}")
            lines.append(t.t("screening.remembered_line", what=short, answer=answer))
        markup = keyboards.confirm_remembered(t.lang)
        t.say("screening.confirm_remembered", markup, answers=Html("\n".join(lines)))
        return
    assert ask.question is not None
    day = t.reader.day(ask.start)
    question = ask.question
    markup = keyboards.screening_question(
        t.lang, question.key, not_applicable=question.not_applicable
    )
    t.say(question.question, markup, date=day)


# -- information ----------------------------------------------------------------------------


@turn("anyone")
async def help_command(t: Turn) -> None:
    """/help: what the bot does and its commands."""
    t.say("chat.help")


@turn()
async def prep_command(t: Turn) -> None:
    """/prep: the preparation checklist for the next session."""
    assert t.me.id is not None
    upcoming = await care.next_session(session=t.db, patient_id=t.me.id, now=t.now)
    if upcoming is None:
        t.say("chat.no_session")
        return
    view = await t.reading.view(upcoming)
    t.send(compose.prep_checklist(view, t.now))


@turn()
async def reminders_command(t: Turn) -> None:
    """/reminders: what is planned, in local time, grouped by session."""
    assert t.me.id is not None
    rows = await care.planned_messages(session=t.db, patient_id=t.me.id)
    groups = await compose.reminder_groups(session=t.db, rows=await t.reading.lines(rows, t.now))
    text = texts.reminder_list(t.reader, t.me.timezone, groups)
    t.send(text, keyboards.choice(t.lang, [[("reminders.show_past", "rem:past")]]))


# -- everything else --------------------------------------------------------------------------


@turn("anyone")
async def unknown_command(t: Turn) -> None:
    """A command the bot does not know."""
    t.say("chat.unknown_command")


@turn("anyone")
async def other_message(t: Turn) -> None:
    """Stickers, photos, voice...: say what the bot understands."""
    t.say("chat.not_text")


async def stale_button(update: Update, context: AppContext) -> None:  # noqa: ARG001
    """A button from an old message, or data the bot never made."""
    query = update.callback_query
    if query is not None:
        lang = language_for(query.from_user.language_code)
        await answer(query, catalog(lang).text("chat.stale_button"))


async def chat_member(update: Update, context: AppContext) -> None:
    """The patient blocked (kicked) or unblocked the bot in their private chat."""
    member = update.my_chat_member
    if member is None or member.chat.type != "private":
        return
    services = context.services
    status = member.new_chat_member.status
    async with transaction(services, short=True) as db:
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
