"""The clinic side of the command line: clinics, staff invites, import, export, broadcast.

Options only: each command reads its options and calls bot/cli/work.py, imported when the
command runs (it brings SQLAlchemy and the scheduler, which `--help` does not need).
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, ParamSpec

import typer

from bot.cli import settings_or_exit
from bot.cli.common import counted, one_line, writable
from bot.errors import Refused

P = ParamSpec("P")

clinic_app = typer.Typer(help="Clinics of this deployment.", no_args_is_help=True)
staff_app = typer.Typer(help="Clinic staff.", no_args_is_help=True)
export_app = typer.Typer(help="Data out, as CSV.", no_args_is_help=True)

Name = Annotated[str, typer.Option(metavar="NAME", help="The clinic's name, as patients see it.")]
Zone = Annotated[str, typer.Option(metavar="ZONE", help="IANA time zone, e.g. Asia/Kolkata.")]
NewName = Annotated[
    str | None, typer.Option(metavar="NAME", help="The clinic's name, as patients see it.")
]
NewZone = Annotated[
    str | None, typer.Option(metavar="ZONE", help="IANA time zone, e.g. Asia/Kolkata.")
]
Address = Annotated[
    str | None, typer.Option(metavar="TEXT", help="Address, for the session reminders.")
]
Phone = Annotated[str | None, typer.Option(metavar="NUMBER", help="Phone number.")]
Emergency = Annotated[
    str | None,
    typer.Option(metavar="NUMBER", help="Emergency-services number said with red flags [112]."),
]
Booking = Annotated[
    str | None, typer.Option(metavar="URL", help="Online booking page (https://…).")
]
ProtocolFile = Annotated[
    str | None, typer.Option(metavar="FILE", help="A protocol file of the clinic's own.")
]
PaidBroadcast = Annotated[
    bool | None,
    typer.Option(
        "--allow-paid-broadcast/--no-allow-paid-broadcast",
        help="Telegram's paid broadcasts: up to 1,000 messages a second instead of 30, each "
        "message past the free 30 billed in Telegram Stars to the bot's owner [off].",
    ),
]
ClinicSlug = Annotated[str, typer.Option(metavar="SLUG", help="The clinic's slug.")]
Username = Annotated[
    str | None,
    typer.Option(metavar="NAME", help="The bot's @username (default: asked from Telegram)."),
]


# Typer reads a command's options from its signature and has no shared groups of options
# (the gap filled here): `clinic add` and `clinic edit` take the same details, declared once.
_DETAILS = [
    inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=kind)
    for name, kind in (
        ("address", Address),
        ("phone", Phone),
        ("emergency_phone", Emergency),
        ("booking_url", Booking),
        ("protocol_file", ProtocolFile),
        ("allow_paid_broadcast", PaidBroadcast),
    )
]


def _with_details(command: Callable[P, None]) -> Callable[P, None]:
    """The command's signature with the clinic's details added, for Typer to read; the
    command gets them in `**details`."""
    signature = inspect.signature(command, eval_str=True)
    own = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
    command.__signature__ = signature.replace(parameters=[*own, *_DETAILS])  # type: ignore[attr-defined]
    return command


def _values(details: dict[str, Any]) -> tuple[dict[str, str | None], bool | None]:
    """A clinic command's options as the clinic's values, and the paid broadcast choice."""
    paid = details.pop("allow_paid_broadcast", None)
    return {k: v if v is None else str(v) for k, v in details.items()}, paid


@clinic_app.command("add")
@one_line
@_with_details
def clinic_add(
    slug: Annotated[
        str, typer.Argument(metavar="SLUG", help="A short id: letters, digits, - and _.")
    ],
    name: Name,
    timezone: Zone,
    **details: Any,
) -> None:
    """Add a clinic."""
    from bot.cli import work

    values, paid = _values({"name": name, "timezone": timezone, **details})
    typer.echo(work.add_clinic(settings_or_exit(), slug, values, paid=paid))


@clinic_app.command("edit")
@one_line
@_with_details
def clinic_edit(
    slug: Annotated[str, typer.Argument(metavar="SLUG", help="The clinic to change.")],
    name: NewName = None,
    timezone: NewZone = None,
    **details: Any,
) -> None:
    """Change a clinic's details (only the options given)."""
    from bot.cli import work

    values, paid = _values({"name": name, "timezone": timezone, **details})
    typer.echo(work.edit_clinic(settings_or_exit(), slug, values, paid=paid))


