"""Who gets into the clinic dashboard (issue 12): login links and Mini App initData, forged,
stale and replayed; sessions, logout and CSRF; clinic A's staff see nothing of clinic B; a
patient gets nothing; no page or log shows the bot token."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, urlencode

import pytest
import sqlalchemy as sa
from sqlmodel import select

from bot.dashboard.auth import Keys, check_init_data, init_data_hash
from bot.offline.harness import SANDBOX_TOKEN
from bot.serve.logs import CONTENT, NOISY, RedactingFormatter
from scheduler.clock import FakeClock
from scheduler.models import (
    Broadcast,
    CheckIn,
    Course,
    DashboardLogin,
    DashboardSession,
    InboxMessage,
    Patient,
    TreatmentSession,
)
from tests.clinic_side import STAFF_ID, patient_row
from tests.dashboard_side import (
    browser,
    csrf_of,
    default_clinic_id,
    desk,
    get,
    init_data,
    log_in,
    logged_in,
    login_link,
    other_clinic,
    post,
)
from tests.e2e import onboarded, say

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
PLAN = {"plan": "mild", "sessions": "1"}
MOVE = {"when": "2026-12-05T10:00"}


# -- initData, as Telegram specifies it (pure) -----------------------------------------------


def test_init_data_signed_for_this_bot_within_a_day_names_its_user() -> None:
    user = check_init_data(init_data(42, NOW - timedelta(hours=23)), bot_token="1:A", now=NOW)
    assert user is None  # signed with another bot's token
    user = check_init_data(
        init_data(42, NOW - timedelta(hours=23), token="1:A"), bot_token="1:A", now=NOW
    )
    assert user is not None and (user.id, user.first_name, user.language_code) == (42, "Sam", "en")


@pytest.mark.parametrize(
    "case",
    ["stale", "future", "altered", "no hash", "twice", "not a query", "empty", "huge", "no user"],
)
def test_init_data_that_telegram_did_not_sign_as_it_is_is_refused(case: str) -> None:
    token = "1:A"
    good = init_data(42, NOW, token=token)
    fields = dict(parse_qsl(good))
    if case == "stale":
        data = init_data(42, NOW - timedelta(days=1, seconds=1), token=token)
    elif case == "future":
        data = init_data(42, NOW + timedelta(hours=1), token=token)
    elif case == "altered":
        data = urlencode({**fields, "user": fields["user"].replace("42", "43")})
    elif case == "no hash":
        data = urlencode({k: v for k, v in fields.items() if k != "hash"})
    elif case == "twice":
        data = good + "&auth_date=1"
    elif case == "not a query":
        data = "hash"
    elif case == "empty":
        data = ""
    elif case == "huge":
        data = good + "&x=" + "a" * 5000
    else:
        signed = {"auth_date": fields["auth_date"]}
        data = urlencode({**signed, "hash": init_data_hash(signed, token)})
    assert check_init_data(data, bot_token=token, now=NOW) is None


def test_login_tokens_are_ours_only() -> None:
    keys = Keys("1:A")
    token = keys.new_login_token()
    assert keys.login_token_signed(token)
    assert not Keys("1:B").login_token_signed(token)
    nonce, _, signature = token.partition(".")
    assert not keys.login_token_signed(f"{nonce}x.{signature}")
    assert not keys.login_token_signed(nonce)
    assert not keys.login_token_signed("")


# -- login links -----------------------------------------------------------------------------


async def test_a_login_link_lets_its_staff_member_in_once_for_ten_minutes(
    db_url: str, clock: FakeClock
) -> None:
    async with desk(db_url, clock) as d:
        link = await login_link(d)
        assert "10 minutes" in d.staff.last().text
        async with browser() as http:
            first = await log_in(d, http, link)
            cookie = first.headers["Set-Cookie"]
            status, page = await get(http, d.url("/dashboard/"))
            assert status == 303
            clinic_id = await default_clinic_id(d.h)
            status, page = await get(http, d.url(f"/dashboard/c/{clinic_id}/"))
        async with browser() as again:
            replay = await log_in(d, again, link)
            status_replay, _ = await get(again, d.url(f"/dashboard/c/{clinic_id}/"))
        stale_link = await login_link(d)
        d.h.clock.advance(timedelta(minutes=10, seconds=1))
        async with browser() as late:
            stale = await log_in(d, late, stale_link)
        async with browser() as forger:
            forged = await log_in(d, forger, link[:-3] + "abc")
            made_up = await log_in(d, forger, link.split("=")[0] + "=x.y")
        assert d.h.services is not None
        async with d.h.services.sessions() as db:
            stored = (await db.exec(select(DashboardLogin))).all()

    assert first.status == 303 and first.headers["Location"] == "/dashboard/"
    assert status == 200 and "Test Clinic" in page
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/dashboard" in cookie
    assert "Max-Age=43200" in cookie and "Secure" not in cookie  # http://: no Secure
    assert (replay.status, status_replay) == (403, 401)
    assert stale.status == 403 and forged.status == 403 and made_up.status == 403
    token = link.split("=", 1)[1]
    assert all(row.token_hash != token and token not in row.token_hash for row in stored)


async def test_the_cookie_is_secure_behind_https_and_the_mini_app_gets_its_button(
    db_url: str, clock: FakeClock
) -> None:
    async with desk(db_url, clock, dashboard_url="https://clinic.example.test/") as d:
        await d.h.settle()
        d.staff.send("/dashboard")
        await d.h.settle()
        sent = d.staff.last()
        link = sent.text.split("\n")[-1]
        assert link.startswith("https://clinic.example.test/dashboard/login?token=")
        async with browser() as http:
            local = link.replace("https://clinic.example.test", d.base)
            response = await log_in(d, http, local)
    assert "Secure" in response.headers["Set-Cookie"]
    assert sent.inline_keyboard[0][0]["web_app"] == {
        "url": "https://clinic.example.test/dashboard/app"
    }


async def test_staff_get_the_mini_app_as_their_menu_button_once_and_patients_never(
    db_url: str, clock: FakeClock
) -> None:
    https = "https://clinic.example.test"
    async with desk(db_url, clock, dashboard_url=f"{https}/") as d:
        anna = await onboarded(d.h, 5102, "Anna")
        await say(d.h, d.staff, "/patients")
        await say(d.h, d.staff, "/dashboard")
        await say(d.h, d.staff, "/upcoming")
        calls, buttons = d.h.api.calls["setChatMenuButton"], dict(d.h.api.menu_buttons)
    async with desk(db_url, clock) as plain:  # over plain HTTP Telegram opens no Mini App
        await say(plain.h, plain.staff, "/patients")
        unset = dict(plain.h.api.menu_buttons)
    assert buttons == {
        d.staff.chat_id: {
            "type": "web_app",
            "text": "Open the dashboard",
            "web_app": {"url": f"{https}/dashboard/app"},
        }
    }
    assert calls == 1 and anna.chat_id not in buttons and unset == {}


async def test_logout_ends_the_session_and_needs_the_csrf_token(
    db_url: str, clock: FakeClock
) -> None:
    async with desk(db_url, clock) as d:
        clinic_id = await default_clinic_id(d.h)
        today = d.url(f"/dashboard/c/{clinic_id}/")
        async with await logged_in(d) as http:
            _, page = await get(http, today)
            forged = await post(http, d.url("/dashboard/logout"), {"csrf": "0" * 32})
            still, _ = await get(http, today)
            done = await post(http, d.url("/dashboard/logout"), {"csrf": csrf_of(page)})
            after, _ = await get(http, today)
        assert d.h.services is not None
        async with d.h.services.sessions() as db:
            sessions = (await db.exec(select(DashboardSession))).all()
    assert forged[0] == 403 and still == 200
    assert done[0] == 200 and "logged out" in done[1] and after == 401
    assert sessions == []


async def test_a_session_expires(db_url: str, clock: FakeClock) -> None:
    async with desk(db_url, clock) as d:
        today = d.url(f"/dashboard/c/{await default_clinic_id(d.h)}/")
        async with await logged_in(d) as http:
            before, _ = await get(http, today)
            d.h.clock.advance(timedelta(hours=12, seconds=1))
            after, page = await get(http, today)
    assert (before, after) == (200, 401) and "/dashboard" in page


# -- the Mini App ----------------------------------------------------------------------------


async def test_the_mini_app_gets_in_with_initdata_once_and_never_forged_or_stale(
    db_url: str, clock: FakeClock
) -> None:
    async with desk(db_url, clock) as d:
        now = d.h.clock.now()
        login = d.url("/dashboard/app/login")
        good = init_data(STAFF_ID, now - timedelta(minutes=1))
        async with browser() as http:
            status, page = await get(http, d.url("/dashboard/app"))
            accepted = await post(http, login, {"init_data": good})
            status_in, _ = await get(http, d.url(f"/dashboard/c/{await default_clinic_id(d.h)}/"))
            reopened, _ = await get(http, d.url("/dashboard/app"))
        async with browser() as other:
            replayed = await post(other, login, {"init_data": good})
            stale = await post(
                other, login, {"init_data": init_data(STAFF_ID, now - timedelta(days=2))}
            )
            forged = await post(
                other,
                login,
                {"init_data": init_data(STAFF_ID, now, token="999:not-this-bot")},
            )
            patient = await post(other, login, {"init_data": init_data(4242, now)})
            nothing = await post(other, login, {})
            status_out, _ = await get(other, d.url("/dashboard/"))
    assert status == 200 and "telegram-web-app.js" in page and "miniapp.js" in page
    assert accepted[0] == 200 and status_in == 200 and reopened == 303
    assert [r[0] for r in (replayed, stale, forged, patient, nothing)] == [403] * 5
    assert status_out == 401


# -- who sees what -----------------------------------------------------------------------------


async def test_staff_of_clinic_a_get_404_for_every_page_action_and_id_of_clinic_b(
    db_url: str, clock: FakeClock
) -> None:
    async with desk(db_url, clock) as d:
        b = await other_clinic(d.h)
        a = await default_clinic_id(d.h)
        own = await patient_row(d.h, await onboarded(d.h, 5001, "Anna"))  # clinic A's
        async with await logged_in(d) as http:
            _, page = await get(http, d.url(f"/dashboard/c/{a}/"))
            csrf = csrf_of(page)
            pages = [
                f"/dashboard/c/{b.clinic_id}/",
                f"/dashboard/c/{b.clinic_id}/patients",
                f"/dashboard/c/{b.clinic_id}/patients?q=Bella",
                f"/dashboard/c/{b.clinic_id}/patients/{b.patient_id}",
                f"/dashboard/c/{b.clinic_id}/inbox",
                f"/dashboard/c/{b.clinic_id}/inbox/list",
                f"/dashboard/c/{b.clinic_id}/deliveries",
                f"/dashboard/c/{b.clinic_id}/broadcasts",
                f"/dashboard/c/{b.clinic_id}/broadcasts/{b.broadcast_id}",
                f"/dashboard/c/{a}/broadcasts/{b.broadcast_id}",
                f"/dashboard/c/{b.clinic_id}/deliveries.csv",
                f"/dashboard/c/{b.clinic_id}/opt-outs",
                f"/dashboard/c/{a}/patients/{b.patient_id}",
                "/dashboard/c/999999/",
                "/dashboard/c/x/",
            ]
            seen = {p: await get(http, d.url(p)) for p in pages}
            actions = [
                (f"/dashboard/c/{b.clinic_id}/inbox/{b.message_id}/answer", {"text": "hi"}),
                (f"/dashboard/c/{b.clinic_id}/inbox/{b.message_id}/handled", {}),
                (f"/dashboard/c/{b.clinic_id}/alerts/{b.checkin_id}/handled", {}),
                (f"/dashboard/c/{a}/inbox/{b.message_id}/answer", {"text": "hi"}),
                (f"/dashboard/c/{a}/inbox/{b.message_id}/handled", {}),
                (f"/dashboard/c/{a}/alerts/{b.checkin_id}/handled", {}),
                (f"/dashboard/c/{b.clinic_id}/patients/{b.patient_id}/course", PLAN),
                (f"/dashboard/c/{a}/patients/{b.patient_id}/course", PLAN),
                *(
                    (f"/dashboard/c/{clinic}/patients/{patient}/{action}", form)
                    for clinic in (a, b.clinic_id)
                    for patient in (b.patient_id, own.id)
                    for action, form in (
                        (f"sessions/{b.session_id}/move", MOVE),
                        (f"sessions/{b.session_id}/cancel", {}),
                        ("pause", {}),
                        ("resume", {}),
                    )
                    if (clinic, patient) != (a, own.id) or "sessions" in action
                ),
                (f"/dashboard/c/{b.clinic_id}/broadcasts", {"text": "x", "audience": "due"}),
                (f"/dashboard/c/{a}/broadcasts/{b.broadcast_id}/send", {"audience": "due"}),
                (f"/dashboard/c/{a}/broadcasts/{b.broadcast_id}/cancel", {}),
                (
                    f"/dashboard/c/{b.clinic_id}/broadcasts/{b.broadcast_id}/send",
                    {"audience": "due"},
                ),
            ]
            done = {p: await post(http, d.url(p), {"csrf": csrf, **f}) for p, f in actions}
            search, found = await get(http, d.url(f"/dashboard/c/{a}/patients?q=Bella"))
            by_id, found_id = await get(
                http, d.url(f"/dashboard/c/{a}/patients?q=%23{b.patient_id}")
            )
        assert d.h.services is not None
        async with d.h.services.sessions() as db:
            message = await db.get(InboxMessage, b.message_id)
            checkin = await db.get(CheckIn, b.checkin_id)
            answers = (
                await db.exec(select(InboxMessage).where(InboxMessage.kind == "reply"))
            ).all()
            plans = (await db.exec(select(Course))).all()
            b_draft = await db.get(Broadcast, b.broadcast_id)
            b_session = await db.get(TreatmentSession, b.session_id)
            b_patient = await db.get(Patient, b.patient_id)

    assert {p: s for p, (s, _) in seen.items()} == dict.fromkeys(pages, 404)
    assert {p: s for p, (s, _) in done.items()} == {p: 404 for p, _ in actions}
    assert all("Bella" not in body and "Clinic B only" not in body for _, body in seen.values())
    assert (search, by_id) == (200, 200)
    assert "No patient found." in found and "No patient found." in found_id
    assert message is not None and message.handled_at is None
    assert checkin is not None and checkin.handled_at is None
    assert answers == [] and plans == []
    assert b_draft is not None and b_draft.state == "draft"
    assert b_session is not None and b_session.state == "booked"
    assert b_session.start_at == d.h.clock.now() + timedelta(days=3)  # not moved
    assert b_patient is not None and b_patient.paused_at is None


async def test_a_patient_gets_no_link_no_session_and_no_page(
    db_url: str, clock: FakeClock
) -> None:
    async with desk(db_url, clock) as d:
        anna = await onboarded(d.h, 5101, "Anna")
        before = anna.sent_count
        anna.send("/dashboard")
        await d.h.settle()
        answer = [m.text for m in anna.inbox[before:]]
        async with browser() as http:
            refused = await post(
                http,
                d.url("/dashboard/app/login"),
                {"init_data": init_data(5101, d.h.clock.now(), first_name="Anna")},
            )
            status, _ = await get(http, d.url(f"/dashboard/c/{await default_clinic_id(d.h)}/"))
        assert d.h.services is not None
        async with d.h.services.sessions() as db:
            logins = (await db.exec(select(DashboardLogin))).all()
    assert answer == ["This command is for the clinic's staff."]
    assert refused[0] == 403 and status == 401 and logins == []


async def test_a_staff_member_who_leaves_loses_the_dashboard(
    db_url: str, clock: FakeClock
) -> None:
    async with desk(db_url, clock) as d:
        a = await default_clinic_id(d.h)
        http = await logged_in(d)
        async with http:
            before, _ = await get(http, d.url(f"/dashboard/c/{a}/"))
            d.h.settings.staff_user_ids.clear()
            assert d.h.services is not None
            async with d.h.services.sessions() as db, db.begin():
                from sqlmodel import delete

                from scheduler.models import StaffMember

                await db.exec(delete(StaffMember))
            after, _ = await get(http, d.url(f"/dashboard/c/{a}/"))
            home, _ = await get(http, d.url("/dashboard/"))
    assert (before, after, home) == (200, 404, 403)


async def test_the_dashboard_is_off_without_a_port(db_url: str, clock: FakeClock) -> None:
    from tests.clinic_side import clinic

    async with clinic(db_url, clock) as (h, staff):
        staff.send("/dashboard")
        await h.settle()
        assert "not switched on" in staff.last().text
        assert h.dashboard is None


async def test_no_page_and_no_log_line_shows_the_bot_token_or_a_login_token(
    db_url: str, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    # The loggers as `aftercare run` sets them up (bot/serve/logs.py), at DEBUG.
    for name in NOISY:
        caplog.set_level(logging.WARNING, logger=name)
    for name in CONTENT:
        caplog.set_level(logging.INFO, logger=name)
    caplog.set_level(logging.DEBUG)
    bodies: list[str] = []
    async with desk(db_url, clock) as d:
        await other_clinic(d.h)
        a = await default_clinic_id(d.h)
        link = await login_link(d)
        async with browser() as http:
            await log_in(d, http, link)
            for path in ("/", "/patients", "/patients?q=a", "/inbox", "/inbox/list"):
                bodies.append((await get(http, d.url(f"/dashboard/c/{a}{path}")))[1])
            bodies.append((await get(http, d.url("/dashboard/app")))[1])
            bodies.append((await get(http, d.url("/dashboard/nowhere")))[1])
            await log_in(d, http, link)  # a replay: logged as refused
    token = link.split("=", 1)[1]
    # What the operator reads: each line through the formatter that redacts the bot token
    # (PTB itself names it at DEBUG); the login token has no such guard, and is never logged.
    formatter = RedactingFormatter("%(name)s %(message)s", [SANDBOX_TOKEN])
    logged = "\n".join(formatter.format(record) for record in caplog.records)
    assert SANDBOX_TOKEN not in logged and SANDBOX_TOKEN.split(":")[1] not in logged
    assert token not in logged and "dashboard login refused" in logged
    for body in bodies:
        assert SANDBOX_TOKEN.split(":")[1] not in body and token not in body


async def test_odd_input_gets_an_answer_and_a_failure_one_log_line(
    db_url: str, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    odd = ["%", "_", "\\", "'; --", "\x00", "\U0010ffff", "\ud7ff", "م" * 500, "+44", "#x"]
    async with desk(db_url, clock) as d:
        a = await default_clinic_id(d.h)
        async with await logged_in(d) as http:
            answers = [
                (await get(http, d.url(f"/dashboard/c/{a}/patients"), params={"q": q}))[0]
                for q in odd
            ]
            weird = [
                (await get(http, d.url(path)))[0]
                for path in (
                    f"/dashboard/c/{a}/patients/99999999999999999999",
                    f"/dashboard/c/{a}/patients/-1",
                    f"/dashboard/c/{a}/deliveries?from=2026-13-01&to=x&state=nope&after=x_y",
                    f"/dashboard/c/{a}/patients?after=%00",
                    "/dashboard/login?token=%00",
                )
            ]
            assert d.h.services is not None
            async with d.h.services.engine.begin() as connection:
                await connection.execute(
                    sa.text(
                        "DROP TABLE checkin CASCADE"
                        if "postgres" in db_url
                        else "DROP TABLE checkin"
                    )
                )
            failed, page = await get(http, d.url(f"/dashboard/c/{a}/"))
    assert answers == [200] * len(odd)
    assert weird == [404, 404, 200, 200, 200]
    reference = re.search(r"\(Reference: ([0-9a-f]{8})\)", page)
    assert failed == 500 and reference is not None and "Traceback" not in page
    assert "dashboard view failed: " in caplog.text and reference.group(1) in caplog.text
