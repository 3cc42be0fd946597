"""What the command line's commands do: everything that touches the database, Telegram or
the scheduler. The typer modules (bot/cli/commands.py, bot/cli/clinic.py) only parse options
and import this module when a command runs: it brings SQLAlchemy, the scheduler and the Bot
API client, which `aftercare --help` does not need. `aftercare run` imports the runner
(bot/serve/runner.py) instead: the clinic side's import, replan and export are no part of a
running bot.

Every failure an operator can meet is an `OperatorError` (bot/errors.py): one line and an
exit code, never a traceback.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import closing
from datetime import datetime
from pathlib import Path
from typing import TextIO, TypeVar

import msgspec
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlmodel.ext.asyncio.session import AsyncSession
from telegram import Bot
from telegram.error import InvalidToken, TelegramError

from bot.cli.common import writable
from bot.errors import OperatorError, Refused, StartupError
from bot.serve import preflight
from bot.serve.runner import clinic_of
from bot.settings import Settings
from messages import texts
from messages.protocol import Protocol, ProtocolError, load_protocol, warnings_of
from scheduler import broadcast, clinics, importer, invites, replan
from scheduler.care import ensure_default_clinic
from scheduler.clock import SystemClock
from scheduler.db import (
    SCHEMA_REVISION,
    SchemaNotReady,
    SessionFactory,
    current_revision,
    ensure_migrated,
    make_session_factory,
    unknown_schema,
)
from scheduler.db import migrate as upgrade
from scheduler.models import Clinic
from scheduler.quiet import parse_quiet_hours
from scheduler.sample import sample

T = TypeVar("T")
Work = Callable[[AsyncSession, datetime], Awaitable[T]]


# -- running ----------------------------------------------------------------------------------


def demo(settings: Settings, language: str = "en", *, dashboard_port: int | None = None) -> int:
    preflight.protocol(settings)
    # Imported for the demo only: the sandbox brings aiohttp's server and Pillow, which
    # `aftercare run` does not need (start-up time and memory).
    from bot.offline.demo import run_demo

    return asyncio.run(
        run_demo(settings, out=sys.stdout, language=language, dashboard_port=dashboard_port)
    )


def migrate(settings: Settings) -> str:
    """Check the protocol and the database, then bring the schema up to date; what it did,
    in one line."""
    before = asyncio.run(_checked_revision(settings))
    if before == SCHEMA_REVISION:
        return f"the database is up to date already (schema {SCHEMA_REVISION})"
    newer = unknown_schema(before)
    if newer is not None:
        raise StartupError(newer)
    try:
        upgrade(settings.database_url)
    except DBAPIError as exc:
        raise StartupError(f"migrating the database failed: {preflight.describe(exc)}") from None
    if before is None:
        return f"the database's tables are made (schema {SCHEMA_REVISION})"
    return f"the database is up to date (schema {before} to {SCHEMA_REVISION})"


def backup(settings: Settings, target: Path) -> str:
    """`aftercare backup FILE`: a consistent copy of the SQLite database, safe while the bot
    runs (SQLite's online backup: every committed transaction, those still in the
    write-ahead log included, which copying the file alone would miss); what was copied, in
    one line. Refused for PostgreSQL (its own tools back it up) and for a FILE that exists."""
    url = make_url(settings.database_url)
    if not url.drivername.startswith("sqlite"):
        raise Refused(
            "aftercare backup copies a SQLite database; back PostgreSQL up with its own tools "
            "(pg_dump: see the README, Backups)"
        )
    source = Path(url.database or "")
    if not source.is_file():
        raise StartupError(f"there is no database at {source}: nothing to back up")
    if target.exists():
        raise Refused(f"{target}: already exists (a backup never replaces a file)")
    writable(target)
    with (
        closing(sqlite3.connect(source, timeout=30)) as database,
        closing(sqlite3.connect(target)) as copy,
    ):
        database.backup(copy)
    size = target.stat().st_size / 1_000_000
    return f"backed up {source} to {target} ({size:,.1f} MB)"


async def _checked_revision(settings: Settings) -> str | None:
    """The checks (`preflight.all_checks`), then the schema revision the database holds."""
    _, engine = await preflight.all_checks(settings, create=True)
    try:
        return await current_revision(engine)
    finally:
        await engine.dispose()


class Checked(msgspec.Struct, frozen=True):
    timeline: str
    warnings: list[str]


def check_protocol(file: Path, settings: Settings) -> Checked:
    """The file checked for shape and meaning (Refused lists every problem); its sample
    timeline and restrictions, and what it would be wise to look at again."""
    try:
        protocol = load_protocol(file)
    except ProtocolError as exc:
        raise Refused(str(exc)) from None
    zone = settings.zone
    return Checked(
        texts.protocol_report(zone, sample(protocol, zone), protocol), warnings_of(protocol)
    )


# -- the database -----------------------------------------------------------------------------


def with_db(settings: Settings, work: Work[T]) -> T:
    """Run `work` in one transaction (committed unless it raises), after the database is
    checked and its schema is this version's."""

    async def one_transaction(factory: SessionFactory, now: datetime) -> T:
        async with factory() as db, db.begin():
            await ensure_default_clinic(session=db, info=clinic_of(settings), now=now)
            return await work(db, now)

    return with_sessions(settings, one_transaction)


