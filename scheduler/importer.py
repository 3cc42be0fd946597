"""Appointments in (a booking system's CSV export) and the delivery log out (CSV).

Import columns (a header line names them; order and extra columns do not matter):

    clinic       the clinic's slug (empty: the default clinic)
    start        the session's start, clinic time: "2026-12-03 14:30" (or ISO with offset);
                 a date with no time is refused, not booked at midnight
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

import asyncio
import csv
import io
import sqlite3
from collections import defaultdict, deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from messages.protocol import Protocol
from scheduler import invites
from scheduler.bulk import (
    Booking,
    booking_of,
    current_courses,
    gil_shared,
    give_way,
    heap_kept,
    new_courses,
    steps_of,
    writers,
)
from scheduler.care import PAST_SESSION_LIMIT
from scheduler.clock import Clock
from scheduler.courses import Plan, cancel_course_rows, note_maintenance_from
from scheduler.dashboard import Deliveries
from scheduler.db import SessionFactory
from scheduler.models import (
    Appointment,
    BroadcastRecipient,
    Clinic,
    CoursePlanKind,
    Invite,
    InviteKind,
    Patient,
    PlannedMessage,
    SessionState,
)
from scheduler.planner import Prefs
from scheduler.protocols import clinic_protocol
from scheduler.rows import (
    COURSE_SESSION,
    PATIENT,
    PLAN_TURN,
    PLANNED,
    SESSION_COLUMNS,
    TREATMENTS,
    Booked,
    Statement,
    among,
    as_json,
    bound,
    converter,
    exported_instant,
    in_turns,
    insert_many,
    inserted_ids,
    instant_text,
    planned_insert,
    planned_values,
    write_many,
)
from scheduler.sqlite_driver import run_sqlite3

COLUMNS = ("clinic", "start", "telegram_id", "phone", "invite", "name")
APPOINTMENTS = Appointment.__table__  # type: ignore[attr-defined]
_INSERT_APPOINTMENT = APPOINTMENTS.insert()
_APPOINTMENT_COLUMNS = (
    "clinic_id",
    "patient_key",
    "start_at",
    "session_id",
    "invite_code",
    "created_at",
)
_INSERT_LINK, _LINK_COLUMNS = COURSE_SESSION.insert(), ("session_id", "course_id")
_INSERT_SESSION = TREATMENTS.insert()
INVITES = Invite.__table__  # type: ignore[attr-defined]
LINK_COLUMNS = ("line", "clinic", "name", "phone", "telegram_id", "start", "link")
MAX_LINES = 100_000


class Importing(msgspec.Struct, frozen=True):
    """What every line of an import is read against: the clinic of the lines that name none,
    and the deployment's protocol (a clinic's own file replaces it for its lines)."""

    default_clinic: Clinic
    protocol: Protocol


class ImportReport(msgspec.Struct):
    booked: int = 0
    invited: int = 0
    unchanged: int = 0
    errors: list[tuple[int, str]] = msgspec.field(default_factory=list)
    links: list[dict[str, str]] = msgspec.field(default_factory=list)
    """The invites to give out: each line's columns of LINK_COLUMNS, with its invite's
    "code" where the links file has the link (`links_csv`)."""

    @property
    def lines(self) -> int:
        return self.booked + self.invited + self.unchanged + len(self.errors)

    def add(self, other: ImportReport) -> None:
        """Another batch's report added to this one."""
        self.booked += other.booked
        self.invited += other.invited
        self.unchanged += other.unchanged
        self.errors += other.errors
        self.links += other.links


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
    if parsed.time() == time.min:  # only a midnight may be a date alone
        try:
            date.fromisoformat(text)
        except ValueError:
            pass  # "00:00" written out
        else:
            # `datetime.fromisoformat` takes a date alone for midnight: an export without
            # the times would book every session at 00:00, and time the pre-care to that.
            raise LineError(f"start: {raw.strip()!r} has no time: give it like 2026-12-03 14:30")
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


