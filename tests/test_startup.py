"""What `aftercare run` loads on its way to work: the real command against the sandbox Bot
API, with Python's own import log (PYTHONPROFILEIMPORTTIME), until it polls and has
delivered its first due message (the schema check, the menus, the first claim included).

What only another command, a feature or the other database uses is imported when first used,
each at a comment saying why (docs/performance-history.md, "Start-up and broadcasts").
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from telegram.error import NetworkError
from telegram.ext import ExtBot

from bench.seed import seed_due
from bot.offline.harness import SANDBOX_TOKEN
from bot.offline.sandbox import SandboxBotAPI
from bot.serve import preflight, runner, tls
from messages.render import available_languages
from scheduler.clock import SystemClock
from scheduler.db import make_engine
from scheduler.dispatcher import Dispatcher
from tests import e2e
from tests.procs import BotProcess, open_chats

# Each with what brings it in.
DEFERRED = {
    "typer": "the other commands (`aftercare run` starts without the command line's framework)",
    "bot.cli.commands": "the other commands",
    "alembic": "migrating (`aftercare run` checks the revision with plain SQL)",
    "bot.cli.work": "the other commands",
    "scheduler.importer": "`aftercare import` and `export`",
    "scheduler.replan": "`aftercare replan`",
    "aiohttp": "webhook mode, the demo",
    "dateparser": "a date typed in words",
    "qrcode": "a staff invite's picture",
    "PIL": "a staff invite's picture",
    "rich": "the clinic side's progress bars",
    "messages.calendars": "a date written or typed (the reminder delivered here states none)",
    "babel.dates": "a date written or typed",
    "persiantools": "a Persian date",
}


# And the other database's modules.
DEFERRED_ON = {
    "sqlite": {"sqlalchemy.dialects.postgresql": "PostgreSQL", "asyncpg": "PostgreSQL"},
    "postgres": {
        "sqlalchemy.dialects.sqlite": "SQLite",
        "sqlite3": "SQLite",
        "aiosqlite": "SQLite",
        "scheduler.sqlite_driver": "SQLite",
    },
}


def imported(log: str) -> set[str]:
    """The modules in an import log (`import time: self | cumulative | name` lines)."""
    return {
        line.rsplit("|", 1)[1].strip()
        for line in log.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }


async def test_run_works_without_what_it_does_not_need(
    backend: str, db_url: str, tmp_path: Path
) -> None:
    url = db_url
    engine = make_engine(url)
    seeded = await seed_due(engine, count=1, now=SystemClock().now())
    await engine.dispose()
    async with SandboxBotAPI(SANDBOX_TOKEN, clock=SystemClock()) as api:
        open_chats(api, seeded.chat_ids)
        bot = BotProcess(api, url, tmp_path, env={"PYTHONPROFILEIMPORTTIME": "1"})
        await bot.start()
        try:
            await api.wait_for(
                lambda: api.calls["getUpdates"] >= 1 and api.calls["sendMessage"] >= 1,
                timeout=60,
            )
            modules = imported(bot.logs())
        finally:
            await bot.terminate()
    # The log is read right: what polling and delivering do need is in it.
    assert {"telegram.ext", "scheduler.dispatcher", "scheduler.compose"} <= modules
    deferred = DEFERRED | DEFERRED_ON[backend]
    loaded = {name: why for name, why in deferred.items() if name in modules}
    assert not loaded, f"imported by `aftercare run`, though only needed for: {loaded}"


async def test_start_up_makes_one_engine_for_its_checks_and_for_the_bot(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine that checked the database and its schema goes on to serve the bot: one
    engine, and its first connection, made at start-up instead of three."""
    made: list[AsyncEngine] = []

    def counted(url: str, *, echo: bool = False) -> AsyncEngine:
        made.append(make_engine(url, echo=echo))
        return made[-1]

    monkeypatch.setattr(preflight, "make_engine", counted)
    monkeypatch.setattr(runner, "make_engine", counted)
    settings = e2e.test_settings(db_url, bot_token=SANDBOX_TOKEN)
    checked = await runner.ready(settings)
    try:
        application = runner._application(settings, checked, http=False)
        assert application.bot_data["services"].engine is checked.engine
        assert made == [checked.engine]
    finally:
        await checked.engine.dispose()


