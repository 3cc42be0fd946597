"""Appointments in (a booking system's CSV export) and the delivery log out (CSV).

Import columns (a header line names them; order and extra columns do not matter):

    clinic       the clinic's slug (empty: the default clinic)
    start        the session's start, clinic time: "2026-12-03 14:30" (or ISO with offset)
    telegram_id  the patient's Telegram user id, if known
    phone        the patient's phone number, if known
    invite       the code of an invite the patient already opened, if known
    name         optional, copied to the invite-links output

One of telegram_id, phone or invite identifies the patient. The natural key
(clinic, patient identity, start) makes a second import of the same line a no-op. A
patient already on Telegram gets the session booked (planned at once if they consented); any
other gets a per-booking invite link, listed in the output.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from messages.protocol import Protocol
from scheduler import invites
from scheduler.care import PAST_SESSION_LIMIT
from scheduler.models import (
    Appointment,
    BroadcastRecipient,
    Clinic,
    Invite,
    Patient,
    PlannedMessage,
    SessionState,
    TreatmentSession,
)

COLUMNS = ("clinic", "start", "telegram_id", "phone", "invite", "name")
LINK_COLUMNS = ("line", "clinic", "name", "phone", "telegram_id", "start", "link")
MAX_LINES = 100_000


@dataclass
class ImportReport:
    booked: int = 0
    invited: int = 0
    unchanged: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)
    links: list[dict[str, str]] = field(default_factory=list)

    @property
    def lines(self) -> int:
        return self.booked + self.invited + self.unchanged + len(self.errors)


class LineError(ValueError):
    pass


def _start(raw: str, zone: ZoneInfo) -> datetime:
    text = raw.strip().replace("T", " ")
    if not text:
        raise LineError("start: missing")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise LineError(
            f"start: {raw.strip()[:40]!r} is not a date and time like 2026-12-03 14:30"
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=zone)


def _phone(raw: str) -> str:
    digits = "".join(ch for ch in raw if ch.isdigit())
    if raw.strip() and not 6 <= len(digits) <= 15:
        raise LineError("phone: not a phone number")
    return ("+" + digits) if digits else ""


def _identity(row: dict[str, str]) -> tuple[str, int | None, str, str]:
    """(natural key, telegram id, phone, invite code) of a line."""
    tg_raw = (row.get("telegram_id") or "").strip()
    tg = None
    if tg_raw:
        if not tg_raw.isdigit() or len(tg_raw) > 15:
            raise LineError("telegram_id: not a Telegram user id")
        tg = int(tg_raw)
    phone = _phone(row.get("phone") or "")
    code = (row.get("invite") or "").strip()
    for prefix in invites.PREFIX.values():
        code = code.removeprefix(prefix)
    if len(code) > 40:
        raise LineError("invite: not an invite code")
    if tg is not None:
        return f"tg:{tg}", tg, phone, code
    if phone:
        return f"phone:{phone}", None, phone, code
    if code:
        return f"invite:{code}", None, phone, code
    raise LineError("no patient: give telegram_id, phone or invite")


async def _known_patient(
    *, session: AsyncSession, clinic: Clinic, key: str, tg: int | None, code: str
) -> Patient | None:
    """The patient behind an identity, if they are on Telegram with this clinic: by Telegram
    id, or as whoever opened an invite made for this identity (or the code given)."""
    if tg is not None:
        patient = (await session.exec(select(Patient).where(Patient.tg_user_id == tg))).first()
    else:
        codes = [code] if code else []
        codes += [
            c
            for c in (
                await session.exec(
                    select(Appointment.invite_code).where(
                        Appointment.clinic_id == clinic.id,
                        Appointment.patient_key == key,
                        col(Appointment.invite_code).is_not(None),
                    )
                )
            ).all()
            if c
        ]
        patient = (
            (
                await session.exec(
                    select(Patient)
                    .join(Invite, col(Invite.patient_id) == col(Patient.id))
                    .where(col(Invite.code).in_(codes), Invite.clinic_id == clinic.id)
                )
            ).first()
            if codes
            else None
        )
    return patient if patient is not None and patient.clinic_id == clinic.id else None


async def import_appointments(
    *,
    session: AsyncSession,
    rows: Iterable[dict[str, str]],
    default_clinic: Clinic,
    protocol: Protocol,
    bot_username: str,
    now: datetime,
    progress: Callable[[], None] | None = None,
) -> ImportReport:
    """Import every line (numbered from 2: line 1 is the header) in the caller's
    transaction; a bad line is reported and skipped, the others go in."""
    report = ImportReport()
    clinics = {c.slug: c for c in (await session.exec(select(Clinic))).all()}
    for number, row in enumerate(rows, start=2):
        if progress is not None:
            progress()
        if number > MAX_LINES:
            report.errors.append((number, f"more than {MAX_LINES} lines: the rest is skipped"))
            break
        try:
            await _import_line(
                session, row, number, clinics, default_clinic, protocol, bot_username, now, report
            )
        except LineError as exc:
            report.errors.append((number, str(exc)))
    return report


async def _import_line(
    session: AsyncSession,
    row: dict[str, str],
    number: int,
    clinics: dict[str, Clinic],
    default_clinic: Clinic,
    protocol: Protocol,
    bot_username: str,
    now: datetime,
    report: ImportReport,
) -> None:
    slug = (row.get("clinic") or "").strip()
    clinic = clinics.get(slug) if slug else default_clinic
    if clinic is None or clinic.id is None:
        raise LineError(f"clinic: no clinic {slug[:64]!r} (`aftercare clinic list`)")
    start = _start(row.get("start") or "", ZoneInfo(clinic.timezone))
    if start < now - PAST_SESSION_LIMIT:
        raise LineError("start: more than a week ago")
    key, tg, phone, code = _identity(row)
    name = (row.get("name") or "").strip()[:128]
    link_row = {
        "line": str(number),
        "clinic": clinic.slug,
        "name": name,
        "phone": phone,
        "telegram_id": str(tg or ""),
        "start": start.astimezone(ZoneInfo(clinic.timezone)).strftime("%Y-%m-%d %H:%M"),
    }
    existing = (
        await session.exec(
            select(Appointment).where(
                Appointment.clinic_id == clinic.id,
                Appointment.patient_key == key,
                Appointment.start_at == start,
            )
        )
    ).first()
    if existing is not None:
        report.unchanged += 1
        if existing.invite_code:
            invite = (
                await session.exec(select(Invite).where(Invite.code == existing.invite_code))
            ).first()
            if invite is not None and invite.used_at is None:
                report.links.append({**link_row, "link": invites.deep_link(bot_username, invite)})
        return
    appointment = Appointment(clinic_id=clinic.id, patient_key=key, start_at=start, created_at=now)
    patient = await _known_patient(session=session, clinic=clinic, key=key, tg=tg, code=code)
    if patient is not None:
        assert patient.id is not None
        same = (
            await session.exec(
                select(TreatmentSession).where(
                    TreatmentSession.patient_id == patient.id,
                    TreatmentSession.state == SessionState.BOOKED,
                    TreatmentSession.start_at == start,
                )
            )
        ).first()
        treatment = same or await invites.book_unplanned(
            session=session, patient=patient, start=start, protocol=protocol, now=now
        )
        appointment.session_id = treatment.id
        report.booked += 1
    else:
        invite = await invites.booking_invite(
            session=session, clinic_id=clinic.id, start_at=start, now=now
        )
        appointment.invite_code = invite.code
        report.links.append({**link_row, "link": invites.deep_link(bot_username, invite)})
        report.invited += 1
    session.add(appointment)
    await session.flush()


def read_csv(text: str) -> tuple[list[dict[str, str]], str | None]:
    """The lines of an export as dicts, or an error about the header."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    if "start" not in header:
        return [], "the header line must name a 'start' column (and telegram_id, phone or invite)"
    reader.fieldnames = header
    return [{k: (v or "") for k, v in row.items() if isinstance(k, str)} for row in reader], None


