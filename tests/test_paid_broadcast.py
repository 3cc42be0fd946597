"""Telegram's paid broadcasts: the sandbox's limits, and a clinic's broadcast end to end
(the real limiter, Telegram sender and dispatcher) against them, in real time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from telegram import Bot
from telegram.error import RetryAfter
from typer.testing import CliRunner

from bench.broadcast import delivering, undelivered
from bench.seed import seed_broadcast, seed_due
from bot.cli.commands import cli
from bot.offline.harness import SANDBOX_TOKEN
from bot.offline.sandbox import SandboxBotAPI
from scheduler.clock import SystemClock
from scheduler.db import make_engine, migrate
from tests.test_ratelimit import most_in_any_window

BULK_CHAT = 1_000_000
REMINDER_CHAT = 9_000_000


class Frozen:
    """Real seconds that stand still: every send falls in the same second."""

    def __call__(self) -> float:
        return 100.0


@pytest.fixture
async def limited() -> AsyncIterator[tuple[SandboxBotAPI, Bot]]:
    api = SandboxBotAPI(SANDBOX_TOKEN, clock=SystemClock(), free_per_second=30, monotonic=Frozen())
    async with api:
        for chat in range(1, 101):
            api.user(chat).started = True
        bot = Bot(SANDBOX_TOKEN, base_url=api.base_url)
        async with bot:
            yield api, bot


@pytest.fixture
async def free_ones_sent(limited: tuple[SandboxBotAPI, Bot]) -> tuple[SandboxBotAPI, Bot]:
    """`limited`, with the second's 30 free messages sent (reminders)."""
    api, bot = limited
    for chat in range(1, 31):
        await bot.send_message(chat, "reminder")
    return api, bot


async def test_the_sandbox_refuses_the_31st_free_message_in_a_second(
    free_ones_sent: tuple[SandboxBotAPI, Bot],
) -> None:
    api, bot = free_ones_sent
    with pytest.raises(RetryAfter):
        await bot.send_message(31, "reminder")
    assert (api.too_many, api.paid_messages) == (1, 0)


async def test_the_sandbox_takes_paid_messages_past_30_and_counts_their_stars(
    free_ones_sent: tuple[SandboxBotAPI, Bot],
) -> None:
    api, bot = free_ones_sent
    for chat in range(31, 71):
        await bot.send_message(chat, "news", allow_paid_broadcast=True)
    assert (api.too_many, api.paid_messages, api.stars) == (0, 40, Decimal("4.0"))
    api.paid_per_second = 70  # every kind counts towards the paid limit
    with pytest.raises(RetryAfter):
        await bot.send_message(71, "news", allow_paid_broadcast=True)


async def broadcast_with_reminders(
    tmp_path: Path, *, paid: bool, recipients: int, reminders: int
) -> tuple[SandboxBotAPI, float]:
    """A clinic's broadcast to `recipients` and `reminders` reminders falling due over its
    first second, delivered into a sandbox enforcing Telegram's limits; the sandbox and the
    instant (sandbox seconds) the dispatcher started."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'paid.db'}"
    await asyncio.to_thread(migrate, url)
    engine = make_engine(url)
    clock = SystemClock()
    await seed_broadcast(
        engine, count=recipients, now=clock.now(), paid=paid, first_chat=BULK_CHAT
    )
    await seed_due(
        engine,
        count=reminders,
        now=clock.now(),
        due=timedelta(seconds=0.2),
        spread=timedelta(seconds=1),
        first_chat=REMINDER_CHAT,
    )
    api = SandboxBotAPI(SANDBOX_TOKEN, clock=clock, free_per_second=30)
    async with api:
        for first, count in ((BULK_CHAT, recipients), (REMINDER_CHAT, reminders)):
            for chat in range(first, first + count):
                api.user(chat).started = True
        started = time.monotonic()
        async with delivering(engine, api.base_url):
            while await undelivered(engine):
                assert time.monotonic() - started < 30, "the broadcast did not finish"
                await asyncio.sleep(0.05)
    await engine.dispose()
    return api, started


def sends(api: SandboxBotAPI, first: int, last: int) -> list[tuple[float, bool]]:
    """(when, with the paid flag) of each sendMessage accepted for chats first..last."""
    return [
        (r.at, "allow_paid_broadcast" in r.params)
        for r in api.requests
        if r.method == "sendMessage"
        and r.status == 200
        and first <= int(r.params["chat_id"]) <= last
    ]


@pytest.mark.slow
async def test_a_paid_broadcast_goes_past_30_a_second_and_reminders_stay_on_time(
    tmp_path: Path,
) -> None:
    api, started = await broadcast_with_reminders(tmp_path, paid=True, recipients=300, reminders=5)
    bulk = sends(api, BULK_CHAT, BULK_CHAT + 299)
    reminders = sends(api, REMINDER_CHAT, REMINDER_CHAT + 4)
    assert api.too_many == 0
    assert len(bulk) == 300 and all(paid for _, paid in bulk)
    assert most_in_any_window([t for t, _ in bulk], 1.0) > 60
    assert api.paid_messages > 0
    assert len(reminders) == 5 and not any(paid for _, paid in reminders)
    # Due over the broadcast's first second, each is sent within the 2 s the product allows a
    # reminder during a broadcast (bench/broadcast.py measures it). A bound of 1 s failed once
    # here, at 1.1 s, with the whole suite running on a slow machine.
    for i, (at, _) in enumerate(sorted(reminders)):
        assert at - (started + 0.2 + i / 5) < 2.0  # due, then on time


@pytest.mark.slow
async def test_a_free_broadcast_stays_within_30_a_second_without_the_flag(
    tmp_path: Path,
) -> None:
    api, _ = await broadcast_with_reminders(tmp_path, paid=False, recipients=50, reminders=3)
    every = sends(api, BULK_CHAT, BULK_CHAT + 49) + sends(api, REMINDER_CHAT, REMINDER_CHAT + 2)
    assert api.too_many == 0 and api.paid_messages == 0
    assert len(every) == 53 and not any(paid for _, paid in every)
    assert most_in_any_window([t for t, _ in every], 1.0) <= 30
    assert all(
        "allow_paid_broadcast" not in r.params for r in api.requests if r.method == "sendMessage"
    )


def test_a_clinic_allows_paid_broadcasts_from_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    env = {"AFTERCARE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'a.db'}"}

    def run(*args: str) -> str:
        result = CliRunner().invoke(cli, list(args), env=env)
        assert result.exit_code == 0, result.stderr
        return result.stdout

    run("migrate")
    added = run("clinic", "add", "north", "--name", "North", "--timezone", "Europe/Berlin")
    assert added.rstrip().endswith("| paid broadcasts off")
    changed = run("clinic", "edit", "north", "--allow-paid-broadcast")
    assert changed.rstrip().endswith("| paid broadcasts on (billed in Stars)")
    assert run("clinic", "show", "north") == changed.removeprefix("changed: ")
    assert "Telegram Stars" in " ".join(run("clinic", "edit", "--help").split())
    run("clinic", "edit", "north", "--no-allow-paid-broadcast", "--phone", "+49 30 1")
    listed = run("clinic", "list").splitlines()
    assert listed[1].split(" | ")[4:] == [
        "+49 30 1",
        "emergency 112",
        "-",
        "-",
        "paid broadcasts off",
    ]
