"""Clinics, their staff, and what staff see: patients, upcoming sessions, who is due, alerts.

Every query here takes the clinic explicitly, so a caller can only reach the rows of the
clinic it was authorised for (bot/handlers/staff.py checks that first).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from sqlmodel import col, func, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from messages.protocol import Protocol, ProtocolError, load_protocol, resolve
from messages.render import DEFAULT_LANGUAGE
from scheduler.courses import position_of
from scheduler.db import saved
from scheduler.models import (
    CheckIn,
    Clinic,
    Patient,
    SessionState,
    StaffMember,
    TreatmentSession,
)
from scheduler.protocols import clinic_protocol

PAGE_SIZE = 10


# -- clinics --------------------------------------------------------------------------------


class ClinicError(ValueError):
    """A clinic that cannot be saved; the message says why."""


EDITABLE = (
    "name",
    "timezone",
    "address",
    "phone",
    "emergency_phone",
    "booking_url",
    "protocol_file",
)


def _check(values: dict[str, str | None]) -> None:
    url = values.get("booking_url")
    if url:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc or len(url) > 500:
            raise ClinicError(f"booking URL {url[:80]!r}: expected https://...")
    protocol_file = values.get("protocol_file")
    if protocol_file:
        try:
            load_protocol(Path(protocol_file))
        except (ProtocolError, OSError) as exc:
            raise ClinicError(f"protocol file: {exc}") from None
    zone = values.get("timezone")
    if zone is not None:
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ClinicError(f"unknown time zone {zone!r}") from None


async def clinic_by_slug(*, session: AsyncSession, slug: str) -> Clinic | None:
    return (await session.exec(select(Clinic).where(Clinic.slug == slug))).first()


async def add_clinic(
    *, session: AsyncSession, slug: str, values: dict[str, str | None], now: datetime
) -> Clinic:
    if not slug or len(slug) > 64 or not slug.replace("-", "").replace("_", "").isalnum():
        raise ClinicError("a slug is letters, digits, - and _ (at most 64)")
    if await clinic_by_slug(session=session, slug=slug) is not None:
        raise ClinicError(f"clinic {slug!r} exists already (use `aftercare clinic edit`)")
    if not values.get("name") or not values.get("timezone"):
        raise ClinicError("a new clinic needs --name and --timezone")
    _check(values)
    clinic = Clinic(slug=slug, name=values["name"] or "", timezone="UTC", created_at=now)
    _apply(clinic, values)
    return await saved(session, clinic)


async def edit_clinic(
    *, session: AsyncSession, slug: str, values: dict[str, str | None]
) -> Clinic:
    clinic = await clinic_by_slug(session=session, slug=slug)
    if clinic is None:
        raise ClinicError(f"no clinic {slug!r} (`aftercare clinic list` shows them)")
    _check(values)
    zone = clinic.timezone
    _apply(clinic, values)
    if clinic.timezone != zone:
        # Patients who never chose a zone of their own have the clinic's: it moves with it.
        await session.exec(
            update(Patient)
            .where(col(Patient.clinic_id) == clinic.id, col(Patient.timezone) == zone)
            .values(timezone=clinic.timezone)
        )
    return await saved(session, clinic)


def _apply(clinic: Clinic, values: dict[str, str | None]) -> None:
    for name in EDITABLE:
        value = values.get(name)
        if value is not None:
            setattr(
                clinic, name, value or (None if name in ("booking_url", "protocol_file") else "")
            )


async def list_clinics(*, session: AsyncSession) -> list[Clinic]:
    return list((await session.exec(select(Clinic).order_by(col(Clinic.id)))).all())


# -- staff ----------------------------------------------------------------------------------


async def staff_clinic_ids(
    *, session: AsyncSession, tg_user_id: int, configured: Sequence[int], default_clinic_id: int
) -> list[int]:
    """The clinics this Telegram user works for: by membership, and the default clinic for
    the user ids configured in the settings."""
    ids = list(
        (
            await session.exec(
                select(StaffMember.clinic_id)
                .where(StaffMember.tg_user_id == tg_user_id)
                .order_by(col(StaffMember.id))
            )
        ).all()
    )
    if tg_user_id in configured and default_clinic_id not in ids:
        ids.insert(0, default_clinic_id)
    return ids


async def add_staff(
    *,
    session: AsyncSession,
    clinic_id: int,
    tg_user_id: int,
    chat_id: int,
    name: str,
    language: str,
    now: datetime,
) -> StaffMember:
    member = (
        await session.exec(
            select(StaffMember).where(
                StaffMember.clinic_id == clinic_id, StaffMember.tg_user_id == tg_user_id
            )
        )
    ).first()
    if member is None:
        member = StaffMember(
            clinic_id=clinic_id,
            tg_user_id=tg_user_id,
            chat_id=chat_id,
            name=name[:128],
            language=language,
            created_at=now,
        )
        session.add(member)
        await session.flush()
    return member


async def note_staff_language(
    *,
    session: AsyncSession,
    tg_user_id: int,
    name: str,
    language: str,
    configured: Sequence[int],
    default_clinic_id: int,
    now: datetime,
) -> None:
    """Remember the language a staff member reads (their Telegram app's, at each staff
    command), so that notices reach them in it. Staff configured in the settings get a
    membership of the default clinic the first time, which holds it."""
    members = list(
        (await session.exec(select(StaffMember).where(StaffMember.tg_user_id == tg_user_id))).all()
    )
    if tg_user_id in configured and all(m.clinic_id != default_clinic_id for m in members):
        # A private chat's id is the user's id: where their notices already go.
        members.append(
            await add_staff(
                session=session,
                clinic_id=default_clinic_id,
                tg_user_id=tg_user_id,
                chat_id=tg_user_id,
                name=name,
                language=language,
                now=now,
            )
        )
    for member in members:
        if member.language != language:
            member.language = language
            session.add(member)


async def staff_language(*, session: AsyncSession, chat_id: int) -> str:
    """The language of the staff member a notice goes to; English if they never said."""
    found = await session.exec(
        select(StaffMember.language)
        .where(StaffMember.chat_id == chat_id)
        .order_by(col(StaffMember.id).desc())
    )
    return found.first() or DEFAULT_LANGUAGE


async def staff_of(*, session: AsyncSession, clinic_id: int) -> list[StaffMember]:
    return list(
        (
            await session.exec(
                select(StaffMember)
                .where(StaffMember.clinic_id == clinic_id)
                .order_by(col(StaffMember.id))
            )
        ).all()
    )


# -- what staff see -------------------------------------------------------------------------


def _reachable() -> list[sa.ColumnElement[bool]]:
    return [
        col(Patient.consent_at).is_not(None),
        col(Patient.blocked_at).is_(None),
        col(Patient.paused_at).is_(None),
    ]


async def active_patients(*, session: AsyncSession, clinic_id: int) -> list[int]:
    """Consenting patients who neither paused nor blocked the bot."""
    return [
        pid
        for pid in (
            await session.exec(
                select(Patient.id).where(Patient.clinic_id == clinic_id, *_reachable())
            )
        ).all()
        if pid is not None
    ]


async def in_course(*, session: AsyncSession, clinic_id: int, now: datetime) -> list[int]:
    """Reachable patients with a session still to come."""
    upcoming = select(TreatmentSession.patient_id).where(
        TreatmentSession.clinic_id == clinic_id,
        TreatmentSession.state == SessionState.BOOKED,
        col(TreatmentSession.start_at) > now,
    )
    return [
        pid
        for pid in (
            await session.exec(
                select(Patient.id).where(
                    Patient.clinic_id == clinic_id,
                    col(Patient.id).in_(upcoming),
                    *_reachable(),
                )
            )
        ).all()
        if pid is not None
    ]


def patient_status(patient: Patient) -> str:
    """A patient's state for staff, as a [staff] text key ("status_next": a session ahead,
    when the caller knows of one)."""
    if patient.blocked_at is not None:
        return "status_blocked"
    if patient.consent_at is None:
        return "status_no_consent"
    if patient.paused_at is not None:
        return "status_paused"
    return "status_next"


Report = tuple[CheckIn, Patient]
"""A side-effect report and its patient."""


@dataclass(frozen=True)
class PatientLine:
    patient: Patient
    next_start: datetime | None
    flagged: bool = False
    """A screening "yes" on any of their sessions, past ones included, or a lasting one."""


async def patients_page(
    *, session: AsyncSession, clinic_id: int, page: int, now: datetime
) -> tuple[list[PatientLine], int]:
    """One page of the clinic's patients (newest first), and the number of pages."""
    total = (
        await session.exec(
            select(func.count()).select_from(Patient).where(Patient.clinic_id == clinic_id)
        )
    ).one()
    pages = max(1, (int(total) + PAGE_SIZE - 1) // PAGE_SIZE)
    page = min(max(page, 0), pages - 1)
    patients = (
        await session.exec(
            select(Patient)
            .where(Patient.clinic_id == clinic_id)
            .order_by(col(Patient.id).desc())
            .offset(page * PAGE_SIZE)
            .limit(PAGE_SIZE)
        )
    ).all()
    lines = []
    for patient in patients:
        nxt = (
            await session.exec(
                select(func.min(TreatmentSession.start_at)).where(
                    TreatmentSession.patient_id == patient.id,
                    TreatmentSession.state == SessionState.BOOKED,
                    col(TreatmentSession.start_at) > now,
                )
            )
        ).one()
        flagged = (
            await session.exec(
                select(func.count()).where(
                    TreatmentSession.patient_id == patient.id,
                    col(TreatmentSession.flagged).is_(True),
                )
            )
        ).one()
        lasting = "yes" in patient.conditions.values()
        lines.append(PatientLine(patient, _aware(nxt), bool(flagged) or lasting))
    return lines, pages


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


async def upcoming_sessions(
    *, session: AsyncSession, clinic_id: int, now: datetime, days: int = 7
) -> list[tuple[TreatmentSession, Patient]]:
    rows = (
        await session.exec(
            select(TreatmentSession, Patient)
            .join(Patient, col(Patient.id) == col(TreatmentSession.patient_id))
            .where(
                TreatmentSession.clinic_id == clinic_id,
                Patient.clinic_id == clinic_id,
                TreatmentSession.state == SessionState.BOOKED,
                col(TreatmentSession.start_at) > now,
                col(TreatmentSession.start_at) <= now + timedelta(days=days),
            )
            .order_by(col(TreatmentSession.start_at))
            .limit(50)
        )
    ).all()
    return [(t, p) for t, p in rows]


@dataclass(frozen=True)
class Due:
    patient: Patient
    last_end: datetime
    due_since: datetime


async def due_for_maintenance(
    *, session: AsyncSession, clinic_id: int, protocol: Protocol, now: datetime
) -> list[Due]:
    """Reachable patients whose course is over, whose maintenance interval has passed since
    their last session, with no session booked, and who did not opt out of maintenance."""
    protocol = clinic_protocol(await session.get(Clinic, clinic_id), protocol)
    months = min(protocol.course.maintenance_months or (3,))
    upcoming = select(TreatmentSession.patient_id).where(
        TreatmentSession.state == SessionState.BOOKED, col(TreatmentSession.end_at) > now
    )
    patients = (
        await session.exec(
            select(Patient).where(
                Patient.clinic_id == clinic_id,
                col(Patient.id).not_in(upcoming),
                *_reachable(),
            )
        )
    ).all()
    due: list[Due] = []
    for patient in patients:
        last = (
            await session.exec(
                select(TreatmentSession)
                .where(
                    TreatmentSession.patient_id == patient.id,
                    TreatmentSession.state == SessionState.BOOKED,
                )
                .order_by(col(TreatmentSession.start_at).desc())
            )
        ).first()
        if last is None:
            continue
        position = await position_of(session=session, treatment=last)
        if (
            position is None
            or position.course.plan == "none"
            or not position.closes_course
            or position.course.maintenance_stopped_at is not None
        ):
            continue
        zone = ZoneInfo(patient.timezone)
        since = resolve(f"last+{months}mo@00:00", {"last": last.end_at}, zone)  # that day
        if since is not None and since <= now:
            due.append(Due(patient, last.end_at, since))
    due.sort(key=lambda d: d.due_since)
    return due


async def alerts(
    *, session: AsyncSession, clinic_id: int, limit: int = 10
) -> list[tuple[CheckIn, Patient]]:
    """Side-effect reports (every answer but "all good"), newest first."""
    rows = (
        await session.exec(
            select(CheckIn, Patient)
            .join(Patient, col(Patient.id) == col(CheckIn.patient_id))
            .where(Patient.clinic_id == clinic_id, CheckIn.option != "all_good")
            .order_by(col(CheckIn.answered_at).desc(), col(CheckIn.id).desc())
            .limit(limit)
        )
    ).all()
    return [(c, p) for c, p in rows]


async def mark_handled(
    *, session: AsyncSession, checkin_id: int, clinic_ids: Sequence[int], by: int, now: datetime
) -> tuple[CheckIn, Patient] | None:
    """Mark a report handled, only if its patient belongs to one of `clinic_ids`."""
    row = (
        await session.exec(
            select(CheckIn, Patient)
            .join(Patient, col(Patient.id) == col(CheckIn.patient_id))
            .where(CheckIn.id == checkin_id, col(Patient.clinic_id).in_(clinic_ids))
        )
    ).first()
    if row is None:
        return None
    checkin, patient = row
    if checkin.handled_at is None:
        checkin.handled_at, checkin.handled_by = now, by
        session.add(checkin)
        await session.flush()
    return checkin, patient


async def clinic_patient(
    *, session: AsyncSession, clinic_id: int, patient_id: int
) -> Patient | None:
    """A patient, only if they belong to this clinic."""
    patient = await session.get(Patient, patient_id)
    return patient if patient is not None and patient.clinic_id == clinic_id else None
