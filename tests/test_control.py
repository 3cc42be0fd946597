"""/settings, /pause and /resume, /privacy, /delete, and blocking: through the real bot."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlmodel import SQLModel

from bot.offline.harness import Harness
from bot.offline.sandbox import SandboxUser
from scheduler.clock import FakeClock
from scheduler.models import PlannedMessage
from tests.e2e import command, onboarded, press, run_timeline, say
from tests.patient_flows import (
    booked_patient,
    bot,
    checkins_of,
    forge,
    messages_of,
    patient_of,
    sessions_of,
)


def due(rows: list[PlannedMessage], step: str) -> datetime:
    return next(r.due_at for r in rows if r.step == step and r.state == "pending")


async def in_settings(h: Harness, user: SandboxUser, *buttons: str) -> str:
    """/settings, then these buttons pressed in turn; the text of the bot's last message."""
    await say(h, user, "/settings")
    for data in buttons:
        await press(h, user, data)
    return user.last().text


async def test_settings_show_and_change_language(h: Harness) -> None:
    anna = await onboarded(h, 801, "Anna")
    summary = await in_settings(h, anna)
    await press(h, anna, "set:lang")
    await press(h, anna, "set:lang:en")
    chosen = anna.last().text
    await forge(h, anna, "set:lang:de")  # not offered (no catalog)
    refused = anna.answers[-1].text
    patient = await patient_of(h, anna)

    assert summary.splitlines() == [
        "Your settings",
        "Language: English",
        "Time zone: Europe/London",
        "Quiet hours: 22:00\N{EN DASH}08:00",
    ]
    assert chosen == "Language: English."
    assert refused == "This button is no longer active."
    assert patient is not None and patient.language == "en"


async def test_a_new_time_zone_replans_pending_local_time_steps(h: Harness) -> None:
    anna = await booked_patient(h, 802, "Anna", "3 Dec 14:30", "2026-12-03T14:30")
    before = await messages_of(h, anna)
    await in_settings(h, anna, "set:tz", "set:tz:type")
    unknown = (await command(h, anna, "Mars/Olympus_Mons")).text
    changed = (await command(h, anna, "Asia/Dubai")).text
    after = await messages_of(h, anna)
    (session,) = await sessions_of(h, anna)

    assert "I don't know that time zone" in unknown
    assert changed.startswith("Time zone: Asia/Dubai.")
    # The session is the same instant; "the day before at 18:00" follows the new clock.
    assert session.start_at == datetime(2026, 12, 3, 14, 30, tzinfo=UTC)
    assert due(before, "prep-1d") == datetime(2026, 12, 2, 18, 0, tzinfo=UTC)
    assert due(after, "prep-1d") == datetime(2026, 12, 2, 14, 0, tzinfo=UTC)  # 18:00 Dubai
    assert due(after, "after-24h") == due(before, "after-24h")  # an offset step: unchanged
    assert sum(r.state == "cancelled" for r in after) == sum(r.state == "pending" for r in before)
    assert [r.step for r in after if r.state == "sent"] == ["booked"]


async def test_new_patients_get_the_deployments_quiet_hours(db_url: str, clock: FakeClock) -> None:
    async with bot(db_url, clock, quiet_hours="21:00-07:00") as h:
        anna = await onboarded(h, 951, "Anna")
        patient = await patient_of(h, anna)
    assert patient is not None and (patient.quiet_start, patient.quiet_end) == ("21:00", "07:00")


async def test_new_quiet_hours_replan_pending_steps(h: Harness) -> None:
    anna = await booked_patient(h, 803, "Anna", "3 Dec 06:00", "2026-12-03T06:00")
    before = await messages_of(h, anna)
    none = await in_settings(h, anna, "set:quiet", "set:q:none")
    after_none = await messages_of(h, anna)
    await in_settings(h, anna, "set:quiet", "set:q:type")
    unreadable = (await command(h, anna, "25:00-07:00")).text
    typed = (await command(h, anna, "23:30 - 6")).text
    patient = await patient_of(h, anna)

    # 04:00 is in the night (22:00-08:00): the reminder comes the evening before instead.
    assert due(before, "prep-2h") == datetime(2026, 12, 2, 21, 59, tzinfo=UTC)
    assert none == "Quiet hours: none. Your planned reminders are adjusted."
    assert due(after_none, "prep-2h") == datetime(2026, 12, 3, 4, 0, tzinfo=UTC)
    assert "could not read" in unreadable
    assert typed.startswith("Quiet hours: 23:30\N{EN DASH}06:00.")
    assert patient is not None and (patient.quiet_start, patient.quiet_end) == ("23:30", "06:00")


@pytest.mark.slow  # steps through eight days of a paused timeline (about 1.3 s)
async def test_nothing_is_sent_while_paused_and_on_resume_only_what_still_helps(
    h: Harness,
) -> None:
    anna = await booked_patient(h, 804, "Anna", "3 Dec 14:30", "2026-12-03T14:30")
    paused = (await command(h, anna, "/pause")).text
    again = (await command(h, anna, "/pause")).text
    count = anna.sent_count
    await run_timeline(h, until=datetime(2026, 12, 3, 13, 0, tzinfo=UTC))
    silent = anna.sent_count == count
    await say(h, anna, "/resume")
    resumed = anna.inbox[-2:]
    rows = {(r.step, r.state) for r in await messages_of(h, anna)}
    not_paused = (await command(h, anna, "/resume")).text

    assert paused.startswith("Reminders are paused")
    assert again.startswith("Reminders are already paused")
    assert silent
    assert resumed[0].text.startswith("Reminders are on again")
    assert resumed[1].text.startswith("Reminder: your session is on Thu 3 Dec, 14:30")
    assert {("prep-3d", "expired"), ("prep-1d", "expired"), ("prep-2h", "sent")} <= rows
    assert not_paused.startswith("Reminders are not paused")