class _Line(msgspec.Struct, frozen=True):
    """A line that parsed: where, when and who. `natural`, its natural key (clinic id, key,
    start), is a plain tuple made once: a batch reads it and the clinic's id some forty
    thousand times, each an instrumented attribute of the `Clinic` row (about 0.4 µs)."""

    number: int
    clinic: Clinic
    start: datetime
    key: str
    tg: int | None
    code: str
    name: str
    phone: str
    natural: tuple[int, str, datetime]

    @property
    def clinic_id(self) -> int:
        return self.natural[0]

    @property
    def link(self) -> dict[str, str]:
        """The line as the invite-links file shows it (`links_csv`): made only for the lines
        that get a link, not for every line parsed (the start's `strftime` in the clinic's
        zone and the dict were two thirds of a line's parse: 3.2 µs without, 9.8-12.4 with)."""
        zone = ZoneInfo(self.clinic.timezone)
        return {
            "line": str(self.number),
            "clinic": self.clinic.slug,
            "name": self.name,
            "phone": self.phone,
            "telegram_id": str(self.tg or ""),
            "start": self.start.astimezone(zone).strftime("%Y-%m-%d %H:%M"),
        }


def _parse(
    row: dict[str, str],
    number: int,
    clinics: dict[str, Clinic],
    default_clinic: Clinic,
    now: datetime,
) -> _Line:
    slug = (row.get("clinic") or "").strip()
    clinic = clinics.get(slug) if slug else default_clinic
    if clinic is None or clinic.id is None:
        raise LineError(f"clinic: no clinic {slug[:64]!r} (`aftercare clinic list`)")
    start = _start(row.get("start") or "", ZoneInfo(clinic.timezone))
    if start < now - PAST_SESSION_LIMIT:
        raise LineError("start: more than a week ago")
    key, tg, phone, code = _identity(row)
    name = (row.get("name") or "").strip()[:128]
    return _Line(number, clinic, start, key, tg, code, name, phone, (clinic.id, key, start))


async def import_appointments(
    *,
    session: AsyncSession,
    rows: Sequence[dict[str, str]],
    importing: Importing,
    now: datetime,
    first_line: int = 2,
) -> ImportReport:
    """Import these lines (numbered from `first_line`: line 1 is the header) in the caller's
    transaction, as one batch; a bad line is reported and skipped, the others go in.

    A batch reads what it needs in a few queries (the appointments already imported, the
    patients behind the identities, their booked sessions and courses) and writes each table
    with one statement, so that the command line imports a large export at thousands of
    lines a second, committing batch by batch."""
    report, batch = await _read_batch(session, rows, importing, now, first_line)
    if batch is not None:
        await batch.write(session)
        report.add(batch.report)
    return report


async def _read_batch(
    session: AsyncSession,
    rows: Sequence[dict[str, str]],
    importing: Importing,
    now: datetime,
    first_line: int,
    turn: Callable[[], Awaitable[Any]] | None = None,
) -> tuple[ImportReport, _Batch | None]:
    """The lines parsed (the report holds the bad ones) and the good ones read and planned."""
    report = ImportReport()
    clinics = {c.slug: c for c in (await session.exec(select(Clinic))).all()}
    lines: list[_Line] = []
    for number, row in enumerate(rows, start=first_line):
        if number > MAX_LINES:
            report.errors.append((number, f"more than {MAX_LINES} lines: the rest is skipped"))
            break
        try:
            lines.append(_parse(row, number, clinics, importing.default_clinic, now))
        except LineError as exc:
            report.errors.append((number, str(exc)))
    if not lines:
        return report, None
    batch = _Batch(lines, importing, now)
    await batch.read(await session.connection(), turn)
    return report, batch


BATCH = 1_000
"""Lines per transaction: each table written with one statement per thousand lines, and the
bot's dispatcher never waits long on the database's write lock."""

