"""The command line: `aftercare run | start | demo | migrate | check-protocol FILE`."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated

import typer

from bot.cli.clinic import register as register_clinic_side
from bot.settings import Settings, SettingsError, load_settings

cli = typer.Typer(
    help="Aftercare bot: pre-care and aftercare reminders for clinic patients.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # a traceback's locals would show the token
)


def fail(message: str, code: int = 2) -> typer.Exit:
    """One clear line on stderr, and the exit code (2: configuration)."""
    typer.echo(f"aftercare: {message}", err=True)
    return typer.Exit(code)


def settings_or_exit() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        raise fail(str(exc)) from None


@cli.command()
def run(
    webhook: Annotated[
        bool,
        typer.Option(
            "--webhook",
            help="Webhook mode (AFTERCARE_WEBHOOK_URL, _SECRET, _LISTEN, _PORT), with /healthz.",
        ),
    ] = False,
) -> None:
    """Run the bot with long polling (needs AFTERCARE_BOT_TOKEN and a migrated database)."""
    from bot.serve.runner import WebhookSettingsError, run_polling, run_webhook
    from scheduler.db import SchemaNotReady

    settings = settings_or_exit()
    if settings.bot_token is None:
        raise fail("setting AFTERCARE_BOT_TOKEN: missing (copy .env.example to .env and set it)")
    try:
        if webhook:
            run_webhook(settings)
        else:
            run_polling(settings)
    except (SchemaNotReady, WebhookSettingsError) as exc:
        raise fail(str(exc)) from None


@cli.command()
def start() -> None:
    """Migrate, then run the bot; with no token configured, run the offline demo instead."""
    settings = settings_or_exit()
    if settings.bot_token is None:
        typer.echo("No AFTERCARE_BOT_TOKEN configured: running the offline demo.\n")
        demo()
        return
    migrate()
    run()


@cli.command()
def demo() -> None:
    """Offline demo: sandbox Bot API, the real bot, a scripted patient, a simulated clock."""
    from bot.offline.demo import run_demo

    settings = settings_or_exit()
    code = asyncio.run(run_demo(settings, out=sys.stdout))
    raise typer.Exit(code)


@cli.command()
def migrate() -> None:
    """Create or upgrade the database schema (Alembic)."""
    from scheduler.db import migrate as upgrade

    settings = settings_or_exit()
    upgrade(settings.database_url)
    typer.echo("database is up to date")


@cli.command("check-protocol")
def check_protocol(
    file: Annotated[Path, typer.Argument(help="A protocol file (TOML).")],
) -> None:
    """Validate a protocol file and print the timeline it gives for a sample session."""
    from messages.protocol import ProtocolError, load_protocol
    from scheduler.sample import sample_timeline

    settings = settings_or_exit()
    try:
        protocol = load_protocol(file)
    except ProtocolError as exc:
        raise fail(str(exc), code=1) from None
    typer.echo(sample_timeline(protocol, settings.zone))


# The clinic side: clinic, staff, import, export, broadcast (bot/cli/clinic.py).
register_clinic_side(cli)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
