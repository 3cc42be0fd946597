"""Side-effect check-ins: the answer buttons on the after-24h and after-3d messages.

Callback data `ci:<planned message id>:<option key>` (made by scheduler.compose). The message
must be the pressing patient's check-in; one answer per message, after which the buttons are
replaced by the answer. A red flag alerts the clinic's staff at once.
"""

from __future__ import annotations

import logging

from telegram import Message, Update
from telegram.constants import ParseMode
from telegram.error import TelegramError

from bot.context import AppContext
from bot.handlers.base import answer, current_patient, edit, reply, send, transaction
from messages.render import Html, catalog
from scheduler import patients, views

log = logging.getLogger("aftercare.bot")


def _parse(data: str) -> tuple[int, str] | None:
    parts = data.split(":")
    if len(parts) != 3 or not parts[1].isdigit() or len(parts[1]) > 12 or not parts[2]:
        return None
    return int(parts[1]), parts[2]


async def checkin_button(update: Update, context: AppContext) -> None:
    """Record the answer, reply with the protocol's guidance, alert staff on a red flag."""
    query = update.callback_query
    assert query is not None and query.data is not None
    services = context.services
    now = services.clock.now()
    parsed = _parse(query.data)
    async with transaction(services) as db:
        patient = await current_patient(db, update)
        if parsed is None or patient is None:
            await answer(query, catalog("en").text("chat.stale_button"))
            return
        lang = patient.language
        texts = catalog(lang)
        try:
            recorded = await patients.record_checkin(
                session=db,
                patient=patient,
                message_id=parsed[0],
                option_key=parsed[1],
                protocol=services.protocol,
                now=now,
            )
        except patients.CheckinError as exc:
            key = "checkin_flow.already" if exc.reason == "answered" else "chat.stale_button"
            await answer(query, texts.text(key))
            return
        alert = (
            views.staff_alert(
                patient, recorded.treatment, recorded.option, recorded.checkin, services.clinic
            )
            if recorded.checkin.red_flag
            else None
        )
        staff = (
            await patients.staff_chat_ids(
                session=db,
                clinic_id=patient.clinic_id,
                configured=services.settings.staff_user_ids,
            )
            if alert is not None
            else []
        )
        checkin_id = recorded.checkin.id
    await answer(query)
    said = texts.text("checkin_flow.answered", answer=texts.text(recorded.option.label))
    message = query.message
    original = (message.text_html if isinstance(message, Message) else None) or ""
    await edit(update, Html(f"{original}\n\n{said}" if original else said))
    guidance = [texts.text(recorded.option.guidance)]
    if alert is not None:
        guidance += [texts.text("checkin.red_flag"), views.contact(services.clinic, lang)]
    await send(update, "\n\n".join(guidance))
    if alert is not None:
        await alert_staff(context, staff, alert, checkin_id)


async def alert_staff(
    context: AppContext, chat_ids: list[int], text: str, checkin_id: int | None
) -> int:
    """Send the alert to every staff chat; a chat that cannot be reached is logged (without
    names) and skipped. The number of chats reached."""
    reached = 0
    for chat_id in chat_ids:
        try:
            await context.bot.send_message(chat_id, text, parse_mode=ParseMode.HTML)
        except TelegramError as exc:
            log.warning(
                "staff alert not delivered: checkin=%s chat=%s error=%s",
                checkin_id,
                chat_id,
                type(exc).__name__,
            )
        else:
            reached += 1
    log.info("staff alert: checkin=%s reached=%s of %s", checkin_id, reached, len(chat_ids))
    return reached


async def note_text(update: Update, context: AppContext, text: str) -> None:
    """The "something else" description: stored with the check-in (never logged)."""
    async with transaction(context.services) as db:
        patient = await current_patient(db, update)
        if patient is None or patient.awaiting is None:
            return
        raw_id = patient.awaiting.removeprefix("note:")
        lang = patient.language
        checkin = (
            await patients.add_checkin_note(
                session=db, patient=patient, checkin_id=int(raw_id), note=text
            )
            if raw_id.isdigit() and len(raw_id) <= 12
            else None
        )
        saved = checkin is not None
    await reply(update, lang, "checkin_flow.note_thanks" if saved else "checkin_flow.note_lost")
