"""Staff in Telegram: authorisation, two clinics kept apart, invites, the staff views.

Through the real Application and the sandbox. Staff of the default clinic come from the
settings (STAFF_ID); staff of another clinic join through a staff invite link.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlmodel import select

from bot.offline.harness import Harness
from bot.offline.sandbox import SandboxUser
from messages.protocol import default_protocol_path
from scheduler import clinics, invites
from scheduler.clock import FakeClock
from scheduler.models import CheckIn, Invite, StaffMember
from tests.clinic_side import (
    STAFF_ID,
    broadcast_rows,
    broadcasts,
    fast_settings,
    patient_row,
    payload_in,
    staff_of_new_clinic,
    texts_of,
    with_staff,
)
from tests.e2e import (
    answer_screening,
    book,
    command,
    finish_onboarding,
    onboarded,
    opened_link,
    pending,
    press,
    run_timeline,
    running,
    say,
)
from tests.patient_flows import booked_patient, forge
from tests.test_checkins import to_checkin

NOT_STAFF = "This command is for the clinic's staff."
STAFF_COMMANDS = (
    "/staff",
    "/patients",
    "/upcoming",
    "/due",
    "/alerts",
    "/broadcast Come back!",
    "/invite",
    "/invite 2026-12-03 14:30",
    "/course 1 mild",
)


async def test_a_patient_can_use_no_staff_command_nor_button(
    db_url: str, clock: FakeClock
) -> None:
    async with running(db_url, clock, **fast_settings()) as h:
        anna = await onboarded(h, 701, "Anna")
        replies = [(await command(h, anna, text)).text for text in STAFF_COMMANDS]
        staff = h.patient(STAFF_ID, "Sam")
        await say(h, staff, "/broadcast Hello")
        (draft,) = await broadcasts(h)
        answered = len(anna.answers)
        for data in ("st:pp:0", "st:al:1", f"st:ba:{draft.id}:active", f"st:bs:{draft.id}:active"):
            await forge(h, anna, data)
        toasts = [a.text for a in anna.answers[answered:]]
        rows = await broadcast_rows(h)

    assert replies == [NOT_STAFF] * len(STAFF_COMMANDS)
    assert toasts == [NOT_STAFF] * 4
    assert rows == []


async def test_staff_of_one_clinic_neither_see_nor_message_another_clinics_patients(
    db_url: str, clock: FakeClock
) -> None:
    async with running(db_url, clock, **fast_settings()) as h:
        north_staff, north = await staff_of_new_clinic(h, 801, "north", "North Clinic")
        assert "Welcome to the staff of North Clinic" in north_staff.inbox[0].text
        home_staff = h.patient(STAFF_ID, "Sam")

        # A patient of each clinic: Nina through North's link, Anna through the default.
        qr = await command(h, north_staff, "/invite")
        assert qr.photo is not None and (qr.photo_bytes or 0) > 100
        nina = await opened_link(h, 802, "Nina", payload_in(qr))
        assert "North Clinic" in nina.inbox[0].text
        await finish_onboarding(h, nina)
        anna = await onboarded(h, 803, "Anna")
        anna_row, nina_row = await patient_row(h, anna), await patient_row(h, nina)
        assert nina_row.clinic_id == north.id and anna_row.clinic_id != north.id

        north_list = (await command(h, north_staff, "/patients")).text
        home_list = (await command(h, home_staff, "/patients")).text

        # A report from Anna, which only her clinic's staff may see and handle.
        assert h.services is not None
        async with h.services.sessions() as db, db.begin():
            report = CheckIn(
                patient_id=anna_row.id or 0,
                option="urgent",
                red_flag=True,
                answered_at=clock.now(),
            )
            db.add(report)
        north_alerts = (await command(h, north_staff, "/alerts")).text
        await forge(h, north_staff, f"st:al:{report.id}")
        north_toast = north_staff.answers[-1].text
        refused_course = (await command(h, north_staff, f"/course {anna_row.id} mild")).text

        # The default clinic's draft cannot be sent by North's staff (forged callback data).
        await say(h, home_staff, "/broadcast Only for the home clinic")
        home_draft = (await broadcasts(h))[-1]
        anna_before, nina_before = len(anna.inbox), len(nina.inbox)
        await forge(h, north_staff, f"st:ba:{home_draft.id}:active")
        await forge(h, north_staff, f"st:bs:{home_draft.id}:active")
        assert await broadcast_rows(h) == []

        # North's own broadcast reaches North's patients only.
        menu = await command(h, north_staff, "/broadcast North news")
        assert "All active patients (1)" in [label for row in menu.buttons for label, _ in row]
        north_draft = (await broadcasts(h))[-1]
        await press(h, north_staff, f"st:ba:{north_draft.id}:active")
        await press(h, north_staff, f"st:bs:{north_draft.id}:active")
        rows = await broadcast_rows(h)

        home_alerts = await command(h, home_staff, "/alerts")
        home_alert_text = home_alerts.text
        await press(h, home_staff, f"st:al:{report.id}")
        async with h.services.sessions() as db:
            handled = await db.get(CheckIn, report.id)

    assert "Nina" in north_list and "Anna" not in north_list
    assert "Anna" in home_list and "Nina" not in home_list
    assert north_alerts == "No side-effect reports."
    assert north_toast == "This button is no longer active."
    assert refused_course == f"There is no patient #{anna_row.id} in your clinic."
    assert [r.patient_id for r in rows] == [nina_row.id]
    assert texts_of(anna, anna_before) == []
    assert texts_of(nina, nina_before) == ["North Clinic\n\nNorth news"]
    assert "Anna" in home_alert_text and "Not handled yet." in home_alert_text
    assert handled is not None and handled.handled_by == STAFF_ID
    assert "Handled at" in home_staff.message(home_alerts.message_id).text


async def test_a_staff_invite_works_once_and_expires(db_url: str, clock: FakeClock) -> None:
    async with running(db_url, clock, **fast_settings()) as h:
        first, north = await staff_of_new_clinic(h, 811, "north", "North Clinic")
        assert h.services is not None and north.id is not None
        async with h.services.sessions() as db, db.begin():
            used = (await db.exec(select(Invite).where(Invite.used_by == 811))).one()
            fresh = await invites.staff_invite(session=db, clinic_id=north.id, now=clock.now())
        second = h.patient(812, "Second")
        second.start(invites.payload_of(used))  # already used by the first
        await h.settle()
        clock.advance(timedelta(hours=25))
        third = h.patient(813, "Third")
        third.start(invites.payload_of(fresh))  # expired
        await h.settle()
        refused = (await command(h, third, "/patients")).text
        async with h.services.sessions() as db:
            members = (await db.exec(select(StaffMember.tg_user_id))).all()
        scope = json.dumps({"chat_id": 811, "type": "chat"}, sort_keys=True)
        menu = h.api.commands[(scope, "")]

    assert second.last().text.startswith("This staff link is unknown, already used or expired")
    assert third.inbox[0].text.startswith("This staff link is unknown, already used or expired")
    assert refused == NOT_STAFF
    assert list(members) == [811]
    assert first.inbox[1].text.startswith("Staff commands (North Clinic)")
    assert [c["command"] for c in menu][:4] == ["inbox", "patients", "upcoming", "due"]


async def test_a_per_booking_invite_books_the_session_before_the_patient_says_a_word(
    db_url: str, clock: FakeClock
) -> None:
    async with with_staff(db_url, clock) as (h, staff):
        qr = await command(h, staff, "/invite 3 Dec 14:30")
        assert qr.photo is not None
        assert "Thu 3 Dec, 14:30" in qr.text
        pia = await opened_link(h, 821, "Pia", payload_in(qr))
        await press(h, pia, "consent:yes")
        booked = [t for t in texts_of(pia) if "Your session is booked" in t]
        # The screening answers go to the booked session; no date is asked, and the period
        # question names the session's day.
        await press(h, pia, "tz:keep")
        asked = await answer_screening(h, pia, yes=("pregnant_or_breastfeeding",))
        period = next(t for t in texts_of(pia) if "your period" in t)
        screened = pia.last().text
        upcoming = (await command(h, staff, "/upcoming")).text
        # The link was for one patient: a second one lands in the clinic, with no session.
        other = await opened_link(h, 822, "Otto", payload_in(qr))
        await press(h, other, "consent:yes")
        other_booked = [t for t in texts_of(other) if "Your session is booked" in t]

    assert len(booked) == 1 and "Thu 3 Dec, 14:30" in booked[0]
    assert asked == [
        "pregnant_or_breastfeeding",
        "menstruating_on_session_date",
        "endocrine_disorder",
        "tumour_history",
    ]
    assert "Thu 3 Dec" in period
    assert screened.startswith("Thank you! Your session on Thu 3 Dec, 14:30 is booked")
    assert "Pia" in upcoming and "Thu 3 Dec, 14:30" in upcoming
    assert "screening: Pregnancy or breastfeeding" in upcoming
    assert other_booked == []


async def test_upcoming_shows_screening_flags_and_patients_pages(
    db_url: str, clock: FakeClock
) -> None:
    async with running(db_url, clock, **fast_settings()) as h:
        anna = await onboarded(h, 831, "Anna")
        await book(h, anna, "3 Dec 14:30", "2026-12-03T14:30", yes=("pregnant_or_breastfeeding",))
        for n in range(11):
            await say(h, h.patient(840 + n, f"P{n}"), "/start")
        staff = h.patient(STAFF_ID, "Sam")
        upcoming = (await command(h, staff, "/upcoming")).text
        page = await command(h, staff, "/patients")
        first_page = page.text
        first_buttons = staff.message(page.message_id).buttons
        await press(h, staff, first_buttons[0][0][1])
        second_page = staff.message(page.message_id).text
        second_buttons = staff.message(page.message_id).buttons
        await press(h, staff, second_buttons[0][0][1])
        back = staff.message(page.message_id).text
        stale = []
        for data in ("st:pp:x", "st:pp:1", "st:pp:o", "st:pp:ox"):
            await forge(h, staff, data)
            stale.append(staff.answers[-1].text)

    assert "Anna" in upcoming and "screening: Pregnancy or breastfeeding" in upcoming
    assert "Anna ⚠ — next session" in second_page
    assert "(page 1 of 2)" in first_page and first_page.count("\n#") == 10
    assert "(page 2 of 2)" in second_page and "Anna" in second_page
    # One way on from each end: older from the first page, newer from the last.
    assert [data[:7] for row in first_buttons for _, data in row] == ["st:pp:o"]
    assert [data[:7] for row in second_buttons for _, data in row] == ["st:pp:n"]
    assert back == first_page
    assert stale == ["This button is no longer active."] * 4


async def test_a_red_flag_alerts_the_staff_of_the_patients_clinic_only(
    db_url: str, clock: FakeClock
) -> None:
    async with running(db_url, clock, **fast_settings()) as h:
        north_staff, _ = await staff_of_new_clinic(h, 861, "north", "North Clinic")
        home_staff = h.patient(STAFF_ID, "Sam")
        link = await command(h, north_staff, "/invite")
        nina = await opened_link(h, 862, "Nina", payload_in(link))
        await finish_onboarding(h, nina)
        await book(h, nina, "3 Dec 14:30", "2026-12-03T14:30")
        await run_timeline(h, until=datetime(2026, 12, 4, 15, 15, tzinfo=UTC))
        checkin = next(m for m in reversed(nina.inbox) if m.buttons)
        urgent = next(d for row in checkin.buttons for _, d in row if d.endswith(":urgent"))
        north_before, home_before = len(north_staff.inbox), len(home_staff.inbox)
        await press(h, nina, urgent)
        alerts = (await command(h, north_staff, "/alerts")).text

    assert len(north_staff.inbox) == north_before + 3  # the alert, then /alerts' two messages
    assert "Nina" in north_staff.inbox[north_before].text
    assert len(home_staff.inbox) == home_before
    assert "Nina" in alerts and "Not handled yet." in alerts


async def patient_of_north(h: Harness, staff_id: int, patient_id: int, own: Path) -> SandboxUser:
    """North Clinic, planned by its own protocol file `own`; Nina, who opened its link to a
    session on 3 Dec at 14:30 and consented."""
    north_staff, _ = await staff_of_new_clinic(h, staff_id, "north", "North Clinic")
    assert h.services is not None
    async with h.services.sessions() as db, db.begin():
        values: dict[str, str | None] = {"protocol_file": str(own)}
        await clinics.edit_clinic(session=db, slug="north", values=values)
    link = await command(h, north_staff, "/invite 3 Dec 14:30")
    nina = await opened_link(h, patient_id, "Nina", payload_in(link))
    await press(h, nina, "consent:yes")
    return nina


async def test_a_clinic_with_its_own_protocol_file_plans_by_it(
    db_url: str, clock: FakeClock, tmp_path: Path
) -> None:
    own = tmp_path / "north.toml"
    text = default_protocol_path().read_text()
    assert 'when = "start-2h"' in text
    own.write_text(text.replace('when = "start-2h"', 'when = "start-3h"'))
    async with running(db_url, clock, **fast_settings()) as h:
        nina = await patient_of_north(h, 871, 872, own)
        anna = await booked_patient(h, 873, "Anna", "3 Dec 14:30", "2026-12-03T14:30")
        prep = {r.patient_id: r.due_at for r in await pending(h) if r.step == "prep-2h"}
        nina_id = (await patient_row(h, nina)).id or 0
        anna_id = (await patient_row(h, anna)).id or 0

    # North is in Berlin (14:30 there is 13:30 UTC): three hours before, by its own file.
    assert prep[nina_id] == datetime(2026, 12, 3, 10, 30, tzinfo=UTC)
    assert prep[anna_id] == datetime(2026, 12, 3, 12, 30, tzinfo=UTC)  # the default: 2 h


async def test_a_check_in_is_answered_by_the_patients_clinics_own_file(
    db_url: str, clock: FakeClock, tmp_path: Path
) -> None:
    """North's file makes "Nausea" a red flag: its patient's answer alerts North's staff and
    gives the patient the clinic's contact, as the button North's file drew promised."""
    own = tmp_path / "north.toml"
    text = default_protocol_path().read_text()
    assert text.count('key = "nausea"\n') == 1
    own.write_text(text.replace('key = "nausea"\n', 'key = "nausea"\nred_flag = "always"\n'))
    async with running(db_url, clock, **fast_settings()) as h:
        nina = await patient_of_north(h, 881, 882, own)
        north_staff = h.api.user(881)
        message, row_id = await to_checkin(h, nina, "after-24h")
        before, alerts_before = len(nina.inbox), len(north_staff.inbox)
        nina.press(message.message_id, f"ci:{row_id}:nausea")
        await h.settle()
        said = [m.text for m in nina.inbox[before:]]
        alerts = [m.text for m in north_staff.inbox[alerts_before:]]
        assert h.services is not None
        async with h.services.sessions() as db:
            (checkin,) = (await db.exec(select(CheckIn))).all()

    assert checkin.red_flag
    assert any(m.startswith("Please contact the clinic now.") for m in said)
    assert any("Side-effect alert" in m and "Nina" in m for m in alerts)