# The first statement of a batch's write on SQLite: a write that changes nothing, which takes
# the write lock, so that what the batch checks before writing stays true until it commits.
# (On PostgreSQL it would lock nothing: a round trip for naught.)
_TAKE_WRITE_LOCK = sa.update(APPOINTMENTS).where(sa.false()).values(session_id=None)


@heap_kept
@gil_shared
async def import_batches(
    *,
    sessions: SessionFactory,
    rows: Sequence[dict[str, str]],
    importing: Importing,
    clock: Clock,
    dry_run: bool = False,
    advance: Callable[[int], None] = lambda _lines: None,
) -> ImportReport:
    """Every line, a batch per transaction: a killed import keeps the batches it committed,
    and the next run skips those lines (their natural key) and does the rest. A dry run
    checks every line in one transaction and rolls it back. `advance(lines)` after each.

    Pipelined: while one batch is written, the next is read and planned on another
    connection (the planner's Python and the database's writes overlap); on PostgreSQL two
    batches that share no identity and no patient are written at once (`bulk.writers`). A
    batch's write first checks that its read still holds (`_Batch.still_true`: the batches
    written meanwhile had none of its identities, and no one booked any of its patients); if
    not, it reads and plans again (on SQLite under the write lock)."""
    report = ImportReport()
    rows = rows[:MAX_LINES]  # the batch that holds line MAX_LINES + 1 reports it
    starts = range(0, len(rows), BATCH)

    if dry_run:
        async with sessions() as db, db.begin():
            for start in starts:
                part = rows[start : start + BATCH]
                report.add(
                    await import_appointments(
                        session=db,
                        rows=part,
                        importing=importing,
                        now=clock.now(),
                        first_line=2 + start,
                    )
                )
                advance(len(part))
            await db.rollback()
        return report

    async def read_apart(
        start: int, turn: Callable[[], Awaitable[Any]] | None = None
    ) -> tuple[ImportReport, _Batch | None]:
        async with sessions() as db, db.begin():
            return await _read_batch(
                db, rows[start : start + BATCH], importing, clock.now(), 2 + start, turn
            )

    async def write(
        parsed: ImportReport,
        batch: _Batch | None,
        written: set[tuple[int, str]],
        turn: asyncio.Event,
        lines: int,
    ) -> None:
        try:
            await asyncio.sleep(give_way(sessions))
            if batch is not None:
                async with sessions() as db, db.begin():
                    connection = await db.connection()
                    if connection.dialect.name == "sqlite":
                        await connection.execute(_TAKE_WRITE_LOCK)
                        if not await batch.still_true(connection, written):
                            await batch.read(connection)
                    else:
                        await _read_under_lock(connection, batch, written)
                    await batch.write(db, turn)
                parsed.add(batch.report)
            report.add(parsed)
            advance(lines)
        finally:
            turn.set()

    # Writes under way (at most `most` at once), oldest first, with their batches.
    most = writers(sessions)
    under_way: deque[tuple[_Batch | None, asyncio.Task[None]]] = deque()
    last: deque[set[tuple[int, str]]] = deque(maxlen=most)  # the last batches' identities
    ahead = await read_apart(0) if starts else None
    try:
        for index, start in enumerate(starts):
            assert ahead is not None
            parsed, batch = ahead
            # A batch is written beside another only if they share no identity and no
            # patient: what one writes is then nothing the other read.
            while under_way and (
                len(under_way) >= most or not all(_apart(batch, b) for b, _ in under_way)
            ):
                await under_way.popleft()[1]
            # Identities the batches written since this batch's read began may have taken
            # (`_Batch.still_true`): those of the last `most` batches.
            written = set().union(*last)
            turn = asyncio.Event()
            lines = len(rows[start : start + BATCH])
            task = asyncio.create_task(write(parsed, batch, written, turn, lines))
            under_way.append((batch, task))
            last.append(batch.keys if batch is not None else set())
            ahead = None
            if index + 1 < len(starts):
                # One writer: the next batch is planned while this one's largest writes run
                # (its turn). Two: at once, while the two writes keep the server busy.
                ahead = await read_apart(starts[index + 1], turn.wait if most == 1 else None)
        while under_way:
            await under_way.popleft()[1]
    finally:
        # A failed batch (or read) stops the run: the writes still under way are cancelled,
        # their transactions rolled back.
        for _, task in under_way:
            task.cancel()
        await asyncio.gather(*(task for _, task in under_way), return_exceptions=True)
    report.links.sort(key=lambda link: int(link["line"]))  # as the file lists them
    report.errors.sort()
    return report


