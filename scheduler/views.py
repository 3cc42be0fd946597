"""What the patient's own commands show: their sessions, the live aftercare checklist,
earlier reminders, their settings, and the clinic's side-effect alert. Rendered from the
catalog, in the patient's language and zone, from data and the instant passed in."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from babel import Locale, UnknownLocaleError

from messages.render import Html, catalog, format_local
from scheduler.care import zone_of
from scheduler.compose import SessionView, local_datetime
from scheduler.models import Patient, SessionState, TreatmentSession


def when(treatment: TreatmentSession, patient: Patient) -> str:
    return local_datetime(treatment.start_at, zone_of(patient), patient.language)


def session_state(treatment: TreatmentSession, now: datetime) -> str:
    """The [sessions.state] key of a session as it stands at `now`."""
    if treatment.state == SessionState.CANCELLED:
        return "cancelled"
    if treatment.end_at <= now:
        return "done"
    if treatment.start_at <= now:
        return "in_progress"
    return "flagged" if treatment.flagged else "booked"


def sessions_list(
    patient: Patient,
    upcoming: Iterable[TreatmentSession],
    past: Iterable[TreatmentSession],
    now: datetime,
) -> Html:
    texts = catalog(patient.language)
    upcoming, past = list(upcoming), list(past)
    if not upcoming and not past:
        return texts.text("sessions.none")

    def lines(rows: list[TreatmentSession]) -> list[str]:
        return [
            texts.text(
                "sessions.line",
                when=when(r, patient),
                state=texts.text(f"sessions.state.{session_state(r, now)}"),
            )
            for r in rows
        ]

    parts: list[str] = [
        texts.text("sessions.title", zone=patient.timezone),
        texts.text("sessions.upcoming_title"),
    ]
    parts += lines(upcoming) if upcoming else [texts.text("sessions.no_upcoming")]
    if past:
        parts += ["", texts.text("sessions.past_title"), *lines(past)]
    if upcoming:
        parts += ["", texts.text("sessions.pick")]
    return Html("\n".join(parts))


def aftercare(view: SessionView, now: datetime) -> Html:
    """Each aftercare restriction: allowed again (a tick), or until when (local time), with
    the same times as every message (restrictions merged across the patient's sessions)."""
    texts = catalog(view.lang)
    lines: list[str] = []
    pending = False
    for restriction in view.protocol.restrictions:
        if restriction.phase != "after":
            continue
        span = view.restrictions.span(restriction)
        if span is None:
            continue
        what = texts.text(restriction.text)
        if now >= span[1]:
            lines.append(texts.text("aftercare.allowed", what=what))
        else:
            pending = True
            lines.append(texts.text("aftercare.until", what=what, until=view.at(span[1])))
    session_when = view.at(view.treatment.start_at)
    if not pending:
        return texts.text("aftercare.all_clear", when=session_when)
    return Html(
        "\n".join(
            [
                texts.text(
                    "aftercare.title",
                    when=session_when,
                    end=format_local(view.treatment.end_at, view.tz, view.lang, "time"),
                ),
                *lines,
                "",
                texts.text("aftercare.footer", emergency=view.clinic.emergency_phone),
            ]
        )
    )


def language_name(code: str) -> str:
    """A language's name in that language ("English"), for the settings."""
    try:
        name = Locale.parse(code).get_display_name(code)
    except (ValueError, UnknownLocaleError):
        return code
    return (name or code)[:1].upper() + (name or code)[1:]


def quiet_hours(patient: Patient) -> Html:
    texts = catalog(patient.language)
    if patient.quiet_start == patient.quiet_end:
        return texts.text("settings.quiet_none")
    return texts.text("settings.quiet_range", start=patient.quiet_start, end=patient.quiet_end)


def settings_summary(patient: Patient) -> Html:
    return catalog(patient.language).text(
        "settings.title",
        language=language_name(patient.language),
        zone=patient.timezone,
        quiet=quiet_hours(patient),
    )
