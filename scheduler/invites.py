"""Deep-link invites: `t.me/<bot>?start=<payload>`.

staff-<code>: makes the user staff of a clinic (one-time, expiring);
c-<code>: ties a new patient to a clinic (reusable);
b-<code>: also books a session for them (one-time): the session exists from the moment
they press Start, and its reminders are planned once they consent.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

import msgspec
from sqlmodel import col, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from messages.protocol import Protocol
from scheduler.care import PAST_SESSION_LIMIT, plan_sessions
from scheduler.clinics import add_staff
from scheduler.courses import attach_to_course
from scheduler.db import saved
from scheduler.models import (
    Clinic,
    Invite,
    InviteKind,
    Patient,
    PlannedMessage,
    SessionState,
    TreatmentSession,
)

PREFIX = {InviteKind.STAFF: "staff-", InviteKind.CLINIC: "c-", InviteKind.BOOKING: "b-"}
STAFF_INVITE_HOURS = 24


def deep_link(bot_username: str, invite: Invite) -> str:
    return link_of(bot_username, InviteKind(invite.kind), invite.code)


def link_of(bot_username: str, kind: InviteKind, code: str) -> str:
    return f"https://t.me/{bot_username.lstrip('@')}?start={PREFIX[kind]}{code}"


def payload_of(invite: Invite) -> str:
    return PREFIX[InviteKind(invite.kind)] + invite.code


def new_code() -> str:
    return secrets.token_urlsafe(12)  # 16 characters of [A-Za-z0-9_-]: a valid payload


def booking_values(
    *, code: str, clinic_id: int, start_at: datetime, now: datetime
) -> dict[str, Any]:
    """A per-booking invite's row (`booking_invite`), as column values for a bulk insert."""
    return {
        "code": code,
        "kind": InviteKind.BOOKING.value,
        "clinic_id": clinic_id,
        "start_at": start_at,
        "expires_at": start_at + PAST_SESSION_LIMIT,
        "created_at": now,
    }


async def create(
    *,
    session: AsyncSession,
    kind: InviteKind,
    clinic_id: int,
    now: datetime,
    expires_at: datetime | None = None,
) -> Invite:
    """A staff or clinic invite (a booking's is `booking_invite`)."""
    invite = Invite(
        code=new_code(), kind=kind, clinic_id=clinic_id, expires_at=expires_at, created_at=now
    )
    return await saved(session, invite)


async def staff_invite(
    *, session: AsyncSession, clinic_id: int, now: datetime, hours: int = STAFF_INVITE_HOURS
) -> Invite:
    return await create(
        session=session,
        kind=InviteKind.STAFF,
        clinic_id=clinic_id,
        now=now,
        expires_at=now + timedelta(hours=hours),
    )


async def clinic_invite(*, session: AsyncSession, clinic_id: int, now: datetime) -> Invite:
    """The clinic's reusable patient link (made once)."""
    existing = (
        await session.exec(
            select(Invite)
            .where(Invite.clinic_id == clinic_id, Invite.kind == InviteKind.CLINIC)
            .order_by(col(Invite.id))
        )
    ).first()
    if existing is not None:
        return existing
    return await create(session=session, kind=InviteKind.CLINIC, clinic_id=clinic_id, now=now)


async def booking_invite(
    *, session: AsyncSession, clinic_id: int, start_at: datetime, now: datetime
) -> Invite:
    """A one-time link that books a session at `start_at` for whoever opens it first."""
    invite = Invite(
        **booking_values(code=new_code(), clinic_id=clinic_id, start_at=start_at, now=now)
    )
    return await saved(session, invite)


async def _find(session: AsyncSession, payload: str, kind: InviteKind) -> Invite | None:
    prefix = PREFIX[kind]
    if not payload.startswith(prefix) or len(payload) > 64:
        return None
    return (
        await session.exec(
            select(Invite).where(Invite.code == payload.removeprefix(prefix), Invite.kind == kind)
        )
    ).first()


