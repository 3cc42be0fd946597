"""Maintenance broadcasts: compose, preview, audience, confirm, live progress, report.

Through the real Application and the sandbox: the staff member writes /broadcast, presses
the audience and Send buttons; the dispatcher delivers the rows like any reminder.
"""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlmodel import func, select

from scheduler import broadcast
from scheduler.clock import FakeClock
from scheduler.db import SessionFactory
from scheduler.models import (
    Broadcast,
    BroadcastRecipient,
    Clinic,
    Course,
    CourseSession,
    Invite,
    Patient,
    PlannedMessage,
    Priority,
)
from tests.clinic_side import (
    broadcast_rows,
    broadcasts,
    fast_settings,
    patient_row,
    payload_in,
    texts_of,
    with_staff,
)
from tests.e2e import command, onboard, onboarded, opened_link, press, running, say
from tests.patient_flows import forge


async def test_a_broadcast_reaches_each_reachable_patient_once_with_progress_and_report(
    db_url: str, clock: FakeClock
) -> None:
    async with with_staff(db_url, clock, broadcast_progress_seconds=0) as (h, staff):
        anna, ben, carl, dora, emil = (
            h.patient(601, "Anna"),
            h.patient(602, "Ben"),
            h.patient(603, "Carl"),
            h.patient(604, "Dora"),
            h.patient(605, "Emil"),
        )
        for user in (anna, ben, carl, dora):
            await onboard(h, user)
        # Ben's night (Los Angeles): his copy waits for his morning, Anna's goes at once.
        assert h.services is not None
        async with h.services.sessions() as db, db.begin():
            ben_row = await patient_row(h, ben)
            ben_row.timezone = "America/Los_Angeles"
            db.add(ben_row)
        await say(h, carl, "/pause")  # paused: not reached
        dora.block()  # blocked the bot: not reached
        await h.settle()
        await say(h, emil, "/start")
        await press(h, emil, "consent:no")  # no consent: not reached
        before = {u.user_id: len(u.inbox) for u in (anna, ben, carl, dora, emil)}

        menu = await command(h, staff, "/broadcast Time for your maintenance <session>!")
        assert "Who should receive it?" in menu.text
        labels = [label for row in menu.buttons for label, _ in row]
        assert "All active patients (2)" in labels
        (draft,) = await broadcasts(h)
        await press(h, staff, f"st:ba:{draft.id}:active")
        preview = staff.last()
        assert preview.message_id == menu.message_id  # the same message, edited
        menu_text, preview_text = preview.history[-1], preview.text
        assert "Preview" in preview.text
        assert "Time for your maintenance <session>!" in preview.text  # escaped, shown as typed
        assert "Recipients: 2 (all active patients)" in preview.text
        await press(h, staff, f"st:bs:{draft.id}:active")
        progress = staff.message(preview.message_id)
        # A second press of Send (a stale or forged button) plans nothing more.
        await forge(h, staff, f"st:bs:{draft.id}:active")
        assert "Sent 1 · blocked 0 · failed 0 · remaining 1" in progress.text
        await h.advance_to(datetime(2026, 11, 25, 16, 0, tzinfo=UTC))  # 08:00 in Los Angeles
        rows = await broadcast_rows(h)
        report = staff.last()

    assert sorted(r.patient_id for r in rows) == sorted({r.patient_id for r in rows})
    assert len(rows) == 2 and {r.state for r in rows} == {"sent"}
    assert {r.priority for r in rows} == {Priority.BROADCAST}
    for user in (anna, ben):
        received = texts_of(user, before[user.user_id])
        assert received == ["Test Clinic\n\nTime for your maintenance <session>!"]
    for user in (carl, dora, emil):
        assert texts_of(user, before[user.user_id]) == []
    # Live progress: the same message, edited as rows were sent, then the final counts.
    assert progress.history[:2] == [menu_text, preview_text]
    counts = [t.split("\n")[1] for t in progress.history[2:]]
    assert counts[0] == "Sent 0 · blocked 0 · failed 0 · remaining 2"
    assert "Sent 1 · blocked 0 · failed 0 · remaining 1" in counts
    assert "finished" in progress.text and "Sent 2 · blocked 0 · failed 0" in progress.text
    assert report.text.startswith(f"Report of broadcast #{draft.id}")
    assert "Sent: 2" in report.text and "Blocked the bot: 0" in report.text


