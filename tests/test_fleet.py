"""Several processes in polling mode on one PostgreSQL database (issue 13): only the leader
polls Telegram, a stand-by takes over polling and delivery when the leader dies, and no
patient's update is lost or answered twice meanwhile. Real `python -m bot run` processes
against the sandbox Bot API, which answers a second concurrent getUpdates with 409 Conflict
as Telegram does; the figures are printed (docs/delivery.md records them)."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.seed import seed_due, states
from bot.offline.harness import SANDBOX_TOKEN
from bot.offline.sandbox import SandboxBotAPI
from bot.turns import SIDE_BY_SIDE
from scheduler import updates
from scheduler.clock import FakeClock, SystemClock
from tests import e2e
from tests.procs import BotProcess, all_recorded, open_chats, received, report

FIRST_USER = 700_000
REMINDERS = 600
WINDOW = 10  # dispatch_concurrency: sends in flight at any instant (docs/delivery.md)


def conflicts(api: SandboxBotAPI) -> int:
    return sum(1 for r in api.requests if r.method == "getUpdates" and r.status == 409)


def answered(api: SandboxBotAPI, users: range) -> dict[int, int]:
    """Messages each patient who wrote has received, for those who received any."""
    counts = {user: api.user(user).sent_count for user in users}
    return {user: n for user, n in counts.items() if n}


async def logged(bot: BotProcess, text: str, timeout: float = 30) -> None:  # noqa: ASYNC109
    """Until the process's log says `text` (another process's file: it can only be looked at)."""
    async with asyncio.timeout(timeout):
        while text not in bot.logs():  # noqa: ASYNC110
            await asyncio.sleep(0.1)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["postgres"])
async def test_only_the_leader_polls_and_a_stand_by_takes_over_losing_no_update(
    api: SandboxBotAPI,
    engine: AsyncEngine,
    db_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Two processes in polling mode, patients writing and reminders falling due all along:
    the leader is killed (kill -9), then after it is back as a stand-by the new leader is
    stopped (SIGTERM): a rolling restart."""
    # Reminders falling due through the whole test, one patient each.
    reminders = await seed_due(
        engine, count=REMINDERS, now=SystemClock().now(), spread=timedelta(seconds=12)
    )
    open_chats(api, reminders.chat_ids)
    first = BotProcess(api, db_url, tmp_path, name="first")
    second = BotProcess(api, db_url, tmp_path, name="second")
    loop = asyncio.get_running_loop()
    users = range(FIRST_USER, FIRST_USER + 120)
    sent = 0

    async def patients_write(count: int, pause: float) -> None:
        """The next `count` patients open the bot, one every `pause` seconds."""
        nonlocal sent
        for user in users[sent : sent + count]:
            api.user(user).start()
            sent += 1
            await asyncio.sleep(pause)

    async with first, second:
        await first.start()
        await logged(first, "polling Telegram for updates (this process leads)")
        await patients_write(1, 0)
        await api.wait_for(lambda: len(answered(api, users)) == 1, timeout=30)
        # What one /start is answered with: every patient must get exactly this.
        once = api.chat(users[0]).sent_count
        await second.start()
        await logged(second, "dispatcher standing by")
        # Both run for a while, patients writing all along: the stand-by never polls.
        await patients_write(40, 0.1)
        await api.wait_for(lambda: len(answered(api, users)) == sent, timeout=30)
        conflicts_while_both_ran = conflicts(api)
        polls_while_both_ran = api.calls["getUpdates"]
        # The leader dies (kill -9) while patients keep writing; the stand-by takes over.
        writing = asyncio.create_task(patients_write(40, 0.05))
        midway = len(answered(api, users)) + 10
        await api.wait_for(lambda: len(answered(api, users)) >= midway, timeout=30)
        await first.kill()
        killed, before = loop.time(), len(answered(api, users))
        await api.wait_for(lambda: len(answered(api, users)) > before, timeout=30)
        takeover = loop.time() - killed
        await writing
        await api.wait_for(lambda: len(answered(api, users)) == sent, timeout=30)
        # A rolling restart: the old leader comes back as a stand-by, the new leader stops
        # (SIGTERM), and the old one takes over again.
        await first.start()
        await logged(first, "dispatcher standing by")
        await patients_write(20, 0.05)
        await api.wait_for(lambda: len(answered(api, users)) == sent, timeout=30)
        writing = asyncio.create_task(patients_write(19, 0.05))
        assert await second.terminate() == 0
        stopped, before = loop.time(), len(answered(api, users))
        await api.wait_for(lambda: len(answered(api, users)) > before, timeout=30)
        takeover_after_stop = loop.time() - stopped
        await writing
        await api.wait_for(lambda: len(answered(api, users)) == sent, timeout=30)
        await api.wait_for(
            lambda: all(api.chat(c).sent_count for c in reminders.chat_ids), timeout=60
        )
        # The killed leader's rows in flight were delivered but stay `sending` until their
        # lease runs out (5 s); then the leader sends them again and records them.
        await all_recorded(engine, timeout=30)
        assert await first.terminate() == 0
    final = await states(engine)
    reminded = received(api, reminders.chat_ids)
    counts = answered(api, users)
    twice = sum(1 for n in counts.values() if n > once)
    report(
        capsys,
        "polling fleet postgresql",
        {
            "updates": sent,
            "answered": len(counts),
            "answered_twice": twice,
            "conflicts_while_both_ran": conflicts_while_both_ran,
            "polls_while_both_ran": polls_while_both_ran,
            "conflicts": conflicts(api),
            "takeover_after_kill_s": round(takeover, 2),
            "takeover_after_stop_s": round(takeover_after_stop, 2),
            "reminders": REMINDERS,
            "reminders_lost": sum(1 for n in reminded.values() if n == 0),
            "reminders_twice": sum(n - 1 for n in reminded.values() if n > 1),
        },
    )
    assert set(final.values()) == {"sent"}
    assert all(n >= 1 for n in reminded.values())
    assert sum(n - 1 for n in reminded.values()) <= WINDOW  # the killed leader's in flight
    assert sent == len(users)
    assert len(counts) == sent  # no update lost
    assert all(n in (once, 2 * once) for n in counts.values())
    assert twice <= SIDE_BY_SIDE  # at most the updates in hand when the leader was killed
    assert conflicts(api) == 0
    for bot in (first, second):
        logs = bot.logs()
        assert "409 Conflict" not in logs and "Conflict:" not in logs
        assert SANDBOX_TOKEN not in logs
    assert takeover < 10 and takeover_after_stop < 10