async def redeem_staff(
    *,
    session: AsyncSession,
    payload: str,
    tg_user_id: int,
    chat_id: int,
    name: str,
    language: str,
    now: datetime,
) -> Clinic | None:
    """Make the user staff of the invite's clinic; None if the link is unknown, used or old."""
    invite = await _find(session, payload, InviteKind.STAFF)
    if invite is None or (invite.expires_at is not None and invite.expires_at <= now):
        return None
    taken = await session.exec(
        update(Invite)
        .where(col(Invite.id) == invite.id, col(Invite.used_at).is_(None))
        .values(used_at=now, used_by=tg_user_id)
    )
    if not taken.rowcount:
        return None
    await add_staff(
        session=session,
        clinic_id=invite.clinic_id,
        tg_user_id=tg_user_id,
        chat_id=chat_id,
        name=name,
        language=language,
        now=now,
    )
    return await session.get(Clinic, invite.clinic_id)


class PatientInvite(msgspec.Struct, frozen=True):
    clinic: Clinic
    invite: Invite


async def patient_invite(*, session: AsyncSession, payload: str | None) -> PatientInvite | None:
    """The clinic (and booking) a /start payload names, or None (the default clinic)."""
    if not payload:
        return None
    for kind in (InviteKind.CLINIC, InviteKind.BOOKING):
        invite = await _find(session, payload, kind)
        if invite is None:
            continue
        clinic = await session.get(Clinic, invite.clinic_id)
        if clinic is None:
            return None
        return PatientInvite(clinic, invite)
    return None


async def redeem_booking(
    *,
    session: AsyncSession,
    found: PatientInvite | None,
    patient: Patient,
    protocol: Protocol,
    now: datetime,
) -> TreatmentSession | None:
    """For a per-booking invite: book its session for this patient (once; the link then
    belongs to them), planned at once if they already consented, else after consent."""
    if found is None or found.invite.kind != InviteKind.BOOKING:
        return None
    invite = found.invite
    if invite.start_at is None or patient.clinic_id != invite.clinic_id:
        return None
    if invite.expires_at is not None and invite.expires_at <= now:
        return None
    taken = await session.exec(
        update(Invite)
        .where(col(Invite.id) == invite.id, col(Invite.used_at).is_(None))
        .values(used_at=now, patient_id=patient.id)
    )
    if not taken.rowcount:
        return None
    return await book_unplanned(
        session=session, patient=patient, start=invite.start_at, protocol=protocol, now=now
    )


async def book_unplanned(
    *,
    session: AsyncSession,
    patient: Patient,
    start: datetime,
    protocol: Protocol,
    now: datetime,
) -> TreatmentSession:
    """A session booked on the patient's behalf (invite, import); its reminders are planned
    now if the patient consented, otherwise by `plan_waiting` at consent."""
    assert patient.id is not None
    treatment = TreatmentSession(
        patient_id=patient.id,
        clinic_id=patient.clinic_id,
        start_at=start,
        end_at=start + timedelta(minutes=protocol.session_minutes),
        created_at=now,
    )
    session.add(treatment)
    await session.flush()
    await attach_to_course(session=session, treatment=treatment, now=now)
    if patient.consent_at is not None:
        await plan_sessions(
            session=session, patient=patient, treatments=[treatment], protocol=protocol, now=now
        )
    return treatment


async def plan_waiting(
    *, session: AsyncSession, patient: Patient, protocol: Protocol, now: datetime
) -> int:
    """At consent: plan the sessions booked for the patient (invite, import) that have no
    reminders yet. Returns how many were planned."""
    assert patient.id is not None
    planned = select(PlannedMessage.session_id).where(
        PlannedMessage.patient_id == patient.id, col(PlannedMessage.session_id).is_not(None)
    )
    waiting = (
        await session.exec(
            select(TreatmentSession).where(
                TreatmentSession.patient_id == patient.id,
                TreatmentSession.state == SessionState.BOOKED,
                col(TreatmentSession.end_at) > now - PAST_SESSION_LIMIT,
                col(TreatmentSession.id).not_in(planned),
            )
        )
    ).all()
    await plan_sessions(
        session=session, patient=patient, treatments=waiting, protocol=protocol, now=now
    )
    return len(waiting)


async def clinic_name(*, session: AsyncSession, patient: Patient) -> str:
    """The name of the patient's clinic (for the welcome)."""
    clinic = await session.get(Clinic, patient.clinic_id)
    return clinic.name if clinic is not None else ""
