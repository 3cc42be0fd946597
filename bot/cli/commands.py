"""The command line: `aftercare run | start | demo | migrate | backup FILE | check-protocol
FILE`, and the clinic side (bot/cli/clinic.py).

Every command imports what it does when it runs (`run` bot/serve/runner.py, the others
bot/cli/work.py): SQLAlchemy, the scheduler and the Bot API client, which `aftercare --help`
does not need. `main` is the one error boundary (its lines are bot/cli's `said` and
`unexpected`, which `aftercare run` alone uses without typer): what stops a command is one
line on stderr and an exit code (2: settings, files, database, Telegram; 1: a refused
operation), never a traceback.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from bot.cli import run_bot, settings_or_exit, unexpected
from bot.cli.clinic import register as register_clinic_side
from bot.cli.common import one_line

cli = typer.Typer(
    help="Aftercare bot: pre-care and aftercare reminders for clinic patients.",
    no_args_is_help=True,
    add_completion=False,
    # No rich tracebacks (their locals would show the token) and no rich help with a type
    # per option: plain click help.
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@cli.command()
@one_line
def run(
    webhook: Annotated[
        bool,
        typer.Option(
            "--webhook",
            help="Webhook mode (AFTERCARE_WEBHOOK_URL, _SECRET, _LISTEN, _PORT), with /healthz.",
        ),
    ] = False,
) -> None:
    """Run the bot (long polling; needs AFTERCARE_BOT_TOKEN and a migrated database)."""
    run_bot(webhook=webhook)


@cli.command()
@one_line
def start() -> None:
    """Migrate, then run the bot; with no token configured, run the offline demo instead."""
    settings = settings_or_exit()
    if settings.bot_token is None:
        typer.echo("No AFTERCARE_BOT_TOKEN configured: running the offline demo.\n")
        demo()
        return
    migrate()
    run()


class DemoLanguage(StrEnum):
    en = "en"
    fa = "fa"
    ml = "ml"


@cli.command()
@one_line
def demo(
    language: Annotated[
        DemoLanguage,
        typer.Option(
            "--language", metavar="LANG", help="The people's Telegram language: en, fa or ml."
        ),
    ] = DemoLanguage.en,
    dashboard: Annotated[
        bool,
        typer.Option(
            "--dashboard",
            help="Afterwards, leave the clinic dashboard running on localhost with the demo's "
            "data, and print a login link (Ctrl-C stops it).",
        ),
    ] = False,
    port: Annotated[
        int, typer.Option("--port", min=1, max=65535, help="The dashboard's port (--dashboard).")
    ] = 8080,
) -> None:
    """Offline demo: sandbox Bot API, the real bot, a scripted patient, a simulated clock."""
    from bot.cli import work

    raise typer.Exit(
        work.demo(settings_or_exit(), language.value, dashboard_port=port if dashboard else None)
    )


@cli.command()
@one_line
def migrate() -> None:
    """Create or upgrade the database schema (after checking the protocol file)."""
    from bot.cli import work

    typer.echo(work.migrate(settings_or_exit()))


@cli.command()
@one_line
def backup(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="Where the copy goes (new).")],
) -> None:
    """Copy the SQLite database to FILE, consistently, even while the bot runs."""
    from bot.cli import work

    typer.echo(work.backup(settings_or_exit(), file))


@cli.command("check-protocol")
@one_line
def check_protocol(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="A protocol file (TOML).")],
) -> None:
    """Check a protocol file for shape and meaning; print its sample timeline and
    restrictions (exit 1 with every problem when it cannot be used)."""
    from bot.cli import work

    checked = work.check_protocol(file, settings_or_exit())
    typer.echo(checked.timeline)
    for warning in checked.warnings:
        typer.echo(f"warning: {file.name}: {warning}", err=True)


# The clinic side: clinic, staff, import, export, broadcast (bot/cli/clinic.py).
register_clinic_side(cli)


def main() -> None:
    """`aftercare`: the commands (each says its own failures in one line: `one_line`), and
    one line for a bug too."""
    try:
        cli()
    except Exception as exc:  # a bug: one line, the traceback only when asked for
        sys.exit(unexpected(exc))


if __name__ == "__main__":
    main()
