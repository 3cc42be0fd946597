"""/sessions: move and cancel a session; the timeline follows, nothing is sent twice."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from bot.offline.harness import Harness
from tests.e2e import answer_screening, command, press, run_timeline, say
from tests.patient_flows import book_another, booked_patient, forge, messages_of, sessions_of


async def test_moving_a_session_replans_it_and_never_resends_a_step(h: Harness) -> None:
    anna = await booked_patient(h, 601, "Anna", "3 Dec 14:30", "2026-12-03T14:30")
    # Up to 1 Dec: the booking confirmation and prep-3d (30 Nov 10:00) were sent.
    await run_timeline(h, until=datetime(2026, 12, 1, 9, 0, tzinfo=UTC))
    sent_before = {r.step for r in await messages_of(h, anna) if r.state == "sent"}
    assert sent_before == {"booked", "prep-3d"}
    (session,) = await sessions_of(h, anna)

    await say(h, anna, "/sessions")
    assert "Thu 3 Dec, 14:30 — booked" in anna.last().text
    await press(h, anna, f"ses:mv:{session.id}")
    assert "When is the new time?" in anna.last().text
    await say(h, anna, "10 Dec 15:00")
    assert "Move your session to" in anna.last().text
    await press(h, anna, "ok:2026-12-10T15:00")
    # The new date brings its own date question (a period on that day).
    assert await answer_screening(h, anna) == ["menstruating_on_session_date"]
    moved = anna.inbox[-2].text
    plan = anna.last().text

    rows = await messages_of(h, anna)
    (session,) = await sessions_of(h, anna)
    await run_timeline(h)
    final = await messages_of(h, anna)

    assert "Thu 10 Dec, 15:00" in moved
    assert "Wed 9 Dec, 18:00" in plan  # prep-1d of the new date
    assert session.start_at == datetime(2026, 12, 10, 15, 0, tzinfo=UTC)
    states = Counter((r.step, r.state) for r in rows)
    # The old pending rows are cancelled; the new ones pending; sent ones untouched.
    assert states[("prep-1d", "cancelled")] == 1 and states[("prep-1d", "pending")] == 1
    assert ("prep-3d", "pending") not in states and ("booked", "pending") not in states
    sent = Counter(r.step for r in final if r.state == "sent")
    assert all(n == 1 for n in sent.values()), sent
    assert set(sent) == {
        "booked", "prep-3d", "prep-1d", "prep-2h", "after-0", "after-evening", "after-24h",
        "after-3d", "after-7d",
    }  # fmt: skip
    after_0 = next(r for r in final if r.step == "after-0" and r.state == "sent")
    assert after_0.sent_at == datetime(2026, 12, 10, 15, 45, tzinfo=UTC)


async def test_a_move_into_the_past_or_onto_another_session_is_refused(h: Harness) -> None:
    anna = await booked_patient(h, 602, "Anna", "3 Dec 14:30", "2026-12-03T14:30")
    await book_another(h, anna, "8 Dec 11:00", "2026-12-08T11:00")
    first, second = await sessions_of(h, anna)
    await say(h, anna, "/sessions")
    await press(h, anna, f"ses:mv:{first.id}")
    await say(h, anna, "yesterday 10:00")
    await press(h, anna, "ok:2026-11-24T10:00")
    past = anna.last().text
    await say(h, anna, "8 Dec 11:15")
    await press(h, anna, "ok:2026-12-08T11:15")
    clash = anna.last().text
    unchanged = await sessions_of(h, anna)

    assert "already passed" in past
    assert "another session at that time" in clash
    assert [s.start_at for s in unchanged] == [first.start_at, second.start_at]


async def test_cancelling_asks_first_then_cancels_every_pending_message(h: Harness) -> None:
    anna = await booked_patient(h, 603, "Anna", "3 Dec 14:30", "2026-12-03T14:30")
    (session,) = await sessions_of(h, anna)
    await say(h, anna, "/sessions")
    await press(h, anna, f"ses:cx:{session.id}")
    assert "Cancel your session of" in anna.last().text
    await press(h, anna, f"ses:cn:{session.id}")
    assert anna.last().text == "All right, nothing changed."
    assert {r.state for r in await messages_of(h, anna)} == {"sent", "pending"}
    await say(h, anna, "/sessions")
    await press(h, anna, f"ses:cx:{session.id}")
    await press(h, anna, f"ses:cy:{session.id}")
    cancelled = anna.last().text
    before = anna.sent_count
    await run_timeline(h, until=datetime(2026, 12, 20, tzinfo=UTC))
    rows = await messages_of(h, anna)
    (session,) = await sessions_of(h, anna)
    listing = (await command(h, anna, "/sessions")).text

    assert "is cancelled" in cancelled
    assert session.state == "cancelled"
    assert Counter(r.state for r in rows) == {"sent": 1, "cancelled": 8}
    assert anna.sent_count == before + 1  # only the /sessions answer
    assert "cancelled" in listing and "No upcoming session" in listing


async def test_another_patients_session_cannot_be_moved_or_cancelled(h: Harness) -> None:
    anna = await booked_patient(h, 604, "Anna", "3 Dec 14:30", "2026-12-03T14:30")
    bob = await booked_patient(h, 605, "Bob", "4 Dec 10:00", "2026-12-04T10:00")
    (anna_session,) = await sessions_of(h, anna)
    before = await messages_of(h, anna)
    for data in (f"ses:cy:{anna_session.id}", f"ses:mv:{anna_session.id}", "ses:cy:999999"):
        await forge(h, bob, data)
        assert bob.answers[-1].text == "This button is no longer active."
    await book_another(h, bob, "5 Dec 10:00", "2026-12-05T10:00")  # no move started
    after = await messages_of(h, anna)
    (anna_after,) = await sessions_of(h, anna)
    bob_sessions = await sessions_of(h, bob)

    assert anna_after.state == "booked" and anna_after.start_at == anna_session.start_at
    assert [(r.id, r.state, r.due_at) for r in after] == [
        (r.id, r.state, r.due_at) for r in before
    ]
    assert len(bob_sessions) == 2