async def _read_under_lock(
    db: AsyncConnection, batch: _Batch, written: set[tuple[int, str]]
) -> None:
    """PostgreSQL: the batch's patients' rows locked (as a booking locks its patient's:
    `care._CONTEXT`), then its read checked and, if it no longer holds, made again, until
    the read stands with every patient it names locked. A booking of one of them at the same
    moment has committed before the check, which sees it, or waits for this batch."""
    held: set[int] = set()
    while True:
        if batch.patients - held:
            await db.execute(_LOCK_PATIENTS, {"patients": sorted(batch.patients - held)})
            held |= batch.patients
        if await batch.still_true(db, written):
            return
        await batch.read(db)
        written = set()  # the new read has seen what those batches wrote
        if batch.patients <= held:
            return


_LOCK_PATIENTS = (
    sa.select(PATIENT.c.id)
    .where(among(PATIENT.c.id, "patients"))
    .order_by(PATIENT.c.id)
    .with_for_update(key_share=True)
)


def _apart(batch: _Batch | None, other: _Batch | None) -> bool:
    """Whether two batches share no identity and no patient (an empty batch shares none)."""
    if batch is None or other is None:
        return True
    return not (batch.keys & other.keys or batch.patients & other.patients)


class _Planned(msgspec.Struct):
    """A batch's bookings as read and planned, before anything is written: new sessions and
    a first booking's course have placeholder ids (negative) until the write."""

    new: list[tuple[_Line, Any]]
    values: list[list[Any]]
    """The new sessions' rows, in the driver's form (`SESSION_COLUMNS`)."""
    courses: dict[int, Plan]
    missing: list[int]
    had_sessions: list[int]
    rows: Statement
    """Their planned rows in the driver's form, each new session's id a stand-in (-k)."""
    seen: Booking
    """The patients' booked sessions and current courses as the read found them."""
    seen_courses: dict[int, Plan]


