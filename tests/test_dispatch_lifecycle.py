"""The dispatcher's edges: a clean stop, a lease running out, priorities, two dispatchers,
and the PostgreSQL leader lock."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select

from bench.seed import seed_due
from scheduler.clock import FakeClock
from scheduler.db import SessionFactory
from scheduler.leader import AdvisoryLockLeader
from scheduler.models import PlannedMessage, Priority
from scheduler.ports import Outcome, Outgoing, SendResult
from scheduler.ratelimit import Limits, RateLimiter
from tests.fakes import FakeSender, make_dispatcher


async def by_state(sessions: SessionFactory) -> dict[str, int]:
    async with sessions() as db:
        rows = (await db.exec(select(PlannedMessage))).all()
    found: dict[str, int] = {}
    for row in rows:
        found[row.state] = found.get(row.state, 0) + 1
    return found


class GatedSender(FakeSender):
    """Holds every send until `gate` opens; `entered` is set once the first send started."""

    def __init__(self) -> None:
        super().__init__(gate=asyncio.Event())
        self.entered = asyncio.Event()

    async def send(self, message: Outgoing) -> SendResult:
        self.entered.set()
        return await super().send(message)


async def test_a_clean_stop_finishes_the_send_in_flight_and_gives_the_rest_back(
    engine: AsyncEngine, sessions: SessionFactory, clock: FakeClock
) -> None:
    await seed_due(engine, count=1, per_patient=1, now=clock.now())
    await seed_due(engine, count=4, now=clock.now(), first_chat=900)
    sender = GatedSender()
    d = make_dispatcher(sessions, clock, sender, concurrency=1)
    await d.start()
    await sender.entered.wait()
    stopping = asyncio.create_task(d.stop())
    await asyncio.sleep(0)
    assert sender.gate is not None
    sender.gate.set()
    await stopping
    assert await by_state(sessions) == {"sent": 1, "pending": 4}
    async with sessions() as db:
        attempts = (await db.exec(select(PlannedMessage.attempts))).all()
    assert sorted(attempts) == [0, 0, 0, 0, 1]  # given back as if never claimed


async def test_a_stop_waits_for_the_re_arm_in_flight(
    engine: AsyncEngine, sessions: SessionFactory, clock: FakeClock
) -> None:
    """A stop that comes while a run's re-arm reads the next due time returns only once
    that read is done: the process closes the database after the stop, and a query still
    in flight then kept it from exiting."""
    await seed_due(engine, count=1, now=clock.now())
    d = make_dispatcher(sessions, clock, FakeSender(), concurrency=1)
    reading, release = asyncio.Event(), asyncio.Event()
    next_due = d.next_due

    async def held() -> datetime | None:
        reading.set()
        await release.wait()
        return await next_due()

    d.next_due = held  # type: ignore[method-assign]
    await d.start()
    await reading.wait()  # the row was sent; the re-arm reads the next due time
    stopping = asyncio.create_task(d.stop())
    await asyncio.sleep(0.05)
    assert not stopping.done()
    release.set()
    await asyncio.wait_for(stopping, 5)
    assert await by_state(sessions) == {"sent": 1}


async def test_no_send_starts_once_the_lease_is_nearly_out(
    engine: AsyncEngine, sessions: SessionFactory, clock: FakeClock
) -> None:
    await seed_due(engine, count=3, now=clock.now())
    sender = GatedSender()
    d = make_dispatcher(sessions, clock, sender, lease=timedelta(seconds=60), concurrency=1)
    await d.start()
    await sender.entered.wait()
    # The first send hangs for 55 s: the other two would start after their lease's margin,
    # so they go back to pending and are claimed afresh.
    clock.advance(timedelta(seconds=55))
    assert sender.gate is not None
    sender.gate.set()
    await d.wait_idle()
    await d.stop()
    assert d.released == 2
    assert len(sender.sent) == 3
    assert await by_state(sessions) == {"sent": 3}


async def test_reminders_are_claimed_and_sent_ahead_of_a_broadcast(
    engine: AsyncEngine, sessions: SessionFactory, clock: FakeClock
) -> None:
    await seed_due(engine, count=30, now=clock.now(), priority=Priority.BROADCAST, first_chat=1)
    await seed_due(engine, count=3, now=clock.now(), first_chat=100)
    sender = FakeSender()
    limiter = RateLimiter(Limits(overall_per_second=1000, overall_burst=1000))
    d = make_dispatcher(sessions, clock, sender, batch=10, concurrency=1, limiter=limiter)
    await d.start()
    await d.wait_idle()
    await d.stop()
    async with sessions() as db:
        reminders = (
            await db.exec(select(PlannedMessage.id).where(col(PlannedMessage.priority) == 0))
        ).all()
    assert sorted(int(t) for t in sender.texts()[:3]) == sorted(r or 0 for r in reminders)
    assert len(sender.sent) == 33


async def test_two_dispatchers_on_one_database_never_send_a_row_twice(
    engine: AsyncEngine, sessions: SessionFactory, clock: FakeClock, backend: str
) -> None:
    await seed_due(engine, count=200, now=clock.now())
    sender = FakeSender()
    one = make_dispatcher(
        sessions, clock, sender, worker_id="a", batch=20, is_postgres=backend == "postgres"
    )
    two = make_dispatcher(
        sessions, clock, sender, worker_id="b", batch=20, is_postgres=backend == "postgres"
    )
    sent = await asyncio.gather(one.run_due(), two.run_due())
    texts = sender.texts()
    assert len(texts) == len(set(texts)) == 200
    assert sum(sent) == 200
    assert await by_state(sessions) == {"sent": 200}


@pytest.mark.parametrize("backend", ["postgres"])
async def test_one_leader_at_a_time_and_the_lock_goes_with_the_holder(
    engine: AsyncEngine,
) -> None:
    first, second = AdvisoryLockLeader(engine), AdvisoryLockLeader(engine)
    assert await first.acquire()
    assert await first.acquire()  # confirmed, still held
    assert not await second.acquire()
    await first.release()
    assert await second.acquire()
    assert not await first.acquire()
    await second.release()


async def test_a_retry_after_pauses_the_limiter(
    engine: AsyncEngine, sessions: SessionFactory, clock: FakeClock
) -> None:
    await seed_due(engine, count=1, now=clock.now())
    sender = FakeSender()
    sender.script.append(SendResult(Outcome.RETRY, error="429 retry after", retry_after=0.01))
    limiter = RateLimiter()
    d = make_dispatcher(sessions, clock, sender, limiter=limiter)
    await d.start()
    await d.wait_idle()
    clock.advance(timedelta(seconds=1))
    await d.wait_idle()
    await d.stop()
    assert limiter.pauses == 1
    assert len(sender.sent) == 1
