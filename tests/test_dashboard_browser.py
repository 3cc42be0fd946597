"""The dashboard as a person uses it (issue 12): a real headless Chromium (Debian's, driven by
Playwright) against the real bot, its dashboard and the sandbox Bot API.

One browser for the whole session; each test has its own context (cookies) and page, and
leaves a screenshot in test-results/ when it fails. Skipped, and said so by `make test`, when
/usr/bin/chromium is missing (`.ci/run` installs it).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, async_playwright, expect

from scheduler.clock import FakeClock
from scheduler.db import migrate
from scheduler.models import CheckIn
from tests.clinic_side import STAFF_ID, clinic, patient_row
from tests.conftest import CHROMIUM, REPORTS
from tests.dashboard_side import Desk, demo_dashboard, init_data, login_link
from tests.patient_flows import booked_patient
from tests.procs import free_port
from tests.test_inbox import send_to_clinic

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no {CHROMIUM} (the browser tests)"),
    pytest.mark.asyncio(loop_scope="session"),
]

ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-results"
TIMEOUT_MS = 10_000
T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=ARGS, headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()


@pytest_asyncio.fixture(loop_scope="session")
async def page(chromium: Browser, request: pytest.FixtureRequest) -> AsyncIterator[Page]:
    """A fresh browser context (no cookies) at a phone's width; a screenshot if the test
    fails."""
    context = await chromium.new_context(viewport={"width": 390, "height": 844})
    context.set_default_timeout(TIMEOUT_MS)
    tab = await context.new_page()
    try:
        yield tab
    finally:
        call = request.node.stash.get(REPORTS, {}).get("call")
        if call is not None and call.failed:
            SCREENSHOTS.mkdir(exist_ok=True)
            shot = SCREENSHOTS / f"{request.node.name}.png"
            await tab.screenshot(path=str(shot), full_page=True)
            print(f"\nscreenshot of the failure: {shot}")  # noqa: T201
        await context.close()


async def database(tmp_path: Path) -> str:
    """A migrated SQLite database of this test's own (the session's loop runs these tests,
    so they make theirs here rather than through the per-test fixtures)."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'browser.db'}"
    await asyncio.to_thread(migrate, url)
    return url


async def test_staff_log_in_find_a_patient_answer_the_inbox_handle_an_alert_and_broadcast(
    page: Page, tmp_path: Path
) -> None:
    port = free_port()
    clock = FakeClock(T0)
    async with clinic(await database(tmp_path), clock, dashboard_port=port) as (h, staff):
        d = Desk(h, staff, f"http://127.0.0.1:{port}")
        anna = await booked_patient(h, 8001, "Anna", "3 Dec 14:30", "2026-12-03T14:30")
        patient = await patient_row(h, anna)
        assert h.services is not None and patient.id is not None
        async with h.services.sessions() as db, db.begin():
            alert = CheckIn(
                patient_id=patient.id, option="urgent", red_flag=True, answered_at=clock.now()
            )
            db.add(alert)
            await db.flush()
            alert_id = alert.id

        # Log in through the link the bot sent.
        await page.goto(await login_link(d))
        await page.get_by_role("button", name="Log in").click()
        await expect(page.get_by_role("heading", name="Today")).to_be_visible()
        await expect(page.locator("#day-sent")).to_have_text("1")
        await expect(page.locator("#open-alerts")).to_have_text("1")

        # Find the patient, open the timeline.
        await page.locator("header nav").get_by_role("link", name="Patients").click()
        await page.get_by_label("Name, phone number or #id").fill("ann")
        await expect(page.locator("#results a", has_text="Anna")).to_have_count(1)
        await page.locator("#results a", has_text="Anna").click()
        await expect(
            page.get_by_role("heading", name=re.compile(r"Anna \(#\d+\)"))
        ).to_be_visible()
        timeline = page.locator("#timeline tbody tr")
        await expect(timeline.first).to_contain_text("booked")
        await expect(timeline.first).to_contain_text("delivered")
        await expect(page.locator("footer")).to_contain_text("Europe/London")

        # Move the session on the clinic's clock, then pause and resume the reminders.
        await page.get_by_label("New date and time (Europe/London)").fill("2026-12-05T10:00")
        await page.get_by_role("button", name="Move", exact=True).click()
        await expect(page.locator("#notice")).to_have_text(
            "The session is now on Sat 5 Dec, 10:00. Its reminders follow the new time; "
            "those already sent are not sent again."
        )
        await expect(page.locator("#sessions")).to_contain_text("Sat 5 Dec, 10:00 to 10:45")
        await page.get_by_role("button", name="Pause reminders").click()
        await expect(page.locator("#notice")).to_contain_text("Reminders to Anna are paused")
        await page.get_by_role("button", name="Resume reminders").click()
        await expect(page.locator("#notice")).to_contain_text("Reminders to Anna are on again")
        await expect(page.get_by_role("button", name="Pause reminders")).to_be_visible()

        # The inbox: a message arrives while the page is open, without a reload.
        await page.locator("header nav").get_by_role("link", name="Inbox").click()
        await expect(page.get_by_role("heading", name="Messages from patients")).to_be_visible()
        await send_to_clinic(h, anna, "May I swim tomorrow?")
        entry = page.locator("article.entry", has_text="May I swim tomorrow?")
        await expect(entry).to_be_visible()
        before = anna.sent_count
        await entry.get_by_label("Your answer to Anna").fill("Not for a week, Anna.")
        await entry.get_by_role("button", name="Send the answer").click()
        await expect(page.locator("#open-count")).to_have_text("Open: 0")
        await h.settle()
        assert "Not for a week, Anna." in anna.inbox[-1].text and anna.sent_count == before + 1

        # The side-effect report, marked handled.
        report = page.locator(f"#alert-{alert_id}")
        await report.get_by_role("button", name="Mark handled").click()
        await expect(page.locator(f"#alert-{alert_id}")).to_contain_text("Handled")
        await expect(page.locator(f"#alert-{alert_id} button")).to_have_count(0)

        # A broadcast: compose, preview, send, and the progress reaches the report.
        await page.locator("header nav").get_by_role("link", name="Broadcasts").click()
        await page.get_by_label("Message").fill("Time to book your maintenance session.")
        await page.get_by_label("All active patients (1)").check()
        await page.get_by_role("button", name="Preview").click()
        await expect(page.locator("article.preview")).to_have_count(3)
        before = anna.sent_count
        await page.get_by_role("button", name="Send to 1").click()
        await expect(page.locator("#report")).to_contain_text("Report of broadcast")
        await expect(page.locator("#report")).to_contain_text("Sent: 1")
        assert anna.sent_count == before + 1
        assert "Time to book your maintenance session." in anna.inbox[-1].text