async def test_privacy_says_what_why_how_long_and_how_to_erase(h: Harness) -> None:
    anna = h.patient(805, "Anna")
    text = (await command(h, anna, "/privacy")).text

    for words in ("What I keep", "Why", "How long", "/delete"):
        assert words in text


async def _scan(h: Harness, values: dict[str, int], patient_id: int) -> list[str]:
    """Every cell of every table that holds one of `values` (or the patient id, in a column
    that refers to patients)."""
    assert h.services is not None
    found = []
    async with h.services.engine.connect() as connection:
        for table in SQLModel.metadata.sorted_tables:
            rows = (await connection.execute(sa.select(table))).mappings().all()
            patient_columns = {c.name for c in table.columns if "patient" in c.name} | {
                fk.parent.name for fk in table.foreign_keys if fk.column.table.name == "patient"
            }
            if table.name == "patient":
                patient_columns.add("id")
            for row in rows:
                for column, cell in row.items():
                    for name, value in values.items():
                        if cell == value or str(value) in str(cell):
                            found.append(f"{table.name}.{column} holds the {name}")
                    if column in patient_columns and cell == patient_id:
                        found.append(f"{table.name}.{column} holds the patient id")
    return found


async def test_delete_erases_every_row_about_the_patient_and_start_begins_afresh(
    h: Harness,
) -> None:
    bob = await booked_patient(h, 806, "Bob", "4 Dec 10:00", "2026-12-04T10:00")
    anna = await booked_patient(h, 777_123_456, "Anna", "3 Dec 14:30", "2026-12-03T14:30")
    rows = await messages_of(h, anna)
    await run_timeline(h, until=due(rows, "after-24h"))
    checkin = next(r.id for r in await messages_of(h, anna) if r.step == "after-24h")
    await press(h, anna, f"ci:{checkin}:other")
    await say(h, anna, "a note")
    assert len(await checkins_of(h, anna)) == 1
    patient = await patient_of(h, anna)
    assert patient is not None and patient.id is not None
    bob_before = await messages_of(h, bob)

    await say(h, anna, "/delete")
    await press(h, anna, "del:no")
    kept = anna.last().text
    assert await patient_of(h, anna) is not None
    await say(h, anna, "/delete")
    await press(h, anna, "del:yes")
    told = anna.last().text
    leftovers = await _scan(h, {"user id": 777_123_456, "chat id": anna.chat_id}, patient.id)
    bob_after = await messages_of(h, bob)
    await say(h, anna, "/start")
    fresh = anna.last()
    again = await patient_of(h, anna)

    assert kept == "Nothing was erased."
    assert told.startswith("Everything I held about you has been erased")
    assert leftovers == []
    assert [r.id for r in bob_after] == [r.id for r in bob_before]
    assert "May I send you reminders?" in fresh.text
    assert again is not None and again.consent_at is None
    assert again.created_at > patient.created_at


async def test_a_blocked_patient_gets_nothing_and_continues_when_back(h: Harness) -> None:
    anna = await booked_patient(h, 807, "Anna", "3 Dec 14:30", "2026-12-03T14:30")
    count = anna.sent_count
    anna.block()
    await h.settle()
    blocked = await patient_of(h, anna)
    await run_timeline(h, until=datetime(2026, 12, 3, 12, 45, tzinfo=UTC))
    silent = anna.sent_count == count
    anna.unblock()
    await say(h, anna, "/start")
    back = await patient_of(h, anna)
    rows = {(r.step, r.state) for r in await messages_of(h, anna)}
    await run_timeline(h)
    final = await messages_of(h, anna)

    assert blocked is not None and blocked.blocked_at is not None
    assert silent
    assert back is not None and back.blocked_at is None
    # prep-3d and prep-1d were worth sending until 12:30; prep-2h until the session starts.
    assert ("prep-3d", "expired") in rows and ("prep-1d", "expired") in rows
    assert ("prep-2h", "cancelled") in rows  # by the block, then planned again:
    sent = [r.step for r in final if r.state == "sent"]
    assert sent == ["booked", "prep-2h", "after-0", "after-evening", "after-24h", "after-3d",
                    "after-7d"]  # fmt: skip


async def test_a_403_marks_the_patient_blocked_and_a_new_message_brings_them_back(
    h: Harness,
) -> None:
    anna = await booked_patient(h, 808, "Anna", "3 Dec 14:30", "2026-12-03T14:30")
    anna.blocked = True  # blocked without the bot being told: the next send gets a 403
    await run_timeline(h, until=datetime(2026, 11, 30, 11, 0, tzinfo=UTC))
    blocked = await patient_of(h, anna)
    pending_while_blocked = [r for r in await messages_of(h, anna) if r.state == "pending"]
    anna.blocked = False
    await say(h, anna, "hello again")
    back = await patient_of(h, anna)
    pending_after = [r.step for r in await messages_of(h, anna) if r.state == "pending"]
    await h.advance(timedelta(days=10))

    assert blocked is not None and blocked.blocked_at is not None
    assert pending_while_blocked == []
    assert back is not None and back.blocked_at is None
    assert pending_after[0] == "prep-1d"
