"""The staff views as SQL (issue 11): the same answers as the per-patient computations they
replaced (tests/staff_rows.py keeps the former Python loops as the specification), on small
data, on each backend."""

from __future__ import annotations

import contextlib
import csv
import io
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from messages.protocol import Protocol, default_protocol_path, load_protocol
from scheduler import broadcast, clinics, importer, inbox
from scheduler.care import prefs_of
from scheduler.dashboard import Deliveries
from scheduler.db import SessionFactory
from scheduler.models import (
    Broadcast,
    BroadcastRecipient,
    MessageState,
    PlannedMessage,
    Priority,
)
from scheduler.planner import apply_quiet_hours
from tests.staff_rows import T0, World, due_reference


@pytest.fixture(scope="module")
def protocol() -> Protocol:
    return load_protocol(default_protocol_path())


# -- /due -------------------------------------------------------------------------------------


async def test_due_for_maintenance_matches_the_per_patient_computation(
    sessions: SessionFactory, protocol: Protocol
) -> None:
    async with sessions() as db, db.begin():
        w = World(db)
        home, other = await w.clinic("home"), await w.clinic("other")
        # Each last session ends on 24 Aug 2026, 22:30 UTC: the 25th already in Tokyo and
        # Berlin, still the 24th in Los Angeles; due on the 24th or 25th Nov, local midnight.
        last = datetime(2026, 8, 24, 22, 30, tzinfo=UTC)
        long_ago = last - timedelta(days=60)
        due_ids = []
        for zone in ("UTC", "Asia/Tokyo", "America/Los_Angeles", "Europe/Berlin"):
            p = await w.patient(home, zone)
            await w.course(p, [long_ago, last], "noticeable")
            due_ids.append(p.id)
        p = await w.patient(home)
        await w.course(p, [last], "maintenance")
        due_ids.append(p.id)
        # Over for longer: due whatever the hour.
        p = await w.patient(home, "Asia/Kolkata")
        await w.course(p, [long_ago], "mild")
        due_ids.append(p.id)
        # Its last booked session is the earlier one (the later was cancelled).
        p = await w.patient(home)
        await w.course(p, [long_ago, last + timedelta(days=20)], "mild", 1, cancelled=(1,))
        due_ids.append(p.id)
        # A new course after a finished one: its session is the last, and closes it.
        p = await w.patient(home)
        await w.course(p, [long_ago - timedelta(days=30)], "mild")
        await w.course(p, [long_ago], "maintenance")
        due_ids.append(p.id)
        # Not due: course not over, no plan, opted out, paused, blocked, no consent, booked
        # again, over too recently, no sessions, another clinic, a new course not closed.
        p = await w.patient(home)
        await w.course(p, [long_ago, last], "noticeable", 4)
        p = await w.patient(home)  # one short: the other session was cancelled
        await w.course(p, [long_ago - timedelta(days=14), long_ago], "mild", 2, cancelled=(0,))
        p = await w.patient(home)
        await w.course(p, [long_ago], "none")
        p = await w.patient(home)
        await w.course(p, [long_ago], "mild", stopped=True)
        for values in ({"paused_at": T0}, {"blocked_at": T0}, {"consent_at": None}):
            p = await w.patient(home, **values)
            await w.course(p, [long_ago], "mild")
        p = await w.patient(home)
        await w.course(p, [long_ago, T0 + timedelta(days=9)], "mild", 2)
        p = await w.patient(home)
        await w.course(p, [T0 - timedelta(days=20)], "mild")
        await w.patient(home)
        p = await w.patient(other)
        await w.course(p, [long_ago], "mild")
        p = await w.patient(home)
        await w.course(p, [long_ago - timedelta(days=30)], "mild")
        await w.course(p, [long_ago], "noticeable", 4)

    seen: list[list[int | None]] = []
    # Every three hours from before the first local midnight to after the last.
    for hours in range(-3 * 8, 3 * 8 + 1, 3):
        now = datetime(2026, 11, 24, 12, tzinfo=UTC) + timedelta(hours=hours)
        async with sessions() as db:
            found = await clinics.due_for_maintenance(
                session=db, clinic_id=home, protocol=protocol, now=now
            )
            expected = await due_reference(db, home, protocol, now)
            size = await broadcast.audience_size(
                session=db, clinic_id=home, audience="due", protocol=protocol, now=now
            )
        got = [(d.patient.id, d.last_end, d.due_since) for d in found.shown]
        assert got == expected, now
        assert found.total == size == len(expected)
        seen.append([patient_id for patient_id, _, _ in got])
    # The sweep crossed every zone's midnight: from only the long-overdue to all of them.
    assert len(seen[0]) == 3 and set(seen[-1]) == set(due_ids)
    assert len({len(ids) for ids in seen}) >= 4