def with_sessions(
    settings: Settings, work: Callable[[SessionFactory, datetime], Awaitable[T]]
) -> T:
    """Run `work` with a session factory (it opens and commits its own transactions), after
    the database is checked and its schema is this version's."""

    async def main() -> T:
        engine = await preflight.connected(settings.database_url)
        try:
            await ensure_migrated(engine)
            return await work(make_session_factory(engine), SystemClock().now())
        finally:
            await engine.dispose()

    try:
        return asyncio.run(main())
    except SchemaNotReady as exc:
        raise StartupError(str(exc)) from None
    except clinics.ClinicError as exc:
        raise Refused(str(exc)) from None
    except DBAPIError as exc:
        raise StartupError(f"setting AFTERCARE_DATABASE_URL: {preflight.describe(exc)}") from None


async def clinic_named(db: AsyncSession, slug: str) -> Clinic:
    clinic = await clinics.clinic_by_slug(session=db, slug=slug)
    if clinic is None:
        raise clinics.ClinicError(f"no clinic {slug!r} (`aftercare clinic list` shows them)")
    return clinic


def clinic_line(clinic: Clinic) -> str:
    parts = [clinic.slug, clinic.name, clinic.timezone, clinic.address, clinic.phone]
    parts.append(f"emergency {clinic.emergency_phone}")
    parts += [clinic.booking_url or "-", clinic.protocol_file or "-"]
    paid = clinic.allow_paid_broadcast
    parts.append("paid broadcasts " + ("on (billed in Stars)" if paid else "off"))
    return " | ".join(parts)


async def paid_choice(db: AsyncSession, clinic: Clinic, paid: bool | None) -> Clinic:
    """The clinic with its paid broadcast choice, if one was given."""
    if paid is None:
        return clinic
    return await broadcast.allow_paid(session=db, clinic=clinic, allowed=paid)


def add_clinic(
    settings: Settings, slug: str, values: dict[str, str | None], *, paid: bool | None
) -> str:
    async def work(db: AsyncSession, now: datetime) -> Clinic:
        clinic = await clinics.add_clinic(session=db, slug=slug, values=values, now=now)
        return await paid_choice(db, clinic, paid)

    return "added: " + clinic_line(with_db(settings, work))


def edit_clinic(
    settings: Settings, slug: str, values: dict[str, str | None], *, paid: bool | None
) -> str:
    async def work(db: AsyncSession, _now: datetime) -> tuple[Clinic, int]:
        clinic = await clinics.edit_clinic(session=db, slug=slug, values=values)
        clinic = await paid_choice(db, clinic, paid)
        replans = values.get("timezone") is not None or values.get("protocol_file") is not None
        waiting = (await replan.preview(session=db, clinic=clinic)).sessions if replans else 0
        return clinic, waiting

    clinic, waiting = with_db(settings, work)
    line = "changed: " + clinic_line(clinic)
    if waiting:
        line += (
            f"\nSessions with reminders planned before this change: {waiting:,}; "
            f"`aftercare replan --clinic {slug}` plans them again"
        )
    return line


def quiet_hours(value: str, option: str) -> tuple[str, str]:
    parsed = parse_quiet_hours(value)
    if parsed is None:
        raise Refused(f"{option}: expected HH:MM-HH:MM, got {value[:40]!r}")
    return parsed