async def test_a_broadcast_waits_for_the_morning_survives_a_restart_and_counts_blocks(
    db_url: str, clock: FakeClock
) -> None:
    clock.set(datetime(2026, 11, 25, 22, 30, tzinfo=UTC))  # 22:30 in London: quiet hours
    async with with_staff(db_url, clock) as (h, staff):
        anna, ben = h.patient(611, "Anna"), h.patient(612, "Ben")
        await onboard(h, anna)
        await onboard(h, ben)
        await say(h, staff, "/broadcast Book your maintenance session")
        (draft,) = await broadcasts(h)
        await press(h, staff, f"st:ba:{draft.id}:active")
        await press(h, staff, f"st:bs:{draft.id}:active")
        progress_id = staff.last().message_id
        assert "remaining 2" in staff.last().text
        rows = await broadcast_rows(h)
        assert {r.due_at for r in rows} == {datetime(2026, 11, 26, 8, 0, tzinfo=UTC)}
        anna_before = len(anna.inbox)

        await h.restart_bot()
        ben.block()
        await h.settle()
        await h.advance_to(datetime(2026, 11, 26, 8, 0, tzinfo=UTC))
        final = staff.message(progress_id).text
        report = staff.last().text
        (done,) = await broadcasts(h)
        rows = await broadcast_rows(h)

    assert texts_of(anna, anna_before) == ["Test Clinic\n\nBook your maintenance session"]
    assert sorted(r.state for r in rows) == ["cancelled", "sent"]  # Ben blocked the bot
    assert done.state == "done"
    assert "Sent 1 · blocked 1 · failed 0" in final
    assert "Sent: 1" in report and "Blocked the bot: 1" in report


async def test_broadcast_cancel_and_empty_text(db_url: str, clock: FakeClock) -> None:
    async with with_staff(db_url, clock) as (h, staff):
        anna = await onboarded(h, 621, "Anna")
        before = len(anna.inbox)
        usage = await command(h, staff, "/broadcast")
        await say(h, staff, "/broadcast Hello")
        (draft,) = await broadcasts(h)
        await press(h, staff, f"st:ba:{draft.id}:due")
        nobody = staff.last().text
        await press(h, staff, f"st:bx:{draft.id}")
        cancelled = staff.last().text
        await forge(h, staff, f"st:bs:{draft.id}:active")
        rows = await broadcast_rows(h)

    assert "Write the message after the command" in usage.text
    assert nobody.startswith("Nobody is in that audience")
    assert cancelled.startswith("Broadcast cancelled")
    assert rows == []
    assert len(anna.inbox) == before


@pytest.mark.slow
async def test_aftercare_broadcast_from_the_command_line_is_sent_by_the_running_bot(
    db_url: str, clock: FakeClock, tmp_path: Path
) -> None:
    async with running(db_url, clock, **fast_settings()) as h:
        anna = await onboarded(h, 631, "Anna")
        before = len(anna.inbox)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AFTERCARE_")}
        env["AFTERCARE_DATABASE_URL"] = db_url
        env["AFTERCARE_CLINIC_NAME"] = "Test Clinic"
        args = ["--text", "Hello from the desk", "--audience", "active", "--yes"]
        # The command line plans the rows, then follows them until the bot has sent them all.
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            "broadcast",
            *args,
            env=env,
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert h.services is not None
        assert proc.stdout is not None
        head = b""
        async with asyncio.timeout(60):  # until it says the rows are planned (committed)
            while b" planned; " not in head:
                line = await proc.stdout.readline()
                assert line, "the command ended early"
                head += line
        planned = await broadcast_rows(h)
        # It planned at the system time; the test's clock catches up with it.
        await h.advance_to(max(planned[0].due_at, clock.now()))
        async with asyncio.timeout(60):
            out, err = await proc.communicate()
        rows = await broadcast_rows(h)

    assert proc.returncode == 0, err.decode()
    stdout = (head + out).decode()
    assert "Recipients: 1 (active)." in stdout
    assert "broadcast #1: 1 message planned" in stdout
    assert stdout.rstrip().endswith("sent 1, blocked 0, failed 0")
    assert texts_of(anna, before) == ["Test Clinic\n\nHello from the desk"]
    assert [r.state for r in rows] == ["sent"]


