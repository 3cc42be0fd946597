"""The dashboard served by a real `aftercare run` process: next to long polling on a port of
its own, and on the webhook's server in webhook mode (issue 12). Any process can serve it:
what it shows comes from the database."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
import pytest

from bot.offline.harness import SANDBOX_TOKEN
from bot.offline.sandbox import SandboxBotAPI
from tests.dashboard_side import LINK, demo_dashboard
from tests.procs import HOOK, BotProcess, free_port, webhook_bot

pytestmark = pytest.mark.slow

STAFF = 990


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_polling_bot_serves_the_dashboard_and_a_staff_member_logs_in(
    api: SandboxBotAPI, db_url: str, tmp_path: Path
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    staff = api.user(STAFF, "Sam")
    async with BotProcess(
        api,
        db_url,
        tmp_path,
        env={"AFTERCARE_DASHBOARD_PORT": str(port), "AFTERCARE_STAFF_USER_IDS": str(STAFF)},
    ) as bot:
        await bot.start()
        staff.send("/dashboard")
        await staff.wait_messages(1, timeout=30)
        link = LINK.search(staff.last().text)
        assert link is not None and link.group(1).startswith(f"{base}/dashboard/login?token=")
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as http:
            async with http.get(link.group(1)) as page:
                token = re.search(r'name="token" value="([^"]+)"', await page.text())
            assert token is not None
            async with http.post(f"{base}/dashboard/login", data={"token": token.group(1)}) as r:
                today = await r.text()  # redirected to the clinic's Today
                assert r.status == 200 and "Today" in today
            async with http.get(f"{base}/dashboard/static/htmx.min.js") as r:
                assert r.status == 200 and "htmx" in await r.text()
        assert await bot.terminate() == 0
    logs = bot.logs()
    assert "dashboard: listening on 127.0.0.1" in logs
    for secret in (SANDBOX_TOKEN.partition(":")[2], token.group(1)):
        assert secret not in logs


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_webhook_mode_serves_the_dashboard_on_its_own_server(
    api: SandboxBotAPI, db_url: str, tmp_path: Path
) -> None:
    port, other = free_port(), free_port()
    async with webhook_bot(
        api, db_url, tmp_path, port, AFTERCARE_DASHBOARD_PORT=str(other)
    ) as bot:
        await bot.start()
        await api.wait_for(lambda: api.webhook_url == HOOK, timeout=30)
        async with aiohttp.ClientSession() as http:
            for base in (f"http://127.0.0.1:{port}", f"http://127.0.0.1:{other}"):
                async with http.get(f"{base}/dashboard/", allow_redirects=False) as r:
                    assert r.status == 401 and "/dashboard" in await r.text()
            async with http.get(f"http://127.0.0.1:{port}/healthz") as r:
                assert r.status == 200
        assert await bot.terminate() == 0


async def test_the_demo_leaves_the_dashboard_running_with_its_data() -> None:
    """`aftercare demo --dashboard`: after the scripted demo, its login link is printed and
    the dashboard shows the demo's clinic and patients until stopped."""
    port = free_port()
    async with demo_dashboard(port) as (link, out):
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as http:
            async with http.get(link) as page:
                token = re.search(r'name="token" value="([^"]+)"', await page.text())
            assert token is not None
            async with http.post(
                f"http://127.0.0.1:{port}/dashboard/login", data={"token": token.group(1)}
            ) as r:
                today = await r.text()
            patients_url = re.search(r'href="(/dashboard/c/\d+/patients)"', today)
            assert patients_url is not None
            async with http.get(f"http://127.0.0.1:{port}{patients_url.group(1)}") as r:
                patients = await r.text()
            recall = re.search(r'id="broadcast-due" href="([^"]+)"', today)
            assert recall is not None
            async with http.get(f"http://127.0.0.1:{port}{recall.group(1)}") as r:
                composer = await r.text()
    assert "Demo Hair Clinic" in today and "Ctrl-C stops the dashboard" in out.getvalue()
    # The demo's four patients whose course ended four months ago, in the due list.
    assert re.search(r'id="due">4<', today) and today.count("due since") == 4
    assert 'value="due" checked' in composer and "Due for maintenance (4)" in composer
    assert len(re.findall(r"/patients/\d+\">#\d+ ", patients)) >= 4
