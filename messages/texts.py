"""Every text the bot assembles, from plain values: dates, names, catalog keys, numbers.

`scheduler/` works out what is true (when a restriction ends, which steps are planned, what a
patient wrote) and hands the values here; the handlers and the dispatcher's composer only
pass them on. So a text is built in one place, from the catalog of the reader's language,
with times on the reader's clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime, time
from zoneinfo import ZoneInfo

import msgspec
from babel import Locale, UnknownLocaleError

from messages.protocol import Protocol
from messages.render import Catalog, Html, Later, catalog
from messages.scripts import local_digits

UTC = ZoneInfo("UTC")


class Reader(msgspec.Struct, frozen=True):
    """Who reads a text: their language, the clock they read times on, and the texts of
    their protocol (a clinic's own over the shipped catalog; None: the shipped one)."""

    lang: str
    tz: ZoneInfo
    texts: Catalog | None = None

    @classmethod
    def of(cls, lang: str, tz: ZoneInfo, protocol: Protocol) -> Reader:
        """A patient or staff member of a clinic: in their language if the clinic speaks it
        (else the clinic's first), with the clinic's texts."""
        lang = protocol.language_for(lang)
        return cls(lang, tz, protocol.catalog(lang))

    @property
    def catalog(self) -> Catalog:
        return self.texts if self.texts is not None else catalog(self.lang)

    def t(self, key: str, /, **params: object) -> Html:
        return self.catalog.text(key, **params)

    def digits(self, text: str) -> str:
        """ASCII digits in the reader's own digits ("22:00" -> "۲۲:۰۰" in Persian)."""
        return local_digits(text, self.lang)

    def has(self, key: str) -> bool:
        return key in self.catalog

    def at(self, instant: datetime) -> str:
        """ "Thu 3 Dec, 14:30" on the reader's clock."""
        return self._written(instant, self.tz, "datetime")

    def clock(self, instant: datetime) -> str:
        """ "14:30" on the reader's clock."""
        return self._written(instant, self.tz, "time")

    def day(self, instant: datetime) -> str:
        """ "Thu 3 Dec" on the reader's clock."""
        return self._written(instant, self.tz, "date")

    def calendar_day(self, day: date) -> str:
        """A calendar day as such ("Thu 3 Dec"), whatever the clock."""
        return self._written(datetime.combine(day, time(12), tzinfo=UTC), UTC, "date")

    def _written(self, instant: datetime, tz: ZoneInfo, fmt: str) -> str:
        # Imported at the first date written: Babel's date formatting and persiantools cost
        # each start 15 ms, and a bot's first texts need not state one (`Later`).
        from messages.calendars import format_local

        return format_local(instant, tz, self.lang, fmt)


def lines(*parts: str) -> Html:
    return Html("\n".join(parts))


# -- the timeline -------------------------------------------------------------------------------


class Span(msgspec.Struct, frozen=True):
    """What to avoid (a [restriction] text key) from `since` until `until`."""

    text: str
    since: datetime
    until: datetime


def checklist(reader: Reader, spans: Sequence[Span], now: datetime) -> Html:
    """One line per restriction: avoid until, avoid from..until, or fine again."""
    found = []
    for span in spans:
        what = reader.t(span.text)
        if now >= span.until:
            found.append(reader.t("checklist.allowed", what=what))
        elif now < span.since:
            found.append(
                reader.t(
                    "checklist.avoid_from",
                    what=what,
                    since=reader.at(span.since),
                    until=reader.at(span.until),
                )
            )
        else:
            found.append(reader.t("checklist.avoid_until", what=what, until=reader.at(span.until)))
    return lines(*found)


def screening_result(reader: Reader, answered: bool, advice: Sequence[str]) -> Html:
    """After the health questions: thanks, or the [screening.advice] of each "yes"."""
    if not answered:
        return Html("")
    if not advice:
        return reader.t("screening.clear")
    found = [reader.t("screening.advice_line", advice=reader.t(key)) for key in advice]
    return reader.t("screening.flagged", advice=lines(*found))


def place(name: str, address: str) -> str:
    """The clinic's name and address ("Demo Clinic, 12 Example Street"), or just its name."""
    return ", ".join(part for part in (name.strip(), address.strip()) if part)


class Session(msgspec.Struct, frozen=True):
    """What a step's text and title may state about its session (BASE_STEP_PARAMS)."""

    start: datetime
    end: datetime
    minutes: int
    place: str
    next_due: datetime
    emergency: str
    untils: Mapping[str, datetime]
    """Restriction key -> when it ends (merged across the patient's sessions)."""
    checklist: Html = msgspec.field(default_factory=lambda: Html(""))
    screening: Html = msgspec.field(default_factory=lambda: Html(""))


def _params(reader: Reader, session: Session) -> dict[str, object]:
    """Every value a step's text may state; its times worked out only if it states them
    (`Later`): many steps state none, and a time needs the language's CLDR data."""
    params: dict[str, object] = {
        "start": Later(reader.at, session.start),
        "end": Later(reader.clock, session.end),
        "minutes": session.minutes,
        "place": session.place,
        "checklist": session.checklist,
        "screening": session.screening,
        "next_due": Later(reader.day, session.next_due),
        "emergency": session.emergency,
    }
    for key, until in session.untils.items():
        params[f"until_{key}"] = Later(reader.at, until)
    return params


def step(reader: Reader, text_key: str, session: Session) -> Html:
    """A step's message."""
    return reader.t(text_key, **_params(reader, session))


def title(reader: Reader, step_key: str, session: Session | None, *, extended: bool) -> Html:
    """A step's short name (the timeline, /reminders), with the same times as its message;
    a row of no session (a broadcast, a clinic's answer) has a title without times."""
    key = f"title_extended.{step_key}" if extended else f"title.{step_key}"
    if not reader.has(key):
        key = f"title.{step_key}"
    if not reader.has(key):
        return Html(reader.t("title.unknown"))
    if session is None:
        try:
            return reader.t(key)
        except KeyError:  # a session step's title needs its session's times
            return reader.t("title.unknown")
    return reader.t(key, **_params(reader, session))


class Line(msgspec.Struct, frozen=True):
    """One planned message in a list: when, and its short name."""

    at: datetime
    title: Html
    state: str | None = None


def timeline(reader: Reader, planned: Sequence[Line]) -> Html:
    """The planned reminders, one line each, in the reader's time."""
    return lines(
        *(reader.t("chat.reminder_line", when=reader.at(p.at), title=p.title) for p in planned)
    )


class Group(msgspec.Struct, frozen=True):
    """The planned messages of one session (`start`), or of none (None)."""

    start: datetime | None
    planned: Sequence[Line] = msgspec.field(default_factory=tuple)


def reminder_list(reader: Reader, zone: str, groups: Sequence[Group]) -> Html:
    """/reminders: what is planned, under a heading per session when there are several."""
    if not any(g.planned for g in groups):
        return reader.t("chat.nothing_planned")
    parts: list[str] = [reader.t("chat.reminders_title", zone=zone)]
    for group in groups:
        if len(groups) > 1:
            parts.append(
                reader.t("reminders.session_title", when=reader.at(group.start))
                if group.start is not None
                else reader.t("reminders.other_title")
            )
        parts.append(timeline(reader, group.planned))
    return lines(*parts)


def past_reminders(reader: Reader, zone: str, done: Sequence[Line]) -> Html:
    """The earlier reminders: sent, or not sent because it was too late."""
    if not done:
        return reader.t("reminders.no_past")
    found = [
        reader.t(
            "reminders.past_line",
            when=reader.at(line.at),
            title=line.title,
            state=reader.t(f"reminders.state.{line.state}"),
        )
        for line in done
    ]
    return lines(reader.t("reminders.past_title", zone=zone), *found)


# -- the patient's own views -------------------------------------------------------------------


def aftercare(
    reader: Reader,
    start: datetime,
    end: datetime,
    spans: Sequence[Span],
    now: datetime,
    emergency: str,
) -> Html:
    """Each aftercare restriction: allowed again (a tick), or until when."""
    found = []
    for span in spans:
        what = reader.t(span.text)
        if now >= span.until:
            found.append(reader.t("aftercare.allowed", what=what))
        else:
            found.append(reader.t("aftercare.until", what=what, until=reader.at(span.until)))
    if all(now >= span.until for span in spans):
        return reader.t("aftercare.all_clear", when=reader.at(start))
    return lines(
        reader.t("aftercare.title", when=reader.at(start), end=reader.clock(end)),
        *found,
        "",
        reader.t("aftercare.footer", emergency=emergency),
    )


class Booked(msgspec.Struct, frozen=True):
    """A session in a list: its start and its [sessions.state] key."""

    start: datetime
    state: str


def sessions_list(
    reader: Reader, zone: str, upcoming: Sequence[Booked], past: Sequence[Booked]
) -> Html:
    if not upcoming and not past:
        return reader.t("sessions.none")

    def each(rows: Sequence[Booked]) -> list[str]:
        return [
            reader.t(
                "sessions.line",
                when=reader.at(r.start),
                state=reader.t(f"sessions.state.{r.state}"),
            )
            for r in rows
        ]

    parts: list[str] = [reader.t("sessions.title", zone=zone), reader.t("sessions.upcoming_title")]
    parts += each(upcoming) if upcoming else [reader.t("sessions.no_upcoming")]
    if past:
        parts += ["", reader.t("sessions.past_title"), *each(past)]
    if upcoming:
        parts += ["", reader.t("sessions.pick")]
    return lines(*parts)


def language_name(code: str) -> str:
    """A language's name in that language ("English"), for the settings."""
    try:
        name = Locale.parse(code).get_display_name(code)
    except (ValueError, UnknownLocaleError):
        return code
    return (name or code)[:1].upper() + (name or code)[1:]


def quiet_hours(reader: Reader, start: str, end: str) -> Html:
    if start == end:
        return reader.t("settings.quiet_none")
    return reader.t("settings.quiet_range", start=reader.digits(start), end=reader.digits(end))


def settings_summary(reader: Reader, zone: str, quiet: Html) -> Html:
    return reader.t("settings.title", language=language_name(reader.lang), zone=zone, quiet=quiet)


# -- the clinic ---------------------------------------------------------------------------------


def contact(reader: Reader, name: str, phone: str, address: str) -> Html:
    """The clinic's name, phone and address, one line each; empty fields left out."""
    found = [reader.t("safety.clinic_line", clinic=name)]
    if phone.strip():
        found.append(reader.t("safety.phone_line", phone=phone))
    if address.strip():
        found.append(reader.t("safety.address_line", address=address))
    return lines(*found)


def safety_answer(
    reader: Reader,
    *,
    name: str,
    phone: str,
    address: str,
    emergency_phone: str,
    emergency: bool,
    known: bool = True,
) -> Html:
    """The answer to words that name a red-flag sign: "please contact the clinic now" with its
    phone and address, and the emergency line (first, for breathing difficulty or collapse).
    `known`: a patient of the clinic (else someone who never set up the bot)."""
    key = (
        "safety.emergency"
        if emergency
        else "safety.red_flag"
        if known
        else "safety.red_flag_unknown"
    )
    return reader.t(key, contact=contact(reader, name, phone, address), emergency=emergency_phone)


class Notice(msgspec.Struct, frozen=True):
    """An inbox message as staff read it (a notice to their chat, a line of /inbox)."""

    kind: str  # an InboxKind value
    name: str
    patient_id: int
    at: datetime
    text: str
    signs: Sequence[str] = ()
    """Red-flag sign keys (messages/safety.py), or the short keys of screening answers."""
    replied_at: datetime | None = None
    reply_state: str | None = None
    handled_at: datetime | None = None


def notice(reader: Reader, item: Notice) -> Html:
    """Who, when, what; the patient's own words quoted; answered and handled, if so."""
    params: dict[str, object] = {
        "name": item.name,
        "id": item.patient_id,
        "when": reader.at(item.at),
    }
    if item.kind == "red_flag":
        signs = Html(", ".join(reader.t(f"inbox.sign.{s}") for s in item.signs))
        found = [reader.t("inbox.red_flag", signs=signs, **params)]
    elif item.kind == "screening":
        answers = Html(", ".join(reader.t(s) for s in item.signs))
        found = [reader.t("inbox.screening", answers=answers, **params)]
    elif item.kind == "note":
        found = [reader.t("inbox.note", **params)]
    else:
        found = [reader.t("inbox.message", **params)]
    if item.text:
        found.append(reader.t("inbox.quote", text=item.text))
    if item.replied_at is not None:
        state = reader.t(f"inbox.delivery.{item.reply_state or 'pending'}")
        found.append(reader.t("inbox.replied", when=reader.at(item.replied_at), state=state))
    if item.handled_at is not None:
        found.append(reader.t("inbox.handled", when=reader.at(item.handled_at)))
    return lines(*found)


def checkin_alert(
    reader: Reader,
    name: str,
    patient_id: int,
    session_start: datetime | None,
    answer_key: str,
    answered_at: datetime,
) -> Html:
    """The alert staff receive for a red-flag check-in answer."""
    return reader.t(
        "staff_alert.text",
        name=name,
        id=patient_id,
        session=reader.at(session_start)
        if session_start is not None
        else reader.t("staff_alert.no_session"),
        answer=reader.t(answer_key),
        answered=reader.at(answered_at),
    )


def clinic_answer(reader: Reader, clinic: str, text: str) -> Html:
    """A staff answer as the patient reads it."""
    return reader.t("inbox.to_patient", clinic=clinic, text=text)


def broadcast(lang: str, clinic: str, text: str) -> Html:
    """A broadcast as the patient reads it (also the staff's preview)."""
    return catalog(lang).text("broadcast.message", clinic=clinic, text=text)


# -- staff views --------------------------------------------------------------------------------


class PatientRow(msgspec.Struct, frozen=True):
    """A line of /patients: who, whether flagged, and a [staff] status key (with the next
    session's start for "status_next")."""

    patient_id: int
    name: str
    flagged: bool
    status: str
    next_start: datetime | None = None


def patients_page(
    reader: Reader, clinic: str, page: int, pages: int, rows: Sequence[PatientRow]
) -> Html:
    if not rows:
        return reader.t("staff.no_patients")
    found: list[str] = [
        reader.t("staff.patients_title", clinic=clinic, page=page + 1, pages=pages)
    ]
    for row in rows:
        status = (
            reader.t("staff.status_next", when=reader.at(row.next_start))
            if row.next_start is not None
            else reader.t(f"staff.{row.status}")
        )
        flag = reader.t("staff.patient_flag") if row.flagged else Html("")
        found.append(
            reader.t(
                "staff.patient_line", id=row.patient_id, name=row.name, flag=flag, status=status
            )
        )
    return lines(*found)


class Upcoming(msgspec.Struct, frozen=True):
    """A line of /upcoming: the session, the patient, the short keys of its "yes" answers."""

    start: datetime
    patient_id: int
    name: str
    flags: Sequence[str] = ()


def upcoming(reader: Reader, days: int, zone: str, rows: Sequence[Upcoming]) -> Html:
    if not rows:
        return reader.t("staff.no_upcoming", days=days)
    found: list[str] = [reader.t("staff.upcoming_title", days=days, zone=zone)]
    for row in rows:
        answers = Html(", ".join(reader.t(key) for key in row.flags))
        flag = reader.t("staff.upcoming_flag", answers=answers) if row.flags else Html("")
        found.append(
            reader.t(
                "staff.upcoming_line",
                when=reader.at(row.start),
                id=row.patient_id,
                name=row.name,
                flag=flag,
            )
        )
    return lines(*found)


class DueRow(msgspec.Struct, frozen=True):
    patient_id: int
    name: str
    last_end: datetime


def due(reader: Reader, rows: Sequence[DueRow], total: int) -> Html:
    """/due: how many are due, and the rows shown (the longest waiting)."""
    if not rows:
        return reader.t("staff.no_due")
    return lines(
        reader.t("staff.due_title", count=total),
        *(
            reader.t("staff.due_line", id=r.patient_id, name=r.name, last=reader.day(r.last_end))
            for r in rows
        ),
        reader.t("staff.due_hint"),
    )


class Alert(msgspec.Struct, frozen=True):
    """A side-effect report as /alerts shows it."""

    patient_id: int
    name: str
    answered_at: datetime
    answer: str  # a [checkin.label] key, or the raw option when the protocol lost it
    red_flag: bool
    note: str | None
    handled_at: datetime | None


def alert(reader: Reader, item: Alert) -> Html:
    answer = reader.t(item.answer) if reader.has(item.answer) else item.answer
    head = reader.t(
        "staff.alert",
        red=reader.t("staff.alert_red") if item.red_flag else Html(""),
        id=item.patient_id,
        name=item.name,
        when=reader.at(item.answered_at),
        answer=answer,
        note=reader.t("staff.alert_note", note=item.note) if item.note else Html(""),
    )
    state = (
        reader.t("staff.alert_handled", when=reader.at(item.handled_at))
        if item.handled_at is not None
        else reader.t("staff.alert_open")
    )
    return lines(head, state)


def invite(reader: Reader, clinic: str, link: str, start: datetime | None) -> Html:
    """The caption of an invite's QR code."""
    if start is None:
        return reader.t("staff.invite_clinic", clinic=clinic, link=link)
    return reader.t("staff.invite_booking", clinic=clinic, when=reader.at(start), link=link)


# -- for the operator (English: the command line) ----------------------------------------------


class SampleStep(msgspec.Struct, frozen=True):
    key: str
    due: datetime
    expires: datetime
    state: str
    folded: Sequence[str] = ()


class SampleRestriction(msgspec.Struct, frozen=True):
    key: str
    phase: str
    since: datetime | None
    until: datetime | None
    written: str  # as the protocol file writes it ("end .. end+7d")


class Sample(msgspec.Struct, frozen=True):
    """A protocol's timeline and restrictions for one sample session."""

    booked: datetime
    start: datetime
    end: datetime
    steps: Sequence[SampleStep]
    restrictions: Sequence[SampleRestriction]


def protocol_report(tz: ZoneInfo, sample: Sample, protocol: Protocol) -> str:
    """`aftercare check-protocol`: the sample timeline, then what to avoid and when."""
    reader = Reader.of("en", tz, protocol)

    def at(instant: datetime | None) -> str:
        return reader.at(instant) if instant is not None else "-"

    found = [
        f"Sample session: booked {at(sample.booked)}, session {at(sample.start)} to "
        f"{reader.clock(sample.end)} ({tz.key}), quiet hours 22:00-08:00",
        "",
        f"{'step':<16} {'sends at':<18} {'valid until':<18} state",
    ]
    for s in sample.steps:
        folded = f" (+ {', '.join(s.folded)})" if s.folded else ""
        found.append(f"{s.key:<16} {at(s.due):<18} {at(s.expires):<18} {s.state}{folded}")
    found += [
        "",
        "What to avoid, for the same session:",
        f"{'restriction':<16} {'phase':<7} {'from':<18} {'until':<18} (protocol)",
    ]
    for r in sample.restrictions:
        found.append(f"{r.key:<16} {r.phase:<7} {at(r.since):<18} {at(r.until):<18} ({r.written})")
    return "\n".join(found)