async def test_someone_else_polling_the_token_is_one_warning_line_each_time(
    db_url: str, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Another program long-polls with the bot's token: each poll it cuts short is one
    WARNING naming the cause (no traceback), and the bot polls again, with back-off; once
    the other program stops, the patient's message is answered."""
    caplog.set_level(logging.INFO)
    async with e2e.running(db_url, clock) as h:
        url = f"{h.api.base_url}{SANDBOX_TOKEN}/getUpdates"
        async with aiohttp.ClientSession() as http:
            for _ in range(3):  # the other program's long polls, each cutting the bot's
                async with http.post(url, json={"timeout": 1}) as response:
                    assert response.status in (200, 409)
        patient = h.api.user(FIRST_USER)
        patient.start()
        await h.api.wait_for(lambda: patient.sent_count > 0, timeout=15)
    warnings = [
        r for r in caplog.records if r.name.startswith("aftercare") and "409" in r.getMessage()
    ]
    assert warnings, "the bot's polls were cut short"
    for record in warnings:
        assert record.levelno == logging.WARNING and record.exc_info is None
        assert record.getMessage().startswith("another process is polling Telegram")
    assert not any(r.exc_info for r in caplog.records if r.name.startswith("aftercare"))


async def test_polling_takes_over_from_a_webhook_left_set(
    db_url: str, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A webhook set for the bot (webhook mode before, or another program's setWebhook) makes
    Telegram refuse getUpdates: the polling leader deletes it, says so in one line, and
    answers the patient."""
    caplog.set_level(logging.INFO)
    async with e2e.running(db_url, clock) as h:
        url = f"{h.api.base_url}{SANDBOX_TOKEN}/setWebhook"
        hook = {"url": "https://example.org/hook"}
        async with aiohttp.ClientSession() as http, http.post(url, json=hook) as response:
            assert response.status == 200
        await h.api.wait_for(lambda: not h.api.webhook_url, timeout=15)
        patient = h.api.user(FIRST_USER)
        patient.start()
        await h.api.wait_for(lambda: patient.sent_count > 0, timeout=15)
    said = [r.getMessage() for r in caplog.records if r.name == "aftercare.polling"]
    assert "a webhook is set for this bot; deleting it to poll" in said
    assert not any(line.startswith("another process is polling") for line in said)


async def test_a_failed_offset_write_stops_nothing_and_handles_nothing_twice(
    db_url: str,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The database refuses the offset's write after an update was handled (it went away
    for a moment): one ERROR line, polling goes on from the offset the process kept, and
    neither that update nor the next is handled twice."""
    real = updates.handled
    failed: list[int] = []

    async def flaky(**kw: Any) -> None:
        if not failed:
            failed.append(kw["next_update_id"])
            raise ConnectionError("the database went away")
        await real(**kw)

    monkeypatch.setattr(updates, "handled", flaky)
    async with e2e.running(db_url, clock) as h:
        first, second = h.api.user(FIRST_USER), h.api.user(FIRST_USER + 1)
        first.start()
        await h.api.wait_for(lambda: first.sent_count > 0, timeout=15)
        second.start()
        await h.api.wait_for(lambda: second.sent_count > 0, timeout=15)
        await h.settle()
        once = second.sent_count
        assert first.sent_count == once
    assert failed
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [errors[0]] and errors[0].startswith("polling stopped; polling again")
