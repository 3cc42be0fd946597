"""/healthz and /metrics of a real `python -m bot run` in polling mode (issue 13): scraped
while it delivers, the counts are checked against the rows; on PostgreSQL a second process
stands by and says so."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.seed import seed_due, states
from bot.offline.harness import SANDBOX_TOKEN
from bot.offline.sandbox import SandboxBotAPI
from scheduler.clock import SystemClock
from tests.procs import BotProcess, free_port, open_chats, report

pytestmark = pytest.mark.slow

N = 600
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    """Every sample of a scrape, by name and labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


async def scrape(http: aiohttp.ClientSession, port: int) -> tuple[Samples, dict[str, Any]]:
    async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        metrics = samples(await response.text())
    async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
        health = await response.json()
    return metrics, health


def bot_on(api: SandboxBotAPI, db_url: str, tmp_path: Path, name: str, port: int) -> BotProcess:
    return BotProcess(
        api,
        db_url,
        tmp_path,
        name=name,
        env={"AFTERCARE_DASHBOARD_PORT": str(port), "AFTERCARE_RATE_OVERALL_PER_SECOND": "300"},
    )


async def test_metrics_count_what_the_rows_say_while_delivering(
    engine: AsyncEngine,
    api: SandboxBotAPI,
    db_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    seeded = await seed_due(engine, count=N, now=SystemClock().now())
    open_chats(api, seeded.chat_ids)
    port = free_port()
    bot = bot_on(api, db_url, tmp_path, "leader", port)
    postgres = engine.dialect.name == "postgresql"
    standby_port = free_port()
    standby = bot_on(api, db_url, tmp_path, "standby", standby_port) if postgres else None
    try:
        await bot.start()
        async with aiohttp.ClientSession() as http:
            await api.wait_for(lambda: api.calls["sendMessage"] >= 100, timeout=30)
            midway, health = await scrape(http, port)
            assert health["ok"] and health["role"] == "leader"
            assert value(midway, "aftercare_leader") == 1
            assert 0 < value(midway, "aftercare_queue_pending") < N
            if standby is not None:
                await standby.start()
                for _ in range(100):  # until its server is up
                    try:
                        standing, standing_health = await scrape(http, standby_port)
                        break
                    except aiohttp.ClientConnectionError:
                        await asyncio.sleep(0.2)
                assert standing_health["ok"] and standing_health["role"] == "stand-by"
                assert value(standing, "aftercare_leader") == 0
                assert (
                    value(
                        standing, "aftercare_messages_total", outcome="sent", priority="reminder"
                    )
                    == 0
                )
            await api.wait_for(
                lambda: all(api.chat(c).sent_count for c in seeded.chat_ids), timeout=60
            )
            # Until the last outcomes are recorded in the rows, and counted (just after):
            # the process's database and its metrics can only be looked at, not waited on.
            for _ in range(100):
                sent_rows = sum(1 for s in (await states(engine)).values() if s == "sent")
                final, health = await scrape(http, port)
                counted = value(
                    final, "aftercare_messages_total", outcome="sent", priority="reminder"
                )
                if sent_rows == counted == N:
                    break
                await asyncio.sleep(0.2)
        assert await bot.terminate() == 0
        if standby is not None:
            assert await standby.terminate() == 0
    finally:
        await bot.stop_quietly()
        if standby is not None:
            await standby.stop_quietly()
    sent = value(final, "aftercare_messages_total", outcome="sent", priority="reminder")
    assert "aftercare_messages_total" in {name for name, _ in final}
    report(
        capsys,
        f"metrics {engine.dialect.name}",
        {
            "rows_sent": sent_rows,
            "metric_sent": sent,
            "pending": value(final, "aftercare_queue_pending"),
            "due": value(final, "aftercare_queue_due"),
            "lateness_count": value(final, "aftercare_delivery_lateness_seconds_count"),
            "claims": value(final, "aftercare_claim_duration_seconds_count"),
            "reachable_patients": value(final, "aftercare_patients", state="reachable"),
        },
    )
    assert sent == sent_rows == N
    assert value(final, "aftercare_delivery_lateness_seconds_count") == N
    assert value(final, "aftercare_queue_pending") == value(final, "aftercare_queue_due") == 0
    assert value(final, "aftercare_claim_duration_seconds_count") >= 1
    assert value(final, "aftercare_patients", state="reachable") == N
    assert health["oldest_due_lateness_seconds"] == 0
    assert SANDBOX_TOKEN not in bot.logs()
