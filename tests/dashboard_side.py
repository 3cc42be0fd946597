"""Helpers for the dashboard's tests: the bot with its dashboard served (as `aftercare run`
serves it), a browser-like HTTP client with a cookie jar, login links and signed initData."""

from __future__ import annotations

import asyncio
import io
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import aiohttp
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.dashboard.auth import init_data_hash
from bot.offline.demo import run_demo
from bot.offline.harness import SANDBOX_TOKEN, Harness
from bot.offline.sandbox import SandboxUser
from bot.settings import Settings
from scheduler.care import start_patient
from scheduler.clock import FakeClock
from scheduler.db import saved
from scheduler.models import (
    Broadcast,
    CheckIn,
    Clinic,
    InboxKind,
    InboxMessage,
    Patient,
    TreatmentSession,
)
from tests.clinic_side import add_clinic, clinic
from tests.e2e import say
from tests.procs import free_port

LINK = re.compile(r"(http://\S+/dashboard/login\?token=[A-Za-z0-9_.-]+)")
CSRF = re.compile(r'name="csrf" value="([0-9a-f]+)"')


@dataclass
class Desk:
    """The bot with its dashboard, the default clinic's staff member, the dashboard's URL."""

    h: Harness
    staff: SandboxUser
    base: str

    def url(self, path: str) -> str:
        return f"{self.base}{path}"


@asynccontextmanager
async def desk(db_url: str, clock: FakeClock, **overrides: object) -> AsyncIterator[Desk]:
    port = free_port()
    async with clinic(db_url, clock, dashboard_port=port, **overrides) as (h, staff):
        yield Desk(h, staff, f"http://127.0.0.1:{port}")


def browser() -> aiohttp.ClientSession:
    """A client that keeps cookies (for 127.0.0.1 too) and does not follow redirects itself."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def login_link(d: Desk, user: SandboxUser | None = None) -> str:
    """`/dashboard` in Telegram; the login link the bot sent."""
    user = user or d.staff
    await say(d.h, user, "/dashboard")
    found = LINK.search(user.last().text)
    assert found, user.last().text
    return found.group(1)


async def log_in(d: Desk, http: aiohttp.ClientSession, link: str) -> aiohttp.ClientResponse:
    """Open the link and press "Log in", as a person does: the answer to the POST."""
    async with http.get(link) as page:
        assert page.status == 200
        token = re.search(r'name="token" value="([^"]+)"', await page.text())
    assert token
    response = await http.post(
        d.url("/dashboard/login"), data={"token": token.group(1)}, allow_redirects=False
    )
    await response.read()
    return response


async def logged_in(d: Desk, user: SandboxUser | None = None) -> aiohttp.ClientSession:
    http = browser()
    response = await log_in(d, http, await login_link(d, user))
    assert response.status == 303, await response.text()
    return http


async def get(http: aiohttp.ClientSession, url: str, **kwargs: object) -> tuple[int, str]:
    async with http.get(url, allow_redirects=False, **kwargs) as response:  # type: ignore[arg-type]
        return response.status, await response.text()


async def post(
    http: aiohttp.ClientSession, url: str, data: dict[str, str], **kwargs: object
) -> tuple[int, str]:
    async with http.post(url, data=data, allow_redirects=False, **kwargs) as response:  # type: ignore[arg-type]
        return response.status, await response.text()


def csrf_of(page: str) -> str:
    found = CSRF.search(page)
    assert found, page[:500]
    return found.group(1)


@asynccontextmanager
async def on_page(d: Desk, url: str) -> AsyncIterator[tuple[aiohttp.ClientSession, str, str]]:
    """Staff logged in (a new browser) and on this page: the browser, the page, its form
    token."""
    async with await logged_in(d) as http:
        _, page = await get(http, url)
        yield http, page, csrf_of(page)


def init_data(
    user_id: int,
    signed_at: datetime,
    *,
    token: str = SANDBOX_TOKEN,
    first_name: str = "Sam",
    language: str = "en",
) -> str:
    """A Mini App's initData as Telegram signs it for the bot with `token`."""
    user = {"id": user_id, "first_name": first_name, "language_code": language}
    fields = {
        "query_id": f"AAH{user_id}",
        "user": json.dumps(user, separators=(",", ":")),
        "auth_date": str(int(signed_at.timestamp())),
    }
    fields["hash"] = init_data_hash(fields, token)
    return urlencode(fields)


