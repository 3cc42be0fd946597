"""The values every text about a session states, and the dispatcher's composer.

Rendering happens at send time, not at planning time, so that the language, the zone and
the "until" times are those in force when the patient reads it. Every time a text states
comes from one place: the planned row's due time, or a restriction's span across the
patient's sessions (`scheduler.planner.Restrictions`, which the planner uses too), so the
timeline summary, the message, /aftercare and /reminders never disagree. The texts
themselves are assembled in messages/texts.py from the values gathered here.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import msgspec
from sqlmodel.ext.asyncio.session import AsyncSession

from messages import texts
from messages.protocol import Protocol, Step
from messages.render import Html
from messages.texts import Reader
from scheduler import broadcast, courses, inbox
from scheduler.care import ClinicInfo, other_sessions, session_messages, zone_of
from scheduler.models import Clinic, MessageState, Patient, PlannedMessage, TreatmentSession
from scheduler.planner import Restrictions, SessionTimes
from scheduler.ports import Button, Outgoing
from scheduler.protocols import protocol_of


def reader_of(patient: Patient, protocol: Protocol) -> Reader:
    """The patient as a reader: their language, their clock, their clinic's texts."""
    return Reader.of(patient.language, zone_of(patient), protocol)


def times_of(treatment: TreatmentSession) -> SessionTimes:
    return SessionTimes(start=treatment.start_at, end=treatment.end_at)


class SessionView(msgspec.Struct, frozen=True):
    """What every text about one session needs: its patient, protocol and clinic, and when
    each restriction really holds given the patient's other sessions."""

    protocol: Protocol
    patient: Patient
    treatment: TreatmentSession
    clinic: Clinic
    restrictions: Restrictions

    @property
    def reader(self) -> Reader:
        return reader_of(self.patient, self.protocol)

    def spans(self, phase: str) -> list[texts.Span]:
        """The restrictions of a phase ("before", "after"), with their merged times."""
        found = []
        for restriction in self.protocol.restrictions:
            span = self.restrictions.span(restriction) if restriction.phase == phase else None
            if span is not None:
                found.append(texts.Span(restriction.text, span[0], span[1]))
        return found

    def session(self, now: datetime, checklist_phase: str | None = None) -> texts.Session:
        """Everything a step's text or title may state (BASE_STEP_PARAMS, until_<key>)."""
        treatment, protocol, reader = self.treatment, self.protocol, self.reader
        untils = {}
        for restriction in protocol.restrictions:
            span = self.restrictions.span(restriction)
            if span is not None:
                untils[restriction.key] = span[1]
        answers = treatment.screening
        advice = [q.advice for q in protocol.screening if answers.get(q.key)]
        return texts.Session(
            start=treatment.start_at,
            end=treatment.end_at,
            minutes=protocol.session_minutes,
            place=texts.place(self.clinic.name, self.clinic.address),
            next_due=treatment.start_at + timedelta(days=protocol.course.interval_days),
            emergency=self.clinic.emergency_phone,
            untils=untils,
            checklist=texts.checklist(reader, self.spans(checklist_phase), now)
            if checklist_phase
            else Html(""),
            screening=texts.screening_result(reader, bool(answers), advice),
        )


async def clinic_row(*, session: AsyncSession, patient: Patient, fallback: ClinicInfo) -> Clinic:
    """The patient's clinic (the settings' clinic if the row is somehow gone)."""
    clinic = await session.get(Clinic, patient.clinic_id)
    if clinic is not None:
        return clinic
    return Clinic(
        slug="",
        name=fallback.name,
        timezone=fallback.timezone,
        address=fallback.address,
        phone=fallback.phone,
        emergency_phone=fallback.emergency_phone,
    )


class Reading(msgspec.Struct, frozen=True):
    """What a patient's texts are read with, in one transaction: the patient, and the
    protocol and clinic of the settings for a patient whose clinic has none of its own."""

    session: AsyncSession
    patient: Patient
    default: Protocol
    fallback: ClinicInfo

    async def view(self, treatment: TreatmentSession) -> SessionView:
        """One of the patient's sessions, with everything its texts state."""
        session, patient = self.session, self.patient
        protocol = await protocol_of(session=session, patient=patient, default=self.default)
        assert patient.id is not None and treatment.id is not None
        others = await other_sessions(
            session=session, patient_id=patient.id, session_id=treatment.id
        )
        restrictions = Restrictions(protocol, times_of(treatment), zone_of(patient), others)
        clinic = await clinic_row(session=session, patient=patient, fallback=self.fallback)
        return SessionView(protocol, patient, treatment, clinic, restrictions)

    async def lines(
        self, rows: Sequence[PlannedMessage], now: datetime
    ) -> list[tuple[int | None, texts.Line]]:
        """Each row as a line of a list (its session id, when, its title with its session's
        times, its state)."""
        views: dict[int, SessionView | None] = {}
        protocol = await protocol_of(
            session=self.session, patient=self.patient, default=self.default
        )
        reader = reader_of(self.patient, protocol)
        found = []
        for row in rows:
            if row.session_id is not None and row.session_id not in views:
                treatment = await self.session.get(TreatmentSession, row.session_id)
                views[row.session_id] = None if treatment is None else await self.view(treatment)
            view = views.get(row.session_id) if row.session_id is not None else None
            at = row.sent_at or row.due_at if row.state == MessageState.SENT else row.due_at
            found.append(
                (row.session_id, texts.Line(at, title(view, row, now, reader), row.state))
            )
        return found


