"""Clinics, their staff, and what staff see: patients, upcoming sessions, who is due, alerts.

Every query here takes the clinic explicitly, so a caller can only reach the rows of the
clinic it was authorised for (bot/handlers/staff.py checks that first).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
import sqlalchemy as sa
from sqlalchemy.orm import aliased
from sqlmodel import col, func, select, update
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import Select

from messages import texts
from messages.protocol import Protocol, ProtocolError, load_protocol, local_to_utc, resolve
from messages.render import DEFAULT_LANGUAGE
from scheduler.db import saved
from scheduler.models import (
    CheckIn,
    Clinic,
    InboxMessage,
    Patient,
    SessionState,
    StaffMember,
    TreatmentSession,
    UTCDateTime,
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
        member = await saved(
            session,
            StaffMember(
                clinic_id=clinic_id,
                tg_user_id=tg_user_id,
                chat_id=chat_id,
                name=name[:128],
                language=language,
                created_at=now,
            ),
        )
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


async def menu_button_missing(*, session: AsyncSession, tg_user_id: int, url: str) -> bool:
    """Whether this staff member's private chat still lacks the Mini App at `url` as its
    menu button (never set, or set to another address)."""
    found = await session.exec(
        select(StaffMember.menu_button_url).where(StaffMember.tg_user_id == tg_user_id)
    )
    return any(set_url != url for set_url in found.all())


async def note_menu_button(*, session: AsyncSession, tg_user_id: int, url: str) -> None:
    """Telegram took `url` as the menu button of this staff member's private chat."""
    await session.exec(
        update(StaffMember)
        .where(col(StaffMember.tg_user_id) == tg_user_id)
        .values(menu_button_url=url)
    )


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
# Each view is one indexed query (or two: a page and its count): nothing loops over a clinic's
# patients in Python, so a page or a count costs the same at 100 patients as at 100,000.


def _reachable() -> list[sa.ColumnElement[bool]]:
    return [
        col(Patient.consent_at).is_not(None),
        col(Patient.blocked_at).is_(None),
        col(Patient.paused_at).is_(None),
    ]


Audience = sa.Select[int | None]
"""A query of patient ids (one column, `id`), to count or to insert from."""


def active_query(*, clinic_id: int) -> Audience:
    """Consenting patients who neither paused nor blocked the bot."""
    return sa.select(col(Patient.id)).where(col(Patient.clinic_id) == clinic_id, *_reachable())


def in_course_query(*, clinic_id: int, now: datetime) -> Audience:
    """Reachable patients with a session still to come: their latest booked session starts
    after now (`Patient.last_session_start`, kept by the write path with maintenance_from;
    a patient's sessions are their clinic's). One index range: searching each patient's
    sessions took 84-135 ms at 91,070 reachable patients (3 December)."""
    return active_query(clinic_id=clinic_id).where(col(Patient.last_session_start) > now)


async def count_of(*, session: AsyncSession, query: Audience) -> int:
    """How many patients a query finds: one COUNT in the database."""
    counted = sa.select(func.count()).select_from(query.order_by(None).subquery())
    return int((await (await session.connection()).execute(counted)).scalar_one())


_Owned = TypeVar("_Owned", TreatmentSession, CheckIn, InboxMessage)


def with_patient(table: type[_Owned]) -> Select[_Owned, Patient]:
    """The rows of `table` (each about one patient), each with its patient: the caller
    filters on the patient's clinic."""
    return select(table, Patient).join(Patient, col(Patient.id) == col(table.patient_id))


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


def alert_values(protocol: Protocol, found: Report) -> texts.Alert:
    """A side-effect report as the values /alerts and the dashboard render."""
    checkin, patient = found
    try:
        answer = protocol.checkin_option(checkin.option).label
    except KeyError:
        answer = checkin.option
    return texts.Alert(
        patient.id or 0,
        patient.first_name,
        checkin.answered_at,
        answer,
        checkin.red_flag,
        checkin.note,
        checkin.handled_at,
    )


class PatientLine(msgspec.Struct, frozen=True):
    patient: Patient
    next_start: datetime | None
    flagged: bool = False
    """A screening "yes" on any of their sessions, past ones included, or a lasting one."""


class PatientsPage(msgspec.Struct, frozen=True):
    """One page of /patients (newest first) and the keys of its neighbours: `newer` names
    the first patient shown (the page before lists patients newer than it), `older` the last
    (the page after lists older ones); None where there is no such page."""

    lines: list[PatientLine]
    page: int
    pages: int
    newer: int | None
    older: int | None


