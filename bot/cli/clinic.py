"""The clinic side of the command line: clinics, staff invites, import, export, broadcast.

`register(cli)` adds them to `aftercare` (bot/cli/commands.py). Each command opens the
database (refusing an unmigrated one), does its work in one transaction, and reports in one
line per fact; a mistake is one line on stderr and exit code 1 (2 for configuration).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from bot.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:  # imported when a command runs: `aftercare --help` stays quick
    from sqlmodel.ext.asyncio.session import AsyncSession

    from scheduler import broadcast
    from scheduler.models import Clinic

T = TypeVar("T")

clinic_app = typer.Typer(help="Clinics of this deployment.", no_args_is_help=True)
staff_app = typer.Typer(help="Clinic staff.", no_args_is_help=True)
export_app = typer.Typer(help="Data out, as CSV.", no_args_is_help=True)


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"aftercare: {message}", err=True)
    return typer.Exit(code)


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        raise _fail(str(exc), 2) from None


def _with_db(settings: Settings, work: Callable[[AsyncSession, datetime], Awaitable[T]]) -> T:
    """Run `work` in one transaction (committed unless it raises)."""
    from scheduler import clinics
    from scheduler.care import ensure_default_clinic
    from scheduler.clock import SystemClock
    from scheduler.db import SchemaNotReady, ensure_migrated, make_engine, make_session_factory

    async def main() -> T:
        engine = make_engine(settings.database_url)
        try:
            await ensure_migrated(engine, settings.database_url)
            now = SystemClock().now()
            async with make_session_factory(engine)() as db, db.begin():
                from bot.serve.runner import clinic_of

                await ensure_default_clinic(session=db, info=clinic_of(settings), now=now)
                return await work(db, now)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(main())
    except SchemaNotReady as exc:
        raise _fail(str(exc), 2) from None
    except clinics.ClinicError as exc:
        raise _fail(str(exc)) from None


async def _clinic(db: AsyncSession, slug: str) -> Clinic:
    from scheduler import clinics

    clinic = await clinics.clinic_by_slug(session=db, slug=slug)
    if clinic is None:
        raise clinics.ClinicError(f"no clinic {slug!r} (`aftercare clinic list` shows them)")
    return clinic


def _bot_username(settings: Settings, given: str | None) -> str:
    """For t.me links: the option, the setting, or the bot's own answer to getMe."""
    if given:
        return given.lstrip("@")
    if settings.bot_username:
        return settings.bot_username.lstrip("@")
    if settings.bot_token is None:
        raise _fail("give --bot-username (or set AFTERCARE_BOT_USERNAME or the bot token)", 2)
    from telegram import Bot

    async def ask() -> str:
        assert settings.bot_token is not None
        async with Bot(
            settings.bot_token.get_secret_value(), base_url=settings.bot_api_base_url
        ) as bot:
            return bot.username

    return asyncio.run(ask())


# -- clinic add | edit | list -------------------------------------------------------------

NameOpt = Annotated[str | None, typer.Option(help="The clinic's name, as patients see it.")]
ZoneOpt = Annotated[str | None, typer.Option(help="IANA time zone, e.g. Europe/London.")]
AddressOpt = Annotated[str | None, typer.Option(help="Address, for the session reminders.")]
PhoneOpt = Annotated[str | None, typer.Option(help="Phone number.")]
EmergencyOpt = Annotated[
    str | None, typer.Option(help="Emergency-services number told with red flags (112).")
]
BookingOpt = Annotated[str | None, typer.Option(help="Online booking page.")]
ProtocolOpt = Annotated[str | None, typer.Option(help="A protocol file of the clinic's own.")]


def _values(
    name: str | None,
    timezone: str | None,
    address: str | None,
    phone: str | None,
    booking_url: str | None,
    protocol_file: str | None,
    emergency_phone: str | None = None,
) -> dict[str, str | None]:
    return {
        "name": name,
        "timezone": timezone,
        "address": address,
        "phone": phone,
        "emergency_phone": emergency_phone,
        "booking_url": booking_url,
        "protocol_file": protocol_file,
    }


def _line(clinic: Clinic) -> str:
    parts = [clinic.slug, clinic.name, clinic.timezone, clinic.address, clinic.phone]
    parts.append(f"emergency {clinic.emergency_phone}")
    parts += [clinic.booking_url or "-", clinic.protocol_file or "-"]
    return " | ".join(parts)


