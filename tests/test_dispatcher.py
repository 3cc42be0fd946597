"""The dispatcher against a real database (SQLite and PostgreSQL) and a fake sender."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from scheduler.clock import FakeClock
from scheduler.db import SessionFactory
from scheduler.dispatcher import Dispatcher, claim_due, expire_stale, night_hold
from scheduler.models import Clinic, Patient, PlannedMessage, Priority
from scheduler.planner import Prefs
from scheduler.ports import Outcome, Outgoing, SendResult
from tests.fakes import FakeSender, make_dispatcher, row_by_row


async def compose_step(
    *,
    session: AsyncSession,  # noqa: ARG001
    row: PlannedMessage,
    now: datetime,  # noqa: ARG001
) -> Outgoing:
    return Outgoing(chat_id=1000 + row.patient_id, text=row.step)


async def seed(
    sessions: SessionFactory, now: datetime, steps: list[tuple[str, timedelta, timedelta]]
) -> int:
    """One patient with messages (step, due offset, validity) relative to `now`."""
    async with sessions() as db, db.begin():
        clinic = Clinic(slug="c", name="C", timezone="UTC", created_at=now)
        db.add(clinic)
        await db.flush()
        assert clinic.id is not None
        patient = Patient(
            clinic_id=clinic.id, tg_user_id=1, chat_id=1, timezone="UTC", created_at=now
        )
        db.add(patient)
        await db.flush()
        assert patient.id is not None
        for seq, (step, due, valid) in enumerate(steps):
            db.add(
                PlannedMessage(
                    patient_id=patient.id,
                    step=step,
                    seq=seq,
                    due_at=now + due,
                    not_before=now + due,
                    expires_at=now + due + valid,
                    created_at=now,
                )
            )
        return patient.id


async def states(sessions: SessionFactory) -> dict[str, str]:
    async with sessions() as db:
        rows = (await db.exec(select(PlannedMessage))).all()
        return {row.step: row.state for row in rows}


@asynccontextmanager
async def dispatching(
    sessions: SessionFactory, clock: FakeClock, sender: FakeSender
) -> AsyncIterator[Dispatcher]:
    """A dispatcher sending each row's step, started, and stopped at the end."""
    d = make_dispatcher(
        sessions, clock, sender, composer=row_by_row(compose_step), worker_id="test"
    )
    await d.start()
    try:
        yield d
    finally:
        await d.stop()


DAY = timedelta(days=1)


@pytest.fixture
def sender() -> FakeSender:
    return FakeSender()


async def test_sends_each_due_message_once_in_order(
    sessions: SessionFactory, clock: FakeClock, sender: FakeSender
) -> None:
    await seed(sessions, clock.now(), [("a", timedelta(0), DAY), ("b", timedelta(hours=1), DAY)])
    async with dispatching(sessions, clock, sender) as d:
        await d.wait_idle()
        sender.assert_sent_once_each(["a"])
        clock.advance(timedelta(hours=1))
        await d.wait_idle()
        clock.advance(timedelta(hours=1))
        await d.wait_idle()
        sender.assert_sent_once_each(["a", "b"])
    assert await states(sessions) == {"a": "sent", "b": "sent"}


