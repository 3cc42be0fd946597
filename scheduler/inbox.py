"""What patients write to the clinic, and what staff answer: rows, never memory.

A patient's message (sent on purpose, a red flag found in their words, a check-in's "something
else", a screening "yes") is an `InboxMessage`. Staff hear of it through delivery rows to
their chats (`PlannedMessage.chat_id`, priority REPLY), so a restart or an outage loses
nothing and the dispatcher's limits apply. A staff answer is an `InboxMessage` of kind REPLY
and a delivery row to the patient, which honours the patient's quiet hours unless they wrote
in the last hour. Everything here goes with the patient when they are erased.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

import msgspec
import sqlalchemy as sa
from sqlalchemy.orm import aliased
from sqlmodel import col, delete, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from messages import texts
from messages.protocol import Protocol
from messages.texts import Reader
from scheduler import clinics
from scheduler.care import DEFAULT_CLINIC_SLUG, prefs_of
from scheduler.conversation import Idle, set_state
from scheduler.db import saved
from scheduler.models import (
    CheckIn,
    Clinic,
    InboxKind,
    InboxMessage,
    MessageState,
    Patient,
    PlannedMessage,
    Priority,
    SessionState,
    StaffDraft,
    StaffMember,
    TreatmentSession,
)
from scheduler.planner import apply_quiet_hours
from scheduler.ports import Button, Outgoing
from scheduler.protocols import protocol_of

NOTIFY_STEP = "staff-notice"  # a staff chat is told about an inbox message
ALERT_STEP = "staff-alert"  # a staff chat is told about a red-flag check-in answer
REPLY_STEP = "clinic-reply"  # a staff answer, to the patient
CHANGE_STEP = "clinic-change"  # the clinic moved or cancelled a session: the patient is told
SAFETY_STEP = "safety-answer"  # a red flag in the patient's words: the clinic's contact, to them
STEPS = (NOTIFY_STEP, ALERT_STEP, REPLY_STEP, CHANGE_STEP, SAFETY_STEP)

MAX_TEXT = 4000  # Telegram's own limit is 4096 characters
# Telling staff stays worth doing for a week (a staff chat that is down for days still
# learns of it); a reply for two weeks.
NOTICE_VALIDITY = timedelta(days=7)
REPLY_VALIDITY = timedelta(days=14)
# A patient who wrote this recently is in the conversation: a reply reaches them at once,
# whatever the hour.
RECENT = timedelta(hours=1)
# "Please contact the clinic now" is still worth delivering a day later (Telegram down for
# hours), not after.
SAFETY_VALIDITY = timedelta(days=1)
DRAFT_LIFE = timedelta(days=2)
PAGE = 10

INBOUND = (InboxKind.MESSAGE, InboxKind.RED_FLAG, InboxKind.NOTE, InboxKind.SCREENING)


def clean(text: str) -> str:
    """A patient's or staff member's words as stored: control characters out (PostgreSQL
    refuses NUL), runs of spaces on a line as one, lines kept, at most MAX_TEXT."""
    lines = []
    for line in text.replace("\r\n", "\n").split("\n"):
        printable = "".join(ch if ch.isprintable() else " " for ch in line)
        lines.append(" ".join(printable.split()))
    return "\n".join(lines).strip()[:MAX_TEXT]


# -- who is told -----------------------------------------------------------------------------


async def staff_chat_ids(
    *, session: AsyncSession, clinic_id: int, configured: Sequence[int]
) -> list[int]:
    """The chats that hear of a clinic's patients, without duplicates: the staff ids from the
    settings (they work for the default clinic; a private chat's id is the user's id) and
    the clinic's staff who joined through an invite."""
    clinic = await session.get(Clinic, clinic_id)
    ids = list(configured) if clinic is not None and clinic.slug == DEFAULT_CLINIC_SLUG else []
    members = await session.exec(
        select(StaffMember.chat_id)
        .where(StaffMember.clinic_id == clinic_id)
        .order_by(col(StaffMember.id))
    )
    return list(dict.fromkeys([*ids, *members.all()]))


