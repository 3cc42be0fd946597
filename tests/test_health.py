"""`/healthz`: the database and the dispatcher, each reported."""

from __future__ import annotations

from pathlib import Path

from bot.serve.runner import make_services
from bot.serve.webhook import health_report
from scheduler.clock import FakeClock
from tests import e2e


async def test_health_is_ok_with_a_database_and_a_running_dispatcher(
    db_url: str, clock: FakeClock
) -> None:
    async with e2e.running(db_url, clock) as h:
        assert h.services is not None
        report = await health_report(h.services)
    assert report["ok"] is True and report["database"] is True
    assert report["dispatcher"]["alive"] is True and report["dispatcher"]["active"] is True


async def test_health_says_when_the_database_is_gone(tmp_path: Path, clock: FakeClock) -> None:
    missing = f"sqlite+aiosqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}"
    services = make_services(e2e.test_settings(missing), clock)
    try:
        report = await health_report(services)
    finally:
        await services.engine.dispose()
    assert report == {"ok": False, "database": False, "dispatcher": {"alive": False}}