async def test_erasing_a_patient_erases_their_clinic_side_rows(
    db_url: str, clock: FakeClock
) -> None:
    async with with_staff(db_url, clock) as (h, staff):
        qr = await command(h, staff, "/invite 3 Dec 14:30")
        pia = await opened_link(h, 641, "Pia", payload_in(qr))
        await press(h, pia, "consent:yes")
        pia_id = (await patient_row(h, pia)).id
        await command(h, staff, f"/course {pia_id} mild 2")
        await say(h, staff, "/broadcast Hello")
        (draft,) = await broadcasts(h)
        await press(h, staff, f"st:ba:{draft.id}:active")
        await press(h, staff, f"st:bs:{draft.id}:active")
        await say(h, pia, "/delete")
        await press(h, pia, "del:yes")
        assert h.services is not None
        async with h.services.sessions() as db:
            left = {
                table: (await db.exec(select(func.count()).select_from(model))).one()
                for table, model in (
                    ("course", Course),
                    ("course_session", CourseSession),
                    ("broadcast_recipient", BroadcastRecipient),
                    ("invite", Invite),
                )
            }

    assert left == {"course": 0, "course_session": 0, "broadcast_recipient": 0, "invite": 0}


async def test_a_broadcast_row_is_rendered_only_for_a_consenting_patient_of_its_clinic(
    sessions: SessionFactory, clock: FakeClock
) -> None:
    """`broadcast.compose`, a batch at a time: each row its patient's text, with the paid flag
    of the clinic that allows it; nothing for a patient who withdrew consent, for another
    clinic's patient, or for a broadcast that is gone."""
    now = clock.now()
    async with sessions() as db, db.begin():
        paying = Clinic(slug="p", name="Paying", timezone="UTC", created_at=now)
        other = Clinic(slug="o", name="Other", timezone="UTC", created_at=now)
        paying.allow_paid_broadcast = True
        db.add_all([paying, other])
        await db.flush()
        assert paying.id is not None and other.id is not None

        def patient(user: int, clinic_id: int, *, consent: bool = True) -> Patient:
            return Patient(
                clinic_id=clinic_id,
                tg_user_id=user,
                chat_id=user + 1000,
                language="fa" if user == 2 else "en",
                timezone="UTC",
                consent_at=now if consent else None,
                created_at=now,
            )

        people = [
            patient(1, paying.id),
            patient(2, paying.id),
            patient(3, paying.id, consent=False),
            patient(4, other.id),
        ]
        sent = Broadcast(clinic_id=paying.id, created_by=7, text="Hello", created_at=now)
        db.add_all([*people, sent])
        await db.flush()
        assert sent.id is not None

        def row(row_id: int, who: Patient, broadcast_id: int) -> PlannedMessage:
            assert who.id is not None
            return PlannedMessage(
                id=row_id,
                patient_id=who.id,
                step="broadcast",
                due_at=now,
                not_before=now,
                expires_at=now,
                extra={"broadcast_id": broadcast_id},
                created_at=now,
            )

        rows = [row(i, who, sent.id) for i, who in enumerate(people, start=1)]
        rows.append(row(5, people[0], sent.id + 1))  # no such broadcast
        found = await broadcast.compose(session=db, rows=rows)

    assert set(found) == {1, 2, 3, 4, 5}
    first, second = found[1], found[2]
    assert first is not None and second is not None
    assert (first.chat_id, first.paid_broadcast) == (1001, True)
    assert first.text == "<b>Paying</b>\n\nHello"
    assert second.chat_id == 1002 and "\u2068Hello\u2069" in second.text and second.paid_broadcast
    assert second.text != first.text  # in the patient's own language (Persian: isolated)
    assert found[3] is None and found[4] is None and found[5] is None