async def _tell_staff(
    *,
    session: AsyncSession,
    patient: Patient,
    step: str,
    extra: dict[str, int],
    staff: Sequence[int],
    now: datetime,
) -> int:
    """One delivery row per staff chat of the patient's clinic; the number planned."""
    assert patient.id is not None
    chats = await staff_chat_ids(session=session, clinic_id=patient.clinic_id, configured=staff)
    session.add_all(
        PlannedMessage(
            patient_id=patient.id,
            step=step,
            priority=Priority.REPLY,
            due_at=now,
            not_before=now,
            expires_at=now + NOTICE_VALIDITY,
            chat_id=chat,
            extra=extra,
            created_at=now,
        )
        for chat in chats
    )
    await session.flush()
    return len(chats)


# -- from the patient ------------------------------------------------------------------------


def _message(
    patient: Patient,
    kind: InboxKind,
    text: str,
    now: datetime,
    *,
    signs: Sequence[str] = (),
    session_id: int | None = None,
    checkin_id: int | None = None,
    reply_to: int | None = None,
    author_id: int | None = None,
) -> InboxMessage:
    """A new row of the patient's conversation with their clinic, the words as stored."""
    assert patient.id is not None
    return InboxMessage(
        patient_id=patient.id,
        clinic_id=patient.clinic_id,
        kind=kind,
        text=clean(text),
        signs=list(signs),
        session_id=session_id,
        checkin_id=checkin_id,
        reply_to=reply_to,
        author_id=author_id,
        created_at=now,
    )


async def keep_draft(
    *, session: AsyncSession, patient: Patient, text: str, now: datetime
) -> InboxMessage:
    """Free text the patient may choose to send to the clinic (each offer's button sends its
    own text). Drafts the patient did not send within DRAFT_LIFE are dropped: they were not
    meant for anyone."""
    await session.exec(
        delete(InboxMessage).where(
            col(InboxMessage.patient_id) == patient.id,
            col(InboxMessage.kind) == InboxKind.DRAFT,
            col(InboxMessage.created_at) < now - DRAFT_LIFE,
        )
    )
    return await saved(session, _message(patient, InboxKind.DRAFT, text, now))


class Delivered(msgspec.Struct, frozen=True):
    """A message that reached the inbox, and how many staff chats will be told."""

    message: InboxMessage
    told: int


async def send_draft(
    *,
    session: AsyncSession,
    patient: Patient,
    draft_id: int,
    staff: Sequence[int],
    now: datetime,
) -> Delivered | None:
    """The patient chose to send their draft: it goes to the inbox and staff are told. None
    if it is not this patient's draft (sent already, replaced, or forged)."""
    draft = await session.get(InboxMessage, draft_id)
    if draft is None or draft.patient_id != patient.id or draft.kind != InboxKind.DRAFT:
        return None
    draft.kind, draft.created_at = InboxKind.MESSAGE, now
    session.add(draft)
    await session.flush()
    return await _delivered(session=session, patient=patient, message=draft, staff=staff, now=now)


async def _delivered(
    *,
    session: AsyncSession,
    patient: Patient,
    message: InboxMessage,
    staff: Sequence[int],
    now: datetime,
) -> Delivered:
    """A message in the inbox: every staff chat of the clinic told about it."""
    assert message.id is not None
    extra = {"inbox": message.id}
    told = await _tell_staff(
        session=session, patient=patient, step=NOTIFY_STEP, extra=extra, staff=staff, now=now
    )
    return Delivered(message, told)


async def write(
    *,
    session: AsyncSession,
    patient: Patient,
    text: str,
    staff: Sequence[int],
    now: datetime,
    kind: InboxKind = InboxKind.MESSAGE,
    signs: Sequence[str] = (),
    checkin_id: int | None = None,
    session_id: int | None = None,
) -> Delivered:
    """A message to the clinic (or a red flag in the patient's words, or a check-in note):
    stored, and every staff chat of the clinic told at reply priority."""
    message = _message(
        patient, kind, text, now, signs=signs, checkin_id=checkin_id, session_id=session_id
    )
    await saved(session, message)
    return await _delivered(
        session=session, patient=patient, message=message, staff=staff, now=now
    )


async def write_to_clinic(
    *, session: AsyncSession, patient: Patient, text: str, staff: Sequence[int], now: datetime
) -> Delivered:
    """The text the patient was asked for ("Answer the clinic"): sent as it is."""
    set_state(patient, Idle())
    session.add(patient)
    return await write(session=session, patient=patient, text=text, staff=staff, now=now)