async def patients_page(
    *,
    session: AsyncSession,
    clinic_id: int,
    now: datetime,
    older_than: int | None = None,
    newer_than: int | None = None,
) -> PatientsPage:
    """The newest patients of the clinic, or those just older (or newer) than a patient id
    that a page button carries: keyset pages, so a deep page costs what the first does."""
    of_clinic = col(Patient.clinic_id) == clinic_id
    ids: list[int] = []
    if newer_than is not None:
        newer = await _page_ids(session, of_clinic, col(Patient.id) > newer_than, newest=False)
        # Fewer than a page newer: the newest page, which is always full.
        ids = newer[PAGE_SIZE - 1 :: -1] if len(newer) > PAGE_SIZE else []
    if not ids:
        after = sa.true() if older_than is None else col(Patient.id) < older_than
        ids = (await _page_ids(session, of_clinic, after, newest=True))[:PAGE_SIZE]
    more = bool(ids) and bool(
        await _page_ids(session, of_clinic, col(Patient.id) < ids[-1], newest=True, limit=1)
    )
    total = await count_of(session=session, query=sa.select(col(Patient.id)).where(of_clinic))
    pages = max(1, (total + PAGE_SIZE - 1) // PAGE_SIZE)
    if not ids:
        return PatientsPage([], 0, pages, None, None)
    before = await count_of(
        session=session,
        query=sa.select(col(Patient.id)).where(of_clinic, col(Patient.id) > ids[0]),
    )
    booked = aliased(TreatmentSession)
    next_start = (
        sa.select(func.min(col(booked.start_at)))
        .where(
            col(booked.patient_id) == col(Patient.id),
            col(booked.state) == SessionState.BOOKED,
            col(booked.start_at) > now,
        )
        .scalar_subquery()
    )
    screened = aliased(TreatmentSession)
    flagged = sa.exists().where(
        col(screened.patient_id) == col(Patient.id), col(screened.flagged).is_(True)
    )
    rows = (
        await session.exec(
            select(Patient, next_start, flagged)
            .where(col(Patient.id).in_(ids))
            .order_by(col(Patient.id).desc())
        )
    ).all()
    lines = [
        PatientLine(patient, _aware(nxt), bool(yes) or "yes" in patient.conditions.values())
        for patient, nxt, yes in rows
    ]
    return PatientsPage(
        lines,
        # The pages before hold `before` patients, however the keys fall.
        min((before + PAGE_SIZE - 1) // PAGE_SIZE, pages - 1),
        pages,
        ids[0] if before else None,
        ids[-1] if more else None,
    )


async def _page_ids(
    session: AsyncSession,
    of_clinic: sa.ColumnElement[bool],
    after: sa.ColumnElement[bool],
    *,
    newest: bool,
    limit: int = PAGE_SIZE + 1,
) -> list[int]:
    """Patient ids from the key on, newest or oldest first (by default a page and one more:
    is there a page beyond?)."""
    order = col(Patient.id).desc() if newest else col(Patient.id).asc()
    query = sa.select(col(Patient.id)).where(of_clinic, after).order_by(order)
    found = await (await session.connection()).execute(query.limit(limit))
    return [patient_id for patient_id in found.scalars() if patient_id is not None]


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


async def upcoming_sessions(
    *, session: AsyncSession, clinic_id: int, now: datetime, days: int = 7
) -> list[tuple[TreatmentSession, Patient]]:
    rows = (
        await session.exec(
            with_patient(TreatmentSession)
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


class Due(msgspec.Struct, frozen=True):
    patient: Patient
    last_end: datetime
    due_since: datetime


class DueList(msgspec.Struct, frozen=True):
    """Who is due for maintenance: how many, and the longest waiting of them."""

    total: int
    shown: list[Due]


DUE_SHOWN = 50


def _due_since(last_end: datetime, months: int, zone: ZoneInfo) -> datetime:
    """Midnight (the patient's) of the day `months` after their last session ended."""
    since = resolve(f"last+{months}mo@00:00", {"last": last_end}, zone)
    assert since is not None
    return since


def _due_cutoff(months: int, zone: ZoneInfo, now: datetime) -> datetime:
    """The instant before which a last session must have ended for maintenance to be due now
    in this zone: `_due_since` depends only on the local day the session ended, and grows
    with it, so the days that are due form a prefix; the cutoff is where it ends."""
    day = now.astimezone(zone).date() - timedelta(days=31 * months + 2)
    while _due_since(local_to_utc(day + timedelta(days=1), time(12), zone), months, zone) <= now:
        day += timedelta(days=1)
    return local_to_utc(day + timedelta(days=1), time(0), zone)


def _zones_of(clinic_id: int) -> sa.Select[str]:
    """The zones of the clinic's patients, each found with one seek of the (clinic, zone)
    index, from the one before (a recursive query: neither database skips through an index
    by itself). A clinic's patients live in a few zones; reading every due patient's zone to
    find them took 20-58 ms at 100,000 patients (3 December)."""
    zone = col(Patient.timezone)
    in_clinic = col(Patient.clinic_id) == clinic_id
    first = sa.select(sa.func.min(zone).label("zone")).where(in_clinic)
    found = first.cte("zones", recursive=True)
    after = sa.select(sa.func.min(zone)).where(in_clinic, zone > found.c.zone).scalar_subquery()
    found = found.union_all(sa.select(after).where(found.c.zone.is_not(None)))
    return sa.select(found.c.zone).where(found.c.zone.is_not(None))


async def _due(
    *, session: AsyncSession, clinic_id: int, protocol: Protocol, now: datetime
) -> tuple[sa.Select[int | None, Any], int]:
    """Reachable patients whose course is over, whose maintenance interval has passed since
    their last session, with no session booked, and who did not opt out of maintenance: a
    query of (patient id, end of their last session), and the interval in months.

    What the course and the sessions say is the patient's `maintenance_from` (the end of a
    last session that closes a course whose maintenance goes on: scheduler/courses.py), kept
    by the write path; this only compares it with a cutoff. The interval is counted in each
    patient's own zone: one cutoff per zone of the clinic's patients who have a value (few
    zones), chosen in SQL by the patient's zone; the latest cutoff bounds the range read from
    the index, which holds every column this reads."""
    protocol = clinic_protocol(await session.get(Clinic, clinic_id), protocol)
    months = min(protocol.course.maintenance_months or (3,))
    since = col(Patient.maintenance_from)
    zones = (await (await session.connection()).execute(_zones_of(clinic_id))).scalars()
    cutoffs = {zone: _due_cutoff(months, ZoneInfo(zone), now) for zone in zones}
    cutoff = sa.case(
        {zone: sa.literal(at, UTCDateTime()) for zone, at in cutoffs.items()},
        value=col(Patient.timezone),
        else_=sa.null(),
    )
    # "No session booked ahead" needs no test of its own: a patient's booked sessions never
    # overlap (care.refuse_clash), so the last one to start is the last to end, and it ended
    # before the cutoff, which is in the past.
    query: sa.Select[int | None, Any] = sa.select(col(Patient.id), since.label("last_end")).where(
        col(Patient.clinic_id) == clinic_id,
        *_reachable(),
        *(
            (since < sa.literal(max(cutoffs.values()), UTCDateTime()), since < cutoff)
            if cutoffs
            else (sa.false(),)
        ),
    )
    return query, months


async def due_query(
    *, session: AsyncSession, clinic_id: int, protocol: Protocol, now: datetime
) -> Audience:
    """The patients due for maintenance now (see `_due`), as a query of their ids."""
    query, _months = await _due(session=session, clinic_id=clinic_id, protocol=protocol, now=now)
    return query.with_only_columns(col(Patient.id))


async def due_for_maintenance(
    *, session: AsyncSession, clinic_id: int, protocol: Protocol, now: datetime
) -> DueList:
    """Who is due for maintenance: their number, and the DUE_SHOWN whose last session ended
    longest ago, in the order they became due."""
    query, months = await _due(session=session, clinic_id=clinic_id, protocol=protocol, now=now)
    db = await session.connection()
    # The page in the index's order (clinic, maintenance_from, id): its first rows, with no
    # sort; then the count. A window count over the whole (one statement) made both
    # databases read and sort every due patient for the fifty shown: 62-65 ms of 85 at
    # 31,468 due patients on SQLite (3 December).
    listed = (
        await db.execute(
            query.order_by(col(Patient.maintenance_from), col(Patient.id)).limit(DUE_SHOWN)
        )
    ).all()
    total = len(listed)
    if total == DUE_SHOWN:
        total = await count_of(session=session, query=query.with_only_columns(col(Patient.id)))
    patients = {
        p.id: p
        for p in (
            await session.exec(select(Patient).where(col(Patient.id).in_([r[0] for r in listed])))
        ).all()
    }
    due = []
    for patient_id, last_end in listed:
        patient, end = patients[patient_id], _aware(last_end)
        assert end is not None
        due.append(Due(patient, end, _due_since(end, months, ZoneInfo(patient.timezone))))
    due.sort(key=lambda d: d.due_since)
    return DueList(total, due)


async def alerts(
    *, session: AsyncSession, clinic_id: int, limit: int = 10
) -> list[tuple[CheckIn, Patient]]:
    """Side-effect reports (every answer but "all good"), newest first."""
    rows = (
        await session.exec(
            with_patient(CheckIn)
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
            with_patient(CheckIn).where(
                CheckIn.id == checkin_id, col(Patient.clinic_id).in_(clinic_ids)
            )
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