def show_clinic(settings: Settings, slug: str) -> str:
    async def work(db: AsyncSession, _now: datetime) -> Clinic:
        return await clinic_named(db, slug)

    return clinic_line(with_db(settings, work))


def list_clinics(settings: Settings) -> list[str]:
    async def work(db: AsyncSession, _now: datetime) -> list[str]:
        return [clinic_line(c) for c in await clinics.list_clinics(session=db)]

    return with_db(settings, work)


# -- staff ------------------------------------------------------------------------------------


def bot_username(settings: Settings, given: str | None) -> str:
    """For t.me links: the option, the setting, or the bot's own answer to getMe."""
    if given:
        return given.lstrip("@")
    if settings.bot_username:
        return settings.bot_username.lstrip("@")
    if settings.bot_token is None:
        raise StartupError("give --bot-username (or set AFTERCARE_BOT_USERNAME or the bot token)")
    token = settings.bot_token.get_secret_value()

    async def ask() -> str:
        async with Bot(token, base_url=settings.bot_api_base_url) as bot:
            return bot.username

    try:
        return asyncio.run(ask())
    except InvalidToken:
        raise StartupError("setting AFTERCARE_BOT_TOKEN: Telegram refused this token") from None
    except TelegramError as exc:
        raise Refused(
            f"Telegram did not say the bot's username ({type(exc).__name__}); give --bot-username"
        ) from None


def staff_invite(settings: Settings, clinic: str, hours: int, username: str | None) -> str:
    name = bot_username(settings, username)

    async def work(db: AsyncSession, now: datetime) -> str:
        target = await clinic_named(db, clinic)
        assert target.id is not None
        invite = await invites.staff_invite(session=db, clinic_id=target.id, now=now, hours=hours)
        return invites.deep_link(name, invite)

    return with_db(settings, work)


def staff_list(settings: Settings, clinic: str) -> list[str]:
    async def work(db: AsyncSession, _now: datetime) -> list[str]:
        target = await clinic_named(db, clinic)
        assert target.id is not None
        members = await clinics.staff_of(session=db, clinic_id=target.id)
        return [f"{m.tg_user_id} {m.name}" for m in members]

    return with_db(settings, work)


# -- import, export ---------------------------------------------------------------------------


class Imported(msgspec.Struct, frozen=True):
    report: importer.ImportReport
    links_file: Path | None
    unlinked: str | None = None
    """Why the invite links were not written: the bot's username could not be found."""


def import_file(
    settings: Settings,
    file: Path,
    *,
    dry_run: bool,
    links: Path | None,
    username: str | None,
) -> Imported:
    """Import appointments (the booking system's CSV); a dry run changes nothing.

    The bot's username is needed only for the invite links, so it is asked for (the option,
    the setting, else Telegram's getMe) once the import has made some. If it cannot be found
    then, the import stands and `unlinked` says why: the same import run again with the
    username imports nothing twice and lists the invites not opened yet."""
    try:
        text = file.read_text(encoding="utf-8-sig")
    except OSError as exc:  # no such file, a folder, no permission: as the system says it
        raise Refused(f"{file}: {exc.strerror or type(exc).__name__}") from None
    except UnicodeDecodeError:
        raise Refused(f"{file}: not UTF-8 text (save the export as CSV in UTF-8)") from None
    rows, header_error = importer.read_csv(text)
    if header_error:
        raise Refused(f"{file}: line 1: {header_error}")
    target = links or file.with_name(file.stem + "-invites.csv")
    if not dry_run:
        writable(target)  # before the import: its links could not be made again
    protocol = preflight.protocol(settings)

    from rich.progress import Progress  # only here and in `follow`: not in `aftercare run`

    async def work(factory: SessionFactory, now: datetime) -> importer.ImportReport:
        async with factory() as db, db.begin():
            default = await ensure_default_clinic(session=db, info=clinic_of(settings), now=now)
        with Progress(transient=True, disable=not sys.stderr.isatty()) as bar:
            task = bar.add_task("importing", total=len(rows))
            return await importer.import_batches(
                sessions=factory,
                rows=rows,
                importing=importer.Importing(default, protocol),
                clock=SystemClock(),
                dry_run=dry_run,
                advance=lambda lines: bar.advance(task, lines),
            )

    report = with_sessions(settings, work)
    if not report.links or dry_run:
        return Imported(report, None)
    try:
        name = bot_username(settings, username)
    except OperatorError as exc:
        return Imported(report, None, unlinked=str(exc))
    target.write_text(importer.links_csv(report.links, name), encoding="utf-8")
    return Imported(report, target)