async def alert_checkin(
    *,
    session: AsyncSession,
    patient: Patient,
    checkin: CheckIn,
    staff: Sequence[int],
    now: datetime,
) -> int:
    """A red-flag check-in answer: every staff chat told at once."""
    assert checkin.id is not None
    return await _tell_staff(
        session=session,
        patient=patient,
        step=ALERT_STEP,
        extra={"checkin": checkin.id},
        staff=staff,
        now=now,
    )


# -- staff -----------------------------------------------------------------------------------


class Entry(msgspec.Struct, frozen=True):
    """One inbox message as staff see it: the patient, and the latest answer, if any."""

    message: InboxMessage
    patient: Patient
    reply: InboxMessage | None
    reply_state: str | None


async def entries(
    *, session: AsyncSession, clinic_ids: Sequence[int], limit: int = PAGE
) -> tuple[list[Entry], int]:
    """The newest inbox messages of these clinics, and how many are still open."""
    open_count = await unanswered(session=session, clinic_ids=clinic_ids)
    rows = (
        await session.exec(
            clinics.with_patient(InboxMessage)
            .where(
                col(InboxMessage.clinic_id).in_(clinic_ids),
                col(InboxMessage.kind).in_(INBOUND),
            )
            .order_by(col(InboxMessage.created_at).desc(), col(InboxMessage.id).desc())
            .limit(limit)
        )
    ).all()
    replies = await latest_replies(session=session, message_ids=[m.id or 0 for m, _ in rows])
    found = []
    for message, patient in rows:
        reply, state = replies.get(message.id or 0, (None, None))
        found.append(Entry(message, patient, reply, state))
    return found, open_count


async def latest_replies(
    *, session: AsyncSession, message_ids: Sequence[int]
) -> dict[int, tuple[InboxMessage, str | None]]:
    """The newest answer to each of these messages (those answered), and the state of its
    delivery: one query."""
    newer = aliased(InboxMessage)
    later_reply = sa.exists().where(
        col(newer.reply_to) == col(InboxMessage.reply_to),
        col(newer.kind) == InboxKind.REPLY,
        col(newer.id) > col(InboxMessage.id),
    )
    rows = (
        await session.exec(
            select(InboxMessage, PlannedMessage.state)
            .join(
                PlannedMessage,
                col(PlannedMessage.id) == col(InboxMessage.delivery_id),
                isouter=True,
            )
            .where(
                col(InboxMessage.reply_to).in_(message_ids),
                InboxMessage.kind == InboxKind.REPLY,
                ~later_reply,
            )
        )
    ).all()
    return {reply.reply_to or 0: (reply, state) for reply, state in rows}


async def latest_reply(
    *, session: AsyncSession, message_id: int
) -> tuple[InboxMessage | None, str | None]:
    """The newest answer to a message, and the state of its delivery."""
    found = await latest_replies(session=session, message_ids=[message_id])
    return found.get(message_id, (None, None))


async def entry(
    *, session: AsyncSession, message_id: int, clinic_ids: Sequence[int]
) -> Entry | None:
    """One inbox message, only if it belongs to one of `clinic_ids`."""
    row = (
        await session.exec(
            clinics.with_patient(InboxMessage).where(
                InboxMessage.id == message_id,
                col(InboxMessage.clinic_id).in_(clinic_ids),
                col(InboxMessage.kind).in_(INBOUND),
            )
        )
    ).first()
    if row is None:
        return None
    reply, state = await latest_reply(session=session, message_id=message_id)
    return Entry(row[0], row[1], reply, state)


async def mark_handled(
    *,
    session: AsyncSession,
    message_id: int,
    clinic_ids: Sequence[int],
    by: int,
    now: datetime,
) -> Entry | None:
    """Mark a message handled (once); None if it is not one of these clinics'."""
    found = await entry(session=session, message_id=message_id, clinic_ids=clinic_ids)
    if found is None:
        return None
    if found.message.handled_at is None:
        found.message.handled_at, found.message.handled_by = now, by
        session.add(found.message)
        await session.flush()
    return found


