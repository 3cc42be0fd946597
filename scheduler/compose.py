"""Turning a planned row into the message the patient reads, at the moment it is sent.

Rendering happens at send time, not at planning time, so that the language, the zone and
the "until" times are those in force when the patient reads it. Every time a text states
comes from one place: the planned row's due time, or a restriction's span across the
patient's sessions (`scheduler.planner.Restrictions`, which the planner uses too), so the
timeline summary, the message, /aftercare and /reminders never disagree.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlmodel.ext.asyncio.session import AsyncSession

from messages.protocol import Protocol, Step
from messages.render import Html, catalog, format_local
from scheduler import broadcast, courses, inbox
from scheduler.care import ClinicInfo, other_sessions, session_messages, zone_of
from scheduler.models import Clinic, MessageState, Patient, PlannedMessage, TreatmentSession
from scheduler.planner import Restrictions, SessionTimes
from scheduler.ports import Button, Outgoing
from scheduler.protocols import protocol_of


def local_datetime(at: datetime, tz: ZoneInfo, lang: str) -> str:
    return format_local(at, tz, lang, "datetime")


def local_day(day: date, lang: str) -> str:
    """A calendar day as the patient reads it ("Thu 3 Dec")."""
    noon = datetime.combine(day, time(12), tzinfo=ZoneInfo("UTC"))
    return format_local(noon, ZoneInfo("UTC"), lang, "date")


def times_of(treatment: TreatmentSession) -> SessionTimes:
    return SessionTimes(start=treatment.start_at, end=treatment.end_at)


@dataclass(frozen=True)
class SessionView:
    """What every text about one session needs: its patient, protocol and clinic, and when
    each restriction really holds given the patient's other sessions."""

    protocol: Protocol
    patient: Patient
    treatment: TreatmentSession
    clinic: Clinic
    restrictions: Restrictions

    @property
    def lang(self) -> str:
        return self.patient.language

    @property
    def tz(self) -> ZoneInfo:
        return zone_of(self.patient)

    def at(self, instant: datetime) -> str:
        return local_datetime(instant, self.tz, self.lang)


async def clinic_row(db: AsyncSession, patient: Patient, fallback: ClinicInfo) -> Clinic:
    """The patient's clinic (the settings' clinic if the row is somehow gone)."""
    clinic = await db.get(Clinic, patient.clinic_id)
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


async def session_view(
    db: AsyncSession,
    patient: Patient,
    treatment: TreatmentSession,
    default: Protocol,
    fallback: ClinicInfo,
) -> SessionView:
    protocol = await protocol_of(session=db, patient=patient, default=default)
    assert patient.id is not None and treatment.id is not None
    others = await other_sessions(session=db, patient_id=patient.id, session_id=treatment.id)
    restrictions = Restrictions(protocol, times_of(treatment), zone_of(patient), others)
    clinic = await clinic_row(db, patient, fallback)
    return SessionView(protocol, patient, treatment, clinic, restrictions)


def checklist(view: SessionView, phase: str, now: datetime) -> Html:
    """One line per restriction of the phase: avoid until, avoid from..until, or fine again."""
    texts = catalog(view.lang)
    lines = []
    for restriction in view.protocol.restrictions:
        if restriction.phase != phase:
            continue
        span = view.restrictions.span(restriction)
        if span is None:
            continue
        since, until = span
        what = texts.text(restriction.text)
        if now >= until:
            lines.append(texts.text("checklist.allowed", what=what))
        elif now < since:
            lines.append(
                texts.text(
                    "checklist.avoid_from", what=what, since=view.at(since), until=view.at(until)
                )
            )
        else:
            lines.append(texts.text("checklist.avoid_until", what=what, until=view.at(until)))
    return Html("\n".join(lines))


def screening_result(view: SessionView) -> Html:
    texts = catalog(view.lang)
    answers = view.treatment.screening
    if not answers:
        return Html("")
    advice = [texts.text(q.advice) for q in view.protocol.screening if answers.get(q.key)]
    if not advice:
        return texts.text("screening.clear")
    lines = [texts.text("screening.advice_line", advice=a) for a in advice]
    return texts.text("screening.flagged", advice=Html("\n".join(lines)))