class _Batch:
    """One batch of lines, read and planned (`read`, which writes nothing), then written
    (`write`). The import pipelines them: while one batch is written, the next is read and
    planned on another connection, and its write checks that what it read still holds."""

    def __init__(self, lines: list[_Line], importing: Importing, now: datetime) -> None:
        self.lines, self.now = lines, now
        self.protocol = importing.protocol
        self.keys = {line.natural[:2] for line in lines}
        self._reset()

    def _reset(self) -> None:
        self.report = ImportReport()  # this batch's: added to the run's once written
        self.patients: set[int] = set()  # those on Telegram the lines name
        self.appointments: list[dict[str, Any]] = []
        # Invite codes made for each identity (clinic, key), and those not opened yet.
        self.codes: dict[tuple[int, str], list[str]] = defaultdict(list)
        self.unused: set[str] = set()
        self.repeated: list[_Line] = []
        self.to_invite: list[_Line] = []
        self.planned: _Planned | None = None

    def link(self, line: _Line, code: str) -> None:
        self.report.links.append({**line.link, "code": code})

    async def read(
        self, db: AsyncConnection, turn: Callable[[], Awaitable[Any]] | None = None
    ) -> None:
        """What the lines need, read, and their sessions planned; nothing written."""
        self._reset()
        done = await self._imported(db)
        patients = await self._patients(db)
        first: dict[tuple[int, str, datetime], _Line] = {}
        to_book: list[tuple[_Line, Any]] = []
        for line in self.lines:
            if line.natural in done:
                self.report.unchanged += 1
                code = done[line.natural]
                if code is not None and code in self.unused:
                    self.link(line, code)
            elif line.natural in first:
                self.repeated.append(line)  # a second copy of a line of this batch
            else:
                first[line.natural] = line
                patient = self._patient_of(line, patients)
                if patient is not None:
                    self.patients.add(patient.id)
                    to_book.append((line, patient))
                else:
                    self.to_invite.append(line)
        self.planned = await self._plan(db, to_book, turn)

    async def still_true(self, db: AsyncConnection, written: set[tuple[int, str]]) -> bool:
        """Whether what `read` found still holds: no batch written since the read has lines
        of the same identities (`written`), and the patients' booked sessions and courses
        are as they were (the bot may have booked one meanwhile)."""
        if self.keys & written:
            return False
        planned = self.planned
        if planned is None:
            return True
        new_ids = sorted({patient.id for _, patient in planned.new})
        return (
            await booking_of(db, planned.seen.sessions) == planned.seen
            and await current_courses(db, new_ids) == planned.seen_courses
        )

    async def write(self, session: AsyncSession, turn: asyncio.Event | None = None) -> None:
        """The batch written in the caller's transaction, as `read` planned it. Its largest
        writes come last, the planned rows and the appointments, handed over with `turn`
        (`rows.handed_over`)."""
        db = await session.connection()
        codes = await self._invite(db, self.to_invite)
        for line in self.repeated:
            self.report.unchanged += 1
            if line.natural in codes:
                self.link(line, codes[line.natural])
        planned = await self._book(session, db)
        await write_many(db, *planned, self._appointments(db.dialect), turn=turn)

    async def _imported(self, db: AsyncConnection) -> dict[tuple[int, str, datetime], str | None]:
        """The lines imported before (natural key -> their invite code), and every invite code
        made for these identities (`self.codes`, to find who opened one)."""
        keys = sorted({line.key for line in self.lines})
        done: dict[tuple[int, str, datetime], str | None] = {}
        for clinic_id, key, start, code in await db.execute(_IMPORTED, {"keys": keys}):
            done[(clinic_id, key, start)] = code
            if code:
                self.codes[(clinic_id, key)].append(code)
        shown = [code for code in done.values() if code]
        if shown:
            self.unused = set(
                (
                    await db.execute(
                        sa.select(INVITES.c.code).where(
                            INVITES.c.code.in_(shown), INVITES.c.used_at.is_(None)
                        )
                    )
                ).scalars()
            )
        return done

    async def _patients(self, db: AsyncConnection) -> _Known:
        """The patients behind the lines' identities: by Telegram id, and by the invite codes
        given or made for them (whoever opened one)."""
        tgs = sorted({line.tg for line in self.lines if line.tg is not None})
        codes = sorted(
            {line.code for line in self.lines if line.tg is None and line.code}
            | {c for codes in self.codes.values() for c in codes}
        )
        known = _Known()
        if tgs:
            for row in await db.execute(_BY_TG, {"tgs": tgs}):
                known.by_tg[row.tg_user_id] = row
        if codes:
            for found in await db.execute(
                sa.select(
                    INVITES.c.code.label("invite_code"),
                    INVITES.c.clinic_id.label("invite_clinic"),
                    *_KNOWN,
                )
                .join(PATIENT, PATIENT.c.id == INVITES.c.patient_id)
                .where(INVITES.c.code.in_(codes))
            ):
                known.by_code[found.invite_code] = (found.invite_clinic, found)
        return known

    def _patient_of(self, line: _Line, known: _Known) -> Any:
        """As a one-line import found them: the patient must be the line's clinic's."""
        if line.tg is not None:
            patient = known.by_tg.get(line.tg)
        else:
            patient = None
            for code in [*([line.code] if line.code else []), *self.codes[line.natural[:2]]]:
                found = known.by_code.get(code)
                if found is not None and found[0] == line.clinic_id:
                    patient = found[1]
                    break
        return patient if patient is not None and patient.clinic_id == line.clinic_id else None

    async def _plan(
        self,
        db: AsyncConnection,
        to_book: list[tuple[_Line, Any]],
        turn: Callable[[], Awaitable[Any]] | None = None,
    ) -> _Planned | None:
        """Sessions for the patients already on Telegram (one that is booked at that time
        already is kept), planned at once for those who consented."""
        if not to_book:
            return None
        self.report.booked += len(to_book)
        patient_ids = sorted({patient.id for _, patient in to_book})
        booking = await booking_of(db, patient_ids)
        seen = Booking({pid: list(sessions) for pid, sessions in booking.sessions.items()})
        seen.courses = dict(booking.courses)
        had_sessions = {pid for pid, sessions in booking.sessions.items() if sessions}
        new: list[tuple[_Line, Any]] = []
        same: dict[tuple[int, datetime], int] = {
            (pid, b.start): b.id for pid, sessions in booking.sessions.items() for b in sessions
        }
        for line, patient in to_book:
            if (patient.id, line.start) in same:
                self._appointment(line, session_id=same[(patient.id, line.start)])
            else:
                same[(patient.id, line.start)] = 0  # booked below
                new.append((line, patient))
        if not new:
            return None
        clinics = {line.clinic_id: line.clinic for line, _ in new}
        protocols = {i: clinic_protocol(clinic, self.protocol) for i, clinic in clinics.items()}
        new_ids = sorted({patient.id for _, patient in new})
        courses = await current_courses(db, new_ids)
        seen_courses = dict(courses)
        # New sessions, and the course a first booking gets, have placeholder ids until the
        # write: the database's write lock (SQLite) is then held only for the inserts.
        missing = [pid for pid in new_ids if pid not in courses]
        for k, pid in enumerate(missing, start=1):
            courses[pid] = Plan(-k, CoursePlanKind.NONE.value, 1, None)
        values = []  # the new sessions' rows, in the driver's form (SESSION_COLUMNS)
        at = converter(db.dialect)
        for k, (line, patient) in enumerate(new, start=1):
            end = line.start + timedelta(minutes=protocols[line.clinic_id].session_minutes)
            course = courses[patient.id]
            booking.courses[course.id] = course
            booking.sessions[patient.id].append(Booked(-k, line.start, end, course.id))
            values.append(
                [
                    patient.id,
                    line.clinic_id,
                    at(line.start),
                    at(end),
                    SessionState.BOOKED.value,
                    as_json({}),
                    False,
                    at(self.now),
                ]
            )
        if turn is not None:
            await turn()
        rows = []
        async for k, (line, patient) in in_turns(enumerate(new, start=1), PLAN_TURN):
            if patient.consent_at is None:
                continue  # planned at consent (invites.plan_waiting)
            booked = next(b for b in booking.sessions[patient.id] if b.id == -k)
            prefs = Prefs.parse(patient.timezone, patient.quiet_start, patient.quiet_end)
            steps = steps_of(
                booking, patient.id, booked, protocols[line.clinic_id], prefs, self.now
            )
            rows += planned_values(at, patient.id, -k, steps, self.now, bulk=True)
        return _Planned(
            new,
            values,
            courses,
            missing,
            sorted(had_sessions & set(new_ids)),
            planned_insert(db.dialect, rows),
            seen,
            seen_courses,
        )

    async def _book(self, session: AsyncSession, db: AsyncConnection) -> tuple[Statement, ...]:
        """The planned sessions written, their course links (and first courses); their planned
        rows, to write (their session ids set)."""
        planned = self.planned
        if planned is None:
            return ()
        new, courses = planned.new, planned.courses
        # One new session per patient and start (`same` in `_plan`).
        ids = await inserted_ids(
            db, _INSERT_SESSION, SESSION_COLUMNS, planned.values, key=("patient_id", "start_at")
        )
        made = dict(
            zip(planned.missing, await new_courses(db, planned.missing, self.now), strict=True)
        )
        links = [
            [session_id, made.get(p.id, courses[p.id].id)]
            for session_id, (_, p) in zip(ids, new, strict=True)
        ]
        await write_many(db, insert_many(_INSERT_LINK, db.dialect, _LINK_COLUMNS, links))
        await cancel_course_rows(
            session=session, patient_ids=planned.had_sessions, except_sessions=ids
        )
        await note_maintenance_from(session=session, patient_ids=[p.id for _, p in new])
        for session_id, (line, _) in zip(ids, new, strict=True):
            self._appointment(line, session_id=session_id)
        rows = planned.rows
        for row in rows.params:
            row[1] = ids[-row[1] - 1]  # the k-th new session's stand-in id is -k
        return (rows,)

    async def _invite(
        self, db: AsyncConnection, to_invite: list[_Line]
    ) -> dict[tuple[int, str, datetime], str]:
        """A per-booking invite for each patient not on Telegram yet; their codes."""
        codes = {line.natural: invites.new_code() for line in to_invite}
        if not to_invite:
            return codes
        await db.execute(
            INVITES.insert(),
            [
                invites.booking_values(
                    code=codes[line.natural],
                    clinic_id=line.natural[0],
                    start_at=line.start,
                    now=self.now,
                )
                for line in to_invite
            ],
        )
        for line in to_invite:
            self._appointment(line, invite_code=codes[line.natural])
            self.link(line, codes[line.natural])
        self.report.invited += len(to_invite)
        return codes

    def _appointments(self, dialect: Dialect) -> Statement:
        """The batch's appointments, in the driver's form (as `rows.planned_values`)."""
        at = converter(dialect)
        return insert_many(
            _INSERT_APPOINTMENT,
            dialect,
            _APPOINTMENT_COLUMNS,
            [
                [
                    a["clinic_id"],
                    a["patient_key"],
                    at(a["start_at"]),
                    a["session_id"],
                    a["invite_code"],
                    at(a["created_at"]),
                ]
                for a in self.appointments
            ],
        )

    def _appointment(
        self, line: _Line, *, session_id: int | None = None, invite_code: str | None = None
    ) -> None:
        self.appointments.append(
            {
                "clinic_id": line.clinic_id,
                "patient_key": line.key,
                "start_at": line.start,
                "session_id": session_id,
                "invite_code": invite_code,
                "created_at": self.now,
            }
        )


