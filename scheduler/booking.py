"""The patient's way to a booked session: consent, then a date, then the health questions.

Each function is one transition of the conversation (scheduler/conversation.py): it takes
the database session keyword-only, the patient and `now`, changes rows in the caller's
transaction, and returns what happened for the handler to render. The order of a new
booking: the date (calendar or typed), its confirmation, the questions that fit the person
(scheduler/screening.py; the period question names the chosen date), then the booking. A
session booked by an invite skips the date; a move asks only the questions about the date.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime

import msgspec
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from messages.protocol import Answer, Protocol, ScreeningQuestion
from scheduler import compose, inbox, invites, patients, screening
from scheduler.care import BookingError, book_session, booked, check_booking, zone_of
from scheduler.conversation import ChoosingDate, Idle, Screening, set_state, state_of
from scheduler.models import (
    Invite,
    InviteKind,
    Patient,
    PlannedMessage,
    TreatmentSession,
)
from scheduler.protocols import protocol_of


class AskDate(msgspec.Struct, frozen=True):
    """Show the calendar (today, in the patient's zone, marks the month)."""

    today: date
    moving: TreatmentSession | None = None


class Ask(msgspec.Struct, frozen=True):
    """Show a screening step: the remembered answers to confirm, or one question."""

    start: datetime
    """The session's start (the period question names its day)."""
    question: ScreeningQuestion | None = None
    remembered: dict[str, str] | None = None
    advice: ScreeningQuestion | None = None
    """The question just answered "yes": explain why the clinic wants a physician's view."""


class Booked(msgspec.Struct, frozen=True):
    treatment: TreatmentSession
    advice: ScreeningQuestion | None = None


class Screened(msgspec.Struct, frozen=True):
    """The answers went to a session that exists already (an invite's, or a moved one)."""

    treatment: TreatmentSession
    moved: bool
    rows: list[PlannedMessage]
    advice: ScreeningQuestion | None = None
    anchor: int | None = None
    """A move: the message whose buttons started it (to take them off)."""


class Refused(msgspec.Struct, frozen=True):
    """Booking is not possible: a catalog key suffix ("clash", "too_old", "past", ...)."""

    reason: str
    today: date


class Stale(msgspec.Struct, frozen=True):
    """A button of a question that is no longer on screen."""


Outcome = Ask | Booked | Screened | Refused | Stale


async def consent(
    *, session: AsyncSession, patient: Patient, protocol: Protocol, now: datetime
) -> int:
    """Consent given: sessions booked for the patient (an invite, an import) are planned.
    How many were."""
    patient.consent_at = now
    session.add(patient)
    return await invites.plan_waiting(session=session, patient=patient, protocol=protocol, now=now)


async def refuse_consent(*, session: AsyncSession, patient: Patient, now: datetime) -> bool:
    """Consent refused (or withdrawn before any reminder): nothing is sent. True if it had
    been given."""
    had = patient.consent_at is not None
    patient.consent_at = None
    set_state(patient, Idle(), now)
    session.add(patient)
    return had


def _today(patient: Patient, now: datetime) -> date:
    return now.astimezone(zone_of(patient)).date()


async def begin_booking(
    *,
    session: AsyncSession,
    patient: Patient,
    now: datetime,
    moving: TreatmentSession | None = None,
    anchor: int | None = None,
) -> AskDate:
    """A new booking (or a move of `moving`): the next date typed or picked answers it."""
    set_state(
        patient,
        ChoosingDate(moving=moving.id if moving is not None else None, anchor=anchor),
        now,
    )
    session.add(patient)
    return AskDate(_today(patient, now), moving)


async def after_setup(
    *,
    session: AsyncSession,
    patient: Patient,
    protocol: Protocol,
    staff: Sequence[int],
    now: datetime,
) -> AskDate | Outcome:
    """Consent and zone are done: the questions of a session an invite booked for the
    patient, if there is one still unscreened; otherwise, a new booking."""
    invited = await _invited_session(session=session, patient=patient, now=now)
    if invited is None:
        return await begin_booking(session=session, patient=patient, now=now)
    assert invited.id is not None
    state = Screening(session=invited.id)
    return await _Asking(session, patient, protocol, staff, now).advance(state, None)


async def _invited_session(
    *, session: AsyncSession, patient: Patient, now: datetime
) -> TreatmentSession | None:
    """The soonest upcoming session an invite booked for the patient with no answers yet."""
    assert patient.id is not None
    rows = (
        await session.exec(
            booked(patient.id)
            .join(
                Invite,
                (col(Invite.patient_id) == col(TreatmentSession.patient_id))
                & (col(Invite.start_at) == col(TreatmentSession.start_at)),
            )
            .where(col(TreatmentSession.start_at) > now, Invite.kind == InviteKind.BOOKING)
        )
    ).all()
    return next((t for t in rows if not t.screening), None)


async def choose(
    *,
    session: AsyncSession,
    patient: Patient,
    protocol: Protocol,
    local: datetime,
    staff: Sequence[int],
    now: datetime,
) -> Outcome:
    """The patient confirmed a date and time (`local`: naive, on their clock). A move takes
    effect now (then the questions about the date); a new booking asks the questions first
    and is booked after the last answer."""
    assert patient.id is not None
    protocol = await protocol_of(session=session, patient=patient, default=protocol)
    start = local.replace(tzinfo=zone_of(patient))
    state = state_of(patient)
    today = _today(patient, now)
    if isinstance(state, Screening):  # a second press of Confirm: its questions are on
        return Stale()
    if isinstance(state, ChoosingDate) and state.moving is not None:
        try:
            treatment = await patients.reschedule_session(
                session=session,
                patient=patient,
                session_id=state.moving,
                start=start,
                protocol=protocol,
                now=now,
            )
        except BookingError as exc:
            if exc.reason == "not_found":
                set_state(patient, Idle())
                session.add(patient)
            return Refused(exc.reason, today)
        assert treatment.id is not None
        follow = Screening(
            session=treatment.id, only_about_date=True, confirmed=True, anchor=state.anchor
        )
        return await _Asking(session, patient, protocol, staff, now).advance(follow, None)
    try:
        await check_booking(
            session=session, patient_id=patient.id, protocol=protocol, start=start, now=now
        )
    except BookingError as exc:
        return Refused(exc.reason, today)
    fresh = Screening(start=local.isoformat(timespec="minutes"))
    return await _Asking(session, patient, protocol, staff, now).advance(fresh, None)


async def answer(
    *,
    session: AsyncSession,
    patient: Patient,
    protocol: Protocol,
    key: str,
    value: str,
    staff: Sequence[int],
    now: datetime,
) -> Outcome:
    """A screening button: `key` a question ("confirm" for the remembered answers), `value`
    yes/no/na (for "confirm": keep/changed). Stale unless it is the step on screen."""
    protocol = await protocol_of(session=session, patient=patient, default=protocol)
    state = state_of(patient)
    if not isinstance(state, Screening) or state.asking != key:
        return Stale()
    advice = None
    if key == screening.CONFIRM:
        if value not in ("keep", "changed"):
            return Stale()
        state = state.model_copy(update={"confirmed": value == "keep"})
    else:
        try:
            question = protocol.question(key)
        except KeyError:
            return Stale()
        if value not in screening.ANSWERS or (value == "na" and not question.not_applicable):
            return Stale()
        picked: Answer = "yes" if value == "yes" else "no" if value == "no" else "na"
        state = state.model_copy(update={"answers": {**state.answers, key: picked}})
        advice = question if picked == "yes" else None
    return await _Asking(session, patient, protocol, staff, now).advance(state, advice)


class _Asking(msgspec.Struct, frozen=True):
    """One patient's way through the health questions, in the caller's transaction."""

    session: AsyncSession
    patient: Patient
    protocol: Protocol
    staff: Sequence[int]
    now: datetime

    async def advance(self, state: Screening, advice: ScreeningQuestion | None) -> Outcome:
        """Ask the next screening step, or finish: book the new session, or record the
        answers on the existing one. A flagged session is told to the clinic (its inbox)."""
        session, patient, protocol = self.session, self.patient, self.protocol
        staff, now = self.staff, self.now
        remembered = screening.remembered_of(protocol, patient.conditions)
        if state.only_about_date:
            remembered = {k: v for k, v in remembered.items() if v == "na"}
        step = screening.next_step(
            protocol,
            remembered=remembered,
            answers=state.answers,
            confirmed=state.confirmed if not state.only_about_date else True,
            only_about_date=state.only_about_date,
        )
        existing = await session.get(TreatmentSession, state.session) if state.session else None
        if state.session is not None and (existing is None or existing.patient_id != patient.id):
            set_state(patient, Idle())
            session.add(patient)
            return Stale()
        if existing is not None:
            start = existing.start_at
        else:
            assert state.start is not None
            start = datetime.fromisoformat(state.start).replace(tzinfo=zone_of(patient))
        if not step.done:
            asking = (
                screening.CONFIRM if step.confirm else step.question.key if step.question else None
            )
            set_state(patient, state.model_copy(update={"asking": asking}), now)
            session.add(patient)
            return Ask(
                start=start,
                question=step.question,
                remembered=remembered if step.confirm else None,
                advice=advice,
            )
        confirmed = state.confirmed if not state.only_about_date else True
        known = screening.standing(remembered, state.answers, confirmed)
        found = screening.session_answers(protocol, known)
        if not state.only_about_date:
            patient.conditions = screening.remembered_of(protocol, known)
            patient.conditions_at = now
        set_state(patient, Idle())
        session.add(patient)
        if existing is None:
            try:
                treatment = await book_session(
                    session=session,
                    patient=patient,
                    protocol=protocol,
                    start=start,
                    now=now,
                    screening=found,
                )
            except BookingError as exc:  # another session took the time while answering
                return Refused(exc.reason, _today(patient, now))
            await patients.replan_others(
                session=session,
                patient=patient,
                protocol=protocol,
                now=now,
                except_id=treatment.id,
            )
            await inbox.flag_screening(
                session=session, patient=patient, treatment=treatment, staff=staff, now=now
            )
            return Booked(treatment, advice)
        was_flagged = {k for k, v in existing.screening.items() if v}
        existing.screening = {**existing.screening, **found}
        existing.flagged = any(existing.screening.values())
        session.add(existing)
        await session.flush()
        if {k for k, v in existing.screening.items() if v} - was_flagged:
            await inbox.flag_screening(
                session=session, patient=patient, treatment=existing, staff=staff, now=now
            )
        rows = await compose.upcoming_of(session=session, treatment=existing)
        return Screened(existing, state.only_about_date, rows, advice, state.anchor)
