"""Two patients interleaving their flows never see each other's data."""

from __future__ import annotations

from datetime import UTC, datetime

from bot.offline.harness import Harness
from tests.e2e import answer_screening, press, run_timeline, say
from tests.patient_flows import checkins_of, messages_of, sessions_of


async def test_interleaved_flows_stay_apart(h: Harness) -> None:
    assert h.services is not None
    anna, bob = h.patient(1101, "Anna"), h.patient(1102, "Bob")
    for user in (anna, bob):
        await say(h, user, "/start")
    for user in (bob, anna):
        await press(h, user, "consent:yes")
    await press(h, anna, "tz:keep")
    await press(h, bob, "tz:set:Asia/Dubai")
    await say(h, anna, "3 Dec 14:30")
    await say(h, bob, "4 Dec 10:00")
    await press(h, bob, "ok:2026-12-04T10:00")
    await press(h, anna, "ok:2026-12-03T14:30")
    # Their health questions interleave too.
    for key in ("pregnant_or_breastfeeding", "menstruating_on_session_date"):
        await press(h, anna, f"scr:{key}:no")
        await press(h, bob, f"scr:{key}:{'yes' if key.startswith('preg') else 'no'}")
    await answer_screening(h, anna)
    await answer_screening(h, bob)
    # Anna starts moving her session; Bob types a date meanwhile: his stays a booking.
    (anna_session,) = await sessions_of(h, anna)
    await say(h, anna, "/sessions")
    await press(h, anna, f"ses:mv:{anna_session.id}")
    await say(h, bob, "/book")
    await say(h, bob, "10 Dec 9:00")
    await say(h, anna, "9 Dec 16:00")
    await press(h, anna, "ok:2026-12-09T16:00")
    await press(h, bob, "ok:2026-12-10T09:00")
    await answer_screening(h, anna)
    await answer_screening(h, bob)
    for user in (anna, bob):
        for command in ("/sessions", "/reminders", "/aftercare", "/settings"):
            await say(h, user, command)
    await run_timeline(h, until=datetime(2026, 12, 10, 17, 0, tzinfo=UTC))
    anna_checkin = next(
        r.id for r in await messages_of(h, anna) if r.step == "after-24h" and r.state == "sent"
    )
    bob_checkin = next(
        r.id for r in await messages_of(h, bob) if r.step == "after-24h" and r.state == "sent"
    )
    await press(h, bob, f"ci:{bob_checkin}:pain")
    await press(h, anna, f"ci:{anna_checkin}:all_good")
    anna_sessions = await sessions_of(h, anna)
    bob_sessions = await sessions_of(h, bob)
    anna_checkins = await checkins_of(h, anna)
    bob_checkins = await checkins_of(h, bob)

    assert [s.start_at for s in anna_sessions] == [datetime(2026, 12, 9, 16, 0, tzinfo=UTC)]
    # Bob's zone is Dubai (UTC+4): his sessions at 10:00 and 09:00 his time.
    assert [s.start_at for s in bob_sessions] == [
        datetime(2026, 12, 4, 6, 0, tzinfo=UTC),
        datetime(2026, 12, 10, 5, 0, tzinfo=UTC),
    ]
    assert bob_sessions[0].flagged and not anna_sessions[0].flagged
    assert [c.option for c in anna_checkins] == ["all_good"]
    assert [c.option for c in bob_checkins] == ["pain"]
    anna_text = "\n".join(m.text for m in anna.inbox)
    bob_text = "\n".join(m.text for m in bob.inbox)
    for foreign in (
        "Bob",
        "Asia/Dubai",
        "Fri 4 Dec, 10:00",
        "Thu 10 Dec, 09:00",
        "see a physician",
    ):
        assert foreign not in anna_text, foreign
    for foreign in ("Anna", "Europe/London", "Thu 3 Dec, 14:30", "Wed 9 Dec, 16:00"):
        assert foreign not in bob_text, foreign