def export_deliveries(settings: Settings, since: datetime, out: TextIO) -> int:
    """The delivery log written to `out` as it streams from the database."""

    async def work(db: AsyncSession, _now: datetime) -> int:
        return await importer.export_deliveries(session=db, since=since, write=out.write)

    return with_db(settings, work)


# -- broadcast --------------------------------------------------------------------------------


class Broadcasting(msgspec.Struct, frozen=True):
    """A broadcast the command line prepares: its preview and audience size."""

    settings: Settings
    clinic: str
    audience: str
    text: str
    protocol: Protocol

    def preview(self) -> tuple[str, int]:
        if self.audience not in broadcast.AUDIENCES:
            raise Refused(f"--audience: one of {', '.join(broadcast.AUDIENCES)}")

        async def work(db: AsyncSession, now: datetime) -> tuple[str, int]:
            target = await clinic_named(db, self.clinic)
            assert target.id is not None
            size = await broadcast.audience_size(
                session=db,
                clinic_id=target.id,
                audience=self.audience,
                protocol=self.protocol,
                now=now,
            )
            return texts.broadcast("en", target.name, self.text), size

        return with_db(self.settings, work)

    def send(self) -> tuple[int, int]:
        """Plan it: (broadcast id, recipients). The running bot sends it."""

        async def work(db: AsyncSession, now: datetime) -> tuple[int, int]:
            target = await clinic_named(db, self.clinic)
            assert target.id is not None
            draft = await broadcast.create_draft(
                session=db, clinic_id=target.id, created_by=0, text=self.text, now=now
            )
            assert draft.id is not None
            started = await broadcast.start(
                session=db,
                broadcast_id=draft.id,
                clinic_id=target.id,
                audience=self.audience,
                protocol=self.protocol,
                now=now,
            )
            assert started is not None
            return draft.id, started.recipients

        return with_db(self.settings, work)

    def follow(self, broadcast_id: int, total: int) -> broadcast.Progress:
        """A progress bar, updated once a second, until nothing is left to send; the counts."""
        from rich.progress import Progress  # only here and in imports: not in `aftercare run`

        async def work(db: AsyncSession, _now: datetime) -> broadcast.Progress:
            return await broadcast.progress(session=db, broadcast_id=broadcast_id)

        with Progress() as bar:
            task = bar.add_task(f"broadcast #{broadcast_id}", total=total)
            while True:
                counts = with_db(self.settings, work)
                bar.update(task, completed=total - counts.remaining)
                if counts.done:
                    return counts
                time.sleep(1.0)  # the command line watches real time; the bot sends


def broadcasting(settings: Settings, clinic: str, audience: str, text: str) -> Broadcasting:
    return Broadcasting(settings, clinic, audience, text.strip(), preflight.protocol(settings))


# -- replan -----------------------------------------------------------------------------------


class Replanning(msgspec.Struct, frozen=True):
    """A clinic-wide replan the command line runs: its preview, then its batches."""

    settings: Settings
    clinic: str
    previous_quiet: tuple[str, str] | None

    def preview(self) -> replan.Preview:
        async def work(db: AsyncSession, _now: datetime) -> replan.Preview:
            return await replan.preview(
                session=db,
                clinic=await clinic_named(db, self.clinic),
                quiet=self._quiet(),
            )

        return with_db(self.settings, work)

    def _quiet(self) -> replan.QuietChange | None:
        if self.previous_quiet is None:
            return None
        return replan.QuietChange(self.previous_quiet, self.settings.quiet)

    def run(self, advance: Callable[[int, int], None]) -> int:
        """Every batch, each committed; `advance(done, total)` after each. Sessions done."""
        protocol = preflight.protocol(self.settings)

        async def work(factory: SessionFactory, _now: datetime) -> int:
            async with factory() as db:
                clinic = await clinic_named(db, self.clinic)
            return await replan.run(
                sessions=factory,
                clinic=clinic,
                default=protocol,
                clock=SystemClock(),
                quiet=self._quiet(),
                reason="command line",
                advance=advance,
            )

        return with_sessions(self.settings, work)