@clinic_app.command("list")
@one_line
def clinic_list() -> None:
    """List the clinics: slug | name | zone | address | phone | emergency | booking | protocol
    | paid broadcasts."""
    from bot.cli import work

    for line in work.list_clinics(settings_or_exit()):
        typer.echo(line)


@clinic_app.command("show")
@one_line
def clinic_show(
    slug: Annotated[str, typer.Argument(metavar="SLUG", help="The clinic to show.")],
) -> None:
    """Show one clinic, as `clinic list` does."""
    from bot.cli import work

    typer.echo(work.show_clinic(settings_or_exit(), slug))


@staff_app.command("invite")
@one_line
def staff_invite(
    clinic: ClinicSlug = "default",
    hours: Annotated[
        int, typer.Option(min=1, max=24 * 14, metavar="HOURS", help="Valid for this long.")
    ] = 24,
    bot_username: Username = None,
) -> None:
    """Print a one-time staff invite link (it expires after --hours)."""
    from bot.cli import work

    typer.echo(work.staff_invite(settings_or_exit(), clinic, hours, bot_username))


@staff_app.command("list")
@one_line
def staff_list(clinic: ClinicSlug = "default") -> None:
    """List a clinic's staff (Telegram user id and first name)."""
    from bot.cli import work

    for line in work.staff_list(settings_or_exit(), clinic):
        typer.echo(line)


@one_line
def import_command(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="The booking system's CSV export.")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check every line; change nothing.")
    ] = False,
    links: Annotated[
        Path | None, typer.Option(metavar="FILE", help="Where to write the invite links (CSV).")
    ] = None,
    bot_username: Username = None,
) -> None:
    """Import appointments (columns: clinic, start, telegram_id, phone, invite, name)."""
    from bot.cli import work

    done = work.import_file(
        settings_or_exit(), file, dry_run=dry_run, links=links, username=bot_username
    )
    report = done.report
    for number, message in report.errors:
        typer.echo(f"{file}: line {number}: {message}", err=True)
    booked, invited = ("to book", "to invite") if dry_run else ("booked", "invited")
    typer.echo(
        f"{counted(report.lines, 'line')}: {report.booked:,} {booked}, "
        f"{report.invited:,} {invited}, {report.unchanged:,} already imported, "
        f"{len(report.errors):,} with errors" + (" (dry run: nothing changed)" if dry_run else "")
    )
    if done.links_file is not None:
        typer.echo(f"invite links for patients not yet on Telegram: {done.links_file}")
    if done.unlinked is not None:
        # The invites exist; only their file is missing, and the same import run again
        # lists those not opened yet.
        typer.echo(
            f"aftercare: {counted(len(report.links), 'invite link')} not written: "
            f"{done.unlinked}, then run the same import again (it imports nothing twice)",
            err=True,
        )
    if report.errors or done.unlinked is not None:
        raise typer.Exit(1)


