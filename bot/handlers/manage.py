"""The patient's sessions: /sessions (move, cancel), /aftercare, and earlier reminders.

Callback data: `ses:<action>:<session id>` with action mv (move), cx (ask to cancel),
cy (cancel confirmed), cn (keep); `rem:past`. Every session id is checked to be the
pressing patient's before anything happens. The /sessions message whose button was pressed
becomes the flow's message (the calendar, the cancel question), so that once the move or
cancel is done none of its old buttons is left to press.
"""

from __future__ import annotations

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from bot import keyboards
from bot.handlers.base import Turn, callback_int, turn
from messages import texts
from messages.texts import Reader
from scheduler import booking, care, compose, patients
from scheduler.care import BookingError
from scheduler.models import SessionState, TreatmentSession

SESSION_ACTIONS = ("mv", "cx", "cy", "cn")


def _session_buttons(
    reader: Reader, upcoming: list[TreatmentSession]
) -> InlineKeyboardMarkup | None:
    rows = []
    for treatment in upcoming:
        label = reader.at(treatment.start_at)
        rows.append(
            [
                InlineKeyboardButton(
                    reader.t("button.sessions.move", when=label),
                    callback_data=f"ses:mv:{treatment.id}",
                ),
                InlineKeyboardButton(
                    reader.t("button.sessions.cancel", when=label),
                    callback_data=f"ses:cx:{treatment.id}",
                ),
            ]
        )
    return InlineKeyboardMarkup(rows) if rows else None


@turn()
async def sessions_command(t: Turn) -> None:
    """/sessions: upcoming and past sessions, with buttons to move or cancel."""
    assert t.me.id is not None
    upcoming, past = await patients.patient_sessions(session=t.db, patient_id=t.me.id, now=t.now)
    listed = texts.sessions_list(
        t.reader,
        t.me.timezone,
        [texts.Booked(r.start_at, patients.session_state(r, t.now)) for r in upcoming],
        [texts.Booked(r.start_at, patients.session_state(r, t.now)) for r in past],
    )
    t.send(listed, _session_buttons(t.reader, upcoming))


def _parse(data: str) -> tuple[str, int] | None:
    parts = data.split(":")
    if len(parts) != 3 or parts[1] not in SESSION_ACTIONS:
        return None
    session_id = callback_int(parts[2])
    return None if session_id is None else (parts[1], session_id)


@turn()
async def session_button(t: Turn) -> None:
    """Move or cancel one of the patient's own upcoming sessions."""
    parsed = _parse(t.data)
    assert t.me.id is not None
    treatment = (
        await patients.own_session(session=t.db, patient_id=t.me.id, session_id=parsed[1])
        if parsed is not None
        else None
    )
    if parsed is None or treatment is None:  # forged, someone else's, or erased
        t.stale()
        return
    action = parsed[0]
    if action == "cn":
        t.edit(t.t("sessions.kept"))
    elif treatment.state != SessionState.BOOKED or treatment.end_at <= t.now:
        t.edit(t.t("sessions.not_found"))
    elif action == "mv":
        await _move(t, treatment)
    elif action == "cx":
        t.edit(
            t.t("sessions.confirm_cancel", when=t.reader.at(treatment.start_at)),
            keyboards.cancel_session(t.lang, parsed[1]),
        )
    else:
        await _cancel(t, treatment)


async def _move(t: Turn, treatment: TreatmentSession) -> None:
    """This message becomes the move's calendar (and is edited once the move is done)."""
    query = t.update.callback_query
    pressed = query.message.message_id if query is not None and query.message else None
    ask = await booking.begin_booking(
        session=t.db, patient=t.me, now=t.now, moving=treatment, anchor=pressed
    )
    t.edit(
        t.t("sessions.ask_new_date", when=t.reader.at(treatment.start_at)),
        keyboards.month_calendar(t.lang, ask.today, ask.today),
    )


async def _cancel(t: Turn, treatment: TreatmentSession) -> None:
    assert treatment.id is not None
    try:
        await patients.cancel_session(
            session=t.db,
            patient=t.me,
            session_id=treatment.id,
            protocol=t.services.protocol,
            now=t.now,
        )
    except BookingError:
        t.edit(t.t("sessions.not_found"))
        return
    t.poke()
    t.edit(t.t("sessions.cancelled", when=t.reader.at(treatment.start_at)))


async def show_aftercare(t: Turn) -> None:
    """/aftercare (and its button): what is allowed again now, and until when each
    restriction lasts."""
    assert t.me.id is not None
    latest = await patients.latest_started_session(session=t.db, patient_id=t.me.id, now=t.now)
    if latest is not None:
        view = await t.reading.view(latest)
        t.send(compose.aftercare(view, t.now))
        return
    upcoming = await care.next_session(session=t.db, patient_id=t.me.id, now=t.now)
    if upcoming is not None:
        t.say("aftercare.not_yet", when=t.reader.at(upcoming.start_at))
    else:
        t.say("aftercare.no_session")


aftercare_command = turn()(show_aftercare)


@turn()
async def reminders_button(t: Turn) -> None:
    """The earlier reminders (sent, or skipped as too late)."""
    assert t.me.id is not None
    rows = await patients.past_messages(session=t.db, patient_id=t.me.id)
    lines = [line for _, line in await t.reading.lines(rows, t.now)]
    t.send(texts.past_reminders(t.reader, t.me.timezone, lines))