_IMPORTED = sa.select(
    APPOINTMENTS.c.clinic_id,
    APPOINTMENTS.c.patient_key,
    APPOINTMENTS.c.start_at,
    APPOINTMENTS.c.invite_code,
).where(among(APPOINTMENTS.c.patient_key, "keys"))
# The patient's columns a batch reads (not the whole row: a thousand rows of twenty
# columns a batch, each value through its type, for seven).
_KNOWN = (
    PATIENT.c.id,
    PATIENT.c.clinic_id,
    PATIENT.c.tg_user_id,
    PATIENT.c.consent_at,
    PATIENT.c.timezone,
    PATIENT.c.quiet_start,
    PATIENT.c.quiet_end,
)
_BY_TG = sa.select(*_KNOWN).where(among(PATIENT.c.tg_user_id, "tgs"))


class _Known(msgspec.Struct):
    by_tg: dict[int, Any] = msgspec.field(default_factory=dict)
    by_code: dict[str, tuple[int, Any]] = msgspec.field(default_factory=dict)


def read_csv(text: str) -> tuple[list[dict[str, str]], str | None]:
    """The lines of an export as dicts, or an error about the header."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    if "start" not in header:
        return [], "the header line must name a 'start' column (and telegram_id, phone or invite)"
    reader.fieldnames = header
    return [{k: (v or "") for k, v in row.items() if isinstance(k, str)} for row in reader], None


def links_csv(links: list[dict[str, str]], bot_username: str) -> str:
    """The report's invites (`ImportReport.links`: each line's code) as the links file: a
    t.me link to the bot for each. The import itself needs no username: the command line
    asks for one only when there are links to write."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=LINK_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(
        {
            **{k: v for k, v in link.items() if k != "code"},
            "link": invites.link_of(bot_username, InviteKind.BOOKING, link["code"]),
        }
        for link in links
    )
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
    a batch of lines at a time (see `delivery_csv`). Returns the number of rows."""
    count = 0
    async for chunk, rows in delivery_csv(session=session, chosen=Deliveries(since)):
        write(chunk)
        count += rows
    return count


async def delivery_csv(
    *, session: AsyncSession, chosen: Deliveries, clinic_id: int | None = None
) -> AsyncGenerator[tuple[str, int], None]:
    """The delivery log as CSV, a batch of lines at a time with the number of rows in it:
    the chosen planned rows, of one clinic's patients if given; states, times, attempts and
    errors, never a message text.

    The rows stream from the database (a server-side cursor on PostgreSQL, a cursor read a
    batch at a time on SQLite), as plain rows, so memory stays flat however long the log
    is. The header comes first, alone."""
    connection = await session.connection()
    dialect = connection.dialect
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
            exported_instant(PLANNED.c.due_at, dialect),
            exported_instant(PLANNED.c.sent_at, dialect),
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
        .order_by(col(PlannedMessage.due_at), col(PlannedMessage.id))
    )
    query = chosen.where(query)
    if clinic_id is not None:
        query = query.where(col(Patient.clinic_id) == clinic_id)
    lines = _CsvLines(instant_text(dialect))
    yield lines.header(), 0
    if dialect.name == "sqlite":
        reader = _SqliteRows(bound(query, dialect), lines)
        try:
            while True:
                chunk, count = await run_sqlite3(connection, reader)
                if not count:
                    return
                yield chunk, count
        finally:
            await run_sqlite3(connection, reader.close)
    result = await connection.stream(query.execution_options(yield_per=EXPORT_BATCH))
    async for rows in result.partitions():
        yield lines.of(rows), len(rows)


class _CsvLines:
    """The export's rows as CSV lines (`DELIVERY_COLUMNS`), a batch at a time."""

    def __init__(self, iso: Callable[[Any], str]) -> None:
        self._buffer = io.StringIO()
        self._writer = csv.writer(self._buffer, lineterminator="\n")
        self._iso = iso

    def header(self) -> str:
        self._writer.writerow(DELIVERY_COLUMNS)
        return self._taken()

    def of(self, rows: Sequence[Sequence[Any]]) -> str:
        iso = self._iso
        # Empty values (no session, no broadcast, not sent, no error) are written as ""
        # by the csv module, as None is.
        self._writer.writerows(
            (*row[:8], iso(row[8]), iso(row[9]) if row[9] else "", *row[10:]) for row in rows
        )
        return self._taken()

    def _taken(self) -> str:
        text = self._buffer.getvalue()
        self._buffer.seek(0)
        self._buffer.truncate()
        return text


class _SqliteRows:
    """The export's query read on SQLite's connection thread a batch at a time, each batch
    made CSV there (`run_sqlite3`), without SQLAlchemy's result rows and a hop through
    aiosqlite's queue for each fetch: 15 % more rows a second (3 December). The cursor stays
    open between batches: one snapshot."""

    def __init__(self, statement: Statement, lines: _CsvLines) -> None:
        self._statement, self._lines = statement, lines
        self._cursor: sqlite3.Cursor | None = None

    def __call__(self, connection: sqlite3.Connection) -> tuple[str, int]:
        if self._cursor is None:
            self._cursor = connection.execute(self._statement.sql, self._statement.params)
        rows = self._cursor.fetchmany(EXPORT_BATCH)
        return self._lines.of(rows), len(rows)

    def close(self, _connection: sqlite3.Connection) -> None:
        """Closed once read or given up (a dashboard download stopped): an open read would
        hold its snapshot, and keep SQLite's checkpoints from going past it."""
        if self._cursor is not None:
            self._cursor.close()
