"""Each Telegram error, produced by the sandbox, and what the dispatcher makes of it.

The real Application against the sandbox, on a simulated clock: 429 (global back-off that
does not hold replies), 403 (blocked: cancelled, no retry), 400 (failed with the reason),
5xx and network outages (retried with back-off while valid, then expired).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import col, select

from bench.seed import Seeded, seed_due
from bot.offline.harness import Harness
from scheduler.clock import FakeClock
from scheduler.models import Patient, PlannedMessage
from tests.e2e import running
from tests.procs import open_chats, report


async def seed(h: Harness, count: int, **kw: object) -> Seeded:
    assert h.services is not None
    seeded = await seed_due(h.services.engine, count=count, now=h.clock.now(), **kw)  # type: ignore[arg-type]
    open_chats(h.api, seeded.chat_ids)
    return seeded


async def rows(h: Harness, ids: list[int]) -> list[PlannedMessage]:
    assert h.services is not None
    async with h.services.sessions() as db:
        found = await db.exec(
            select(PlannedMessage).where(col(PlannedMessage.id).in_(ids)).order_by("id")
        )
        return list(found.all())


async def test_403_blocks_the_patient_and_cancels_the_rest_without_retry(
    db_url: str, clock: FakeClock
) -> None:
    async with running(db_url, clock) as h:
        h.api.fail_next(
            "sendMessage", error_code=403, description="Forbidden: bot was blocked by the user"
        )
        seeded = await seed(h, 1, per_patient=3)
        assert h.services is not None
        h.services.poke()
        await h.settle()
        for _ in range(3):
            await h.advance(timedelta(days=1))
        first, *rest = await rows(h, seeded.message_ids)
        async with h.services.sessions() as db:
            patient = (
                await db.exec(select(Patient).where(Patient.chat_id == seeded.chat_ids[0]))
            ).one()
    assert (first.state, first.last_error, first.attempts) == ("failed", "blocked", 1)
    assert [r.state for r in rest] == ["cancelled", "cancelled"]
    assert patient.blocked_at is not None
    assert h.api.calls["sendMessage"] == 1


async def test_400_fails_with_the_reason_and_is_not_retried(db_url: str, clock: FakeClock) -> None:
    async with running(db_url, clock) as h:
        h.api.fail_next("sendMessage", error_code=400, description="Bad Request: chat not found")
        seeded = await seed(h, 2)
        assert h.services is not None
        h.services.poke()
        await h.settle()
        await h.advance(timedelta(hours=1))
        # Two chats are sent to side by side, in no set order: either may meet the 400.
        failed, sent = sorted(await rows(h, seeded.message_ids), key=lambda row: row.state)
    assert (failed.state, failed.attempts) == ("failed", 1)
    assert failed.last_error == "400 Chat not found"  # PTB's wording of Telegram's reason
    assert sent.state == "sent"
    assert h.api.calls["sendMessage"] == 2


async def test_5xx_is_retried_with_back_off_until_sent(db_url: str, clock: FakeClock) -> None:
    async with running(db_url, clock) as h:
        h.api.fail_next("sendMessage", count=3, error_code=502, description="Bad Gateway")
        seeded = await seed(h, 1)
        assert h.services is not None
        h.services.poke()
        await h.settle()
        retries = []
        for _ in range(3):
            (row,) = await rows(h, seeded.message_ids)
            assert row.state == "pending" and row.last_error and "network" in row.last_error
            retries.append(row.due_at - h.clock.now())
            await h.advance_to(row.due_at)
        (row,) = await rows(h, seeded.message_ids)
    assert (row.state, row.attempts) == ("sent", 4)
    # Exponential with jitter: each wait drawn from [ceiling/2, ceiling], ceiling 5, 10, 20 s.
    for wait, ceiling in zip(retries, (5, 10, 20), strict=True):
        assert timedelta(seconds=ceiling / 2) <= wait <= timedelta(seconds=ceiling)
    assert h.api.chat(seeded.chat_ids[0]).sent_count == 1


async def test_a_timeout_is_retried_and_a_late_answer_shows_why_it_may_duplicate(
    db_url: str, clock: FakeClock
) -> None:
    async with running(db_url, clock, send_timeout_seconds=0.1) as h:
        h.api.delay_next("sendMessage", 0.3)
        seeded = await seed(h, 1)
        chat = h.api.chat(seeded.chat_ids[0])
        assert h.services is not None
        h.services.poke()
        await h.settle()
        (row,) = await rows(h, seeded.message_ids)
        assert row.state == "pending" and row.last_error == "network: TimedOut"
        # Telegram may still deliver a send whose answer never came back.
        await h.api.wait_for(lambda: chat.sent_count == 1, timeout=3)
        await h.advance_to(row.due_at)
        (row,) = await rows(h, seeded.message_ids)
    assert (row.state, row.attempts) == ("sent", 2)
    assert chat.sent_count == 2  # no idempotency key: the documented second source of copies


async def test_429_pauses_every_send_but_not_the_replies(db_url: str, clock: FakeClock) -> None:
    # One send at a time, so that what follows the 429 is visibly held back.
    async with running(db_url, clock, dispatch_concurrency=1) as h:
        assert h.services is not None and h.services.limiter is not None
        h.api.fail_next("sendMessage", error_code=429, retry_after=30)
        seeded = await seed(h, 3)
        h.services.poke()
        await h.api.wait_for(lambda: any(r.status == 429 for r in h.api.requests))
        # Sends are paused for 30 real seconds; a patient who writes now is still answered.
        patient = h.patient(4242, "Ann")
        patient.start()
        await patient.wait_messages(1)
        assert h.services.limiter.pauses == 1
        assert [h.api.chat(c).sent_count for c in seeded.chat_ids] == [0, 0, 0]
    # A clean stop in the middle of the pause gives the waiting rows back.
    found = await _after(db_url, seeded)
    assert found[0].state == "pending" and found[0].last_error == "429 retry after"
    assert found[0].due_at == clock.now() + timedelta(seconds=30)
    assert [r.state for r in found[1:]] == ["pending", "pending"]
    assert [r.attempts for r in found] == [1, 0, 0]


async def _after(db_url: str, seeded: Seeded) -> list[PlannedMessage]:
    from scheduler.db import make_engine, make_session_factory

    engine = make_engine(db_url)
    try:
        async with make_session_factory(engine)() as db:
            found = await db.exec(
                select(PlannedMessage)
                .where(col(PlannedMessage.id).in_(seeded.message_ids))
                .order_by("id")
            )
            return list(found.all())
    finally:
        await engine.dispose()


@pytest.mark.slow
async def test_outage_everything_still_valid_is_delivered_the_rest_expires(
    db_url: str, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    async with running(db_url, clock, rate_overall_per_second=5000) as h:
        minute = timedelta(minutes=1)
        short = await seed(h, 30, due=minute, valid=timedelta(minutes=30), first_chat=600_000)
        long = await seed(h, 30, due=minute, valid=timedelta(hours=3), first_chat=700_000)
        await h.api.set_outage("refuse")
        for step in range(6):  # an hour down: refused connections, then a proxy's 502s
            if step == 3:
                await h.api.set_outage("502")
            await h.advance(timedelta(minutes=10))
        assert h.api.calls["sendMessage"] == 0 or all(
            r.status == 502 for r in h.api.requests if r.method == "sendMessage"
        )
        await h.api.set_outage("none")
        for _ in range(8):  # retries are at most 15 minutes apart
            await h.advance(timedelta(minutes=5))
        short_rows = await rows(h, short.message_ids)
        long_rows = await rows(h, long.message_ids)
    delivered = [h.api.chat(c).sent_count for c in long.chat_ids]
    never = [h.api.chat(c).sent_count for c in short.chat_ids]
    figures = {
        "down_minutes": 60,
        "valid_after": len(long_rows),
        "delivered": sum(1 for r in long_rows if r.state == "sent"),
        "expired": sum(1 for r in short_rows if r.state == "expired"),
        "lost": sum(1 for r in short_rows + long_rows if r.state not in ("sent", "expired")),
        "duplicates": sum(n - 1 for n in delivered if n > 1),
        "max_attempts": max(r.attempts for r in long_rows),
    }
    report(capsys, f"outage {db_url.split('+')[0]}", figures)
    assert figures["delivered"] == 30 and figures["expired"] == 30 and figures["lost"] == 0
    assert delivered == [1] * 30 and never == [0] * 30
    assert all(r.attempts > 1 and r.last_error for r in short_rows)