def place(clinic: Clinic) -> str:
    """The clinic's name and address ("Demo Clinic, 12 Example Street"), or just its name."""
    return ", ".join(part for part in (clinic.name.strip(), clinic.address.strip()) if part)


def step_params(
    view: SessionView, now: datetime, checklist_phase: str | None
) -> dict[str, object]:
    """Every parameter a step text or title may use (BASE_STEP_PARAMS and until_<key>)."""
    treatment, protocol = view.treatment, view.protocol
    params: dict[str, object] = {
        "start": view.at(treatment.start_at),
        "end": format_local(treatment.end_at, view.tz, view.lang, "time"),
        "minutes": protocol.session_minutes,
        "place": place(view.clinic),
        "emergency": view.clinic.emergency_phone,
        "checklist": checklist(view, checklist_phase, now) if checklist_phase else Html(""),
        "screening": screening_result(view),
        "next_due": format_local(
            treatment.start_at + timedelta(days=protocol.course.interval_days),
            view.tz,
            view.lang,
            "date",
        ),
    }
    for restriction in protocol.restrictions:
        span = view.restrictions.span(restriction)
        params[f"until_{restriction.key}"] = view.at(span[1]) if span else ""
    return params


def step_text(view: SessionView, step: Step, now: datetime, *, extended: bool = False) -> Html:
    """A step's message (its reworded text when another session extends what it ends)."""
    key = step.extended_text if extended and step.extended_text else step.text
    return catalog(view.lang).text(key, **step_params(view, now, step.checklist))


def title(view: SessionView, row: PlannedMessage, now: datetime) -> Html:
    """A row's short name for the timeline and /reminders, with the same times as its text."""
    texts = catalog(view.lang)
    key = f"title_extended.{row.step}" if row.extra.get("extended") else f"title.{row.step}"
    if key not in texts:
        key = f"title.{row.step}"
    if key not in texts:
        return Html(row.step)
    return texts.text(key, **step_params(view, now, None))


def timeline(view: SessionView, rows: Iterable[PlannedMessage], now: datetime) -> Html:
    """The planned reminders of one session, one line each, in the patient's time."""
    texts = catalog(view.lang)
    return Html(
        "\n".join(
            texts.text("chat.reminder_line", when=view.at(row.due_at), title=title(view, row, now))
            for row in rows
        )
    )


def checkin_buttons(
    protocol: Protocol, lang: str, message_id: int
) -> tuple[tuple[Button, ...], ...]:
    texts = catalog(lang)
    options = [Button(texts.text(o.label), f"ci:{message_id}:{o.key}") for o in protocol.checkin]
    return tuple(tuple(options[i : i + 2]) for i in range(0, len(options), 2))


class Composer:
    """The dispatcher's renderer: one planned row -> one Telegram message."""

    def __init__(self, protocol: Protocol, clinic: ClinicInfo) -> None:
        self._protocol = protocol
        self._clinic = clinic

    async def __call__(
        self, db: AsyncSession, row: PlannedMessage, now: datetime
    ) -> Outgoing | None:
        if row.step == broadcast.STEP:
            return await broadcast.compose(db, row)
        if row.step in inbox.STEPS:
            return await inbox.compose(db, row, self._protocol)
        patient = await db.get(Patient, row.patient_id)
        treatment = await db.get(TreatmentSession, row.session_id) if row.session_id else None
        if patient is None or treatment is None:
            return None
        view = await session_view(db, patient, treatment, self._protocol, self._clinic)
        try:
            step = view.protocol.step(row.step)
        except KeyError:
            return None
        texts = catalog(view.lang)
        parts = [step_text(view, step, now, extended=bool(row.extra.get("extended")))]
        for key in row.extra.get("folded", []):
            folded = view.protocol.step(key).folded_text
            if folded:
                parts.append(texts.text(folded))
        if step.key == "booked":
            rows = await upcoming_of(db, treatment)
            if rows:
                parts.append(texts.text("chat.timeline_title", zone=patient.timezone))
                parts.append(timeline(view, rows, now))
        buttons: tuple[tuple[Button, ...], ...] = ()
        if step.buttons == "checkin":
            assert row.id is not None
            buttons = checkin_buttons(view.protocol, view.lang, row.id)
        elif courses.is_course_step(step.key):
            assert row.id is not None
            buttons = await courses.course_buttons(db, patient, step.key, row.id)
        return Outgoing(
            chat_id=patient.chat_id, text="\n\n".join(p for p in parts if p), buttons=buttons
        )


