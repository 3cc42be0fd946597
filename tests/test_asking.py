"""What the patient can ask at any time: /aftercare, /reminders (and earlier ones), /prep,
/help and the command menu."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from bot.offline.harness import Harness
from tests.e2e import book, command, onboarded, press, run_timeline
from tests.patient_flows import booked_patient


async def test_aftercare_is_a_live_checklist_from_the_latest_session(h: Harness) -> None:
    anna = await onboarded(h, 901, "Anna")
    no_session = (await command(h, anna, "/aftercare")).text
    await book(h, anna, "3 Dec 14:30", "2026-12-03T14:30")
    not_yet = (await command(h, anna, "/aftercare")).text
    await h.advance_to(datetime(2026, 12, 4, 18, 0, tzinfo=UTC))  # the day after
    day_after = (await command(h, anna, "/aftercare")).text
    await h.advance_to(datetime(2026, 12, 12, 9, 0, tzinfo=UTC))
    all_clear = (await command(h, anna, "/aftercare")).text

    assert no_session.startswith("You have no session yet")
    assert "starts after your session on Thu 3 Dec, 14:30" in not_yet
    assert day_after.splitlines()[:5] == [
        "Your aftercare after your session of Thu 3 Dec, 14:30 (your time; it counts from"
        " about 15:15, when the session ended):",
        "✅ Washing or wetting your hair: allowed again",
        "✅ Heavy workouts and sweating: allowed again",
        "⏳ Pools, saunas and direct sunlight: allowed again at Thu 10 Dec, 15:15",
        "⏳ Alcohol: allowed again at Sun 6 Dec, 15:15",
    ]
    assert all_clear.startswith("✅ All clear.")


async def test_reminders_lists_what_is_planned_and_on_request_what_was_sent(h: Harness) -> None:
    anna = await booked_patient(h, 902, "Anna", "3 Dec 14:30", "2026-12-03T14:30")
    await run_timeline(h, until=datetime(2026, 12, 3, 13, 0, tzinfo=UTC))
    planned = (await command(h, anna, "/reminders")).text
    await press(h, anna, "rem:past")
    past = anna.last().text

    assert planned.splitlines()[0] == "Planned reminders (your time, Europe/London):"
    assert "• Thu 3 Dec, 15:15 — Aftercare checklist" in planned
    assert "Your session is soon" not in planned  # sent at 12:30: no longer planned
    assert past.splitlines()[0] == "Earlier reminders (your time, Europe/London):"
    assert "• Wed 25 Nov, 09:00 — Booking confirmation (sent)" in past
    assert "— Your session is soon (sent)" in past


async def test_prep_help_and_the_menu(h: Harness) -> None:
    anna = await booked_patient(h, 903, "Anna", "3 Dec 14:30", "2026-12-03T14:30")
    prep = (await command(h, anna, "/prep")).text
    help_text = (await command(h, anna, "/help")).text
    menu = h.api.commands[(json.dumps({"type": "default"}), "")]

    assert prep.startswith("Your session is booked: Thu 3 Dec, 14:30")
    commands = [c["command"] for c in menu]
    assert commands[:2] == ["book", "sessions"]
    for name in commands:
        assert f"/{name}" in help_text
    assert {"aftercare", "settings", "pause", "resume", "privacy", "delete"} <= set(commands)