@export_app.command("deliveries")
@one_line
def export_deliveries(
    since: Annotated[
        str, typer.Option(metavar="YYYY-MM-DD", help="From this day on (YYYY-MM-DD, UTC).")
    ],
    out: Annotated[
        Path | None, typer.Option(metavar="FILE", help="A file (default: standard output).")
    ] = None,
) -> None:
    """The delivery log as CSV: states, times, attempts, errors; never a message text."""
    from bot.cli import work

    try:
        day = datetime.strptime(since, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise Refused(f"--since: expected YYYY-MM-DD, got {since!r}") from None
    settings = settings_or_exit()
    if out is None:
        work.export_deliveries(settings, day, sys.stdout)
        return
    writable(out)
    try:
        with out.open("w", encoding="utf-8") as file:
            count = work.export_deliveries(settings, day, file)
    except BaseException:
        out.unlink(missing_ok=True)  # not a part of the log that reads as the whole
        raise
    typer.echo(f"{count} deliveries written to {out}")


@one_line
def broadcast_command(
    text: Annotated[str, typer.Option(metavar="TEXT", help="The message (plain text).")],
    audience: Annotated[
        str, typer.Option(metavar="AUDIENCE", help="due, active or course.")
    ] = "due",
    clinic: ClinicSlug = "default",
    yes: Annotated[bool, typer.Option("--yes", help="Send without asking.")] = False,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Show a progress bar until it is done.")
    ] = True,
) -> None:
    """Send a broadcast (the running bot delivers it) and follow its progress."""
    from bot.cli import work

    if not text.strip():
        raise Refused("--text: the message is empty")
    planned = work.broadcasting(settings_or_exit(), clinic, audience, text)
    shown, count = planned.preview()
    typer.echo(f"Preview, as the patient will see it (Telegram HTML):\n\n{shown}\n")
    typer.echo(f"Recipients: {count:,} ({audience}).")
    if count == 0:
        raise Refused("nobody is in that audience: nothing sent")
    if not yes and not typer.confirm("Send it?"):
        typer.echo("Nothing sent.")
        raise typer.Exit(1)
    broadcast_id, total = planned.send()
    typer.echo(
        f"broadcast #{broadcast_id}: {counted(total, 'message')} planned; "
        "the running bot sends them"
    )
    if not wait:
        return
    counts = planned.follow(broadcast_id, total)
    typer.echo(f"sent {counts.sent}, blocked {counts.blocked}, failed {counts.failed}")


@one_line
def replan_command(
    clinic: ClinicSlug,
    previous_quiet_hours: Annotated[
        str | None,
        typer.Option(
            metavar="HH:MM-HH:MM",
            help="The default quiet hours before AFTERCARE_QUIET_HOURS changed: patients who "
            "still have them get the new default.",
        ),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Replan without asking.")] = False,
) -> None:
    """Replan every session with pending reminders of a clinic (after its protocol file, zone
    or quiet hours changed), in batches; a second run finishes an interrupted one."""
    from bot.cli import work

    previous = None
    if previous_quiet_hours is not None:
        previous = work.quiet_hours(previous_quiet_hours, "--previous-quiet-hours")
    planned = work.Replanning(settings_or_exit(), clinic, previous)
    preview = planned.preview()
    if preview.resuming is not None:
        run = preview.resuming
        typer.echo(
            f"An interrupted replan of {clinic} (started {run.started_at:%Y-%m-%d %H:%M} UTC) "
            f"is {run.done:,} of {run.total:,} sessions done: this run finishes it."
        )
    elif preview.sessions == 0 and not preview.quiet_moved:
        typer.echo(f"Nothing to replan: no session of {clinic} has pending reminders.")
        return
    else:
        typer.echo(
            f"Replan {clinic}: {counted(preview.sessions, 'session')} of "
            f"{counted(preview.patients, 'patient')}, "
            f"{counted(preview.pending, 'pending reminder')}, with the clinic's protocol, "
            "zone and quiet hours as they are now."
        )
        if preview.quiet_moved:
            typer.echo(
                "Patients on the previous default quiet hours, who get the new default: "
                f"{preview.quiet_moved:,}."
            )
    if not yes and not typer.confirm("Replan now?"):
        typer.echo("Nothing replanned.")
        raise typer.Exit(1)
    from rich.progress import Progress

    with Progress(disable=not sys.stderr.isatty()) as bar:
        task = bar.add_task("replanning", total=None)
        done = planned.run(lambda done, total: bar.update(task, completed=done, total=total))
    typer.echo(f"replanned {counted(done, 'session')} of {clinic}")


def register(cli: typer.Typer) -> None:
    cli.add_typer(clinic_app, name="clinic")
    cli.add_typer(staff_app, name="staff")
    cli.add_typer(export_app, name="export")
    cli.command("import")(import_command)
    cli.command("broadcast")(broadcast_command)
    cli.command("replan")(replan_command)
