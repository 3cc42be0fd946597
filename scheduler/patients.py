"""The patient's own controls: sessions, replanning, check-ins, settings, pause, erasure.

Data functions in the style of `scheduler.care`: the database session keyword-only, the
current instant passed in. Every function that acts on a row named by a patient (a session
id or a message id from callback data) checks that the row belongs to that patient first.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

import msgspec
import sqlalchemy as sa
from sqlmodel import SQLModel, col, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from messages.protocol import CheckinOption, Protocol
from scheduler import inbox
from scheduler.care import (
    BookingError,
    booked,
    refuse_clash,
    session_steps,
    zone_of,
)
from scheduler.conversation import (
    ChoosingDate,
    Describing,
    Idle,
    Screening,
    TypingQuiet,
    TypingZone,
    set_state,
    state_of,
)
from scheduler.courses import note_maintenance_from
from scheduler.models import (
    CheckIn,
    InboxKind,
    MessageState,
    Patient,
    PlannedMessage,
    SessionState,
    TreatmentSession,
)
from scheduler.planner import SessionTimes, restriction_times
from scheduler.protocols import protocol_of
from scheduler.rows import History, insert_planned, planned_rows

NOTE_MAX = 500


# --- sessions ---------------------------------------------------------------------------------


async def patient_sessions(
    *, session: AsyncSession, patient_id: int, now: datetime, past_limit: int = 5
) -> tuple[list[TreatmentSession], list[TreatmentSession]]:
    """(upcoming booked sessions, soonest first; the latest past or cancelled ones, newest
    first)."""
    rows = (
        await session.exec(
            select(TreatmentSession)
            .where(TreatmentSession.patient_id == patient_id)
            .order_by(col(TreatmentSession.start_at))
        )
    ).all()
    upcoming = [r for r in rows if r.state == SessionState.BOOKED and r.end_at > now]
    past = [r for r in rows if r not in upcoming]
    past.sort(key=lambda r: r.start_at, reverse=True)
    return upcoming, past[:past_limit]


async def own_session(
    *, session: AsyncSession, patient_id: int, session_id: int
) -> TreatmentSession | None:
    """The session with this id if it is the patient's (None for anyone else's)."""
    treatment = await session.get(TreatmentSession, session_id)
    if treatment is None or treatment.patient_id != patient_id:
        return None
    return treatment


def session_state(treatment: TreatmentSession, now: datetime) -> str:
    """The [sessions.state] key of a session as it stands at `now`."""
    if treatment.state == SessionState.CANCELLED:
        return "cancelled"
    if treatment.end_at <= now:
        return "done"
    if treatment.start_at <= now:
        return "in_progress"
    return "flagged" if treatment.flagged else "booked"


async def reschedule_session(
    *,
    session: AsyncSession,
    patient: Patient,
    session_id: int,
    start: datetime,
    protocol: Protocol,
    now: datetime,
    by_clinic: bool = False,
) -> TreatmentSession:
    """Move an upcoming session and replan its pending messages (one transaction: the
    caller's), for the patient (/sessions) or the clinic (the dashboard, `by_clinic`: the
    patient is then told, inbox.tell_of_change). BookingError:
    "not_found" (not this patient's, cancelled or over), "past" (the new time has passed),
    "clash" (another session then)."""
    assert patient.id is not None
    protocol = await protocol_of(session=session, patient=patient, default=protocol)
    treatment = await own_session(session=session, patient_id=patient.id, session_id=session_id)
    if treatment is None or treatment.state != SessionState.BOOKED or treatment.end_at <= now:
        raise BookingError("not_found")
    if start <= now:
        raise BookingError("past")
    end = start + timedelta(minutes=protocol.session_minutes)
    await refuse_clash(
        session=session, patient_id=patient.id, start=start, end=end, moving=treatment.id
    )
    treatment.start_at, treatment.end_at = start, end
    # An answer about the old date (a period then) says nothing about the new one.
    dated = {q.key for q in protocol.screening if q.about_date}
    treatment.screening = {k: v for k, v in treatment.screening.items() if k not in dated}
    treatment.flagged = any(treatment.screening.values())
    session.add(treatment)
    # It may now be the patient's last session, or no longer be.
    await note_maintenance_from(session=session, patient_ids=[patient.id])
    await _Replanning(session, patient, protocol, now).each([treatment], "rescheduled")
    await replan_others(
        session=session, patient=patient, protocol=protocol, now=now, except_id=treatment.id
    )
    # The patient's conversation about this session is over; one about something else (a
    # new booking under way while the clinic moves this session) goes on.
    if _about(state_of(patient), treatment.id):
        set_state(patient, Idle())
        session.add(patient)
    if by_clinic:
        await inbox.tell_of_change(
            session=session, patient=patient, treatment=treatment, change="moved", now=now
        )
    return treatment


def _about(state: object, session_id: int | None) -> bool:
    """Whether a conversation state is about this session (moving it, or its questions)."""
    return (isinstance(state, ChoosingDate) and state.moving == session_id) or (
        isinstance(state, Screening) and state.session == session_id
    )


async def cancel_session(
    *,
    session: AsyncSession,
    patient: Patient,
    session_id: int,
    protocol: Protocol,
    now: datetime,
    by_clinic: bool = False,
) -> TreatmentSession:
    """Cancel an upcoming session and its pending messages; the patient's other sessions are
    replanned (what it extended ends at their own times again). By the clinic (`by_clinic`),
    the patient is told. BookingError("not_found")."""
    assert patient.id is not None
    treatment = await own_session(session=session, patient_id=patient.id, session_id=session_id)
    if treatment is None or treatment.state != SessionState.BOOKED or treatment.end_at <= now:
        raise BookingError("not_found")
    treatment.state = SessionState.CANCELLED
    session.add(treatment)
    if _about(state_of(patient), treatment.id):
        set_state(patient, Idle())
        session.add(patient)
    await _cancel_pending(session, treatment, "session cancelled")
    await note_maintenance_from(session=session, patient_ids=[patient.id])
    await replan_others(
        session=session, patient=patient, protocol=protocol, now=now, except_id=treatment.id
    )
    if by_clinic:
        await inbox.tell_of_change(
            session=session, patient=patient, treatment=treatment, change="cancelled", now=now
        )
    return treatment


async def replan_others(
    *,
    session: AsyncSession,
    patient: Patient,
    protocol: Protocol,
    now: datetime,
    except_id: int | None,
) -> int:
    """After one session was booked, moved or cancelled: replan the patient's other booked
    sessions whose timeline may change, so that their texts and steps follow the
    restrictions as they now overlap (scheduler.planner.Restrictions): those with pending
    messages, and those with a restriction still in force (a step dropped because of the
    cancelled session comes back). How many."""
    assert patient.id is not None
    protocol = await protocol_of(session=session, patient=patient, default=protocol)
    pending = select(PlannedMessage.session_id).where(
        PlannedMessage.patient_id == patient.id, PlannedMessage.state == MessageState.PENDING
    )
    others = (
        await session.exec(booked(patient.id).where(col(TreatmentSession.id) != (except_id or 0)))
    ).all()
    waiting = set((await session.exec(pending)).all())

    def in_force(treatment: TreatmentSession) -> bool:
        times = SessionTimes(start=treatment.start_at, end=treatment.end_at)
        return any(
            (span := restriction_times(r, times, zone_of(patient))) is not None and span[1] > now
            for r in protocol.restrictions
        )

    changing = [t for t in others if t.id in waiting or in_force(t)]
    return await _Replanning(session, patient, protocol, now).each(changing, "another session")


class _Replanning(msgspec.Struct, frozen=True):
    """Replanning one patient's sessions from `now`, in the caller's transaction."""

    session: AsyncSession
    patient: Patient
    protocol: Protocol
    now: datetime

    async def each(self, treatments: Iterable[TreatmentSession], reason: str) -> int:
        """Cancel the pending rows of each of these sessions (`reason`: why, kept on them) and
        plan its timeline again, earliest first; how many.

        Steps already sent (or in flight, or folded into a sent message) are never planned
        again; a step that expired before keeps its one expired row. The caller pokes the
        dispatcher after the commit.
        """
        session, patient, now = self.session, self.patient, self.now
        assert patient.id is not None
        ordered = sorted(treatments, key=lambda t: t.start_at)
        own = await protocol_of(session=session, patient=patient, default=self.protocol)
        for treatment in ordered:
            assert treatment.id is not None
            rows = (
                await session.exec(
                    select(PlannedMessage.step, PlannedMessage.state, PlannedMessage.extra).where(
                        PlannedMessage.session_id == treatment.id
                    )
                )
            ).all()
            history = History.of(rows)
            await _cancel_pending(session, treatment, reason)
            fresh = await session_steps(
                session=session,
                patient=patient,
                treatment=treatment,
                protocol=history.protocol(own),
                now=now,
            )
            kept = history.still_to_plan(fresh)
            await insert_planned(
                await session.connection(), planned_rows(patient.id, treatment.id, kept, now)
            )
        return len(ordered)


async def _cancel_pending(session: AsyncSession, treatment: TreatmentSession, reason: str) -> None:
    """Cancel a session's pending rows, with the reason as their last error."""
    await session.exec(
        update(PlannedMessage)
        .where(
            col(PlannedMessage.session_id) == treatment.id,
            col(PlannedMessage.state) == MessageState.PENDING,
        )
        .values(state=MessageState.CANCELLED, last_error=reason[:500])
    )


async def replan_patient(
    *,
    session: AsyncSession,
    patient: Patient,
    protocol: Protocol,
    now: datetime,
    reason: str,
    include_blocked: bool = False,
) -> int:
    """Replan every booked session that still has pending messages (and, when the patient
    returns after blocking the bot, those cancelled by the block), the patient's changes
    (preferences, a pause or a block lifted) written first. The number replanned."""
    assert patient.id is not None
    session.add(patient)
    await session.flush()
    wanted = col(PlannedMessage.state) == MessageState.PENDING
    if include_blocked:
        wanted = sa.or_(
            wanted,
            sa.and_(
                col(PlannedMessage.state) == MessageState.CANCELLED,
                col(PlannedMessage.last_error) == "blocked",
            ),
        )
    ids = (
        await session.exec(
            select(PlannedMessage.session_id)
            .where(col(PlannedMessage.patient_id) == patient.id, wanted)
            .distinct()
        )
    ).all()
    found = [await session.get(TreatmentSession, i) for i in ids if i is not None]
    still_booked = [t for t in found if t is not None and t.state == SessionState.BOOKED]
    return await _Replanning(session, patient, protocol, now).each(still_booked, reason)


# --- the live aftercare checklist --------------------------------------------------------------


async def latest_started_session(
    *, session: AsyncSession, patient_id: int, now: datetime
) -> TreatmentSession | None:
    """The most recent booked session that has begun."""
    begun = booked(patient_id).where(col(TreatmentSession.start_at) <= now)
    query = begun.order_by(None).order_by(col(TreatmentSession.start_at).desc())
    return (await session.exec(query)).first()


async def past_messages(
    *, session: AsyncSession, patient_id: int, limit: int = 15
) -> list[PlannedMessage]:
    """The latest sent or expired messages, oldest first."""
    rows = (
        await session.exec(
            select(PlannedMessage)
            .where(
                PlannedMessage.patient_id == patient_id,
                col(PlannedMessage.state).in_((MessageState.SENT, MessageState.EXPIRED)),
                col(PlannedMessage.chat_id).is_(None),
            )
            .order_by(col(PlannedMessage.due_at).desc(), col(PlannedMessage.seq).desc())
            .limit(limit)
        )
    ).all()
    return list(reversed(rows))


# --- check-ins -------------------------------------------------------------------------------


class CheckinError(Exception):
    """Why an answer cannot be recorded; `reason` is a catalog key suffix."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Recorded(msgspec.Struct, frozen=True):
    checkin: CheckIn
    option: CheckinOption
    treatment: TreatmentSession | None


async def record_checkin(
    *,
    session: AsyncSession,
    patient: Patient,
    message_id: int,
    option_key: str,
    protocol: Protocol,
    staff: Sequence[int],
    now: datetime,
) -> Recorded:
    """Store the answer to a check-in message; a red flag tells the clinic's staff at once
    (delivery rows). The options and their red-flag rules are those of the patient's clinic
    (`protocol` when it has no file of its own), as its buttons were. CheckinError: "stale"
    (not this patient's check-in, or unknown option) or "answered" (one answer per message)."""
    assert patient.id is not None
    protocol = await protocol_of(session=session, patient=patient, default=protocol)
    row = await session.get(PlannedMessage, message_id)
    try:
        option = protocol.checkin_option(option_key)
        step = protocol.step(row.step) if row is not None else None
    except KeyError:
        raise CheckinError("stale") from None
    if row is None or step is None or row.patient_id != patient.id or step.buttons != "checkin":
        raise CheckinError("stale")
    answered = (await session.exec(select(CheckIn).where(CheckIn.message_id == row.id))).first()
    if answered is not None:
        raise CheckinError("answered")
    treatment = await session.get(TreatmentSession, row.session_id) if row.session_id else None
    red = treatment is not None and option.is_red_flag(treatment.end_at, now, zone_of(patient))
    checkin = CheckIn(
        patient_id=patient.id,
        session_id=row.session_id,
        message_id=row.id,
        option=option.key,
        red_flag=red,
        answered_at=now,
    )
    session.add(checkin)
    await session.flush()
    assert checkin.id is not None
    if option.describe:
        set_state(patient, Describing(checkin=checkin.id), now)
        session.add(patient)
    if red:
        await inbox.alert_checkin(
            session=session, patient=patient, checkin=checkin, staff=staff, now=now
        )
    return Recorded(checkin, option, treatment)


async def add_checkin_note(
    *,
    session: AsyncSession,
    patient: Patient,
    checkin_id: int,
    note: str,
    staff: Sequence[int],
    now: datetime,
    signs: Sequence[str] = (),
) -> inbox.Delivered | None:
    """The "something else" description: kept with the check-in (truncated) and sent to the
    clinic's inbox at once (a red flag if `signs`). None if the check-in is not the
    patient's any more (erased, or a forged state)."""
    set_state(patient, Idle())
    session.add(patient)
    checkin = await session.get(CheckIn, checkin_id)
    if checkin is None or checkin.patient_id != patient.id:
        return None
    checkin.note = inbox.clean(note).replace("\n", " ")[:NOTE_MAX] or None
    checkin.red_flag = checkin.red_flag or bool(signs)
    session.add(checkin)
    return await inbox.write(
        session=session,
        patient=patient,
        text=note,
        staff=staff,
        now=now,
        kind=InboxKind.RED_FLAG if signs else InboxKind.NOTE,
        signs=signs,
        checkin_id=checkin.id,
        session_id=checkin.session_id,
    )


# --- settings and control ----------------------------------------------------------------------


async def set_preferences(
    *,
    session: AsyncSession,
    patient: Patient,
    protocol: Protocol,
    now: datetime,
    timezone: str | None = None,
    quiet: tuple[str, str] | None = None,
    language: str | None = None,
) -> int:
    """Change the zone, quiet hours and/or language, from any path (setting up, an invite,
    /settings). A new zone or quiet hours replans every pending step in the same transaction
    (a language needs no replanning: messages are rendered when sent). How many sessions
    were replanned."""
    if language is not None:
        patient.language = language
    if timezone is not None:
        patient.timezone = timezone
    if quiet is not None:
        patient.quiet_start, patient.quiet_end = quiet
    if isinstance(state_of(patient), TypingZone | TypingQuiet):
        set_state(patient, Idle())
    session.add(patient)
    await session.flush()
    if timezone is None and quiet is None:
        return 0
    return await replan_patient(
        session=session, patient=patient, protocol=protocol, now=now, reason="preferences"
    )


async def pause(*, session: AsyncSession, patient: Patient, now: datetime) -> bool:
    """Stop sending (rows stay pending and expire when their window passes). False if it
    already was paused."""
    if patient.paused_at is not None:
        return False
    patient.paused_at = now
    session.add(patient)
    return True


async def resume(
    *, session: AsyncSession, patient: Patient, protocol: Protocol, now: datetime
) -> bool:
    """Send again: still-valid steps are replanned from now (quiet hours honoured), the rest
    expire. False if it was not paused."""
    if patient.paused_at is None:
        return False
    patient.paused_at = None
    await replan_patient(
        session=session, patient=patient, protocol=protocol, now=now, reason="resumed"
    )
    return True


async def welcome_back(
    *, session: AsyncSession, patient: Patient, protocol: Protocol, now: datetime
) -> bool:
    """A patient who had blocked the bot writes again: they continue where they were; the
    steps cancelled by the block are replanned (those still valid will be sent, the rest are
    recorded as expired). False if the patient was not blocked."""
    if patient.blocked_at is None:
        return False
    patient.blocked_at = None
    await replan_patient(
        session=session,
        patient=patient,
        protocol=protocol,
        now=now,
        reason="returned",
        include_blocked=True,
    )
    return True


# --- erasure ------------------------------------------------------------------------------------


def _referencing(
    table: sa.Table, tables: Iterable[sa.Table]
) -> list[tuple[sa.Table, sa.Column[object], sa.Column[object]]]:
    """(child table, child column, referenced column of `table`) for every foreign key."""
    found = []
    for child in tables:
        for fk in child.foreign_keys:
            if fk.column.table is table:
                found.append((child, fk.parent, fk.column))
    return found


async def _purge(
    session: AsyncSession,
    table: sa.Table,
    condition: sa.ColumnElement[bool],
    depth: int = 0,
) -> None:
    if depth > 8:  # a cycle in the schema; never expected
        raise RuntimeError(f"foreign keys nest too deep at {table.name}")
    tables = SQLModel.metadata.sorted_tables
    for child, column, referenced in _referencing(table, tables):
        if child is table:
            continue
        chosen = sa.select(referenced).where(condition).scalar_subquery()
        await _purge(session, child, column.in_(chosen), depth + 1)
    await session.exec(sa.delete(table).where(condition))


async def erase_patient(*, session: AsyncSession, patient_id: int) -> bool:
    """Delete the patient and every row that refers to them, whatever the table: rows with a
    foreign key to the patient, rows referring to those (check-ins of their messages), and
    so on, children first. Tables added later are covered as long as they use foreign keys.
    Their clinic's count of erasures goes up by one (a number, nothing about them). False if
    there was no such patient (erased before)."""
    patient_table = SQLModel.metadata.tables["patient"]
    clinic_table = SQLModel.metadata.tables["clinic"]
    their_clinic = (
        sa.select(patient_table.c.clinic_id)
        .where(patient_table.c.id == patient_id)
        .scalar_subquery()
    )
    counted = await session.exec(
        sa.update(clinic_table)
        .where(clinic_table.c.id == their_clinic)
        .values(erased_patients=clinic_table.c.erased_patients + 1)
    )
    await _purge(session, patient_table, patient_table.c.id == patient_id)
    return bool(counted.rowcount)
