"""`aftercare demo`: the whole journey offline, printed as the patient would read it.

The sandbox Bot API stands in for Telegram; the real Application runs against it over
HTTP; a scripted patient taps and types; the clock jumps from step to step.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from sqlmodel import col, select

from bot.offline.demo_clinic import clinic_demo
from bot.offline.demo_patient import DEMO_STAFF_ID, patient_demo
from bot.offline.harness import Harness
from bot.offline.script import SCRIPTS, Script
from bot.offline.transcript import Chat, Transcript
from bot.serve.runner import stop_event
from bot.settings import Settings
from scheduler.clock import FakeClock
from scheduler.db import migrate
from scheduler.models import MessageState, PlannedMessage

DEMO_START = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
DEMO_CLINIC = {
    "clinic_name": "Demo Hair Clinic",
    "clinic_address": "12 Example Street, London",
    "clinic_phone": "+44 20 7946 0000",
}


async def journey(h: Harness, t: Transcript, script: Script) -> int:
    """A patient books a session and receives every step of the timeline."""
    anna = Chat(t, h.patient(501, script.patient, script.lang), "patient")
    t.scene("A patient opens the bot from the clinic's link")
    await anna.type(h, "/start")
    await anna.press(h, "consent:yes")
    await anna.press(h, "tz:keep")
    t.scene("Booking with a typed date, then the health questions")
    session = datetime(2026, 12, 3, 14, 30, tzinfo=h.settings.zone)
    await anna.type(h, script.typed(session, h.settings.zone))
    await anna.press(h, f"ok:{session:%Y-%m-%dT%H:%M}")
    await anna.answer_screening(h)

    t.scene("The clock jumps from step to step")
    assert h.services is not None
    for _ in range(100):  # a bound, in case a message would never leave `pending`
        async with h.services.sessions() as db:
            nxt = (
                await db.exec(
                    select(PlannedMessage)
                    .where(PlannedMessage.state == MessageState.PENDING)
                    .order_by(col(PlannedMessage.due_at))
                )
            ).first()
        if nxt is None:
            break
        await h.advance_to(max(nxt.due_at, h.clock.now()))
        anna.show()
    async with h.services.sessions() as db:
        rows = (await db.exec(select(PlannedMessage))).all()
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.state] = counts.get(row.state, 0) + 1
    t.scene("Delivery record")
    t.say("    " + ", ".join(f"{state}: {n}" for state, n in sorted(counts.items())))
    return 0 if counts.get(MessageState.FAILED, 0) == 0 else 1


async def run_demo(
    settings: Settings,
    *,
    out: TextIO,
    language: str = "en",
    dashboard_port: int | None = None,
    stop: asyncio.Event | None = None,
    link: asyncio.Future[str] | None = None,
) -> int:
    """Run the scripted journey on a throw-away database, its people's Telegram in
    `language`; 0 when everything arrived. With `dashboard_port`, the clinic dashboard is then
    left running on localhost with the demo's data (its clock stopped at the demo's end) and
    a login link printed (and given to `link`), until `stop` is set (by default: Ctrl-C or
    SIGTERM)."""
    script = SCRIPTS[language]
    with tempfile.TemporaryDirectory(prefix="aftercare-demo-") as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'demo.db'}"
        await asyncio.to_thread(migrate, url)
        update: dict[str, object] = {"database_url": url, "bot_token": None}
        defaults = Settings.model_fields
        for name, value in DEMO_CLINIC.items():
            if getattr(settings, name) == defaults[name].default:
                update[name] = value  # the demo's clinic, unless one is configured
        if not settings.staff_user_ids:
            update["staff_user_ids"] = [DEMO_STAFF_ID]  # the nurse who gets side-effect alerts
        if dashboard_port is not None:
            update.update(
                dashboard_port=dashboard_port, dashboard_listen="127.0.0.1", dashboard_url=None
            )
        demo_settings = settings.model_copy(update=update)
        clock = FakeClock(DEMO_START)
        transcript = Transcript(out, demo_settings.zone, language)
        transcript.say(
            f"Aftercare bot offline demo: {demo_settings.clinic_name}, "
            f"times in {demo_settings.clinic_timezone}. No Telegram is contacted."
        )
        async with Harness(demo_settings, clock) as harness:
            code = await journey(harness, transcript, script)
            # The patient's controls: a move, /aftercare, a red-flag check-in, the inbox.
            code = code or await patient_demo(harness, transcript, script)
            # The clinic side: /due and a maintenance broadcast.
            code = code or await clinic_demo(harness, transcript, script)
            if dashboard_port is not None and code == 0:
                await leave_dashboard(harness, transcript, stop or stop_event(), link)
            return code


async def leave_dashboard(
    h: Harness, t: Transcript, stop: asyncio.Event, link: asyncio.Future[str] | None = None
) -> None:
    """The demo's nurse asks for a login link (/dashboard); the link is printed, and the
    dashboard keeps serving the demo's data until `stop`."""
    nurse = h.patient(DEMO_STAFF_ID, "Nurse")
    nurse.send("/dashboard")
    await h.settle()
    found = re.search(r"http://\S+/dashboard/login\?token=\S+", nurse.last().text)
    assert found is not None, "the bot sent no login link"
    t.scene("The clinic dashboard, with the demo's clinic and patients")
    t.say(f"    Open {found.group(0)} in a browser (the demo's clock stands still: the link")
    t.say("    stays valid). Ctrl-C stops the dashboard.")
    if link is not None:
        link.set_result(found.group(0))
    await stop.wait()