async def start_reply(
    *,
    session: AsyncSession,
    staff_user_id: int,
    message_id: int,
    clinic_ids: Sequence[int],
    now: datetime,
) -> Entry | None:
    """The staff member's next text answers this message; None if it is not theirs to see."""
    found = await entry(session=session, message_id=message_id, clinic_ids=clinic_ids)
    if found is None:
        return None
    draft = await session.get(StaffDraft, staff_user_id)
    if draft is None:
        draft = StaffDraft(tg_user_id=staff_user_id, reply_to=message_id, created_at=now)
    draft.reply_to, draft.created_at = message_id, now
    session.add(draft)
    await session.flush()
    return found


async def reply_draft(*, session: AsyncSession, staff_user_id: int) -> StaffDraft | None:
    return await session.get(StaffDraft, staff_user_id)


async def drop_reply_draft(*, session: AsyncSession, staff_user_id: int) -> None:
    await session.exec(delete(StaffDraft).where(col(StaffDraft.tg_user_id) == staff_user_id))


class Replied(msgspec.Struct, frozen=True):
    reply: InboxMessage
    patient: Patient
    due_at: datetime


async def reply(
    *,
    session: AsyncSession,
    staff_user_id: int,
    text: str,
    clinic_ids: Sequence[int],
    now: datetime,
) -> Replied | None:
    """Send the staff member's answer to the message their draft names: a REPLY row and its
    delivery row (quiet hours honoured unless the patient wrote within RECENT). The message
    answered counts as handled. None if there is no draft, or it is not theirs any more."""
    draft = await session.get(StaffDraft, staff_user_id)
    if draft is None:
        return None
    await session.delete(draft)
    return await answer(
        session=session,
        staff_user_id=staff_user_id,
        message_id=draft.reply_to,
        text=text,
        clinic_ids=clinic_ids,
        now=now,
    )


async def answer(
    *,
    session: AsyncSession,
    staff_user_id: int,
    message_id: int,
    text: str,
    clinic_ids: Sequence[int],
    now: datetime,
) -> Replied | None:
    """A staff answer to one message (the chat's typed reply, the dashboard's form): a REPLY
    row and its delivery row (quiet hours honoured unless the patient wrote within RECENT);
    the message answered counts as handled. None if it is not one of these clinics'."""
    found = await entry(session=session, message_id=message_id, clinic_ids=clinic_ids)
    if found is None or not clean(text):
        return None
    patient = found.patient
    assert patient.id is not None
    last_word = (
        await session.exec(
            select(func.max(InboxMessage.created_at)).where(
                InboxMessage.patient_id == patient.id,
                col(InboxMessage.kind).in_((*INBOUND, InboxKind.DRAFT)),
            )
        )
    ).one()
    expires = now + REPLY_VALIDITY
    recent = last_word is not None and _aware(last_word) >= now - RECENT
    due = now if recent else apply_quiet_hours(now, now, expires, prefs_of(patient))
    answer = _message(
        patient, InboxKind.REPLY, text, now, reply_to=found.message.id, author_id=staff_user_id
    )
    await saved(session, answer)
    assert answer.id is not None
    row = _to_patient(
        patient, REPLY_STEP, due=due, expires=expires, extra={"inbox": answer.id}, now=now
    )
    await saved(session, row)
    answer.delivery_id = row.id
    if found.message.handled_at is None:
        found.message.handled_at, found.message.handled_by = now, staff_user_id
        session.add(found.message)
    session.add(answer)
    await session.flush()
    return Replied(answer, patient, due)


def _to_patient(
    patient: Patient,
    step: str,
    *,
    due: datetime,
    expires: datetime,
    extra: dict[str, Any],
    now: datetime,
) -> PlannedMessage:
    """A delivery row to the patient's own chat, in the conversation's priority."""
    assert patient.id is not None
    return PlannedMessage(
        patient_id=patient.id,
        step=step,
        priority=Priority.REPLY,
        due_at=due,
        not_before=now,
        expires_at=expires,
        extra=extra,
        created_at=now,
    )


def safety_text(reader: Reader, clinic: Clinic, *, emergency: bool, known: bool = True) -> str:
    """`texts.safety_answer` with this clinic's contact and emergency line."""
    return texts.safety_answer(
        reader,
        name=clinic.name,
        phone=clinic.phone,
        address=clinic.address,
        emergency_phone=clinic.emergency_phone,
        emergency=emergency,
        known=known,
    )