def step_text(view: SessionView, step: Step, now: datetime, *, extended: bool = False) -> Html:
    """A step's message (its reworded text when another session extends what it ends)."""
    key = step.extended_text if extended and step.extended_text else step.text
    return texts.step(view.reader, key, view.session(now, step.checklist))


def title(view: SessionView | None, row: PlannedMessage, now: datetime, reader: Reader) -> Html:
    """A row's short name, with the same times as its message."""
    extended = bool(row.extra.get("extended"))
    session = view.session(now) if view is not None else None
    return texts.title(reader, row.step, session, extended=extended)


def timeline(view: SessionView, rows: Sequence[PlannedMessage], now: datetime) -> Html:
    """The planned reminders of one session, one line each, in the patient's time."""
    reader = view.reader
    return texts.timeline(
        reader, [texts.Line(r.due_at, title(view, r, now, reader)) for r in rows]
    )


def checkin_buttons(
    protocol: Protocol, reader: Reader, message_id: int
) -> tuple[tuple[Button, ...], ...]:
    options = [Button(reader.t(o.label), f"ci:{message_id}:{o.key}") for o in protocol.checkin]
    return tuple(tuple(options[i : i + 2]) for i in range(0, len(options), 2))


class Composer:
    """The dispatcher's renderer: claimed rows -> Telegram messages, in one session.

    Broadcast rows, the bulk of a large batch, take two queries however many there are;
    a reminder or a message about a patient is rendered on its own (they come a few at a
    time, at the free rate)."""

    def __init__(self, protocol: Protocol, clinic: ClinicInfo) -> None:
        self._protocol = protocol
        self._clinic = clinic

    async def __call__(
        self, *, session: AsyncSession, rows: Sequence[PlannedMessage], now: datetime
    ) -> list[Outgoing | None]:
        bulk = [row for row in rows if row.step == broadcast.STEP]
        broadcasts = await broadcast.compose(session=session, rows=bulk) if bulk else {}
        found = []
        for row in rows:
            if row.step == broadcast.STEP:
                assert row.id is not None
                found.append(broadcasts[row.id])
            else:
                found.append(await self._one(session=session, row=row, now=now))
        return found

    async def _one(
        self, *, session: AsyncSession, row: PlannedMessage, now: datetime
    ) -> Outgoing | None:
        """A reminder, or a message about a patient (None: nothing to send any more)."""
        if row.step in inbox.STEPS:
            return await inbox.compose(session=session, row=row, default=self._protocol)
        patient = await session.get(Patient, row.patient_id)
        treatment = await session.get(TreatmentSession, row.session_id) if row.session_id else None
        if patient is None or treatment is None:
            return None
        view = await Reading(session, patient, self._protocol, self._clinic).view(treatment)
        try:
            step = view.protocol.step(row.step)
        except KeyError:
            return None
        reader = view.reader
        parts = [step_text(view, step, now, extended=bool(row.extra.get("extended")))]
        for key in row.extra.get("folded", []):
            folded = view.protocol.step(key).folded_text
            if folded:
                parts.append(reader.t(folded))
        if step.key == "booked":
            rows = await upcoming_of(session=session, treatment=treatment)
            if rows:
                parts.append(reader.t("chat.timeline_title", zone=patient.timezone))
                parts.append(timeline(view, rows, now))
        buttons: tuple[tuple[Button, ...], ...] = ()
        if step.buttons == "checkin":
            assert row.id is not None
            buttons = checkin_buttons(view.protocol, reader, row.id)
        elif courses.is_course_step(step.key):
            assert row.id is not None
            buttons = await courses.course_buttons(
                session=session, patient=patient, step=step.key, message_id=row.id
            )
        return Outgoing(
            chat_id=patient.chat_id, text="\n\n".join(p for p in parts if p), buttons=buttons
        )


async def upcoming_of(
    *, session: AsyncSession, treatment: TreatmentSession
) -> list[PlannedMessage]:
    assert treatment.id is not None
    rows = await session_messages(session=session, session_id=treatment.id)
    return [r for r in rows if r.state == MessageState.PENDING and r.step != "booked"]


def prep_checklist(view: SessionView, now: datetime) -> Html:
    """/prep: the 'booked' text for the next session, as it reads now."""
    return step_text(view, view.protocol.step("booked"), now)


def aftercare(view: SessionView, now: datetime) -> Html:
    """/aftercare: each aftercare restriction, allowed again or until when."""
    treatment = view.treatment
    return texts.aftercare(
        view.reader,
        treatment.start_at,
        treatment.end_at,
        view.spans("after"),
        now,
        view.clinic.emergency_phone,
    )


async def reminder_groups(
    *, session: AsyncSession, rows: list[tuple[int | None, texts.Line]]
) -> list[texts.Group]:
    """The lines grouped by session, in the order they come."""
    grouped: dict[int | None, list[texts.Line]] = {}
    for session_id, line in rows:
        grouped.setdefault(session_id, []).append(line)
    groups = []
    for session_id, planned in grouped.items():
        treatment = await session.get(TreatmentSession, session_id) if session_id else None
        groups.append(texts.Group(treatment.start_at if treatment else None, planned))
    return groups
