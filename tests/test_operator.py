"""Every failure an operator can meet is one line: the real `aftercare` command, in a clean
environment, for each case: the line on stderr names the cause, the exit code says what kind
(2: settings, files, database, Telegram), and nothing else is printed. Telegram that cannot
be reached is waited for, and the bot recovers and answers once it can be reached."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from pathlib import Path

import pytest

from bot.errors import StartupError
from bot.offline.harness import SANDBOX_TOKEN
from bot.offline.sandbox import SandboxBotAPI
from bot.serve import preflight
from messages.protocol import default_protocol_path
from scheduler import patients
from scheduler.clock import FakeClock, SystemClock
from scheduler.db import migrate
from tests.conftest import PG_URL
from tests.e2e import press, say
from tests.patient_flows import bot
from tests.procs import BotProcess, aftercare, free_port, webhook_bot


def _pg(user: str, password: str, port: int = 5432, database: str = "postgres") -> str:
    return f"postgresql+asyncpg://{user}:{password}@127.0.0.1:{port}/{database}"


# (case, command, environment, exit code, the one line)
CASES: list[tuple[str, tuple[str, ...], dict[str, str], int, str]] = [
    (
        "unsupported database",
        ("migrate",),
        {"AFTERCARE_DATABASE_URL": "mysql://x"},
        2,
        "aftercare: setting AFTERCARE_DATABASE_URL: 'mysql' is not supported; use "
        "sqlite+aiosqlite:///FILE.db or postgresql+asyncpg://USER:PASSWORD@HOST:5432/NAME",
    ),
    (
        "not a URL",
        ("migrate",),
        {"AFTERCARE_DATABASE_URL": "aftercare.db"},
        2,
        "aftercare: setting AFTERCARE_DATABASE_URL: not a database URL; use "
        "sqlite+aiosqlite:///FILE.db or postgresql+asyncpg://USER:PASSWORD@HOST:5432/NAME",
    ),
    (
        "SQLite folder missing",
        ("migrate",),
        {"AFTERCARE_DATABASE_URL": "sqlite+aiosqlite:////nowhere/at/all/aftercare.db"},
        2,
        "aftercare: setting AFTERCARE_DATABASE_URL: the folder /nowhere/at/all of the SQLite "
        "file does not exist",
    ),
    (
        "SQLite folder is a file",
        ("run",),
        {
            "AFTERCARE_DATABASE_URL": "sqlite+aiosqlite:////etc/hostname/aftercare.db",
            "AFTERCARE_BOT_TOKEN": "123:abc",
        },
        2,
        "aftercare: setting AFTERCARE_DATABASE_URL: /etc/hostname, where the SQLite file "
        "should be, is not a folder",
    ),
    (
        "database server down",
        ("migrate",),
        {"AFTERCARE_DATABASE_URL": _pg("postgres", "postgres", port=1)},
        2,
        "aftercare: setting AFTERCARE_DATABASE_URL: cannot reach the database at "
        "127.0.0.1:1 (connection refused), tried 3 times",
    ),
    (
        "protocol file missing",
        ("migrate",),
        {"AFTERCARE_PROTOCOL_FILE": "/nowhere/clinic.toml"},
        2,
        "aftercare: setting AFTERCARE_PROTOCOL_FILE: clinic.toml: cannot read: "
        "No such file or directory",
    ),
    (
        "protocol file missing, start",
        ("start",),
        {"AFTERCARE_PROTOCOL_FILE": "/nowhere/clinic.toml", "AFTERCARE_BOT_TOKEN": "1:a"},
        2,
        "aftercare: setting AFTERCARE_PROTOCOL_FILE: clinic.toml: cannot read: "
        "No such file or directory",
    ),
    (
        "no token",
        ("run",),
        {},
        2,
        "aftercare: setting AFTERCARE_BOT_TOKEN: missing (copy .env.example to .env and set it)",
    ),
    (
        "placeholder token",
        ("run",),
        {"AFTERCARE_BOT_TOKEN": "changeme"},
        2,
        "aftercare: setting AFTERCARE_BOT_TOKEN: is a placeholder: set the token BotFather "
        "gave you",
    ),
    (
        "no database yet",
        ("run",),
        {"AFTERCARE_BOT_TOKEN": "123:abc"},
        2,
        "aftercare: there is no database at TMP/aftercare.db: run `aftercare migrate` to "
        "create it",
    ),
    (
        "bad time zone",
        ("migrate",),
        {"AFTERCARE_CLINIC_TIMEZONE": "Nowhere/Land"},
        2,
        "aftercare: setting AFTERCARE_CLINIC_TIMEZONE: unknown time zone 'Nowhere/Land'",
    ),
]


@pytest.mark.parametrize(("case", "args", "env", "code", "line"), CASES, ids=[c[0] for c in CASES])
def test_each_failure_is_one_line_and_an_exit_code(
    tmp_path: Path, case: str, args: tuple[str, ...], env: dict[str, str], code: int, line: str
) -> None:
    done = aftercare(*args, cwd=tmp_path, **env)
    assert (done.returncode, done.stderr) == (code, line.replace("TMP", str(tmp_path)) + "\n")
    assert not (tmp_path / "aftercare.db").exists(), case


def test_a_broken_protocol_is_refused_before_the_database_is_touched(tmp_path: Path) -> None:
    broken = tmp_path / "clinic.toml"
    broken.write_text(
        default_protocol_path().read_text().replace('until = "end+7d"', 'until = "end-7d"')
    )
    done = aftercare("start", cwd=tmp_path, AFTERCARE_PROTOCOL_FILE=str(broken))
    assert done.returncode == 2
    assert done.stderr == (
        "aftercare: setting AFTERCARE_PROTOCOL_FILE: clinic.toml: restriction 'heat_sun': "
        "ends (end-7d) before it begins (end)\n"
    )
    assert not (tmp_path / "aftercare.db").exists()


@pytest.mark.postgres
@pytest.mark.skipif(not PG_URL, reason="PostgreSQL not available: set AFTERCARE_TEST_PG_URL")
def test_postgres_refusals_are_one_line(tmp_path: Path) -> None:
    wrong = aftercare("migrate", cwd=tmp_path, AFTERCARE_DATABASE_URL=_pg("postgres", "wrong"))
    nobody = aftercare(
        "migrate", cwd=tmp_path, AFTERCARE_DATABASE_URL=_pg("postgres", "postgres", database="x")
    )
    assert (wrong.returncode, wrong.stderr) == (
        2,
        "aftercare: setting AFTERCARE_DATABASE_URL: the database refused: password "
        'authentication failed for user "postgres"\n',
    )
    assert "wrong" not in wrong.stderr.replace("wrong.", "")
    assert (nobody.returncode, nobody.stderr) == (
        2,
        'aftercare: setting AFTERCARE_DATABASE_URL: the database refused: database "x" does '
        "not exist\n",
    )


def test_a_folder_that_is_not_writable_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As root every folder is writable, so the check is shown with os.access answering no.
    monkeypatch.setattr(os, "access", lambda *_args: False)
    with pytest.raises(StartupError, match=f"the folder {tmp_path} of the SQLite file is not"):
        preflight.database_url(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")


def test_an_old_sqlite_library_is_named_before_anything_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python's sqlite3 runs on the system's SQLite: one without RETURNING (before 3.35) or
    without the JSON functions would fail at the first booking; it is said at the start."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'a.db'}"
    preflight.database_url(url)  # this machine's SQLite has both
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 34, 1))
    monkeypatch.setattr(sqlite3, "sqlite_version", "3.34.1")
    with pytest.raises(
        StartupError, match=r"^the SQLite library is 3\.34\.1; this product needs 3\.35"
    ):
        preflight.database_url(url)
    monkeypatch.undo()

    class NoJson:
        def execute(self, _sql: str) -> None:
            raise sqlite3.OperationalError("no such table: json_each")

        def close(self) -> None:
            pass

    monkeypatch.setattr(sqlite3, "connect", lambda *_args: NoJson())
    with pytest.raises(StartupError, match="was built without its JSON functions"):
        preflight.database_url(url)
    assert not (tmp_path / "a.db").exists()


@pytest.mark.slow
async def test_the_bot_waits_for_telegram_and_serves_once_it_answers(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'aftercare.db'}"
    await asyncio.to_thread(migrate, url)
    async with SandboxBotAPI(SANDBOX_TOKEN, clock=SystemClock()) as api:
        await api.set_outage("refuse")
        async with BotProcess(
            api,
            url,
            tmp_path,
            env={"AFTERCARE_LOG_LEVEL": "INFO", "AFTERCARE_TELEGRAM_RETRY_SECONDS": "0.2"},
        ) as process:
            await process.start()
            async with asyncio.timeout(20):
                # Another process writes the log: nothing here to wait on but the file.
                while process.logs().count("Telegram is not reachable") < 3:  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
            await api.set_outage("none")
            patient = api.user(6001, "Pat")
            patient.send("/start")
            replies = await patient.wait_messages(1, timeout=20)
            assert await process.terminate() == 0
    logs = process.logs()
    assert replies[0].text.startswith("Hello, Pat!")
    waiting = [line for line in logs.splitlines() if "Telegram is not reachable" in line]
    assert waiting[0].endswith("Telegram is not reachable (ConnectError); retrying in 0 s")
    assert "retrying in 1 s" in logs  # 0.2, 0.4, 0.8: it backs off
    assert "Traceback" not in logs and "level=ERROR" not in logs
    assert SANDBOX_TOKEN not in logs


async def refused(process: BotProcess) -> int:
    """Start a bot process that must stop by itself; its exit code."""
    await process.start()
    assert process.proc is not None
    async with asyncio.timeout(30):
        return await process.proc.wait()


@pytest.mark.slow
async def test_a_token_telegram_refuses_is_one_line(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'aftercare.db'}"
    await asyncio.to_thread(migrate, url)
    async with SandboxBotAPI(SANDBOX_TOKEN, clock=SystemClock()) as api:
        process = BotProcess(
            api, url, tmp_path, env={"AFTERCARE_BOT_TOKEN": "42:not-this-bots-token"}
        )
        code = await refused(process)
    assert code == 2
    assert process.logs().splitlines()[-1] == (
        "aftercare: setting AFTERCARE_BOT_TOKEN: Telegram refused this token (check it with "
        "@BotFather)"
    )
    assert "Traceback" not in process.logs() and "not-this-bots-token" not in process.logs()


@pytest.mark.slow
async def test_a_webhook_address_telegram_refuses_is_one_line_with_telegrams_reason(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'aftercare.db'}"
    await asyncio.to_thread(migrate, url)
    async with SandboxBotAPI(SANDBOX_TOKEN, clock=SystemClock()) as api:
        process = webhook_bot(
            api,
            url,
            tmp_path,
            free_port(),
            AFTERCARE_WEBHOOK_URL="https://bot.example.test:9000/tg/hook",
        )
        code = await refused(process)
    assert code == 2
    assert process.logs().splitlines()[-1] == (
        "aftercare: setting AFTERCARE_WEBHOOK_URL: Telegram refused it (Bad webhook: webhook "
        "can be set up only on ports 80, 88, 443 or 8443)"
    )
    assert "Traceback" not in process.logs()


async def test_an_unexpected_failure_is_one_line_with_an_id_and_the_patient_is_told(
    db_url: str,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def broken(**_kwargs: object) -> bool:
        raise RuntimeError("a bug")

    monkeypatch.setattr(patients, "pause", broken)
    caplog.set_level(logging.DEBUG, logger="aftercare")
    async with bot(db_url, clock) as h:
        anna = h.patient(6101, "Anna")
        await say(h, anna, "/start")
        await press(h, anna, "consent:yes")
        await say(h, anna, "/pause")
        apology = anna.last().text
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    (error,) = errors
    error_id = error.getMessage().rsplit("error ", 1)[1].rstrip(")")
    traced = [r for r in caplog.records if r.exc_info and error_id in r.getMessage()]

    assert error.getMessage() == f"handler failed: RuntimeError (error {error_id})"
    assert error.exc_info is None
    assert len(traced) == 1 and traced[0].levelno == logging.DEBUG
    assert apology.endswith(f"(Reference: {error_id})")