@dataclass(frozen=True)
class OtherClinic:
    """Clinic B: a patient, their inbox message and a red-flag check-in answer."""

    clinic_id: int
    patient_id: int
    message_id: int
    checkin_id: int
    broadcast_id: int
    session_id: int


async def consented_patient(
    *, session: AsyncSession, clinic_id: int, user_id: int, name: str, zone: str, now: datetime
) -> Patient:
    """A patient as /start leaves them (care.start_patient), in `zone`, consented (nothing
    booked for them waits on it)."""
    clinic = await session.get(Clinic, clinic_id)
    assert clinic is not None
    patient, _ = await start_patient(
        session=session,
        tg_user_id=user_id,
        chat_id=user_id,
        first_name=name,
        language="en",
        clinic=clinic,
        now=now,
    )
    patient.timezone, patient.consent_at = zone, now
    assert patient.id is not None
    return patient


async def checked_in(
    h: Harness, patient_id: int, option: str, *, red_flag: bool = False
) -> CheckIn:
    """A check-in answer given now, written straight to the bot's database."""
    assert h.services is not None
    async with h.services.sessions() as db, db.begin():
        answer = CheckIn(
            patient_id=patient_id, option=option, red_flag=red_flag, answered_at=h.clock.now()
        )
        return await saved(db, answer)


async def other_clinic(h: Harness) -> OtherClinic:
    clinic_b = await add_clinic(h, "other", "Other Clinic")
    assert h.services is not None and clinic_b.id is not None
    now = h.clock.now()
    async with h.services.sessions() as db, db.begin():
        patient = await consented_patient(
            session=db,
            clinic_id=clinic_b.id,
            user_id=77001,
            name="Bella",
            zone="Europe/Berlin",
            now=now,
        )
        assert patient.id is not None
        message = InboxMessage(
            patient_id=patient.id,
            clinic_id=clinic_b.id,
            kind=InboxKind.MESSAGE,
            text="Clinic B only",
            created_at=now,
        )
        checkin = CheckIn(patient_id=patient.id, option="urgent", red_flag=True, answered_at=now)
        draft = Broadcast(clinic_id=clinic_b.id, created_by=1, text="B news", created_at=now)
        treatment = TreatmentSession(
            patient_id=patient.id,
            clinic_id=clinic_b.id,
            start_at=now + timedelta(days=3),
            end_at=now + timedelta(days=3, minutes=45),
            created_at=now,
        )
        db.add_all([message, checkin, draft, treatment])
        await db.flush()
        assert message.id is not None and checkin.id is not None and draft.id is not None
        assert treatment.id is not None
        return OtherClinic(clinic_b.id, patient.id, message.id, checkin.id, draft.id, treatment.id)


async def default_clinic_id(h: Harness) -> int:
    assert h.services is not None
    async with h.services.sessions() as db:
        found = (await db.exec(select(Clinic).where(Clinic.slug == "default"))).one()
    assert found.id is not None
    return found.id


@asynccontextmanager
async def demo_dashboard(port: int) -> AsyncIterator[tuple[str, io.StringIO]]:
    """`aftercare demo --dashboard` in this process: its login link, given once the scripted
    demo has run, and what it printed; stopped at the end, and its exit code checked."""
    out = io.StringIO()
    stop = asyncio.Event()
    link: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    settings = Settings.model_validate({"bot_token": None, "_env_file": None})
    demo = asyncio.create_task(
        run_demo(settings, out=out, dashboard_port=port, stop=stop, link=link)
    )
    try:
        either: set[asyncio.Future[Any]] = {demo, link}
        await asyncio.wait(either, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        assert link.done(), out.getvalue()[-2000:]
        yield link.result(), out
    finally:
        stop.set()
        assert await demo == 0
