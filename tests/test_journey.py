"""A patient books a session and receives every prep and aftercare message on time.

The real Application talks HTTP to the sandbox Bot API; the test moves the clock.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from scheduler.clock import FakeClock
from tests.e2e import TIMELINE, all_rows, command, pending, run_timeline, running
from tests.patient_flows import booked_patient


async def test_every_step_arrives_once_in_order_at_its_time(db_url: str, clock: FakeClock) -> None:
    async with running(db_url, clock) as h:
        anna = await booked_patient(h, 501, "Anna", "3 Dec 14:30", "2026-12-03T14:30")
        planned = {row.step: row.due_at for row in await all_rows(h)}
        assert list(planned) == TIMELINE
        assert [r.step for r in await pending(h)] == TIMELINE[1:]  # booked: sent at once
        before = len(anna.inbox)
        await run_timeline(h)
        rows = await all_rows(h)

    assert [r.step for r in rows] == TIMELINE
    assert {r.state for r in rows} == {"sent"}
    received = anna.inbox[before - 1 :]  # the booking confirmation onwards
    assert len(received) == len(TIMELINE)
    for row, message in zip(rows, received, strict=True):
        assert message.message_id == row.tg_message_id
        # Sent at its planned instant (the sandbox stamps messages with the clock, in seconds).
        assert message.date == planned[row.step].replace(microsecond=0), row.step
    assert "Thu 3 Dec, 14:30" in received[0].text
    assert "aspirin" in received[1].text
    # 20:00 London = 20:00 UTC in December; local-time steps land on the wall clock.
    assert received[5].date == datetime(2026, 12, 3, 20, 0, tzinfo=UTC)
    assert received[6].buttons  # the check-in


async def test_a_step_past_its_window_expires_and_is_never_sent(
    db_url: str, clock: FakeClock
) -> None:
    async with running(db_url, clock) as h:
        anna = await booked_patient(h, 502, "Anna", "3 Dec 14:30", "2026-12-03T14:30")
        # Up to the aftercare checklist, then the bot is away until after midnight.
        after_0 = next(r.due_at for r in await pending(h) if r.step == "after-0")
        await run_timeline(h, until=after_0)
        await h.advance_to(datetime(2026, 12, 4, 1, 0, tzinfo=UTC))
        await run_timeline(h)
        rows = {r.step: r.state for r in await all_rows(h)}
        texts = [m.text for m in anna.inbox]

    assert rows["after-evening"] == "expired"
    assert not any(t.startswith("Tonight") for t in texts)
    assert {s for s, state in rows.items() if state == "sent"} == set(TIMELINE) - {"after-evening"}


async def test_restart_halfway_delivers_every_remaining_step_exactly_once(
    db_url: str, clock: FakeClock
) -> None:
    async with running(db_url, clock) as h:
        anna = await booked_patient(h, 503, "Anna", "3 Dec 14:30", "2026-12-03T14:30")
        halfway = datetime(2026, 12, 3, 13, 0, tzinfo=UTC)
        await run_timeline(h, until=halfway)
        sent_before = anna.sent_count
        await h.stop_bot()
        # While no bot runs, time passes (the session ends) with nothing sent.
        clock.advance(timedelta(hours=3))
        assert anna.sent_count == sent_before
        await h.start_bot()  # a new Application on the same database file
        await run_timeline(h)
        rows = await all_rows(h)
        texts = [m.text for m in anna.inbox]

    assert [r.state for r in rows] == ["sent"] * len(TIMELINE)
    # Each step's text exactly once (the checklist arrived late, after the restart).
    assert sum(t.startswith("Your aftercare") for t in texts) == 1
    assert sum(t.startswith("Reminder: your session") for t in texts) == 1
    assert len(texts) == len(set(texts))


async def test_a_session_in_the_past_starts_the_aftercare_from_now(
    db_url: str, clock: FakeClock
) -> None:
    clock.set(datetime(2026, 11, 25, 14, 0, tzinfo=UTC))
    async with running(db_url, clock) as h:
        anna = await booked_patient(h, 504, "Anna", "I had it today at 11", "2026-11-25T11:00")
        first = anna.last()
        rows = {r.step: r.state for r in await all_rows(h)}
        checklist = (await command(h, anna, "/aftercare")).text
        await run_timeline(h)
        sent = [r.step for r in await all_rows(h) if r.state == "sent"]

    assert first.text.startswith("Your aftercare")
    assert rows["booked"] == "expired"
    assert all(rows[s] == "expired" for s in ("prep-3d", "prep-1d", "prep-2h"))
    assert rows["after-0"] == "sent" and rows["after-evening"] == "pending"
    assert "Washing or wetting your hair: allowed again at Thu 26 Nov, 11:45" in checklist
    assert sent == ["after-0", "after-evening", "after-24h", "after-3d", "after-7d"]