async def answer_red_flag(
    *, session: AsyncSession, patient: Patient, emergency: bool, now: datetime
) -> PlannedMessage:
    """The patient's words named a red-flag sign: the answer that gives them the clinic's
    contact and the emergency line, as a delivery row due now, in the transaction that
    alerts the clinic. It is sent at once (the dispatcher is poked), at any hour, paused or
    not, and retried like any message: a Telegram error at that moment does not lose it."""
    extra: dict[str, Any] = {"emergency": emergency}
    expires = now + SAFETY_VALIDITY
    row = _to_patient(patient, SAFETY_STEP, due=now, expires=expires, extra=extra, now=now)
    return await saved(session, row)


async def tell_of_change(
    *,
    session: AsyncSession,
    patient: Patient,
    treatment: TreatmentSession,
    change: Literal["moved", "cancelled"],
    now: datetime,
) -> PlannedMessage:
    """The clinic moved or cancelled one of the patient's sessions: a delivery row that tells
    the patient (quiet hours honoured), rendered when it is sent. Not tied to the session's
    own rows (`session_id` stays empty), so replanning the session leaves it alone."""
    assert patient.id is not None and treatment.id is not None
    # A message about an earlier change of this session that is still waiting (quiet hours)
    # says something no longer true: cancelled, with one conditional UPDATE, as the
    # dispatcher's rows are (one it is sending now finds itself superseded: _change_text).
    waiting = (
        await session.exec(
            select(PlannedMessage.id, PlannedMessage.extra).where(
                PlannedMessage.patient_id == patient.id,
                PlannedMessage.step == CHANGE_STEP,
                PlannedMessage.state == MessageState.PENDING,
            )
        )
    ).all()
    stale = [row_id for row_id, extra in waiting if extra.get("session") == treatment.id]
    if stale:
        await session.exec(
            sa.update(PlannedMessage)
            .where(
                col(PlannedMessage.id).in_(stale),
                col(PlannedMessage.state) == MessageState.PENDING,
            )
            .values(state=MessageState.CANCELLED, last_error="superseded")
        )
    expires = now + REPLY_VALIDITY
    extra = {
        "session": treatment.id,
        "change": change,
        "start": treatment.start_at.astimezone(UTC).isoformat(),
    }
    due = apply_quiet_hours(now, now, expires, prefs_of(patient))
    row = _to_patient(patient, CHANGE_STEP, due=due, expires=expires, extra=extra, now=now)
    return await saved(session, row)


async def _change_text(
    session: AsyncSession,
    row: PlannedMessage,
    patient: Patient,
    clinic: Clinic,
    protocol: Protocol,
) -> Outgoing | None:
    """What a CHANGE_STEP row says; None when a later move of the session superseded it."""
    try:
        start = datetime.fromisoformat(str(row.extra.get("start", "")))
    except ValueError:
        return None
    change = row.extra.get("change")
    if change == "moved":
        treatment = await session.get(TreatmentSession, int(row.extra.get("session", 0)))
        if treatment is None or treatment.state != SessionState.BOOKED:
            return None
        if _aware(treatment.start_at) != start:
            return None  # moved again since: that move's message says where it is now
    elif change != "cancelled":
        return None
    reader = Reader.of(patient.language, ZoneInfo(patient.timezone), protocol)
    text = reader.t(f"sessions.clinic_{change}", clinic=clinic.name, when=reader.at(start))
    return Outgoing(patient.chat_id, text)


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


# -- what the delivery rows say ----------------------------------------------------------------


def staff_reader(clinic: Clinic, lang: str, protocol: Protocol) -> Reader:
    """Staff read in their language, on their clinic's clock, with its texts."""
    return Reader.of(lang, ZoneInfo(clinic.timezone), protocol)


def notice_of(entry: Entry, protocol: Protocol) -> texts.Notice:
    """An inbox message as the values staff read (texts.notice renders them)."""
    message = entry.message
    signs: list[str] = list(message.signs)
    if message.kind == InboxKind.SCREENING:
        known = {q.key: q.short for q in protocol.screening}
        signs = [known[key] for key in message.signs if key in known]
    return texts.Notice(
        kind=message.kind,
        name=entry.patient.first_name,
        patient_id=entry.patient.id or 0,
        at=message.created_at,
        text=message.text,
        signs=signs,
        replied_at=entry.reply.created_at if entry.reply is not None else None,
        reply_state=entry.reply_state,
        handled_at=message.handled_at,
    )


