"""What a patient writes in their own words: the one router for free text.

Every text message (and an edited one) comes here. First the safety net: words that name
a red-flag sign (messages/safety.py) get the clinic's contact and the emergency line at
once, and the clinic's staff get the patient's words, in whatever state the conversation
is. Otherwise the conversation's state (scheduler/conversation.py) says what the text
answers: a time zone, quiet hours, a date, a check-in's description, a message for the
clinic. Outside a flow, the text is kept as a draft the patient can send to the clinic, with
buttons for what the bot can do itself; it is never only "I didn't catch that".

An edit answers only a state that waits for typed text (a corrected date, zone or quiet
hours), or raises a red flag; any other edit was answered as the original message.

Callback data: `msg:send:<draft id>` sends the draft, `msg:write` asks for a message to the
clinic, `msg:book`, `msg:aftercare`, `msg:help` do what their commands do.
"""

from __future__ import annotations

from collections.abc import Callable

from telegram import InlineKeyboardMarkup

from bot import keyboards
from bot.handlers import control, manage, patient, staff
from bot.handlers.base import Turn, callback_int, turn
from messages import safety
from scheduler import care, conversation, inbox, patients
from scheduler.models import InboxKind

# States in which an edited message is the new answer.
EDITABLE = (conversation.TypingZone, conversation.TypingQuiet, conversation.ChoosingDate)


@turn("anyone")
async def text_message(t: Turn) -> None:
    """Free text (or a photo's or a file's caption): a staff member's answer to a patient, a
    red flag, or what the conversation's state says it answers. After a caption (but a red
    flag's), the writer is told that only its words were read."""
    await _words(t)
    message = t.update.message  # None for an edit: its answer is said once already
    # After a red flag the answer that matters is the clinic's contact, sent on its own.
    if message is not None and message.text is None and not safety.red_flags(t.text):
        t.say("chat.caption_only")


async def _words(t: Turn) -> None:
    if await staff.typed_reply(t):
        return
    text = t.text
    edited = t.update.edited_message is not None
    signs = safety.red_flags(text)
    if t.patient is None or t.patient.consent_at is None:
        if signs:  # nobody to alert, but the way to help is said at once
            await red_flag_answer(t, emergency=safety.needs_emergency(signs), known=False)
        elif not edited:
            t.say("chat.start_first")
        return
    state = conversation.state_of(t.me)
    if state.lapsed(t.now):
        state = conversation.Idle()
    if signs:
        await _red_flag(t, text, signs, state)
        return
    if edited and not isinstance(state, EDITABLE):
        return
    match state:
        case conversation.TypingZone(onboarding=onboarding):
            await control.typed_zone(t, text, onboarding=onboarding)
        case conversation.TypingQuiet():
            await control.typed_quiet(t, text)
        case conversation.ChoosingDate():
            if not patient.typed_date(t, text):
                await _offer(t, text, "chat.date_not_understood", keyboards.send_to_clinic)
        case conversation.Describing(checkin=checkin_id):
            found = await patients.add_checkin_note(
                session=t.db,
                patient=t.me,
                checkin_id=checkin_id,
                note=text,
                staff=t.staff_ids,
                now=t.now,
            )
            t.say("checkin_flow.note_thanks" if found else "checkin_flow.note_lost")
            t.poke()
        case conversation.WritingToClinic():
            await inbox.write_to_clinic(
                session=t.db, patient=t.me, text=text, staff=t.staff_ids, now=t.now
            )
            t.say("inbox.sent")
            t.poke()
        case conversation.Screening():
            await _offer(t, text, "screening.use_buttons", keyboards.send_to_clinic)
        case _:
            await _offer(t, text, "chat.free_text", keyboards.free_text)


async def _offer(
    t: Turn, text: str, key: str, buttons: Callable[[str, int], InlineKeyboardMarkup]
) -> None:
    """Text the bot cannot take as an answer: kept as a draft the patient may send to the
    clinic with one press (never sent unasked)."""
    draft = await inbox.keep_draft(session=t.db, patient=t.me, text=text, now=t.now)
    assert draft.id is not None
    t.say(key, buttons(t.lang, draft.id))


async def _red_flag(t: Turn, text: str, signs: list[str], state: object) -> None:
    """The patient's words name a red-flag sign: the clinic's staff get them at once; the
    patient gets the clinic's contact and the emergency line. A check-in's description is
    kept with the check-in as well; any other flow stays where it was."""
    if isinstance(state, conversation.Describing):
        await patients.add_checkin_note(
            session=t.db,
            patient=t.me,
            checkin_id=state.checkin,
            note=text,
            staff=t.staff_ids,
            now=t.now,
            signs=signs,
        )
    else:
        await inbox.write(
            session=t.db,
            patient=t.me,
            text=text,
            staff=t.staff_ids,
            now=t.now,
            kind=InboxKind.RED_FLAG,
            signs=signs,
        )
    await red_flag_answer(t, emergency=safety.needs_emergency(signs))
    t.poke()


async def red_flag_answer(t: Turn, *, emergency: bool, known: bool = True) -> None:
    """ "Please contact the clinic now", the clinic's phone and address, and the emergency
    line (first, for breathing difficulty or collapse). To a patient of the clinic it is a
    delivery row, written with the clinic's alert and sent at once (`inbox.answer_red_flag`);
    to someone who never set up the bot (no row to plan for), it is said after the commit."""
    if known and t.patient is not None:
        await inbox.answer_red_flag(session=t.db, patient=t.me, emergency=emergency, now=t.now)
        t.poke()
        return
    if t.patient is not None:
        clinic = await care.clinic_of(session=t.db, patient=t.patient)
    else:
        clinic = await care.ensure_default_clinic(session=t.db, info=t.services.clinic, now=t.now)
    t.send(inbox.safety_text(t.reader, clinic, emergency=emergency, known=known))


@turn()
async def message_button(t: Turn) -> None:
    """The buttons under a message the bot could not answer itself."""
    parts = t.data.split(":")
    action = parts[1] if len(parts) >= 2 else ""
    if action == "send" and len(parts) == 3 and (draft_id := callback_int(parts[2])) is not None:
        sent = await inbox.send_draft(
            session=t.db, patient=t.me, draft_id=draft_id, staff=t.staff_ids, now=t.now
        )
        if sent is None:
            t.stale()
            return
        t.edit(t.t("inbox.sent"))
        t.poke()
    elif action == "write" and len(parts) == 2:
        await conversation.expect(
            session=t.db, patient=t.me, state=conversation.WritingToClinic(), now=t.now
        )
        t.say("inbox.write_now")
    elif action == "book" and len(parts) == 2:
        await patient.book(t)
    elif action == "aftercare" and len(parts) == 2:
        await manage.show_aftercare(t)
    elif action == "help" and len(parts) == 2:
        t.say("chat.help")
    else:
        t.stale()
