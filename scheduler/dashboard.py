"""What the clinic dashboard reads and writes (issue 12): its figures, the patient search, a
patient's file, and the login links and sessions of its staff.

Every query names the clinic; each is an index range with a LIMIT, or a COUNT the database
does, so a page costs the same at 100 patients as at 100,000. The secrets themselves (a login
link's token, a session cookie) never reach the database: only their SHA-256, so that a copy
of the database lets nobody in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import msgspec
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, delete, func, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from messages.protocol import Protocol, local_to_utc
from scheduler import broadcast, clinics, courses, inbox
from scheduler.db import saved
from scheduler.models import (
    Appointment,
    Broadcast,
    BroadcastState,
    CheckIn,
    Clinic,
    Course,
    DashboardLogin,
    DashboardSession,
    InboxKind,
    InboxMessage,
    MessageState,
    Patient,
    PlannedMessage,
    SessionState,
    TreatmentSession,
    UTCDateTime,
)

LOGIN_LIFE = timedelta(minutes=10)
SESSION_LIFE = timedelta(hours=12)
SEARCH_PAGE = 25
CHART_DAYS = 30
UPCOMING_DAYS = 14
FILE_ROWS = 300  # a patient's file shows this many of their newest delivery rows
OUTCOMES = (MessageState.SENT, MessageState.EXPIRED, MessageState.FAILED)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# -- login links and sessions ------------------------------------------------------------------


async def issue_login(
    *, session: AsyncSession, token: str, tg_user_id: int, language: str, now: datetime
) -> DashboardLogin:
    """Remember a login link (its hash) for LOGIN_LIFE; stale ones are dropped meanwhile."""
    return await _issued(
        session, DashboardLogin, LOGIN_LIFE, token=token, user=tg_user_id, lang=language, now=now
    )


_Credential = TypeVar("_Credential", DashboardLogin, DashboardSession)
_Query = TypeVar("_Query", bound=sa.Select[*tuple[Any, ...]])


async def _issued(
    session: AsyncSession,
    kind: type[_Credential],
    life: timedelta,
    *,
    token: str,
    user: int,
    lang: str,
    now: datetime,
) -> _Credential:
    """A new login link or session (by its token's hash) for `life`; the expired ones of
    its kind are dropped meanwhile."""
    await session.exec(delete(kind).where(col(kind.expires_at) < now))
    return await saved(
        session,
        kind(
            token_hash=token_hash(token),
            tg_user_id=user,
            language=lang,
            expires_at=now + life,
            created_at=now,
        ),
    )


async def redeem_login(
    *, session: AsyncSession, token: str, now: datetime
) -> DashboardLogin | None:
    """Use a login link: one conditional UPDATE, so of two requests with one link (a replay,
    or two processes) exactly one succeeds, and only before it expires. None otherwise."""
    hashed = token_hash(token)
    done = await session.exec(
        update(DashboardLogin)
        .where(
            col(DashboardLogin.token_hash) == hashed,
            col(DashboardLogin.used_at).is_(None),
            col(DashboardLogin.expires_at) > now,
        )
        .values(used_at=now)
    )
    if done.rowcount != 1:
        return None
    return await session.get(DashboardLogin, hashed)


async def use_once(
    *, session: AsyncSession, token: str, tg_user_id: int, expires_at: datetime, now: datetime
) -> bool:
    """Record that a one-time credential that is not ours to issue (a Mini App's initData)
    was used; False if it was used before (a replay). Kept until it would expire anyway."""
    hashed = token_hash(token)
    if await session.get(DashboardLogin, hashed) is not None:
        return False
    try:
        async with session.begin_nested():
            session.add(
                DashboardLogin(
                    token_hash=hashed,
                    tg_user_id=tg_user_id,
                    expires_at=expires_at,
                    used_at=now,
                    created_at=now,
                )
            )
    except IntegrityError:  # another process took it meanwhile
        return False
    return True


async def open_session(
    *, session: AsyncSession, token: str, tg_user_id: int, language: str, now: datetime
) -> DashboardSession:
    """A new dashboard session for SESSION_LIFE; expired ones are dropped meanwhile."""
    return await _issued(
        session,
        DashboardSession,
        SESSION_LIFE,
        token=token,
        user=tg_user_id,
        lang=language,
        now=now,
    )


async def session_of(
    *, session: AsyncSession, token: str, now: datetime
) -> DashboardSession | None:
    """The live session a cookie names (None: unknown, logged out or expired)."""
    found = await session.get(DashboardSession, token_hash(token))
    return found if found is not None and found.expires_at > now else None


async def close_session(*, session: AsyncSession, token: str) -> None:
    await session.exec(
        delete(DashboardSession).where(col(DashboardSession.token_hash) == token_hash(token))
    )


# -- today ---------------------------------------------------------------------------------------


class Today(msgspec.Struct, frozen=True):
    """The clinic's day: messages to patients due in the last 24 hours by state, open alerts
    and inbox messages, how many are due for maintenance, and the sessions ahead."""

    outcomes: dict[str, int]
    open_alerts: int
    unanswered: int
    due: int
    upcoming: list[tuple[TreatmentSession, Patient]] = msgspec.field(default_factory=list)
    due_shown: list[clinics.Due] = msgspec.field(default_factory=list)
    """The longest waiting of those due (what /due lists)."""


def _to_patients(clinic_id: int) -> list[sa.ColumnElement[bool]]:
    """Delivery rows to this clinic's patients themselves (not the notices to staff chats)."""
    return [col(Patient.clinic_id) == clinic_id, col(PlannedMessage.chat_id).is_(None)]


async def today(
    *, session: AsyncSession, clinic_id: int, protocol: Protocol, now: datetime
) -> Today:
    rows = (
        await session.exec(
            select(PlannedMessage.state, func.count())
            .join(Patient, col(Patient.id) == col(PlannedMessage.patient_id))
            .where(
                *_to_patients(clinic_id),
                col(PlannedMessage.due_at) > now - timedelta(hours=24),
                col(PlannedMessage.due_at) <= now,
            )
            .group_by(col(PlannedMessage.state))
        )
    ).all()
    outcomes: dict[str, int] = {str(state): 0 for state in MessageState}
    outcomes.update({state: int(count) for state, count in rows})
    alerts = (
        await session.exec(
            select(func.count())
            .select_from(CheckIn)
            .join(Patient, col(Patient.id) == col(CheckIn.patient_id))
            .where(
                col(Patient.clinic_id) == clinic_id,
                col(CheckIn.option) != "all_good",
                col(CheckIn.handled_at).is_(None),
            )
        )
    ).one()
    due = await clinics.due_for_maintenance(
        session=session, clinic_id=clinic_id, protocol=protocol, now=now
    )
    return Today(
        outcomes=outcomes,
        open_alerts=int(alerts),
        unanswered=await inbox.unanswered(session=session, clinic_ids=[clinic_id]),
        due=due.total,
        due_shown=due.shown,
        upcoming=await clinics.upcoming_sessions(
            session=session, clinic_id=clinic_id, now=now, days=UPCOMING_DAYS
        ),
    )


class DayCount(msgspec.Struct, frozen=True):
    day: date
    sent: int = 0
    expired: int = 0
    failed: int = 0

    @property
    def total(self) -> int:
        return self.sent + self.expired + self.failed


async def deliveries_per_day(
    *, session: AsyncSession, clinic_id: int, zone: ZoneInfo, now: datetime, days: int = CHART_DAYS
) -> list[DayCount]:
    """Messages to patients by the clinic's calendar day they were due, for the last `days`
    days (today included), sent, expired and failed: one grouped query, whose days are ranges
    of the due-time index (each local midnight worked out here, DST included)."""
    today_local = now.astimezone(zone).date()
    first = today_local - timedelta(days=days - 1)
    starts = [local_to_utc(first + timedelta(days=i), time(0), zone) for i in range(days + 1)]
    due = col(PlannedMessage.due_at)
    bucket = sa.case(
        *((due < sa.literal(starts[i + 1], UTCDateTime()), i) for i in range(days)),
        else_=days,
    ).label("bucket")
    rows = (
        await (await session.connection()).execute(
            sa.select(bucket, col(PlannedMessage.state), func.count())
            .join(Patient, col(Patient.id) == col(PlannedMessage.patient_id))
            .where(
                *_to_patients(clinic_id),
                due >= sa.literal(starts[0], UTCDateTime()),
                due < sa.literal(starts[-1], UTCDateTime()),
                col(PlannedMessage.state).in_(OUTCOMES),
            )
            .group_by(bucket, col(PlannedMessage.state))
        )
    ).all()
    counts: dict[int, dict[str, int]] = {}
    for index, state, count in rows:
        counts.setdefault(int(index), {})[str(state)] = int(count)
    return [
        DayCount(
            first + timedelta(days=i),
            counts.get(i, {}).get(MessageState.SENT, 0),
            counts.get(i, {}).get(MessageState.EXPIRED, 0),
            counts.get(i, {}).get(MessageState.FAILED, 0),
        )
        for i in range(days)
    ]


# -- patients ----------------------------------------------------------------------------------


class Found(msgspec.Struct, frozen=True):
    """A page of patients found, and the key of the next page (None: this is the last)."""

    patients: list[Patient]
    next_key: str | None


def _phone_key(query: str) -> str | None:
    """A phone number as the importer keys it ("phone:+4420..."), if the query is one."""
    digits = "".join(ch for ch in query if ch.isdigit())
    if not 6 <= len(digits) <= 15 or any(ch not in "+0123456789 -()." for ch in query):
        return None
    return f"phone:+{digits}"


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def _keyset_page(
    session: AsyncSession, query: Any, size: int, key: Callable[[Any], str]
) -> tuple[list[Any], str | None]:
    """A keyset page of `query` (in the order of its key, from where the previous page
    ended): at most `size` rows, and the key of the last one where there are more."""
    found = list((await session.exec(query.limit(size + 1))).all())
    return found[:size], key(found[size - 1]) if len(found) > size else None


async def find_patients(
    *, session: AsyncSession, clinic_id: int, query: str, after: str | None = None
) -> Found:
    """The clinic's patients whose name starts with `query` (any case), or whose imported
    appointments carry that phone number, or who have that id ("#12"); every patient, newest
    first, for an empty query. Keyset pages: `after` is the previous page's `next_key`."""
    # Printable characters only (PostgreSQL refuses NUL), spaces squeezed, at most 64.
    query = " ".join("".join(ch if ch.isprintable() else " " for ch in query).split())[:64]
    of_clinic = col(Patient.clinic_id) == clinic_id
    if not query:
        newest = select(Patient).where(of_clinic).order_by(col(Patient.id).desc())
        if after is not None and after.isdigit():
            newest = newest.where(col(Patient.id) < int(after))
        return Found(*await _keyset_page(session, newest, SEARCH_PAGE, lambda last: str(last.id)))
    if query.startswith("#") and query[1:].isdigit() and len(query) <= 13:
        one = await clinics.clinic_patient(
            session=session, clinic_id=clinic_id, patient_id=int(query[1:])
        )
        return Found([one] if one is not None else [], None)
    phone = _phone_key(query)
    if phone is not None:
        ids = (
            select(TreatmentSession.patient_id)
            .join(Appointment, col(Appointment.session_id) == col(TreatmentSession.id))
            .where(col(Appointment.clinic_id) == clinic_id, col(Appointment.patient_key) == phone)
        )
        by_phone = select(Patient).where(of_clinic, col(Patient.id).in_(ids))
        by_phone = by_phone.order_by(col(Patient.id)).limit(SEARCH_PAGE)
        found = list((await session.exec(by_phone)).all())
        return Found(found, None)
    # A name prefix: a range of the (clinic, lower(name), id) index, read in its order from
    # the prefix on; the LIKE keeps exactly the names that start with it, and the bound
    # (the prefix with its last character's successor) ends the range.
    name = func.lower(col(Patient.first_name))
    where: list[sa.ColumnElement[bool]] = [
        of_clinic,
        name >= sa.func.lower(sa.literal(query)),
        name.like(sa.func.lower(sa.literal(_escape_like(query) + "%")), escape="\\"),
    ]
    successor = ord(query[-1]) + 1
    if successor <= 0x10FFFF and not 0xD800 <= successor <= 0xDFFF:  # a character to end at
        where.append(name < sa.func.lower(sa.literal(query[:-1] + chr(successor))))
    if after is not None:
        key_name, _, key_id = after.rpartition("\x1f")
        if key_id.isdigit():
            where.append(sa.tuple_(name, col(Patient.id)) > sa.tuple_(key_name, int(key_id)))
    by_name = select(Patient, name).where(*where).order_by(name, col(Patient.id))
    # The key is the database's `lower` of the name, not Python's (they differ beyond ASCII).
    named, next_key = await _keyset_page(
        session, by_name, SEARCH_PAGE, lambda last: f"{last[1]}\x1f{last[0].id}"
    )
    return Found([patient for patient, _ in named], next_key)


async def next_sessions(
    *, session: AsyncSession, patient_ids: Sequence[int], now: datetime
) -> dict[int, datetime]:
    """Each of these patients' next booked session (those who have one): one grouped query
    over the (patient, state, start) index."""
    start = col(TreatmentSession.start_at)
    rows = (
        await session.exec(
            select(TreatmentSession.patient_id, func.min(start))
            .where(
                col(TreatmentSession.patient_id).in_(patient_ids),
                col(TreatmentSession.state) == SessionState.BOOKED,
                start > now,
            )
            .group_by(col(TreatmentSession.patient_id))
        )
    ).all()
    return {
        patient_id: at if at.tzinfo is not None else at.replace(tzinfo=UTC)
        for patient_id, at in rows
        if at is not None
    }


class PatientFile(msgspec.Struct, frozen=True):
    """Everything the clinic holds about one patient, for their page."""

    patient: Patient
    sessions: list[TreatmentSession]
    checkins: list[CheckIn]
    messages: list[PlannedMessage]
    inbox: list[InboxMessage]
    course: Course | None = None


async def patient_file(
    *, session: AsyncSession, clinic_id: int, patient_id: int
) -> PatientFile | None:
    """One patient of this clinic (None: no such patient here): their sessions, check-in
    answers, delivery rows to them (the newest FILE_ROWS, in due order) and inbox."""
    patient = await clinics.clinic_patient(
        session=session, clinic_id=clinic_id, patient_id=patient_id
    )
    if patient is None:
        return None

    async def rows(query: Any) -> list[Any]:
        return list((await session.exec(query)).all())

    treatments = await rows(
        select(TreatmentSession)
        .where(TreatmentSession.patient_id == patient_id)
        .order_by(col(TreatmentSession.start_at).desc())
    )
    checkins = await rows(
        select(CheckIn)
        .where(CheckIn.patient_id == patient_id)
        .order_by(col(CheckIn.answered_at).desc())
    )
    messages = await rows(
        select(PlannedMessage)
        .where(PlannedMessage.patient_id == patient_id, col(PlannedMessage.chat_id).is_(None))
        .order_by(col(PlannedMessage.due_at).desc(), col(PlannedMessage.id).desc())
        .limit(FILE_ROWS)
    )
    messages.reverse()
    written = await rows(
        select(InboxMessage)
        .where(InboxMessage.patient_id == patient_id, InboxMessage.kind != InboxKind.DRAFT)
        .order_by(col(InboxMessage.created_at).desc())
        .limit(50)
    )
    course = await courses.current_course(session=session, patient_id=patient_id)
    return PatientFile(patient, treatments, checkins, messages, written, course)


# -- opt-outs ------------------------------------------------------------------------------------

OPT_OUTS_SHOWN = 50


class OptOuts(msgspec.Struct, frozen=True):
    """Who stopped hearing from the clinic: patients who paused their reminders, who blocked
    the bot, and how many erased themselves (a number: nothing else is left of them). The
    paused and blocked shown are the latest OPT_OUTS_SHOWN of each."""

    paused: int
    blocked: int
    erased: int
    paused_shown: list[Patient] = msgspec.field(default_factory=list)
    blocked_shown: list[Patient] = msgspec.field(default_factory=list)


async def opt_outs(*, session: AsyncSession, clinic: Clinic) -> OptOuts:
    """The clinic's opt-outs: the counts read from the (clinic, blocked, paused, consent)
    index alone; the latest of each kind."""
    of_clinic = col(Patient.clinic_id) == clinic.id
    paused, blocked = (
        await session.exec(
            select(func.count(col(Patient.paused_at)), func.count(col(Patient.blocked_at))).where(
                of_clinic
            )
        )
    ).one()

    async def latest(column: Any) -> list[Patient]:
        query = (
            select(Patient)
            .where(of_clinic, column.is_not(None))
            .order_by(column.desc(), col(Patient.id).desc())
            .limit(OPT_OUTS_SHOWN)
        )
        return list((await session.exec(query)).all())

    return OptOuts(
        int(paused),
        int(blocked),
        clinic.erased_patients,
        await latest(col(Patient.paused_at)),
        await latest(col(Patient.blocked_at)),
    )


# -- the delivery log ----------------------------------------------------------------------------

DELIVERY_PAGE = 100


class Deliveries(msgspec.Struct, frozen=True):
    """Which delivery rows: due in [since, until) (from `since` on, with no end), in one state
    if given. The dashboard's log and the CSV export select with it."""

    since: datetime
    until: datetime | None = None
    state: str | None = None

    def where(self, query: _Query) -> _Query:
        """`query`, a query of planned rows, narrowed to these; a range of the due-time index."""
        query = query.where(col(PlannedMessage.due_at) >= self.since)
        if self.until is not None:
            query = query.where(col(PlannedMessage.due_at) < self.until)
        if self.state is not None:
            query = query.where(col(PlannedMessage.state) == self.state)
        return query


class DeliveryLog(msgspec.Struct, frozen=True):
    """A page of the clinic's delivery log (rows and their patient's name), in due order,
    and the key of the next page (None: this is the last)."""

    rows: list[tuple[PlannedMessage, str]]
    next_key: str | None


async def delivery_log(
    *,
    session: AsyncSession,
    clinic_id: int,
    chosen: Deliveries,
    after: str | None = None,
) -> DeliveryLog:
    """The chosen delivery rows about this clinic's patients, keyset-paged by (due time, id);
    `after` is the previous page's `next_key`."""
    query = chosen.where(
        select(PlannedMessage, Patient.first_name)
        .join(Patient, col(Patient.id) == col(PlannedMessage.patient_id))
        .where(col(Patient.clinic_id) == clinic_id)
        .order_by(col(PlannedMessage.due_at), col(PlannedMessage.id))
    )
    key_at, _, key_id = (after or "").partition("_")
    if key_id.isdigit():
        try:
            at = datetime.fromisoformat(key_at)
        except ValueError:
            at = None
        if at is not None and at.tzinfo is not None:
            query = query.where(
                sa.tuple_(col(PlannedMessage.due_at), col(PlannedMessage.id))
                > sa.tuple_(sa.literal(at, UTCDateTime()), sa.literal(int(key_id)))
            )
    found, next_key = await _keyset_page(
        session, query, DELIVERY_PAGE, lambda last: f"{last[0].due_at.isoformat()}_{last[0].id}"
    )
    return DeliveryLog([(row, name) for row, name in found], next_key)


# -- broadcasts --------------------------------------------------------------------------------

BROADCASTS_SHOWN = 20


async def past_broadcasts(
    *, session: AsyncSession, clinic_id: int, limit: int = BROADCASTS_SHOWN
) -> list[tuple[Broadcast, broadcast.Progress]]:
    """The clinic's newest broadcasts that were sent or are sending, with their counts."""
    found = (
        await session.exec(
            select(Broadcast)
            .where(
                col(Broadcast.clinic_id) == clinic_id,
                col(Broadcast.state).in_((BroadcastState.RUNNING, BroadcastState.DONE)),
            )
            .order_by(col(Broadcast.id).desc())
            .limit(limit)
        )
    ).all()
    return [
        (item, await broadcast.progress(session=session, broadcast_id=item.id or 0))
        for item in found
    ]


async def clinic_broadcast(
    *, session: AsyncSession, clinic_id: int, broadcast_id: int
) -> Broadcast | None:
    """A broadcast, only if it is this clinic's."""
    found = await session.get(Broadcast, broadcast_id)
    return found if found is not None and found.clinic_id == clinic_id else None


def flagged_keys(treatment: TreatmentSession) -> Sequence[str]:
    """The screening questions answered "yes" for a session."""
    return [key for key, yes in treatment.screening.items() if yes]
