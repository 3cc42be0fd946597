"""Turning a planned row into the message the patient reads, at the moment it is sent.

Rendering happens at send time, not at planning time, so that the language, the zone and
the "until" times are those in force when the patient reads it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlmodel.ext.asyncio.session import AsyncSession

from messages.protocol import Protocol, Restriction, Step, resolve
from messages.render import Html, catalog, format_local
from scheduler import broadcast, courses
from scheduler.care import ClinicInfo, session_messages, zone_of
from scheduler.models import Clinic, MessageState, Patient, PlannedMessage, TreatmentSession
from scheduler.ports import Button, Outgoing
from scheduler.protocols import protocol_of


def local_datetime(at: datetime, tz: ZoneInfo, lang: str) -> str:
    return format_local(at, tz, lang, "datetime")


def local_day(day: date, lang: str) -> str:
    """A calendar day as the patient reads it ("Thu 3 Dec")."""
    noon = datetime.combine(day, time(12), tzinfo=ZoneInfo("UTC"))
    return format_local(noon, ZoneInfo("UTC"), lang, "date")


def anchors_of(treatment: TreatmentSession) -> dict[str, datetime]:
    return {"start": treatment.start_at, "end": treatment.end_at}


def checklist(
    restrictions: Iterable[Restriction],
    anchors: Mapping[str, datetime],
    tz: ZoneInfo,
    lang: str,
    now: datetime,
) -> Html:
    """One line per restriction: avoid until, avoid from..until, or fine again."""
    texts = catalog(lang)
    lines = []
    for restriction in restrictions:
        since = resolve(restriction.since, anchors, tz)
        until = resolve(restriction.until, anchors, tz)
        if since is None or until is None:
            continue
        what = texts.text(restriction.text)
        if now >= until:
            lines.append(texts.text("checklist.allowed", what=what))
        elif now < since:
            lines.append(
                texts.text(
                    "checklist.avoid_from",
                    what=what,
                    since=local_datetime(since, tz, lang),
                    until=local_datetime(until, tz, lang),
                )
            )
        else:
            lines.append(
                texts.text(
                    "checklist.avoid_until", what=what, until=local_datetime(until, tz, lang)
                )
            )
    return Html("\n".join(lines))


def screening_result(treatment: TreatmentSession, protocol: Protocol, lang: str) -> Html:
    texts = catalog(lang)
    if not treatment.screening:
        return Html("")
    advice = [texts.text(q.advice) for q in protocol.screening if treatment.screening.get(q.key)]
    if not advice:
        return texts.text("screening.clear")
    return texts.text("screening.flagged", advice=Html("\n".join(advice)))


def step_text(
    step: Step,
    *,
    protocol: Protocol,
    patient: Patient,
    treatment: TreatmentSession,
    clinic: ClinicInfo,
    now: datetime,
) -> Html:
    """A step's text with every parameter the protocol promises (BASE_STEP_PARAMS)."""
    tz, lang = zone_of(patient), patient.language
    texts = catalog(lang)
    anchors = anchors_of(treatment)
    params: dict[str, object] = {
        "start": local_datetime(treatment.start_at, tz, lang),
        "place": f"{clinic.name}, {clinic.address}",
        "checklist": checklist(
            (r for r in protocol.restrictions if r.phase == step.checklist), anchors, tz, lang, now
        )
        if step.checklist
        else Html(""),
        "screening": screening_result(treatment, protocol, lang),
        "next_due": format_local(
            treatment.start_at + timedelta(days=protocol.course.interval_days), tz, lang, "date"
        ),
    }
    for restriction in protocol.restrictions:
        until = resolve(restriction.until, anchors, tz)
        params[f"until_{restriction.key}"] = local_datetime(until, tz, lang) if until else ""
    return texts.text(step.text, **params)


def timeline(rows: Iterable[PlannedMessage], tz: ZoneInfo, lang: str) -> Html:
    """The planned reminders, one line each, in the patient's time."""
    texts = catalog(lang)
    lines = [
        texts.text(
            "chat.reminder_line",
            when=local_datetime(row.due_at, tz, lang),
            title=texts.text(f"title.{row.step}") if f"title.{row.step}" in texts else row.step,
        )
        for row in rows
    ]
    return Html("\n".join(lines))


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
        patient = await db.get(Patient, row.patient_id)
        treatment = await db.get(TreatmentSession, row.session_id) if row.session_id else None
        if patient is None or treatment is None:
            return None
        protocol = await protocol_of(session=db, patient=patient, default=self._protocol)
        try:
            step = protocol.step(row.step)
        except KeyError:
            return None
        clinic = await self._clinic_of(db, patient)
        lang, tz = patient.language, zone_of(patient)
        parts = [
            step_text(
                step,
                protocol=protocol,
                patient=patient,
                treatment=treatment,
                clinic=clinic,
                now=now,
            )
        ]
        texts = catalog(lang)
        for key in row.extra.get("folded", []):
            folded = protocol.step(key).folded_text
            if folded:
                parts.append(texts.text(folded))
        if step.key == "booked":
            rows = await upcoming_of(db, treatment)
            if rows:
                parts.append(texts.text("chat.timeline_title", zone=patient.timezone))
                parts.append(timeline(rows, tz, lang))
        buttons: tuple[tuple[Button, ...], ...] = ()
        if step.buttons == "checkin":
            assert row.id is not None
            buttons = checkin_buttons(protocol, lang, row.id)
        elif courses.is_course_step(step.key):
            assert row.id is not None
            buttons = await courses.course_buttons(db, patient, step.key, row.id)
        return Outgoing(
            chat_id=patient.chat_id, text="\n\n".join(p for p in parts if p), buttons=buttons
        )

    async def _clinic_of(self, db: AsyncSession, patient: Patient) -> ClinicInfo:
        clinic = await db.get(Clinic, patient.clinic_id)
        if clinic is None:
            return self._clinic
        return ClinicInfo(clinic.name, clinic.timezone, clinic.address, clinic.phone)


async def upcoming_of(db: AsyncSession, treatment: TreatmentSession) -> list[PlannedMessage]:
    assert treatment.id is not None
    rows = await session_messages(session=db, session_id=treatment.id)
    return [r for r in rows if r.state == MessageState.PENDING and r.step != "booked"]


def prep_checklist(
    protocol: Protocol, patient: Patient, treatment: TreatmentSession, now: datetime
) -> Html:
    """/prep: the 'booked' text for the next session, as it reads now."""
    return step_text(
        protocol.step("booked"),
        protocol=protocol,
        patient=patient,
        treatment=treatment,
        clinic=ClinicInfo("", "", "", ""),
        now=now,
    )


def reminder_list(patient: Patient, rows: list[PlannedMessage]) -> Html:
    texts = catalog(patient.language)
    if not rows:
        return texts.text("chat.nothing_planned")
    return Html(
        texts.text("chat.reminders_title", zone=patient.timezone)
        + "\n"
        + timeline(rows, zone_of(patient), patient.language)
    )