@clinic_app.command("add")
def clinic_add(
    slug: Annotated[str, typer.Argument(help="A short id: letters, digits, - and _.")],
    name: NameOpt = None,
    timezone: ZoneOpt = None,
    address: AddressOpt = None,
    phone: PhoneOpt = None,
    booking_url: BookingOpt = None,
    protocol_file: ProtocolOpt = None,
    emergency_phone: EmergencyOpt = None,
) -> None:
    """Add a clinic."""
    from scheduler import clinics

    values = _values(name, timezone, address, phone, booking_url, protocol_file, emergency_phone)

    async def work(db: AsyncSession, now: datetime) -> Clinic:
        return await clinics.add_clinic(session=db, slug=slug, values=values, now=now)

    typer.echo("added: " + _line(_with_db(_settings(), work)))


@clinic_app.command("edit")
def clinic_edit(
    slug: Annotated[str, typer.Argument(help="The clinic to change.")],
    name: NameOpt = None,
    timezone: ZoneOpt = None,
    address: AddressOpt = None,
    phone: PhoneOpt = None,
    booking_url: BookingOpt = None,
    protocol_file: ProtocolOpt = None,
    emergency_phone: EmergencyOpt = None,
) -> None:
    """Change a clinic's details (only the options given)."""
    from scheduler import clinics

    values = _values(name, timezone, address, phone, booking_url, protocol_file, emergency_phone)

    async def work(db: AsyncSession, _now: datetime) -> Clinic:
        return await clinics.edit_clinic(session=db, slug=slug, values=values)

    typer.echo("changed: " + _line(_with_db(_settings(), work)))


@clinic_app.command("list")
def clinic_list() -> None:
    """List the clinics (slug | name | zone | address | phone | emergency | booking URL |
    protocol)."""
    from scheduler import clinics

    async def work(db: AsyncSession, _now: datetime) -> list[str]:
        return [_line(c) for c in await clinics.list_clinics(session=db)]

    for line in _with_db(_settings(), work):
        typer.echo(line)


# -- staff invite | list --------------------------------------------------------------------


@staff_app.command("invite")
def staff_invite(
    clinic: Annotated[str, typer.Option(help="The clinic's slug.")] = "default",
    hours: Annotated[int, typer.Option(min=1, max=24 * 14, help="Valid for.")] = 24,
    bot_username: Annotated[str | None, typer.Option(help="The bot's @username.")] = None,
) -> None:
    """Print a one-time staff invite link (expires after --hours)."""
    from scheduler import invites

    settings = _settings()
    username = _bot_username(settings, bot_username)

    async def work(db: AsyncSession, now: datetime) -> str:
        target = await _clinic(db, clinic)
        assert target.id is not None
        invite = await invites.staff_invite(session=db, clinic_id=target.id, now=now, hours=hours)
        return invites.deep_link(username, invite)

    typer.echo(_with_db(settings, work))


@staff_app.command("list")
def staff_list(
    clinic: Annotated[str, typer.Option(help="The clinic's slug.")] = "default",
) -> None:
    """List a clinic's staff (Telegram user id and first name)."""
    from scheduler import clinics

    async def work(db: AsyncSession, _now: datetime) -> list[str]:
        target = await _clinic(db, clinic)
        assert target.id is not None
        members = await clinics.staff_of(session=db, clinic_id=target.id)
        return [f"{m.tg_user_id} {m.name}" for m in members]

    for line in _with_db(_settings(), work):
        typer.echo(line)


# -- import, export -------------------------------------------------------------------------


def import_command(
    file: Annotated[Path, typer.Argument(help="The booking system's CSV export.")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check only; change nothing.")
    ] = False,
    links: Annotated[
        Path | None, typer.Option(help="Where to write the invite links (CSV).")
    ] = None,
    bot_username: Annotated[str | None, typer.Option(help="The bot's @username.")] = None,
) -> None:
    """Import appointments (columns: clinic, start, telegram_id, phone, invite, name)."""
    from scheduler import importer

    settings = _settings()
    try:
        text = file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise _fail(f"{file}: {type(exc).__name__}: cannot read it as UTF-8 text") from None
    rows, header_error = importer.read_csv(text)
    if header_error:
        raise _fail(f"{file}: line 1: {header_error}")
    username = _bot_username(settings, bot_username)
    from rich.progress import Progress

    from bot.serve.runner import protocol_of

    class DryRun(Exception):
        pass

    report = importer.ImportReport()

    async def work(db: AsyncSession, now: datetime) -> None:
        nonlocal report
        default = await _clinic(db, "default")
        with Progress(transient=True, disable=not sys.stderr.isatty()) as bar:
            task = bar.add_task("importing", total=len(rows))
            report = await importer.import_appointments(
                session=db,
                rows=rows,
                default_clinic=default,
                protocol=protocol_of(settings),
                bot_username=username,
                now=now,
                progress=lambda: bar.advance(task),
            )
        if dry_run:
            raise DryRun  # rolls the transaction back

    with contextlib.suppress(DryRun):
        _with_db(settings, work)
    for number, message in report.errors:
        typer.echo(f"{file}: line {number}: {message}", err=True)
    verb = "would be" if dry_run else "were"
    typer.echo(
        f"{report.lines} lines: {report.booked} {verb} booked, {report.invited} {verb} invited, "
        f"{report.unchanged} already imported, {len(report.errors)} with errors"
        + (" (dry run: nothing changed)" if dry_run else "")
    )
    if report.links and not dry_run:
        target = links or file.with_name(file.stem + "-invites.csv")
        target.write_text(importer.links_csv(report.links), encoding="utf-8")
        typer.echo(f"invite links for patients not yet on Telegram: {target}")
    if report.errors:
        raise typer.Exit(1)