def staff_buttons(entry: Entry, reader: Reader) -> tuple[tuple[Button, ...], ...]:
    row = [Button(reader.t("inbox.reply_button"), f"ib:r:{entry.message.id}")]
    if entry.message.handled_at is None:
        row.append(Button(reader.t("inbox.handle_button"), f"ib:h:{entry.message.id}"))
    return (tuple(row),)


async def compose(
    *, session: AsyncSession, row: PlannedMessage, default: Protocol
) -> Outgoing | None:
    """A notice to a staff chat, or a reply to the patient; None if its subject is gone."""
    patient = await session.get(Patient, row.patient_id)
    clinic = await session.get(Clinic, patient.clinic_id) if patient is not None else None
    if patient is None or clinic is None:
        return None
    protocol = await protocol_of(session=session, patient=patient, default=default)
    language = await clinics.staff_language(session=session, chat_id=row.chat_id or 0)
    staff = staff_reader(clinic, language, protocol)
    if row.step == ALERT_STEP and row.chat_id is not None:
        checkin = await session.get(CheckIn, int(row.extra.get("checkin", 0)))
        if checkin is None:
            return None
        treatment = await session.get(TreatmentSession, checkin.session_id or 0)
        try:
            answer = protocol.checkin_option(checkin.option).label
        except KeyError:
            return None
        text = texts.checkin_alert(
            staff,
            patient.first_name,
            patient.id or 0,
            treatment.start_at if treatment is not None else None,
            answer,
            checkin.answered_at,
        )
        return Outgoing(row.chat_id, text)
    if row.step == CHANGE_STEP and row.chat_id is None:
        return await _change_text(session, row, patient, clinic, protocol)
    if row.step == SAFETY_STEP and row.chat_id is None:
        reader = Reader.of(patient.language, ZoneInfo(patient.timezone), protocol)
        emergency = bool(row.extra.get("emergency"))
        return Outgoing(patient.chat_id, safety_text(reader, clinic, emergency=emergency))
    message = await session.get(InboxMessage, int(row.extra.get("inbox", 0)))
    if message is None or message.patient_id != patient.id:
        return None
    if row.step == NOTIFY_STEP and row.chat_id is not None:
        reply, state = await latest_reply(session=session, message_id=message.id or 0)
        found = Entry(message, patient, reply, state)
        text = texts.notice(staff, notice_of(found, protocol))
        return Outgoing(row.chat_id, text, staff_buttons(found, staff))
    if row.step == REPLY_STEP and row.chat_id is None and message.kind == InboxKind.REPLY:
        reader = Reader.of(patient.language, ZoneInfo(patient.timezone), protocol)
        button = Button(reader.t("inbox.answer_button"), "msg:write")
        text = texts.clinic_answer(reader, clinic.name, message.text)
        return Outgoing(patient.chat_id, text, ((button,),))
    return None


async def flag_screening(
    *,
    session: AsyncSession,
    patient: Patient,
    treatment: TreatmentSession,
    staff: Sequence[int],
    now: datetime,
) -> Delivered | None:
    """A session booked (or moved) with a screening "yes": an inbox entry and a notice, so the
    clinic sees it whether the session is ahead or already over. None if nothing is flagged."""
    flagged = [key for key, yes in treatment.screening.items() if yes]
    if not flagged:
        return None
    return await write(
        session=session,
        patient=patient,
        text="",
        staff=staff,
        now=now,
        kind=InboxKind.SCREENING,
        signs=flagged,
        session_id=treatment.id,
    )


async def unanswered(*, session: AsyncSession, clinic_ids: Sequence[int]) -> int:
    """Open inbox messages of these clinics."""
    return int(
        (
            await session.exec(
                select(func.count())
                .select_from(InboxMessage)
                .where(
                    col(InboxMessage.clinic_id).in_(clinic_ids),
                    col(InboxMessage.kind).in_(INBOUND),
                    col(InboxMessage.handled_at).is_(None),
                )
            )
        ).one()
    )
