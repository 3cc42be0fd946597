"""The patient's sessions: /sessions (move, cancel), /aftercare, and earlier reminders.

Callback data: `ses:<action>:<session id>` with action mv (move), cx (ask to cancel),
cy (cancel confirmed), cn (keep); `rem:past`. Every session id is checked to be the
pressing patient's before anything happens.
"""

from __future__ import annotations

from datetime import datetime

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update

from bot import keyboards
from bot.context import AppContext
from bot.handlers.base import (
    answer,
    consented_patient,
    current_patient,
    edit,
    send,
    transaction,
)
from messages.render import catalog
from scheduler import care, compose, patients, views
from scheduler.models import Patient, TreatmentSession

SESSION_ACTIONS = ("mv", "cx", "cy", "cn")


def moving(patient: Patient) -> bool:
    """Whether the patient is choosing a new time for an existing session."""
    return isinstance(patient.draft.get("reschedule"), int)


def past_reminders_button(lang: str) -> InlineKeyboardMarkup:
    return keyboards.choice(lang, [[("reminders.show_past", "rem:past")]])


def _session_buttons(
    patient: Patient, upcoming: list[TreatmentSession]
) -> InlineKeyboardMarkup | None:
    texts = catalog(patient.language)
    rows = []
    for treatment in upcoming:
        label = views.when(treatment, patient)
        rows.append(
            [
                InlineKeyboardButton(
                    texts.text("button.sessions.move", when=label),
                    callback_data=f"ses:mv:{treatment.id}",
                ),
                InlineKeyboardButton(
                    texts.text("button.sessions.cancel", when=label),
                    callback_data=f"ses:cx:{treatment.id}",
                ),
            ]
        )
    return InlineKeyboardMarkup(rows) if rows else None


async def sessions_command(update: Update, context: AppContext) -> None:
    """/sessions: upcoming and past sessions, with buttons to move or cancel."""
    now = context.services.clock.now()
    async with transaction(context.services) as db:
        patient = await consented_patient(db, update)
        if patient is None:
            return
        assert patient.id is not None
        upcoming, past = await patients.patient_sessions(
            session=db, patient_id=patient.id, now=now
        )
        text = views.sessions_list(patient, upcoming, past, now)
        markup = _session_buttons(patient, upcoming)
    await send(update, text, markup)


def _parse(data: str) -> tuple[str, int] | None:
    parts = data.split(":")
    if len(parts) != 3 or parts[1] not in SESSION_ACTIONS or not parts[2].isdigit():
        return None
    if len(parts[2]) > 12:
        return None
    return parts[1], int(parts[2])


async def session_button(update: Update, context: AppContext) -> None:
    """Move or cancel one of the patient's own upcoming sessions."""
    query = update.callback_query
    assert query is not None and query.data is not None
    services = context.services
    now = services.clock.now()
    parsed = _parse(query.data)
    async with transaction(services) as db:
        patient = await current_patient(db, update)
        if parsed is None or patient is None or patient.consent_at is None:
            await answer(query, catalog("en").text("chat.stale_button"))
            return
        assert patient.id is not None
        action, session_id = parsed
        lang = patient.language
        texts = catalog(lang)
        treatment = await patients.own_session(
            session=db, patient_id=patient.id, session_id=session_id
        )
        if treatment is None:  # someone else's (forged) or erased: nothing happens
            await answer(query, texts.text("chat.stale_button"))
            return
        label = views.when(treatment, patient)
        changeable = treatment.state == "booked" and treatment.end_at > now
        if action == "cn":
            await answer(query)
            await edit(update, texts.text("sessions.kept"))
            return
        if not changeable:
            await answer(query)
            await edit(update, texts.text("sessions.not_found"))
            return
        if action == "mv":
            patient.awaiting = "date"
            patient.draft = {"reschedule": session_id}
            db.add(patient)
            today = now.astimezone(care.zone_of(patient)).date()
            await answer(query)
            await send(
                update,
                texts.text("sessions.ask_new_date", when=label),
                keyboards.month_calendar(lang, today, today),
            )
            return
        if action == "cx":
            await answer(query)
            await send(
                update,
                texts.text("sessions.confirm_cancel", when=label),
                keyboards.choice(
                    lang,
                    [
                        [
                            ("button.sessions.cancel_yes", f"ses:cy:{session_id}"),
                            ("button.sessions.cancel_no", f"ses:cn:{session_id}"),
                        ]
                    ],
                ),
            )
            return
        await patients.cancel_session(
            session=db, patient_id=patient.id, session_id=session_id, now=now
        )
    await answer(query)
    await edit(update, texts.text("sessions.cancelled", when=label))


async def confirm_move(update: Update, context: AppContext, local: datetime) -> bool:
    """The "Confirm" of a new time, when the patient is moving a session (False: not moving).

    One transaction: the session moves, its pending messages are cancelled and planned again
    (already-sent steps are never sent again), then the dispatcher is re-armed.
    """
    services = context.services
    now = services.clock.now()
    async with transaction(services) as db:
        patient = await current_patient(db, update)
        if patient is None or not moving(patient):
            return False
        lang, zone = patient.language, care.zone_of(patient)
        error: str | None = None
        try:
            treatment = await patients.reschedule_session(
                session=db,
                patient=patient,
                session_id=int(patient.draft["reschedule"]),
                start=local.replace(tzinfo=care.zone_of(patient)),
                protocol=services.protocol,
                now=now,
            )
        except care.BookingError as exc:
            error = exc.reason
            if error == "not_found":
                patient.draft, patient.awaiting = {}, None
                db.add(patient)
        else:
            label = views.when(treatment, patient)
            rows = await compose.upcoming_of(db, treatment)
            timeline = compose.timeline(rows, zone, lang)
    texts = catalog(lang)
    if error == "not_found":
        await edit(update, texts.text("sessions.not_found"))
        return True
    if error is not None:  # in the past, or on another session: choose again
        today = now.astimezone(zone).date()
        await edit(
            update,
            texts.text(f"sessions.{error}"),
            keyboards.month_calendar(lang, today, today),
        )
        return True
    await edit(update, texts.text("sessions.moved", when=label))
    if rows:
        await send(update, texts.text("chat.timeline_title", zone=str(zone)) + "\n" + timeline)
    services.poke()
    return True


async def aftercare_command(update: Update, context: AppContext) -> None:
    """/aftercare: what is allowed again now, and until when each restriction lasts."""
    services = context.services
    now = services.clock.now()
    async with transaction(services) as db:
        patient = await consented_patient(db, update)
        if patient is None:
            return
        assert patient.id is not None
        lang = patient.language
        latest = await patients.latest_started_session(session=db, patient_id=patient.id, now=now)
        if latest is not None:
            text = views.aftercare(services.protocol, patient, latest, now)
        else:
            upcoming = await care.next_session(session=db, patient_id=patient.id, now=now)
            text = (
                catalog(lang).text("aftercare.not_yet", when=views.when(upcoming, patient))
                if upcoming is not None
                else catalog(lang).text("aftercare.no_session")
            )
    await send(update, text)


async def reminders_button(update: Update, context: AppContext) -> None:
    """The earlier reminders (sent, or skipped as too late)."""
    query = update.callback_query
    assert query is not None
    async with transaction(context.services) as db:
        patient = await consented_patient(db, update)
        if patient is None:
            return
        assert patient.id is not None
        rows = await patients.past_messages(session=db, patient_id=patient.id)
        text = views.past_reminders(patient, rows)
    await answer(query)
    await send(update, text)
