"""`aftercare run --webhook` as a real process: secret token, health, SIGTERM, clean logs."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from bench.seed import seed_due, states
from bot.offline.harness import SANDBOX_TOKEN
from bot.offline.sandbox import SandboxBotAPI
from scheduler.clock import SystemClock
from scheduler.db import make_engine
from tests.procs import HOOK, SECRET, free_port, open_chats, webhook_bot

pytestmark = pytest.mark.slow


def start_update(user_id: int, update_id: int) -> dict[str, object]:
    user = {"id": user_id, "is_bot": False, "first_name": "Web", "language_code": "en"}
    return {
        "update_id": update_id,
        "message": {
            "message_id": update_id,
            "date": int(SystemClock().now().timestamp()),
            "chat": {"id": user_id, "type": "private", "first_name": "Web"},
            "from": user,
            "text": "/start",
            "entities": [{"type": "bot_command", "offset": 0, "length": 6}],
        },
    }


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_webhook_checks_the_secret_reports_health_and_stops_cleanly(
    api: SandboxBotAPI, db_url: str, tmp_path: Path
) -> None:
    engine = make_engine(db_url)
    seeded = await seed_due(engine, count=50, now=SystemClock().now())
    open_chats(api, seeded.chat_ids)
    patient = api.user(777, "Web")
    patient.started = True
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    try:
        async with webhook_bot(api, db_url, tmp_path, port) as bot:
            await bot.start()
            await api.wait_for(lambda: api.webhook_url == HOOK, timeout=30)
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{base}/healthz") as response:
                    health = await response.json()
                    assert response.status == 200
                assert health["ok"] and health["database"] and health["dispatcher"]["alive"]

                update = start_update(777, 1)
                async with http.post(f"{base}/tg/hook", json=update) as response:
                    assert response.status == 403
                wrong = {"X-Telegram-Bot-Api-Secret-Token": "guess"}
                async with http.post(f"{base}/tg/hook", json=update, headers=wrong) as response:
                    assert response.status == 403
                assert patient.sent_count == 0  # neither was handled

                right = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
                async with http.post(f"{base}/tg/hook", json=update, headers=right) as response:
                    assert response.status == 200
                await patient.wait_messages(1, timeout=15)
            await api.wait_for(
                lambda: all(api.chat(c).sent_count == 1 for c in seeded.chat_ids), timeout=30
            )
            assert await bot.terminate() == 0
            final = await states(engine)
    finally:
        await engine.dispose()
    assert set(final.values()) == {"sent"}
    logs = bot.logs()
    assert "webhook request refused: missing or wrong secret token" in logs
    for secret in (SANDBOX_TOKEN, SANDBOX_TOKEN.partition(":")[2], SECRET):
        assert secret not in logs