async def test_the_mini_app_opens_the_dashboard_with_telegrams_initdata(
    page: Page, tmp_path: Path
) -> None:
    clock = FakeClock(T0)
    port = free_port()
    async with clinic(await database(tmp_path), clock, dashboard_port=port) as _:
        signed = init_data(STAFF_ID, clock.now())
        # A stand-in for Telegram's script, as Telegram's app would give it initData.
        given = json.dumps({"initData": signed})
        stand_in = f"window.Telegram = {{WebApp: Object.assign({given}, {{ready() {{}}}})}};"
        await page.route(
            "https://telegram.org/js/telegram-web-app.js",
            lambda route: route.fulfill(body=stand_in, content_type="text/javascript"),
        )
        await page.goto(f"http://127.0.0.1:{port}/dashboard/app")
        await expect(page.get_by_role("heading", name="Today")).to_be_visible()
        # Opened again (its initData used up): the session it opened goes on.
        await page.goto(f"http://127.0.0.1:{port}/dashboard/app")
        await expect(page.get_by_role("heading", name="Today")).to_be_visible()
        # Without Telegram's word: refused.
        await page.context.clear_cookies()
        await page.goto(f"http://127.0.0.1:{port}/dashboard/app")
        await expect(page.locator("#refused")).to_be_visible()


async def test_the_main_pages_with_the_demos_data(page: Page) -> None:
    """The dashboard of `aftercare demo --dashboard`, page by page, at a desktop's width:
    each is screenshotted (test-results/; AFTERCARE_SCREENSHOTS=docs/screenshots refreshes
    the README's)."""
    port = free_port()
    shots = Path(os.environ.get("AFTERCARE_SCREENSHOTS") or SCREENSHOTS)
    await asyncio.to_thread(shots.mkdir, parents=True, exist_ok=True)
    async with demo_dashboard(port) as (link, _out):
        await page.set_viewport_size({"width": 1200, "height": 900})
        await page.goto(link)
        await page.get_by_role("button", name="Log in").click()
        await expect(page.get_by_role("heading", name="Today")).to_be_visible()
        await page.screenshot(path=str(shots / "today.png"), full_page=True)
        nav = page.locator("header nav")
        await nav.get_by_role("link", name="Patients").click()
        await expect(page.locator("#results tbody tr").first).to_be_visible()
        await page.screenshot(path=str(shots / "patients.png"), full_page=True)
        await page.locator("#results a", has_text="Anna").first.click()
        await expect(page.locator("#timeline")).to_be_visible()
        await page.screenshot(path=str(shots / "patient.png"), full_page=True)
        await nav.get_by_role("link", name="Inbox").click()
        await expect(page.locator("article.entry").first).to_be_visible()
        await page.screenshot(path=str(shots / "inbox.png"), full_page=True)
