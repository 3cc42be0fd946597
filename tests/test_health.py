"""`/healthz`: the database, the dispatcher, the process's role and the oldest due message's
lateness, each reported."""

from __future__ import annotations

from pathlib import Path

from bot.serve.health import health_report
from bot.serve.runner import make_services
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
    assert report["role"] == "leader" and report["oldest_due_lateness_seconds"] == 0


async def test_health_says_when_the_database_is_gone(tmp_path: Path, clock: FakeClock) -> None:
    missing = f"sqlite+aiosqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}"
    services = make_services(e2e.test_settings(missing), clock)
    try:
        report = await health_report(services)
    finally:
        await services.engine.dispose()
    assert report == {
        "ok": False,
        "database": False,
        "dispatcher": {"alive": False},
        "role": "stand-by",
        "oldest_due_lateness_seconds": None,
    }