async def upcoming_of(db: AsyncSession, treatment: TreatmentSession) -> list[PlannedMessage]:
    assert treatment.id is not None
    rows = await session_messages(session=db, session_id=treatment.id)
    return [r for r in rows if r.state == MessageState.PENDING and r.step != "booked"]


def prep_checklist(view: SessionView, now: datetime) -> Html:
    """/prep: the 'booked' text for the next session, as it reads now."""
    return step_text(view, view.protocol.step("booked"), now)


def _static_title(lang: str, row: PlannedMessage) -> Html:
    """The short name of a row that belongs to no session (a broadcast, a clinic's answer)."""
    texts = catalog(lang)
    key = f"title.{row.step}"
    try:
        return texts.text(key) if key in texts else Html(html.escape(row.step))
    except KeyError:  # a session step's title needs the session's times
        return Html(html.escape(row.step))


async def titles_of(
    db: AsyncSession,
    patient: Patient,
    rows: Sequence[PlannedMessage],
    default: Protocol,
    fallback: ClinicInfo,
    now: datetime,
) -> list[Html]:
    """Each row's short name, with the times of its own session."""
    views: dict[int, SessionView | None] = {}
    found = []
    for row in rows:
        if row.session_id is not None and row.session_id not in views:
            treatment = await db.get(TreatmentSession, row.session_id)
            views[row.session_id] = (
                await session_view(db, patient, treatment, default, fallback)
                if treatment is not None
                else None
            )
        view = views.get(row.session_id) if row.session_id is not None else None
        found.append(title(view, row, now) if view else _static_title(patient.language, row))
    return found


async def reminder_list(
    db: AsyncSession,
    patient: Patient,
    rows: Sequence[PlannedMessage],
    default: Protocol,
    fallback: ClinicInfo,
    now: datetime,
) -> Html:
    """/reminders: what is planned, grouped by session when there is more than one."""
    texts = catalog(patient.language)
    if not rows:
        return texts.text("chat.nothing_planned")
    tz, lang = zone_of(patient), patient.language
    titles = await titles_of(db, patient, rows, default, fallback, now)
    groups: dict[int | None, list[Html]] = {}
    for row, name in zip(rows, titles, strict=True):
        line = texts.text(
            "chat.reminder_line", when=local_datetime(row.due_at, tz, lang), title=name
        )
        groups.setdefault(row.session_id, []).append(line)
    parts = [texts.text("chat.reminders_title", zone=patient.timezone)]
    for session_id, lines in groups.items():
        if len(groups) > 1:
            treatment = await db.get(TreatmentSession, session_id) if session_id else None
            parts.append(
                texts.text(
                    "reminders.session_title", when=local_datetime(treatment.start_at, tz, lang)
                )
                if treatment is not None
                else texts.text("reminders.other_title")
            )
        parts.extend(lines)
    return Html("\n".join(parts))


async def past_reminders(
    db: AsyncSession,
    patient: Patient,
    rows: Sequence[PlannedMessage],
    default: Protocol,
    fallback: ClinicInfo,
    now: datetime,
) -> Html:
    """The earlier reminders: sent, or not sent because it was too late."""
    texts = catalog(patient.language)
    if not rows:
        return texts.text("reminders.no_past")
    tz, lang = zone_of(patient), patient.language
    titles = await titles_of(db, patient, rows, default, fallback, now)
    lines = [
        texts.text(
            "reminders.past_line",
            when=local_datetime(row.sent_at or row.due_at, tz, lang),
            title=name,
            state=texts.text(f"reminders.state.{row.state}"),
        )
        for row, name in zip(rows, titles, strict=True)
    ]
    return Html("\n".join([texts.text("reminders.past_title", zone=patient.timezone), *lines]))