def links_csv(links: list[dict[str, str]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=LINK_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(links)
    return out.getvalue()


# -- export ---------------------------------------------------------------------------------

DELIVERY_COLUMNS = (
    "id",
    "clinic",
    "patient_id",
    "session_id",
    "broadcast_id",
    "step",
    "priority",
    "state",
    "due_at",
    "sent_at",
    "attempts",
    "last_error",
)


EXPORT_BATCH = 5_000


async def export_deliveries(
    *, session: AsyncSession, since: datetime, write: Callable[[str], object]
) -> int:
    """The delivery log since `since` (planned rows due from then on) as CSV, handed to `write`
    a batch of lines at a time: states, times, attempts and errors, never a message text.
    Returns the number of rows.

    The rows stream from the database (a server-side cursor where there is one), as plain
    rows, so memory stays flat however long the log is."""
    query = (
        select(col(PlannedMessage.id))
        .add_columns(
            col(Clinic.slug),
            col(PlannedMessage.patient_id),
            col(PlannedMessage.session_id),
            col(BroadcastRecipient.broadcast_id),
            col(PlannedMessage.step),
            col(PlannedMessage.priority),
            col(PlannedMessage.state),
            col(PlannedMessage.due_at),
            col(PlannedMessage.sent_at),
            col(PlannedMessage.attempts),
            col(PlannedMessage.last_error),
        )
        .join(Patient, col(Patient.id) == col(PlannedMessage.patient_id))
        .join(Clinic, col(Clinic.id) == col(Patient.clinic_id))
        .join(
            BroadcastRecipient,
            col(BroadcastRecipient.message_id) == col(PlannedMessage.id),
            isouter=True,
        )
        .where(col(PlannedMessage.due_at) >= since)
        .order_by(col(PlannedMessage.due_at), col(PlannedMessage.id))
        .execution_options(yield_per=EXPORT_BATCH)
    )
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(DELIVERY_COLUMNS)
    count = 0
    result = await (await session.connection()).stream(query)
    async for rows in result.partitions():
        writer.writerows(
            (
                row_id,
                slug,
                patient_id,
                session_id or "",
                broadcast_id or "",
                step,
                priority,
                state,
                due_at.isoformat(),
                sent_at.isoformat() if sent_at else "",
                attempts,
                last_error or "",
            )
            for (
                row_id,
                slug,
                patient_id,
                session_id,
                broadcast_id,
                step,
                priority,
                state,
                due_at,
                sent_at,
                attempts,
                last_error,
            ) in rows
        )
        count += len(rows)
        write(buffer.getvalue())
        buffer.seek(0)
        buffer.truncate()
    write(buffer.getvalue())
    return count