async def test_the_checks_take_the_tls_context_begun_before_them(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`aftercare run` begins the Bot API clients' TLS context before it imports the bot;
    the start-up's checks take that one, and the next start-up makes its own."""
    made: list[ssl.SSLContext] = []

    def counted() -> ssl.SSLContext:
        made.append(ssl.create_default_context())
        return made[-1]

    monkeypatch.setattr(httpx, "create_ssl_context", counted)
    settings = e2e.test_settings(db_url, bot_token=SANDBOX_TOKEN)
    tls.begin()
    tls.begin()  # begun once
    checked = await runner.ready(settings)
    await checked.engine.dispose()
    assert made == [checked.tls]
    again = await runner.ready(settings)
    await again.engine.dispose()
    assert made == [checked.tls, again.tls]
    assert again.tls is not checked.tls


async def _served_until_three_delivered(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> SandboxBotAPI:
    """`aftercare run`'s serving on `db_url`, three reminders due, until the sandbox has
    received them; the sandbox, stopped, to read what it was asked."""
    engine = make_engine(db_url)
    seeded = await seed_due(engine, count=3, now=SystemClock().now())
    await engine.dispose()
    stop = asyncio.Event()
    monkeypatch.setattr(runner, "stop_event", lambda: stop)
    async with SandboxBotAPI(SANDBOX_TOKEN, clock=SystemClock()) as api:
        open_chats(api, seeded.chat_ids)
        settings = e2e.test_settings(
            db_url, bot_token=SANDBOX_TOKEN, bot_api_base_url=api.base_url
        )
        checked = await runner.ready(settings)
        application = runner._application(settings, checked, http=False)
        served = asyncio.create_task(runner.serve(application, runner._poll, runner._unpoll))
        try:
            await api.wait_for(lambda: api.calls["sendMessage"] >= 3, timeout=30)
        finally:
            stop.set()
            await served
    return api


async def test_the_first_long_poll_is_asked_before_the_dispatchers_first_round(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a restart, what patients wrote while the bot was down is asked for before the
    backlog's first batch is claimed and rendered: the dispatcher's first round begins once
    the poller has asked Telegram for updates."""
    order: list[str] = []
    get_updates = ExtBot.get_updates

    def asked(self: ExtBot[None], *args: Any, **kwargs: Any) -> Any:
        order.append("getUpdates")
        return get_updates(self, *args, **kwargs)

    run_due = Dispatcher.run_due

    async def round_of(self: Dispatcher) -> int:
        order.append("round")
        return await run_due(self)

    monkeypatch.setattr(ExtBot, "get_updates", asked)
    monkeypatch.setattr(Dispatcher, "run_due", round_of)
    await _served_until_three_delivered(db_url, monkeypatch)
    assert order[:2] == ["getUpdates", "round"]


async def test_the_menus_are_set_once_the_first_long_poll_is_asked(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A patient's message is not kept waiting for the menus: they follow the first long
    poll, one per language."""
    order: list[str] = []
    get_updates, set_my_commands = ExtBot.get_updates, ExtBot.set_my_commands

    def asked(self: ExtBot[None], *args: Any, **kwargs: Any) -> Any:
        order.append("getUpdates")
        return get_updates(self, *args, **kwargs)

    def menu(self: ExtBot[None], *args: Any, **kwargs: Any) -> Any:
        order.append("setMyCommands")
        return set_my_commands(self, *args, **kwargs)

    monkeypatch.setattr(ExtBot, "get_updates", asked)
    monkeypatch.setattr(ExtBot, "set_my_commands", menu)
    api = await _served_until_three_delivered(db_url, monkeypatch)
    languages = {language for _scope, language in api.commands}
    assert order[0] == "getUpdates"
    assert order.count("setMyCommands") == len(available_languages())
    assert languages == {"" if lang == "en" else lang for lang in available_languages()}


async def test_a_menu_telegram_did_not_take_is_a_warning_and_the_bot_serves_on(
    db_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def refused(*_args: Any, **_kwargs: Any) -> bool:
        raise NetworkError("connection reset")

    monkeypatch.setattr(ExtBot, "set_my_commands", refused)
    with caplog.at_level(logging.WARNING, logger="aftercare.run"):
        api = await _served_until_three_delivered(db_url, monkeypatch)
    assert api.calls["sendMessage"] >= 3
    assert [r.getMessage() for r in caplog.records if r.name == "aftercare.run"] == [
        "the command menus were not set (NetworkError)"
    ]