@export_app.command("deliveries")
def export_deliveries(
    since: Annotated[str, typer.Option(help="From this day on (YYYY-MM-DD, UTC).")],
    out: Annotated[Path | None, typer.Option(help="A file (default: standard output).")] = None,
) -> None:
    """The delivery log as CSV: states, times, attempts, errors; never a message text."""
    from scheduler import importer

    try:
        day = datetime.strptime(since, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise _fail(f"--since: expected YYYY-MM-DD, got {since!r}") from None
    import io

    buffer = io.StringIO()

    async def work(db: AsyncSession, _now: datetime) -> int:
        return await importer.export_deliveries(session=db, since=day, out=buffer)

    count = _with_db(_settings(), work)
    if out is None:
        sys.stdout.write(buffer.getvalue())
    else:
        out.write_text(buffer.getvalue(), encoding="utf-8")
        typer.echo(f"{count} deliveries written to {out}")


# -- broadcast ------------------------------------------------------------------------------


def broadcast_command(
    text: Annotated[str, typer.Option(help="The message (plain text).")],
    audience: Annotated[str, typer.Option(help="due | active | course")] = "due",
    clinic: Annotated[str, typer.Option(help="The clinic's slug.")] = "default",
    yes: Annotated[bool, typer.Option("--yes", help="Send without asking.")] = False,
    wait: Annotated[bool, typer.Option(help="Show a progress bar until it is done.")] = True,
) -> None:
    """Send a broadcast (the running bot delivers it) and follow its progress."""
    from scheduler import broadcast

    if audience not in broadcast.AUDIENCES:
        raise _fail(f"--audience: one of {', '.join(broadcast.AUDIENCES)}")
    if not text.strip():
        raise _fail("--text: the message is empty")
    settings = _settings()
    from bot.serve.runner import protocol_of

    protocol = protocol_of(settings)

    async def preview(db: AsyncSession, now: datetime) -> tuple[str, int]:
        target = await _clinic(db, clinic)
        assert target.id is not None
        ids = await broadcast.audience_ids(
            session=db, clinic_id=target.id, audience=audience, protocol=protocol, now=now
        )
        return broadcast.patient_text(target.name, text.strip(), "en"), len(ids)

    shown, count = _with_db(settings, preview)
    typer.echo(f"Preview, as the patient will see it (Telegram HTML):\n\n{shown}\n")
    typer.echo(f"Recipients: {count} ({audience}).")
    if count == 0:
        raise _fail("nobody is in that audience: nothing sent")
    if not yes and not typer.confirm("Send it?"):
        raise typer.Exit(1)

    async def send(db: AsyncSession, now: datetime) -> tuple[int, int]:
        target = await _clinic(db, clinic)
        assert target.id is not None
        draft = await broadcast.create_draft(
            session=db, clinic_id=target.id, created_by=0, text=text.strip(), now=now
        )
        assert draft.id is not None
        started = await broadcast.start(
            session=db,
            broadcast_id=draft.id,
            clinic_id=target.id,
            audience=audience,
            protocol=protocol,
            now=now,
        )
        assert started is not None
        return draft.id, started.recipients

    broadcast_id, total = _with_db(settings, send)
    typer.echo(f"broadcast #{broadcast_id}: {total} messages planned; the running bot sends them")
    if not wait:
        return
    from rich.progress import Progress

    async def counts(db: AsyncSession, _now: datetime) -> broadcast.Progress:
        return await broadcast.progress(session=db, broadcast_id=broadcast_id)

    with Progress() as bar:
        task = bar.add_task(f"broadcast #{broadcast_id}", total=total)
        while True:
            p = _with_db(settings, counts)
            bar.update(task, completed=total - p.remaining)
            if p.done:
                break
            time.sleep(1.0)  # the command line watches real time; the bot does the sending
    typer.echo(f"sent {p.sent}, blocked {p.blocked}, failed {p.failed}")


def register(cli: typer.Typer) -> None:
    cli.add_typer(clinic_app, name="clinic")
    cli.add_typer(staff_app, name="staff")
    cli.add_typer(export_app, name="export")
    cli.command("import")(import_command)
    cli.command("broadcast")(broadcast_command)