async def test_a_row_planned_while_the_dispatcher_reads_its_next_wake_is_sent_now(
    sessions: SessionFactory,
    clock: FakeClock,
    sender: FakeSender,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a round the dispatcher reads when the next row is due, and arms for then. A row
    planned and poked for meanwhile (a red flag's notice to the nurse) is not in that answer:
    the poke's wake, due now, stands instead of being replaced by the wake for tomorrow."""
    patient_id = await seed(sessions, clock.now(), [("tomorrow", DAY, DAY)])
    async with dispatching(sessions, clock, sender) as d:
        await d.wait_idle()
        reading, answer = asyncio.Event(), asyncio.Event()
        read = d.next_due

        async def held_read() -> datetime | None:
            found = await read()  # tomorrow: the row below is not planned yet
            reading.set()
            await answer.wait()
            return found

        monkeypatch.setattr(d, "next_due", held_read)
        d.poke()  # a round with nothing due, then the read
        async with asyncio.timeout(10):
            await reading.wait()
        now = clock.now()
        async with sessions() as db, db.begin():
            db.add(
                PlannedMessage(
                    patient_id=patient_id,
                    step="now",
                    priority=Priority.REPLY,
                    due_at=now,
                    not_before=now,
                    expires_at=now + DAY,
                    created_at=now,
                )
            )
        d.poke()  # as the handler does once it has committed
        answer.set()
        async with asyncio.timeout(10):
            await d.wait_idle()
        sender.assert_sent_once_each(["now"])


async def test_a_message_past_its_window_expires_instead_of_being_sent(
    sessions: SessionFactory, clock: FakeClock, sender: FakeSender
) -> None:
    await seed(sessions, clock.now(), [("late", timedelta(hours=1), timedelta(hours=1))])
    async with dispatching(sessions, clock, sender) as d:
        clock.advance(timedelta(hours=3))
        await d.wait_idle()
    assert sender.sent == []
    assert await states(sessions) == {"late": "expired"}


async def rows_by_step(sessions: SessionFactory) -> dict[str, PlannedMessage]:
    async with sessions() as db:
        return {row.step: row for row in (await db.exec(select(PlannedMessage))).all()}


async def test_a_message_the_bot_could_not_send_in_the_evening_waits_for_the_morning(
    sessions: SessionFactory, clock: FakeClock, sender: FakeSender
) -> None:
    """The patient's night is 22:00-08:00 (UTC); the bot was down from 19:55 to 23:30.
    What was planned for a waking hour and is still valid in the morning waits for 08:00,
    untried; what would no longer be (its window ends at midnight) goes now, as the planner
    would have placed it; what the plan put in the night on purpose, and a staff chat's
    message, go as planned."""
    start = clock.now()  # 09:00
    patient_id = await seed(
        sessions,
        start,
        [
            ("evening", timedelta(hours=11), 2 * DAY),  # 20:00, valid two days
            ("tonight", timedelta(hours=11), timedelta(hours=4)),  # 20:00 until midnight
            ("in-the-night", timedelta(hours=14), 2 * DAY),  # planned for 23:00
        ],
    )
    async with sessions() as db, db.begin():
        db.add(
            PlannedMessage(
                patient_id=patient_id,
                chat_id=555,
                step="staff",
                seq=9,
                due_at=start + timedelta(hours=11),
                not_before=start + timedelta(hours=11),
                expires_at=start + 2 * DAY,
                created_at=start,
            )
        )
    clock.advance(timedelta(hours=14, minutes=30))  # 23:30: the bot is back
    async with dispatching(sessions, clock, sender) as d:
        await d.wait_idle()
        assert sorted(sender.texts()) == ["in-the-night", "staff", "tonight"]
        evening = (await rows_by_step(sessions))["evening"]
        assert evening.state == "pending"
        assert evening.due_at == start + timedelta(hours=23)  # 08:00 the next day
        assert evening.attempts == 0
        assert evening.last_error == "held: quiet hours"
        clock.advance(timedelta(hours=8, minutes=29))  # 07:59
        await d.wait_idle()
        assert "evening" not in sender.texts()
        clock.advance(timedelta(minutes=1))
        await d.wait_idle()
    assert sender.texts()[-1] == "evening"
    assert await states(sessions) == {
        "evening": "sent",
        "tonight": "sent",
        "in-the-night": "sent",
        "staff": "sent",
    }


async def test_a_retry_that_falls_in_the_night_waits_for_the_morning(
    sessions: SessionFactory, clock: FakeClock, sender: FakeSender
) -> None:
    """A reminder retried into the night waits for 08:00; a message of the conversation
    with the clinic (here the contact after a red flag) is what the patient is waiting for,
    and goes at once."""
    start = clock.now()  # 09:00
    patient_id = await seed(sessions, start, [("a", timedelta(hours=12, minutes=59), 2 * DAY)])
    async with sessions() as db, db.begin():
        db.add(
            PlannedMessage(
                patient_id=patient_id,
                step="answer",
                seq=1,
                priority=Priority.REPLY,
                due_at=start + timedelta(hours=12, minutes=59),  # 21:59
                not_before=start,
                expires_at=start + 2 * DAY,
                created_at=start,
            )
        )
    for _ in range(2):
        sender.script.append(SendResult(Outcome.RETRY, error="network", retry_after=120))
    async with dispatching(sessions, clock, sender) as d:
        clock.advance(timedelta(hours=12, minutes=59))
        await d.wait_idle()
        assert sender.sent == []
        clock.advance(timedelta(minutes=2))  # 22:01: the retries are due, in the night
        await d.wait_idle()
        sender.assert_sent_once_each(["answer"])
        row = (await rows_by_step(sessions))["a"]
        assert (row.state, row.due_at, row.attempts) == ("pending", start + 23 * HOUR, 1)
        clock.advance(start + 23 * HOUR - clock.now())
        await d.wait_idle()
    sender.assert_sent_once_each(["answer", "a"])


HOUR = timedelta(hours=1)


def test_a_message_a_few_minutes_late_at_nightfall_still_goes() -> None:
    tehran = ZoneInfo("Asia/Tehran")
    due = datetime(2026, 12, 5, 21, 58, tzinfo=tehran)
    morning = datetime(2026, 12, 6, 8, 0, tzinfo=tehran)

    def held(now: datetime, attempts: int = 1, quiet: str = "22:00") -> datetime | None:
        prefs = Prefs.parse("Asia/Tehran", quiet, "08:00")
        return night_hold(due=due, expires=due + 2 * DAY, attempts=attempts, prefs=prefs, now=now)

    assert held(due + timedelta(minutes=3)) is None
    assert held(due + timedelta(minutes=6)) == morning
    assert held(due + timedelta(minutes=3), attempts=2) == morning  # a retry
    assert held(morning) is None  # outside the night nothing waits, however late
    assert held(due + HOUR, attempts=3, quiet="08:00") is None  # no quiet hours


async def test_transient_error_is_retried_and_403_blocks(
    sessions: SessionFactory, clock: FakeClock, sender: FakeSender
) -> None:
    await seed(sessions, clock.now(), [("a", timedelta(0), DAY), ("b", timedelta(hours=5), DAY)])
    sender.script.append(SendResult(Outcome.RETRY, error="network", retry_after=30))
    async with dispatching(sessions, clock, sender) as d:
        await d.wait_idle()
        assert sender.sent == []
        clock.advance(timedelta(seconds=31))
        await d.wait_idle()
        sender.assert_sent_once_each(["a"])
        sender.script.append(SendResult(Outcome.BLOCKED, error="403"))
        clock.advance(timedelta(hours=5))
        await d.wait_idle()
    assert await states(sessions) == {"a": "sent", "b": "failed"}


async def test_abandoned_claim_is_reclaimed_after_its_lease(
    sessions: SessionFactory, clock: FakeClock, sender: FakeSender
) -> None:
    now = clock.now()
    await seed(sessions, now, [("a", timedelta(0), DAY)])
    async with sessions() as db, db.begin():
        claimed = await claim_due(
            session=db,
            now=now,
            worker_id="dead",
            lease=timedelta(seconds=60),
            limit=10,
            skip_locked=False,
        )
    assert len(claimed) == 1
    async with dispatching(sessions, clock, sender) as d:
        await d.wait_idle()
        assert sender.sent == []  # still leased by the dead worker
        clock.advance(timedelta(seconds=61))
        await d.wait_idle()
    sender.assert_sent_once_each(["a"])


@pytest.mark.parametrize("limit", [1, 5])
async def test_claim_takes_each_row_once(
    sessions: SessionFactory, clock: FakeClock, limit: int
) -> None:
    now = clock.now()
    await seed(sessions, now, [(f"s{i}", timedelta(0), DAY) for i in range(7)])
    seen: list[int] = []
    while True:
        async with sessions() as db, db.begin():
            await expire_stale(session=db, now=now)
            ids = await claim_due(
                session=db,
                now=now,
                worker_id="w",
                lease=timedelta(minutes=1),
                limit=limit,
                skip_locked=False,
            )
        if not ids:
            break
        assert len(ids) <= limit
        seen += ids
    assert sorted(seen) == sorted(set(seen))
    assert len(seen) == 7


async def test_a_claim_reads_a_batch_in_priority_order_not_every_due_row(
    engine: AsyncEngine, sessions: SessionFactory, clock: FakeClock
) -> None:
    """A reminder that fell due after a broadcast's backlog goes first; the backlog follows
    in due, seq and id order; an expired row is passed over before any sweep; and each
    priority's due rows are read through the pending index, a batch's worth, never all of
    them and sorted (SQLite's plan; 76 ms a batch of 100 behind 100,000 broadcast rows)."""
    now = clock.now()
    patient = await seed(sessions, now, [])
    backlog, reminder, expired = [], None, None
    async with sessions() as db, db.begin():
        for i in range(300):
            row = PlannedMessage(
                patient_id=patient,
                step=f"b{i}",
                seq=i % 2,
                priority=Priority.BROADCAST,
                due_at=now - timedelta(minutes=10),
                not_before=now - timedelta(minutes=10),
                expires_at=now + DAY,
                created_at=now,
            )
            db.add(row)
            backlog.append(row)
        reminder = PlannedMessage(
            patient_id=patient,
            step="reminder",
            due_at=now - timedelta(minutes=1),
            not_before=now - timedelta(minutes=1),
            expires_at=now + DAY,
            created_at=now,
        )
        expired = PlannedMessage(
            patient_id=patient,
            step="reply",
            priority=Priority.REPLY,
            due_at=now - timedelta(hours=1),
            not_before=now - timedelta(hours=1),
            expires_at=now - timedelta(seconds=1),
            created_at=now,
        )
        db.add_all([reminder, expired])
    statements: list[tuple[str, Any]] = []

    def caught(*args: object) -> None:
        statements.append((str(args[2]), args[3]))

    sa.event.listen(engine.sync_engine, "before_cursor_execute", caught)
    async with sessions() as db, db.begin():
        claimed = await claim_due(
            session=db,
            now=now,
            worker_id="w",
            lease=timedelta(minutes=1),
            limit=5,
            skip_locked=engine.dialect.name == "postgresql",
        )
    sa.event.remove(engine.sync_engine, "before_cursor_execute", caught)
    first_four = sorted(backlog, key=lambda r: (r.seq, r.id))[:4]
    assert len(claimed) == 5
    assert set(claimed) == {reminder.id, *(r.id for r in first_four)}
    assert expired.id not in claimed

    if engine.dialect.name == "sqlite":
        (claim, params), *_ = [s for s in statements if s[0].lstrip().startswith("WITH")]
        async with engine.connect() as conn:
            found = await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {claim}", params)
            plan = [str(tuple(row)[-1]) for row in found]
        reads = [step for step in plan if "planned_message" in step and "PRIMARY KEY" not in step]
        assert reads and all(
            "ix_planned_message_pending" in step or "_sending" in step for step in reads
        ), plan
