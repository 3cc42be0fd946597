"""What is checked before anything is migrated or started, so that an operator reads one line
saying what is wrong and which setting or file to change, never a traceback.

The order: the protocol file (nothing should start on a protocol that cannot be read), the
database URL's scheme, then a connection to the database (a server that is down gets a few
tries first). Telegram is checked by the runner itself (bot/serve/runner.py): an
unreachable Telegram is waited for, a refused token stops the process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.errors import StartupError
from bot.settings import Settings
from messages.protocol import Protocol, ProtocolError, default_protocol_path, load_protocol
from scheduler.db import make_engine

log = logging.getLogger("aftercare.startup")

SUPPORTED = ("sqlite+aiosqlite", "postgresql+asyncpg")
EXAMPLES = "sqlite+aiosqlite:///FILE.db or postgresql+asyncpg://USER:PASSWORD@HOST:5432/NAME"
URL_SETTING = "AFTERCARE_DATABASE_URL"


def protocol(settings: Settings) -> Protocol:
    """The deployment's protocol, read and checked (every problem in one line)."""
    path = settings.protocol_file or default_protocol_path()
    try:
        return load_protocol(path)
    except ProtocolError as exc:
        problems = str(exc).splitlines()
        more = f" (and {len(problems) - 1} more: aftercare check-protocol {path})"
        where = "setting AFTERCARE_PROTOCOL_FILE: " if settings.protocol_file else ""
        raise StartupError(where + problems[0] + (more if len(problems) > 1 else "")) from None


def database_url(url: str) -> None:
    """A URL this product can use (the drivers it installs)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StartupError(f"setting {URL_SETTING}: not a database URL; use {EXAMPLES}") from None
    if parsed.drivername not in SUPPORTED:
        raise StartupError(
            f"setting {URL_SETTING}: {parsed.drivername!r} is not supported; use {EXAMPLES}"
        )
    if not parsed.drivername.startswith("sqlite"):
        return
    sqlite_library()
    if parsed.database:
        folder = Path(parsed.database).expanduser().resolve().parent
        if not folder.exists():
            raise StartupError(
                f"setting {URL_SETTING}: the folder {folder} of the SQLite file does not exist"
            )
        if not folder.is_dir():
            raise StartupError(
                f"setting {URL_SETTING}: {folder}, where the SQLite file should be, is not "
                "a folder"
            )
        if not os.access(folder, os.W_OK):
            raise StartupError(
                f"setting {URL_SETTING}: the folder {folder} of the SQLite file is not writable"
            )


SQLITE_LEAST = (3, 35, 0)
"""The oldest SQLite library this product's statements run on: RETURNING came in 3.35."""


def sqlite_library() -> None:
    """The SQLite library Python's sqlite3 module runs on (the system's, not a package this
    project installs) has what the statements use: RETURNING, and the JSON functions
    (`json_each`: a batch's list of ids, scheduler/rows.py), built in since 3.38 and in
    nearly every build before. Said before the first booking fails on it."""
    import sqlite3  # here: a bot on PostgreSQL loads no SQLite module

    found = sqlite3.sqlite_version
    if sqlite3.sqlite_version_info < SQLITE_LEAST:
        least = ".".join(map(str, SQLITE_LEAST[:2]))
        raise StartupError(
            f"the SQLite library is {found}; this product needs {least} or later (Python's "
            "sqlite3 module uses the system's SQLite: upgrade it, or use PostgreSQL)"
        )
    probe = sqlite3.connect(":memory:")
    try:
        probe.execute("SELECT value FROM json_each('[1]')").fetchall()
    except sqlite3.OperationalError:
        raise StartupError(
            f"the SQLite library ({found}) was built without its JSON functions, which this "
            "product needs (every SQLite since 3.38 has them: upgrade it, or use PostgreSQL)"
        ) from None
    finally:
        probe.close()


def _missing_sqlite_file(database: str | None) -> Path | None:
    """The SQLite file named by a URL's database part, if it is a file that does not exist
    (not an in-memory database)."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    path = Path(database).expanduser().resolve()
    return None if path.exists() else path


def shown(url: str) -> str:
    """The URL without its password, for messages."""
    return make_url(url).render_as_string(hide_password=True)


async def connected(
    url: str, *, create: bool = False, attempts: int = 3, pause: float = 1.0
) -> AsyncEngine:
    """An engine that has connected once: the caller's to use, and to dispose of. A server
    that cannot be reached is tried `attempts` times; a refusal (password, unknown database)
    is said at once. A SQLite file that does not exist is made only when `create` (the
    migration): connecting makes it, and every other command would leave an empty file
    behind it and then ask for the migration anyway."""
    database_url(url)
    target = make_url(url)
    if target.drivername.startswith("sqlite") and not create:
        missing = _missing_sqlite_file(target.database)
        if missing is not None:
            raise StartupError(
                f"there is no database at {missing}: run `aftercare migrate` to create it"
            )
    where = f"{target.host or 'localhost'}:{target.port or 5432}"
    engine = make_engine(url)
    for attempt in range(1, attempts + 1):
        try:
            async with engine.connect() as connection:
                await connection.execute(sa.text("SELECT 1"))
            return engine
        except (OSError, TimeoutError) as exc:  # down, or an unknown host
            reason = _reason(exc)
            if attempt == attempts:
                await engine.dispose()
                raise StartupError(
                    f"setting {URL_SETTING}: cannot reach the database at {where} "
                    f"({reason}), tried {attempts} times"
                ) from None
            log.info("the database at %s is not reachable (%s); trying again", where, reason)
            await asyncio.sleep(pause * attempt)
        except DBAPIError as exc:
            await engine.dispose()
            raise StartupError(f"setting {URL_SETTING}: {describe(exc)}") from None
        except BaseException:
            await engine.dispose()
            raise
    raise AssertionError("unreachable: the last attempt returns or raises")


def describe(exc: BaseException) -> str:
    """What the database said, in one line without the password."""
    if isinstance(exc, DBAPIError):
        said = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else ""
        return f"the database refused: {said}" if said else "the database refused the connection"
    if isinstance(exc, NoSuchModuleError | ModuleNotFoundError):
        return f"this database is not supported; use {EXAMPLES}"
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return "unknown host"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return exc.strerror or type(exc).__name__ if isinstance(exc, OSError) else type(exc).__name__


async def all_checks(settings: Settings, *, create: bool = False) -> tuple[Protocol, AsyncEngine]:
    """Protocol, database URL, database (made if `create` and a SQLite file not there yet):
    in that order. The protocol, checked, and the engine that connected (the caller's to
    use, and to dispose of)."""
    checked = protocol(settings)
    return checked, await connected(settings.database_url, create=create)
