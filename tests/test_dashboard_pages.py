"""What staff see and do on the dashboard (issue 12): Today, the patient search, a patient's
file with its timeline, the inbox (answers delivered by the bot, new messages without a
reload) and the side-effect reports; in the staff member's language; fast at 100,000
patients."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import TypeVar
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.offline.sandbox import SandboxUser
from messages.protocol import default_protocol_path, load_protocol
from messages.render import catalog
from scheduler import clinics, dashboard
from scheduler.clock import FakeClock
from scheduler.db import SessionFactory
from scheduler.models import (
    Appointment,
    CheckIn,
    Clinic,
    Course,
    MessageState,
    Patient,
    PlannedMessage,
    TreatmentSession,
)
from tests.clinic_side import patient_row
from tests.dashboard_side import (
    Desk,
    checked_in,
    consented_patient,
    csrf_of,
    default_clinic_id,
    desk,
    get,
    logged_in,
    on_page,
    other_clinic,
    post,
)
from tests.e2e import book, onboarded, press, say
from tests.patient_flows import booked_patient, messages_of, sessions_by_id
from tests.test_inbox import send_to_clinic

T = TypeVar("T")


def rows_of(page: str, table_id: str) -> list[str]:
    """The text of each body row of a table (tags out, spaces squeezed)."""
    body = page.split(f'id="{table_id}"', 1)[1].split("</table>", 1)[0]
    return [
        " ".join(re.sub(r"<[^>]+>", " ", row).split())
        for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body.split("<tbody>", 1)[1], re.S)
    ]


@asynccontextmanager
async def desk_with_anna(
    db_url: str, clock: FakeClock, user_id: int
) -> AsyncIterator[tuple[Desk, SandboxUser, Patient, str]]:
    """The desk, and Anna, booked through the bot for Thu 3 Dec 14:30: her chat, her row
    and her file's URL on the default clinic's dashboard."""
    async with desk(db_url, clock) as d:
        anna = await booked_patient(d.h, user_id, "Anna", "3 Dec 14:30", "2026-12-03T14:30")
        patient = await patient_row(d.h, anna)
        a = await default_clinic_id(d.h)
        yield d, anna, patient, d.url(f"/dashboard/c/{a}/patients/{patient.id}")


async def test_today_counts_the_day_and_charts_thirty_days(db_url: str, clock: FakeClock) -> None:
    async with desk(db_url, clock) as d:
        await booked_patient(d.h, 6001, "Anna", "3 Dec 14:30", "2026-12-03T14:30")
        await onboarded(d.h, 6002, "Ben")
        a = await default_clinic_id(d.h)
        async with await logged_in(d) as http:
            status, page = await get(http, d.url(f"/dashboard/c/{a}/"))
    assert status == 200
    assert re.search(r'id="day-sent">1<', page)  # Anna's booking confirmation
    assert re.search(r'id="day-failed">0<', page) and re.search(r'id="unanswered">0<', page)
    assert "#" in page and "Anna" in page and "Thu 3 Dec, 14:30" in page  # upcoming, local
    assert page.count('<rect class="sent"') == 30
    assert "Times are in the clinic&#39;s time zone, Europe/London." in page or (
        "Times are in the clinic's time zone, Europe/London." in page
    )


async def test_the_dashboard_speaks_persian_right_to_left(db_url: str, clock: FakeClock) -> None:
    async with desk(db_url, clock) as d:
        await booked_patient(d.h, 6011, "Anna", "3 Dec 14:30", "2026-12-03T14:30")
        d.staff.user["language_code"] = "fa"  # their Telegram app, now in Persian
        a = await default_clinic_id(d.h)
        async with await logged_in(d) as http:
            _, page = await get(http, d.url(f"/dashboard/c/{a}/"))
    assert '<html lang="fa" dir="rtl">' in page
    assert "امروز" in page and 'id="day-sent">۱<' in page


async def test_the_dashboard_speaks_malayalam(db_url: str, clock: FakeClock) -> None:
    ml = catalog("ml")
    async with desk(db_url, clock) as d:
        anna = await booked_patient(d.h, 6012, "Anna", "3 Dec 14:30", "2026-12-03T14:30")
        patient = await patient_row(d.h, anna)
        d.staff.user["language_code"] = "ml"  # their Telegram app, now in Malayalam
        a = await default_clinic_id(d.h)
        async with await logged_in(d) as http:
            _, today = await get(http, d.url(f"/dashboard/c/{a}/"))
            _, file = await get(http, d.url(f"/dashboard/c/{a}/patients/{patient.id}"))
            _, opted = await get(http, d.url(f"/dashboard/c/{a}/opt-outs"))
    assert '<html lang="ml" dir="ltr">' in today
    assert "ഇന്ന്" in today and "വ്യാഴം, 3 ഡിസം, 14:30" in today
    assert "സമയങ്ങൾ ക്ലിനിക്കിന്റെ സമയമേഖലയിലാണ്, Europe/London." in today
    for key in ("nav_today", "nav_patients", "nav_inbox", "nav_broadcasts", "nav_opt_outs"):
        assert ml.text(f"dashboard.{key}") in today, key
    for key in ("move_button", "pause_button", "course_button", "timeline", "reminders"):
        assert ml.text(f"dashboard.{key}") in file, key
    assert ml.text("dashboard.erased_note") in opted
    for english in (">Today<", ">Patients<", "Pause reminders", "Move<", "Opt-outs"):
        assert english not in today + file + opted, english


async def test_patients_are_found_by_name_phone_or_id_a_page_at_a_time(
    db_url: str, clock: FakeClock
) -> None:
    async with desk(db_url, clock) as d:
        a = await default_clinic_id(d.h)
        assert d.h.services is not None
        now = d.h.clock.now()
        async with d.h.services.sessions() as db, db.begin():
            for i in range(30):
                name = f"Maryam {i:02d}" if i % 2 == 0 else f"Omid {i:02d}"
                db.add(
                    Patient(
                        clinic_id=a,
                        tg_user_id=70000 + i,
                        chat_id=70000 + i,
                        first_name=name,
                        timezone="Europe/London",
                        created_at=now,
                    )
                )
            await db.flush()
            zara = await consented_patient(
                session=db, clinic_id=a, user_id=70100, name="zara", zone="UTC", now=now
            )
            assert zara.id is not None
            treatment = TreatmentSession(
                patient_id=zara.id, clinic_id=a, start_at=now, end_at=now, created_at=now
            )
            db.add(treatment)
            await db.flush()
            db.add(
                Appointment(
                    clinic_id=a,
                    patient_key="phone:+442079460001",
                    start_at=now,
                    session_id=treatment.id,
                    created_at=now,
                )
            )
        base = d.url(f"/dashboard/c/{a}/patients")
        async with await logged_in(d) as http:
            _, everyone = await get(http, base)
            _, maryam = await get(http, base, params={"q": "mAr"})
            _, omid_first = await get(http, base, params={"q": "omid"})
            more = re.search(r'href="([^"]*after=[^"]*)"', everyone)
            _, by_phone = await get(http, base, params={"q": "+44 20 7946 0001"})
            _, by_id = await get(http, base, params={"q": f"#{zara.id}"})
            _, nobody = await get(http, base, params={"q": "Xavier"})
            _, percent = await get(http, base, params={"q": "%"})
            _, fragment = await get(
                http, base, params={"q": "zar"}, headers={"HX-Request": "true"}
            )
            assert more is not None
            _, second = await get(http, d.url(more.group(1).replace("&amp;", "&")))

    def names(page: str) -> list[str]:
        return re.findall(r'/patients/\d+">#\d+ ([^<]+)</a>', page)

    assert len(names(everyone)) == 25 and names(everyone)[0] == "zara"
    assert len(names(second)) == 6 and not set(names(second)) & set(names(everyone))
    assert names(maryam) == [f"Maryam {i:02d}" for i in range(0, 30, 2)]
    assert names(omid_first) == [f"Omid {i:02d}" for i in range(1, 30, 2)]
    assert names(by_phone) == ["zara"] and names(by_id) == ["zara"]
    assert names(nobody) == [] and "No patient found." in nobody and names(percent) == []
    assert "<html" not in fragment and names(fragment) == ["zara"]
    assert "no session booked" in everyone and "has not consented yet" in everyone


async def test_a_patients_page_shows_sessions_screening_checkins_and_the_timeline(
    db_url: str, clock: FakeClock
) -> None:
    async with desk(db_url, clock) as d:
        anna = await onboarded(d.h, 6021, "Anna")
        await book(d.h, anna, "3 Dec 14:30", "2026-12-03T14:30", yes=("endocrine_disorder",))
        patient = await patient_row(d.h, anna)
        a = await default_clinic_id(d.h)
        assert d.h.services is not None and patient.id is not None
        await checked_in(d.h, patient.id, "itching_redness")
        async with d.h.services.sessions() as db, db.begin():
            failed = (
                await db.exec(
                    select(PlannedMessage).where(
                        PlannedMessage.patient_id == patient.id, PlannedMessage.step == "prep-1d"
                    )
                )
            ).one()
            failed.state, failed.last_error, failed.attempts = "failed", "chat not found", 3
            db.add(failed)
        async with await logged_in(d) as http:
            status, page = await get(http, d.url(f"/dashboard/c/{a}/patients/{patient.id}"))
            missing, _ = await get(http, d.url(f"/dashboard/c/{a}/patients/999999"))
    timeline = rows_of(page, "timeline")
    assert status == 200 and missing == 404
    assert "Anna (#" in page and "Thu 3 Dec, 14:30 to 15:15 — booked" in page
    assert "next session Thu 3 Dec, 14:30" in page
    assert "⚠ Endocrine (hormonal) disorder" in page  # the session's flag, and a lasting one
    assert "Lasting conditions: Endocrine (hormonal) disorder" in page
    assert "Wed 25 Nov, 09:00 — Itching or redness" in page
    assert "Times are in the clinic" in page and "Europe/London" in page
    assert timeline[0].startswith("booked delivered Wed 25 Nov, 09:00 Wed 25 Nov, 09:00")
    assert any(
        line.startswith("prep-1d not delivered Wed 2 Dec, 18:00") and "chat not found" in line
        for line in timeline
    )
    assert [line.split()[0] for line in timeline][-1] in ("after-7d", "maintenance")


async def test_inbox_answers_reach_the_patient_and_new_messages_appear(
    db_url: str, clock: FakeClock
) -> None:
    async with desk(db_url, clock) as d:
        anna = await booked_patient(d.h, 6031, "Anna", "3 Dec 14:30", "2026-12-03T14:30")
        await send_to_clinic(d.h, anna, "Can I colour my hair next week?")
        a = await default_clinic_id(d.h)
        inbox_url = d.url(f"/dashboard/c/{a}/inbox")
        async with await logged_in(d) as http:
            _, page = await get(http, inbox_url)
            csrf = csrf_of(page)
            poll = re.search(r'hx-get="([^"]+/inbox/list[^"]*)"', page)
            assert poll is not None
            poll_url = d.url(poll.group(1).replace("&amp;", "&"))
            unchanged, _ = await get(http, poll_url)
            await send_to_clinic(d.h, anna, "And may I swim?")
            changed, fresh = await get(http, poll_url)
            message_id = int(re.findall(r'id="entry-(\d+)"', fresh)[0])
            forged = await post(
                http, d.url(f"/dashboard/c/{a}/inbox/{message_id}/answer"), {"text": "No"}
            )
            before = anna.sent_count
            answered = await post(
                http,
                d.url(f"/dashboard/c/{a}/inbox/{message_id}/answer"),
                {"csrf": csrf, "text": "Please wait a week, Anna."},
                headers={"HX-Request": "true"},
            )
            await d.h.settle()
            received = [m.text for m in anna.inbox[before:]]
            older = int(re.findall(r'id="entry-(\d+)"', fresh)[1])
            handled = await post(
                http, d.url(f"/dashboard/c/{a}/inbox/{older}/handled"), {"csrf": csrf}
            )
            _, after = await get(http, inbox_url)
    assert unchanged == 204 and changed == 200 and "And may I swim?" in fresh
    assert forged[0] == 403
    assert answered[0] == 200 and "<html" not in answered[1] and "Open: 1" in answered[1]
    assert "Your answer goes to Anna now." in answered[1]
    assert len(received) == 1 and "Please wait a week, Anna." in received[0]
    assert handled == (303, "") and "Open: 0" in after
    assert after.count("Mark handled") == 0


async def test_an_alert_is_marked_handled(db_url: str, clock: FakeClock) -> None:
    async with desk(db_url, clock) as d:
        anna = await booked_patient(d.h, 6041, "Anna", "3 Dec 14:30", "2026-12-03T14:30")
        patient = await patient_row(d.h, anna)
        assert d.h.services is not None and patient.id is not None
        checkin_id = (await checked_in(d.h, patient.id, "urgent", red_flag=True)).id
        a = await default_clinic_id(d.h)
        async with await logged_in(d) as http:
            _, today = await get(http, d.url(f"/dashboard/c/{a}/"))
            _, page = await get(http, d.url(f"/dashboard/c/{a}/inbox"))
            done = await post(
                http,
                d.url(f"/dashboard/c/{a}/alerts/{checkin_id}/handled"),
                {"csrf": csrf_of(page)},
                headers={"HX-Request": "true"},
            )
            _, later = await get(http, d.url(f"/dashboard/c/{a}/"))
        async with d.h.services.sessions() as db:
            stored = await db.get(CheckIn, checkin_id)
    assert re.search(r'id="open-alerts">1<', today) and re.search(r'id="open-alerts">0<', later)
    assert done[0] == 200 and f'id="alert-{checkin_id}"' in done[1] and "Handled" in done[1]
    assert "Mark handled" not in done[1]
    assert stored is not None and stored.handled_by == d.staff.user_id


async def test_staff_set_a_patients_course_plan_as_course_does(
    db_url: str, clock: FakeClock
) -> None:
    async with desk_with_anna(db_url, clock, 6051) as (d, _, patient, url):
        async with on_page(d, url) as (http, page, csrf):
            too_many = await post(
                http, f"{url}/course", {"csrf": csrf, "plan": "noticeable", "sessions": "11"}
            )
            unknown = await post(
                http, f"{url}/course", {"csrf": csrf, "plan": "forever", "sessions": "1"}
            )
            forged = await post(http, f"{url}/course", {"plan": "noticeable", "sessions": "6"})
            done = await post(
                http, f"{url}/course", {"csrf": csrf, "plan": "noticeable", "sessions": "6"}
            )
            _, after = await get(http, f"{url}?saved=course")
        assert d.h.services is not None
        async with d.h.services.sessions() as db:
            plans = (await db.exec(select(Course).where(Course.patient_id == patient.id))).all()
    assert "No course plan" not in page and "<code>none</code>" in page
    assert too_many[0] == 400 and "That plan has 4 to 10 sessions." in too_many[1]
    assert unknown[0] == 400 and forged[0] == 403
    assert done[0] == 303
    assert [(c.plan, c.sessions) for c in plans][-1] == ("noticeable", 6) and len(plans) == 2
    assert "Now: <code>noticeable</code>, 6 sessions planned." in after
    assert f"Patient #{patient.id}: <code>noticeable</code> plan, 6 sessions." in after


async def test_staff_move_and_cancel_a_session_as_sessions_does(
    db_url: str, clock: FakeClock
) -> None:
    async with desk_with_anna(db_url, clock, 6055) as (d, anna, patient, url):
        await say(d.h, anna, "/book")
        await book(d.h, anna, "10 Dec 14:30", "2026-12-10T14:30")
        assert patient.id is not None
        first, second = await sessions_by_id(d.h, anna)
        move, cancel = f"{url}/sessions/{first.id}/move", f"{url}/sessions/{second.id}/cancel"
        before = anna.sent_count
        async with on_page(d, url) as (http, page, csrf):
            refused = {
                when: await post(http, move, {"csrf": csrf, "when": when})
                for when in (
                    "2026-11-20T10:00",  # the past
                    "2026-12-10T14:45",  # on the other session
                    "tomorrow",
                    "2026-12-05T25:00",
                    "2029-12-05T10:00",
                    "",
                )
            }
            forged = await post(http, move, {"when": "2026-12-05T10:00"})
            moved = await post(http, move, {"csrf": csrf, "when": "2026-12-05T10:00"})
            _, after_move = await get(http, url)
            status_moved, moved_page = await get(http, f"{url}?saved=moved&session={first.id}")
            cancelled = await post(http, cancel, {"csrf": csrf})
            again = await post(http, cancel, {"csrf": csrf})
            _, cancelled_page = await get(http, f"{url}?saved=cancelled&session={second.id}")
        await d.h.settle()
        told = [m.text for m in anna.inbox[before:]]
        moved_row, cancelled_row = await sessions_by_id(d.h, anna)
        rows = await messages_of(d.h, anna)
    assert "datetime-local" in page and f'id="move-{first.id}"' in page
    assert f'id="cancel-{second.id}"' in page
    assert {when: status for when, (status, _) in refused.items()} == dict.fromkeys(refused, 400)
    assert "That time has already passed" in refused["2026-11-20T10:00"][1]
    assert "another session at that time" in refused["2026-12-10T14:45"][1]
    assert "for example 2026-12-05 14:30" in refused["tomorrow"][1]
    assert "more than two years ahead" in refused["2029-12-05T10:00"][1]
    assert forged[0] == 403
    assert moved[0] == 303 and cancelled[0] == 303 and again[0] == 409
    # Europe/London in December is UTC: the time typed on the clinic's clock.
    assert moved_row.start_at == first.start_at.replace(day=5, hour=10, minute=0)
    assert cancelled_row.state == "cancelled"
    assert status_moved == 200 and "The session is now on Sat 5 Dec, 10:00." in moved_page
    assert "Sat 5 Dec, 10:00 to 10:45 — booked" in after_move
    assert "The session of Thu 10 Dec, 14:30 is cancelled" in cancelled_page
    pending = [r for r in rows if r.state == "pending"]
    assert pending and all(r.session_id == first.id for r in pending)
    prep = [r for r in pending if r.step == "prep-1d"]
    assert [r.due_at.astimezone(ZoneInfo("Europe/London")).isoformat() for r in prep] == [
        "2026-12-04T18:00:00+00:00"
    ]
    assert all(r.state in ("cancelled", "sent") for r in rows if r.session_id == second.id)
    # The patient is told, in their language and zone, once for each change.
    assert told == [
        "Test Clinic moved your session to Sat 5 Dec, 10:00. Your reminders follow the new "
        "time; the ones you already received are not sent again.",
        "Test Clinic cancelled your session of Thu 10 Dec, 14:30, and its reminders. To book "
        "another, send /book.",
    ]


async def test_a_patient_moved_twice_at_night_is_told_once_in_the_morning(
    db_url: str, clock: FakeClock
) -> None:
    async with desk_with_anna(db_url, clock, 6057) as (d, anna, patient, url):
        assert patient.id is not None
        (treatment,) = await sessions_by_id(d.h, anna)
        await d.h.advance(timedelta(hours=14))  # 23:00, in Anna's quiet hours
        before = anna.sent_count
        async with on_page(d, url) as (http, _, csrf):
            for when in ("2026-12-05T10:00", "2026-12-06T11:00"):
                done = await post(
                    http, f"{url}/sessions/{treatment.id}/move", {"csrf": csrf, "when": when}
                )
                assert done[0] == 303
        await d.h.settle()
        at_night = anna.sent_count - before
        await d.h.advance(timedelta(hours=9, minutes=1))
        told = [m.text for m in anna.inbox[before:] if "moved your session" in m.text]
        rows = await messages_of(d.h, anna)
    changes = [(r.state, r.last_error) for r in rows if r.step == "clinic-change"]
    assert changes == [("cancelled", "superseded"), ("sent", None)]
    assert at_night == 0
    assert len(told) == 1 and "moved your session to Sun 6 Dec, 11:00." in told[0]


async def test_staff_pause_and_resume_a_patients_reminders_as_pause_does(
    db_url: str, clock: FakeClock
) -> None:
    async with desk_with_anna(db_url, clock, 6056) as (d, anna, patient, url):
        async with on_page(d, url) as (http, page, csrf):
            forged = await post(http, f"{url}/pause", {})
            paused = await post(http, f"{url}/pause", {"csrf": csrf})
            twice = await post(http, f"{url}/pause", {"csrf": csrf})
            _, paused_page = await get(http, f"{url}?saved=paused")
            stopped = await patient_row(d.h, anna)
        # Days pass while paused: prep-3d (30 Nov 10:00) falls due and is not sent.
        before = anna.sent_count
        await d.h.advance(timedelta(days=5, hours=4))
        silent = anna.sent_count - before
        # The old login has expired meanwhile.
        async with on_page(d, url) as (http, _, csrf):
            resumed = await post(http, f"{url}/resume", {"csrf": csrf})
            _, resumed_page = await get(http, f"{url}?saved=resumed")
            await d.h.settle()
            again = await post(http, f"{url}/resume", {"csrf": csrf})
        started = await patient_row(d.h, anna)
        assert patient.id is not None
        rows = await messages_of(d.h, anna)
    assert forged[0] == 403 and paused[0] == 303 and twice[0] == 303 and resumed[0] == 303
    assert "Pause reminders" in page and "Resume reminders" in paused_page
    assert "Reminders to Anna are paused" in paused_page and "paused" in paused_page
    assert stopped.paused_at is not None and started.paused_at is None
    assert silent == 0
    assert "Reminders to Anna are on again" in resumed_page
    assert again[1] == "" and again[0] == 303
    assert any(r.step == "prep-1d" and r.state == "pending" for r in rows)
    assert any(r.last_error == "resumed" for r in rows)


async def test_opt_outs_count_paused_blocked_and_erased_and_keep_nothing_of_the_erased(
    db_url: str, clock: FakeClock
) -> None:
    async with desk(db_url, clock) as d:
        a = await default_clinic_id(d.h)
        await other_clinic(d.h)
        pia = await onboarded(d.h, 6061, "Pia")
        await say(d.h, pia, "/pause")
        bob = await onboarded(d.h, 6062, "Bob")
        bob.block()
        await d.h.settle()
        zed = await onboarded(d.h, 6063, "Zedekiah")
        await say(d.h, zed, "/delete")
        await press(d.h, zed, "del:yes")
        await onboarded(d.h, 6064, "Cy")  # still hearing from the clinic
        async with await logged_in(d) as http:
            status, page = await get(http, d.url(f"/dashboard/c/{a}/opt-outs"))
        assert d.h.services is not None
        async with d.h.services.sessions() as db:
            clinic_a = await db.get(Clinic, a)
            erased = (
                await db.exec(select(Patient).where(Patient.tg_user_id == zed.user_id))
            ).first()
    assert status == 200
    assert re.search(r'id="paused-count">1<', page) and re.search(r'id="blocked-count">1<', page)
    assert re.search(r'id="erased-count">1<', page)
    assert "Pia" in rows_text(page, "paused-list") and "Bob" in rows_text(page, "blocked-list")
    assert "Cy" not in page and "Zedekiah" not in page and "Bella" not in page
    assert clinic_a is not None and clinic_a.erased_patients == 1 and erased is None


def rows_text(page: str, list_id: str) -> str:
    return page.split(f'id="{list_id}"', 1)[1].split("</ul>", 1)[0]


async def test_the_delivery_log_filters_pages_and_exports_the_clinics_rows(
    db_url: str, clock: FakeClock
) -> None:
    async with desk(db_url, clock) as d:
        anna = await booked_patient(d.h, 6061, "Anna", "3 Dec 14:30", "2026-12-03T14:30")
        patient = await patient_row(d.h, anna)
        b = await other_clinic(d.h)
        a = await default_clinic_id(d.h)
        assert d.h.services is not None and patient.id is not None
        async with d.h.services.sessions() as db, db.begin():
            # Clinic B's patient has a row due the same day: never in clinic A's log.
            db.add(
                PlannedMessage(
                    patient_id=b.patient_id,
                    step="after-24h",
                    due_at=d.h.clock.now(),
                    not_before=d.h.clock.now(),
                    expires_at=d.h.clock.now() + timedelta(days=1),
                    created_at=d.h.clock.now(),
                )
            )
        log = d.url(f"/dashboard/c/{a}/deliveries")
        async with await logged_in(d) as http:
            _, week = await get(http, log)
            _, december = await get(http, log, params={"from": "2026-12-01", "to": "2026-12-31"})
            _, pending = await get(
                http, log, params={"from": "2026-11-01", "to": "2026-12-31", "state": "pending"}
            )
            _, sent = await get(
                http, log, params={"from": "2026-11-01", "to": "2026-12-31", "state": "sent"}
            )
            async with http.get(
                f"{log}.csv", params={"from": "2026-11-01", "to": "2026-12-31"}
            ) as response:
                exported = await response.text()
                kind = response.headers["Content-Type"]
                disposition = response.headers["Content-Disposition"]
            other, _ = await get(http, d.url(f"/dashboard/c/{b.clinic_id}/deliveries"))
            other_csv, _ = await get(http, d.url(f"/dashboard/c/{b.clinic_id}/deliveries.csv"))

    def steps(page: str) -> list[str]:
        return [line.split()[6] for line in rows_of(page, "log")] if 'id="log"' in page else []

    assert steps(week) == ["booked"]  # the last 7 days: today's confirmation
    assert steps(december) == [
        "prep-1d", "prep-2h", "after-0", "after-evening", "after-24h", "after-3d", "after-7d",
    ]  # fmt: skip
    assert "booked" not in steps(pending) and len(steps(pending)) == 8
    assert steps(sent) == ["booked"]
    lines = exported.strip().split("\n")
    assert lines[0].startswith("id,clinic,patient_id") and len(lines) == 1 + 9
    assert all(",default," in line for line in lines[1:])
    assert (
        kind.startswith("text/csv") and "deliveries-default-2026-11-01-2026-12-31" in disposition
    )
    assert (other, other_csv) == (404, 404)


async def test_a_broadcast_is_previewed_sent_once_and_reported(
    db_url: str, clock: FakeClock
) -> None:
    async with desk(db_url, clock) as d:
        anna = await booked_patient(d.h, 6071, "Anna", "3 Dec 14:30", "2026-12-03T14:30")
        b = await other_clinic(d.h)
        a = await default_clinic_id(d.h)
        base = d.url(f"/dashboard/c/{a}/broadcasts")
        async with await logged_in(d) as http:
            _, page = await get(http, base)
            csrf = csrf_of(page)
            forged = await post(http, base, {"text": "Hello", "audience": "active"})
            empty = await post(http, base, {"csrf": csrf, "text": " ", "audience": "active"})
            async with http.post(
                base,
                data={"csrf": csrf, "text": "Time for maintenance", "audience": "active"},
                allow_redirects=False,
            ) as response:
                where = response.headers["Location"]
            _, preview = await get(http, d.url(where))
            broadcast_id = int(re.findall(r"/broadcasts/(\d+)", where)[0])
            item = d.url(f"/dashboard/c/{a}/broadcasts/{broadcast_id}")
            before = anna.sent_count
            sent = await post(http, f"{item}/send", {"csrf": csrf, "audience": "active"})
            again = await post(http, f"{item}/send", {"csrf": csrf, "audience": "active"})
            await d.h.settle()
            received = [m.text for m in anna.inbox[before:]]
            _, report = await get(http, item)
            _, fragment = await get(http, item, headers={"HX-Request": "true"})
            _, listing = await get(http, base)
            elsewhere = await get(http, d.url(f"/dashboard/c/{b.clinic_id}/broadcasts"))
            async with http.post(
                base,
                data={"csrf": csrf, "text": "Never mind", "audience": "due"},
                allow_redirects=False,
            ) as response:
                other_draft = d.url(response.headers["Location"].split("?")[0])
            cancelled = await post(http, f"{other_draft}/cancel", {"csrf": csrf})
            late = await post(http, f"{other_draft}/send", {"csrf": csrf, "audience": "due"})
    assert "All active patients (1)" in page
    assert forged[0] == 403 and empty[0] == 400
    assert preview.count("Time for maintenance") == 3  # en, fa, ml
    assert 'dir="rtl"' in preview and "Send to 1" in preview
    assert sent[0] == 303 and again[0] == 409
    assert len(received) == 1 and "Time for maintenance" in received[0]
    assert f"Report of broadcast #{broadcast_id}" in report and "Sent: 1" in report
    assert "<html" not in fragment and 'data-done="yes"' in fragment and "hx-get" not in fragment
    assert f'id="broadcast-{broadcast_id}"' in listing
    assert elsewhere[0] == 404
    assert cancelled[0] == 200 and "Broadcast cancelled" in cancelled[1] and late[0] == 409


# -- at 100,000 patients -----------------------------------------------------------------------


@pytest.mark.slow
async def test_every_dashboard_query_stays_fast_at_100000_patients(
    sessions: SessionFactory, clock: FakeClock, backend: str
) -> None:
    now = clock.now()
    protocol = load_protocol(default_protocol_path())
    async with sessions() as db, db.begin():
        clinic = await clinics.add_clinic(
            session=db, slug="big", values={"name": "Big", "timezone": "Europe/London"}, now=now
        )
        assert clinic.id is not None
        names = ("Anna", "Ben", "Cyrus", "Dara", "Maryam", "Omid", "Sara", "Zoe")
        connection = await db.connection()
        await connection.execute(
            sa.insert(Patient),
            [
                {
                    "clinic_id": clinic.id,
                    "tg_user_id": 10_000_000 + i,
                    "chat_id": 10_000_000 + i,
                    "first_name": f"{names[i % len(names)]} {i}",
                    "language": "en",
                    "timezone": "Europe/London",
                    "quiet_start": "22:00",
                    "quiet_end": "08:00",
                    "draft": {},
                    "conditions": {},
                    "consent_at": now,
                    "created_at": now,
                }
                for i in range(100_000)
            ],
        )
        ids = (await connection.execute(sa.select(col(Patient.id)).limit(20_000))).scalars()
        states = list(MessageState)
        await connection.execute(
            sa.insert(PlannedMessage),
            [
                {
                    "patient_id": pid,
                    "step": "after-24h",
                    "seq": 0,
                    "priority": 0,
                    "state": states[n % 4 + 2] if n % 3 else "pending",
                    "due_at": now - timedelta(hours=n % (24 * 40)),
                    "not_before": now,
                    "expires_at": now + timedelta(days=1),
                    "attempts": 0,
                    "extra": {},
                    "created_at": now,
                }
                for n, pid in enumerate(ids)
            ],
        )
    timings: dict[str, float] = {}

    async def timed(name: str, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """The best of three runs (a busy machine's pauses are not the query's cost)."""
        best = float("inf")
        for _ in range(3):
            async with sessions() as db:
                started = time.perf_counter()
                result = await work(db)
                best = min(best, (time.perf_counter() - started) * 1000)
        timings[name] = best
        return result

    assert clinic.id is not None
    cid = clinic.id
    first = await timed(
        "patients, first page",
        lambda db: dashboard.find_patients(session=db, clinic_id=cid, query=""),
    )
    await timed(
        "patients, a later page",
        lambda db: dashboard.find_patients(session=db, clinic_id=cid, query="", after="50000"),
    )
    found = await timed(
        "search a name",
        lambda db: dashboard.find_patients(session=db, clinic_id=cid, query="mar"),
    )
    await timed(
        "search, next page",
        lambda db: dashboard.find_patients(
            session=db, clinic_id=cid, query="mar", after=found.next_key
        ),
    )
    await timed(
        "search, nobody", lambda db: dashboard.find_patients(session=db, clinic_id=cid, query="xq")
    )
    await timed(
        "today",
        lambda db: dashboard.today(session=db, clinic_id=cid, protocol=protocol, now=now),
    )
    days = await timed(
        "chart",
        lambda db: dashboard.deliveries_per_day(
            session=db, clinic_id=cid, zone=ZoneInfo("Europe/London"), now=now
        ),
    )
    await timed(
        "delivery log, a week",
        lambda db: dashboard.delivery_log(
            session=db,
            clinic_id=cid,
            chosen=dashboard.Deliveries(since=now - timedelta(days=7), until=now),
        ),
    )
    await timed(
        "a patient's file",
        lambda db: dashboard.patient_file(session=db, clinic_id=cid, patient_id=50_000),
    )
    await timed("opt-outs", lambda db: dashboard.opt_outs(session=db, clinic=clinic))
    figures = ", ".join(f"{name} {ms:.1f}" for name, ms in timings.items())
    print(f"\ndashboard at 100,000 patients, {backend} (ms): {figures}")  # noqa: T201
    assert len(first.patients) == 25 and found.next_key is not None
    assert all(p.first_name.startswith("Maryam") for p in found.patients)
    assert sum(day.total for day in days) > 0
    assert max(timings.values()) < 100, timings
