"""Course and maintenance plans: course-next, cancelled by the next booking, maintenance,
the staff's /due list, and the patient's opt-out from recurring maintenance."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from scheduler import clinics
from scheduler.clock import FakeClock
from tests.clinic_side import patient_row, with_staff
from tests.e2e import (
    all_rows,
    book,
    command,
    onboard,
    onboarded,
    pending,
    press,
    run_timeline,
)
from tests.patient_flows import book_another, forge


@pytest.mark.slow  # four months of timeline, step by step
async def test_a_course_plans_course_next_then_maintenance_until_the_patient_opts_out(
    db_url: str, clock: FakeClock
) -> None:
    async with with_staff(db_url, clock) as (h, staff):
        anna, ben = h.patient(901, "Anna"), h.patient(902, "Ben")
        await onboard(h, anna)
        await onboard(h, ben)
        anna_id = (await patient_row(h, anna)).id
        usage = (await command(h, staff, f"/course {anna_id} mild 7")).text
        set_reply = (await command(h, staff, f"/course {anna_id} mild 2")).text

        await book(h, anna, "3 Dec 14:30", "2026-12-03T14:30")
        first = {r.step: r for r in await pending(h) if r.patient_id == anna_id}
        assert "course-next" in first and not any(s.startswith("maint") for s in first)
        assert first["course-next"].due_at == datetime(2026, 12, 15, 10, 0, tzinfo=UTC)

        await book_another(h, anna, "17 Dec 14:30", "2026-12-17T14:30")
        rows = {(r.session_id, r.step): r.state for r in await all_rows(h)}
        first_session = first["course-next"].session_id
        assert rows[(first_session, "course-next")] == "cancelled"
        second = {r.step: r for r in await pending(h) if r.session_id != first_session}
        assert "course-next" not in second
        assert second["maintenance-3mo"].due_at == datetime(2027, 3, 17, 10, 0, tzinfo=UTC)
        due_before = (await command(h, staff, "/due")).text

        await run_timeline(h, until=datetime(2027, 3, 17, 10, 0, tzinfo=UTC))
        reminder = anna.last()
        reminder_text, ((label, data),) = reminder.text, reminder.buttons[0]
        due_then = (await command(h, staff, "/due")).text
        maintenance = next(r for r in await pending(h) if r.step == "maintenance-4mo")
        # Only Anna may stop her reminders: Ben's forged press changes nothing.
        await forge(h, ben, f"mnt:stop:{maintenance.id}")
        assert any(r.step == "maintenance-4mo" for r in await pending(h))
        await press(h, anna, data)
        stopped = anna.last().text
        left = [r.step for r in await pending(h)]
        due_after = (await command(h, staff, "/due")).text

    assert usage.startswith("That plan has 1 to 2 sessions")
    assert set_reply.startswith(f"Patient #{anna_id}: mild plan, 2 sessions.")
    assert due_before == "Nobody is due for maintenance right now."
    assert reminder_text.startswith("It has been 3 months since your last session")
    assert label == "No more maintenance reminders"
    assert reminder.buttons == []  # the button is gone once pressed
    assert "Anna" in due_then and "last session Thu 17 Dec" in due_then
    assert stopped.startswith("All right: no more maintenance reminders.")
    assert "maintenance-4mo" not in left
    assert due_after == "Nobody is due for maintenance right now."


async def test_course_next_names_the_due_date_and_maintenance_recurs(
    db_url: str, clock: FakeClock
) -> None:
    async with with_staff(db_url, clock) as (h, staff):
        anna = await onboarded(h, 911, "Anna")
        anna_id = (await patient_row(h, anna)).id
        await command(h, staff, f"/course {anna_id} noticeable 4")
        assert h.services is not None
        async with h.services.sessions() as db, db.begin():
            values: dict[str, str | None] = {"booking_url": "https://book.example/clinic"}
            await clinics.edit_clinic(session=db, slug="default", values=values)
        await book(h, anna, "3 Dec 14:30", "2026-12-03T14:30")
        await run_timeline(h, until=datetime(2026, 12, 15, 10, 0, tzinfo=UTC))
        course_next, buttons = anna.last().text, anna.last().buttons
        # A maintenance course: every session is followed by maintenance reminders.
        await command(h, staff, f"/course {anna_id} maintenance")
        await book_another(h, anna, "17 Dec 14:30", "2026-12-17T14:30")
        steps = sorted(r.step for r in await pending(h) if r.step.startswith("maint"))

    assert course_next.startswith("Your next session of the course is due on Thu 17 Dec")
    assert buttons == [[("Book online", "https://book.example/clinic")]]
    assert steps == ["maintenance-3mo", "maintenance-4mo"]