async def test_the_due_list_shows_the_longest_waiting_and_counts_all(
    sessions: SessionFactory, protocol: Protocol, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(clinics, "DUE_SHOWN", 3)
    async with sessions() as db, db.begin():
        w = World(db)
        home = await w.clinic("home")
        ids = []
        for days in (200, 120, 300, 150, 100):
            p = await w.patient(home)
            await w.course(p, [T0 - timedelta(days=days)], "mild")
            ids.append((days, p.id))
    async with sessions() as db:
        found = await clinics.due_for_maintenance(
            session=db, clinic_id=home, protocol=protocol, now=T0
        )
    assert found.total == 5
    assert [d.patient.id for d in found.shown] == [pid for _, pid in sorted(ids, reverse=True)][:3]


# -- /patients --------------------------------------------------------------------------------


async def test_patients_pages_by_key_in_both_directions_and_across_new_patients(
    sessions: SessionFactory,
) -> None:
    async with sessions() as db, db.begin():
        w = World(db)
        home, other = await w.clinic("home"), await w.clinic("other")
        ids = [(await w.patient(home)).id for _ in range(25)]
        for _ in range(3):
            await w.patient(other)
    newest_first = sorted((i for i in ids if i is not None), reverse=True)

    async def page(**key: int) -> clinics.PatientsPage:
        async with sessions() as db:
            return await clinics.patients_page(session=db, clinic_id=home, now=T0, **key)

    first = await page()
    second = await page(older_than=first.older or 0)
    third = await page(older_than=second.older or 0)
    shown = [[line.patient.id for line in p.lines] for p in (first, second, third)]
    assert shown == [newest_first[:10], newest_first[10:20], newest_first[20:]]
    assert [(p.page, p.pages) for p in (first, second, third)] == [(0, 3), (1, 3), (2, 3)]
    assert (first.newer, third.older) == (None, None)
    assert (first.older, second.newer, second.older) == (
        newest_first[9],
        newest_first[10],
        newest_first[19],
    )
    back = await page(newer_than=third.newer or 0)
    assert [line.patient.id for line in back.lines] == newest_first[10:20]
    assert [line.patient.id for line in (await page(newer_than=back.newer or 0)).lines] == (
        newest_first[:10]
    )

    # A patient who joins while staff read page 2: page 3 still follows on without a gap,
    # and going back from page 2 shows the ten just newer than it (then the newest page).
    async with sessions() as db, db.begin():
        newcomer = await World(db).patient(home)
    assert [line.patient.id for line in (await page(older_than=second.older or 0)).lines] == (
        newest_first[20:]
    )
    before = await page(newer_than=second.newer or 0)
    assert [line.patient.id for line in before.lines] == newest_first[:10]
    assert (before.page, before.pages, before.older) == (1, 3, newest_first[9])
    newest = await page(newer_than=before.newer or 0)
    assert [line.patient.id for line in newest.lines] == [newcomer.id, *newest_first[:9]]
    assert (newest.page, newest.newer, newest.older) == (0, None, newest_first[8])


async def test_a_patient_line_shows_the_next_session_and_any_flag(
    sessions: SessionFactory,
) -> None:
    async with sessions() as db, db.begin():
        w = World(db)
        home = await w.clinic("home")
        ahead = await w.patient(home)
        await w.course(
            ahead,
            [T0 - timedelta(days=30), T0 + timedelta(days=20), T0 + timedelta(days=6)],
            flagged=(0,),
        )
        await w.course(ahead, [T0 + timedelta(days=2)], cancelled=(0,))
        lasting = await w.patient(home, conditions={"endocrine_disorder": "yes"})
        plain = await w.patient(home, conditions={"pregnant_or_breastfeeding": "na"})
        await w.course(plain, [T0 - timedelta(days=3)])
    async with sessions() as db:
        found = await clinics.patients_page(session=db, clinic_id=home, now=T0)
    lines = {line.patient.id: line for line in found.lines}
    assert lines[ahead.id].next_start == T0 + timedelta(days=6) - timedelta(hours=1)
    assert lines[ahead.id].flagged
    assert (lines[lasting.id].next_start, lines[lasting.id].flagged) == (None, True)
    assert (lines[plain.id].next_start, lines[plain.id].flagged) == (None, False)


# -- broadcasts -------------------------------------------------------------------------------


async def to_everyone(
    db: AsyncSession, draft: Broadcast, protocol: Protocol, now: datetime
) -> Broadcast | None:
    """`broadcast.start` of a draft to every active patient of its clinic."""
    assert draft.id is not None
    return await broadcast.start(
        session=db,
        broadcast_id=draft.id,
        clinic_id=draft.clinic_id,
        audience="active",
        protocol=protocol,
        now=now,
    )


async def test_a_broadcast_plans_one_row_per_reachable_patient_at_their_morning(
    sessions: SessionFactory, protocol: Protocol
) -> None:
    # 23:30 in London: asleep by default; Tehran (03:00) and Kolkata (05:00) are in their
    # night too; New York (18:30) is not; "00:00-00:00" means no quiet hours at all.
    now = datetime(2026, 11, 24, 23, 30, tzinfo=UTC)
    async with sessions() as db, db.begin():
        w = World(db)
        home, other = await w.clinic("home"), await w.clinic("other")
        reachable = []
        for zone, quiet in (
            ("Europe/London", ("22:00", "08:00")),
            ("Europe/London", ("22:00", "08:00")),
            ("Europe/London", ("00:00", "00:00")),
            ("Europe/London", ("23:00", "07:00")),
            ("Asia/Tehran", ("22:00", "08:00")),
            ("Asia/Kolkata", ("01:00", "05:00")),
            ("America/New_York", ("22:00", "08:00")),
        ):
            p = await w.patient(home, zone, quiet_start=quiet[0], quiet_end=quiet[1])
            reachable.append(p)
        course_patient = reachable[0]
        await w.course(course_patient, [now + timedelta(days=3)])
        for values in ({"paused_at": T0}, {"blocked_at": T0}, {"consent_at": None}):
            await w.patient(home, **values)
        await w.patient(other)
        draft = await broadcast.create_draft(
            session=db, clinic_id=home, created_by=1, text="Hello", now=now
        )
    assert draft.id is not None
    async with sessions() as db, db.begin():
        sizes = {
            audience: await broadcast.audience_size(
                session=db, clinic_id=home, audience=audience, protocol=protocol, now=now
            )
            for audience in broadcast.AUDIENCES
        }
        started = await to_everyone(db, draft, protocol, now)
    async with sessions() as db:
        rows = (
            await db.exec(
                select(PlannedMessage, BroadcastRecipient)
                .join(
                    BroadcastRecipient,
                    col(BroadcastRecipient.message_id) == col(PlannedMessage.id),
                )
                .where(BroadcastRecipient.broadcast_id == draft.id)
            )
        ).all()
        again = await to_everyone(db, draft, protocol, now)

    assert sizes == {"active": 7, "course": 1, "due": 0}
    assert started is not None and started.recipients == len(rows) == 7
    assert again is None
    expires = now + broadcast.VALIDITY
    expected = {p.id: apply_quiet_hours(now, now, expires, prefs_of(p)) for p in reachable}
    got = {row.patient_id: row.due_at for row, _ in rows}
    assert got == expected
    # The test means something: some copies wait for the morning, some go now.
    assert len(set(got.values())) >= 4 and now in got.values()
    for row, recipient in rows:
        assert recipient.patient_id == row.patient_id
        assert (row.step, row.priority, row.state) == (
            broadcast.STEP,
            Priority.BROADCAST,
            MessageState.PENDING,
        )
        assert (row.not_before, row.expires_at, row.created_at) == (now, expires, now)
        assert row.extra == {"broadcast_id": draft.id}
        assert (row.session_id, row.chat_id, row.attempts, row.seq) == (None, None, 0, 0)


# -- the inbox ----------------------------------------------------------------------------------


async def test_the_inbox_shows_each_messages_newest_answer(sessions: SessionFactory) -> None:
    async with sessions() as db, db.begin():
        w = World(db)
        home = await w.clinic("home")
        p = await w.patient(home)
        asked = [await w.asked(p, f"question {n}", T0 + timedelta(minutes=n)) for n in range(3)]
        for n, text in ((0, "first"), (0, "second"), (2, "only")):
            await w.answered(asked[n], text, T0 + timedelta(hours=1))
    async with sessions() as db:
        found, open_count = await inbox.entries(session=db, clinic_ids=[home])
    answers = {e.message.text: e.reply.text if e.reply else None for e in found}
    assert [e.message.text for e in found] == ["question 2", "question 1", "question 0"]
    assert answers == {"question 0": "second", "question 1": None, "question 2": "only"}
    assert open_count == 3


# -- export -----------------------------------------------------------------------------------


async def test_the_delivery_export_streams_every_row_due_since_in_due_order(
    sessions: SessionFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importer, "EXPORT_BATCH", 2)
    async with sessions() as db, db.begin():
        w = World(db)
        home = await w.clinic("home")
        p = await w.patient(home)
        (treatment,) = await w.course(p, [T0 - timedelta(days=1)])
        assert p.id is not None
        draft = await broadcast.create_draft(
            session=db, clinic_id=home, created_by=1, text="Hi", now=T0
        )
        rows = [
            PlannedMessage(
                patient_id=p.id,
                session_id=treatment.id,
                step=step,
                state=state,
                due_at=T0 + timedelta(hours=hours),
                not_before=T0,
                expires_at=T0 + timedelta(days=5),
                attempts=attempts,
                last_error=error,
                sent_at=T0 + timedelta(hours=hours, seconds=1) if state == "sent" else None,
                created_at=T0,
            )
            for step, state, hours, attempts, error in (
                ("after-24h", MessageState.SENT, 2, 1, None),
                ("after-3d", MessageState.FAILED, 1, 3, "blocked"),
                ("before", MessageState.PENDING, -1, 0, None),
                ("after-7d", MessageState.PENDING, 3, 0, None),
            )
        ]
        db.add_all(rows)
        await db.flush()
        started = await to_everyone(
            db, draft, load_protocol(default_protocol_path()), T0 + timedelta(hours=2)
        )
        assert started is not None
    chunks: list[str] = []
    async with sessions() as db:
        count = await importer.export_deliveries(session=db, since=T0, write=chunks.append)
    text = "".join(chunks)
    sent, failed, _before, later = (r.id for r in rows)
    (broadcast_row,) = [
        r for r in csv.DictReader(io.StringIO(text)) if r["step"] == broadcast.STEP
    ]
    assert count == 4 and len(chunks) >= 3
    assert text.splitlines() == [
        ",".join(importer.DELIVERY_COLUMNS),
        f"{failed},home,{p.id},{treatment.id},,after-3d,0,failed,"
        "2026-11-25T10:00:00+00:00,,3,blocked",
        f"{sent},home,{p.id},{treatment.id},,after-24h,0,sent,"
        "2026-11-25T11:00:00+00:00,2026-11-25T11:00:01+00:00,1,",
        f"{broadcast_row['id']},home,{p.id},,{draft.id},broadcast,10,pending,"
        "2026-11-25T11:00:00+00:00,,0,",
        f"{later},home,{p.id},{treatment.id},,after-7d,0,pending,2026-11-25T12:00:00+00:00,,0,",
    ]


async def _sent_messages(sessions: SessionFactory, instants: list[datetime]) -> int:
    """A patient of a clinic "home" with a message sent at each instant (its n-th sent n
    microseconds after it was due); the patient's id."""
    async with sessions() as db, db.begin():
        w = World(db)
        p = await w.patient(await w.clinic("home"))
        assert p.id is not None
        db.add_all(
            PlannedMessage(
                patient_id=p.id,
                step=f"step-{n}",
                state=MessageState.SENT,
                due_at=at,
                not_before=at,
                expires_at=at + timedelta(days=1),
                sent_at=at + timedelta(microseconds=n),
                created_at=T0,
            )
            for n, at in enumerate(instants)
        )
        return p.id


@pytest.mark.parametrize("backend", ["sqlite"])  # PostgreSQL's cursor ends with its transaction
async def test_a_stopped_export_lets_go_of_its_read(
    sessions: SessionFactory, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A download stopped halfway (the staff member closed the page) closes the export's
    SQLite cursor, which would otherwise keep its snapshot and hold every checkpoint back
    while the session's connection is out."""
    monkeypatch.setattr(importer, "EXPORT_BATCH", 1)
    await _sent_messages(sessions, [T0 + timedelta(hours=n) for n in range(3)])
    path = db_url.split(":///", 1)[1]

    def checkpoint_waits() -> bool:
        """Whether a full checkpoint, after a write, finds a reader in its way."""
        with contextlib.closing(sqlite3.connect(path)) as other:
            other.execute("UPDATE clinic SET name = name")
            other.commit()
            busy, _log, _done = other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            return bool(busy)

    async with sessions() as db:
        chunks = importer.delivery_csv(session=db, chosen=Deliveries(T0))
        assert (await anext(chunks))[1] == 0  # the header
        assert (await anext(chunks))[1] == 1
        assert checkpoint_waits()  # the export is reading
        await chunks.aclose()
        assert not checkpoint_waits()


async def test_the_export_writes_each_instant_as_isoformat_does(sessions: SessionFactory) -> None:
    """The export reads instants as the driver gives them (SQLite: the stored text), and
    writes what `isoformat()` writes for the aware datetime the ORM reads."""
    instants = [
        T0 + timedelta(microseconds=micro, days=days)
        for micro, days in ((0, 0), (1, 1), (123_456, 2), (999_999, 3), (500_000, 400))
    ]
    patient_id = await _sent_messages(sessions, instants)
    async with sessions() as db, db.begin():
        db.add(  # not sent: no sent_at
            PlannedMessage(
                patient_id=patient_id,
                step="pending",
                state=MessageState.PENDING,
                due_at=T0 + timedelta(days=500),
                not_before=T0,
                expires_at=T0 + timedelta(days=501),
                created_at=T0,
            )
        )
    chunks: list[str] = []
    async with sessions() as db:
        await importer.export_deliveries(session=db, since=T0, write=chunks.append)
        read = (await db.exec(select(PlannedMessage).order_by(col(PlannedMessage.due_at)))).all()
    exported = list(csv.DictReader(io.StringIO("".join(chunks))))
    assert [(r["due_at"], r["sent_at"]) for r in exported] == [
        (m.due_at.isoformat(), m.sent_at.isoformat() if m.sent_at else "") for m in read
    ]
    assert exported[0]["due_at"] == "2026-11-25T09:00:00+00:00"
    assert exported[2]["due_at"] == "2026-11-27T09:00:00.123456+00:00"
    assert exported[-1]["sent_at"] == ""
