"""The command line (`aftercare`, also `python -m bot`): `main` imports the commands
(bot/cli/commands.py) and runs them; `aftercare run` alone starts the bot without them.

Kept free of heavy imports: the error boundary here (`said`, `unexpected`) serves typer's
commands and the bot's own start alike."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from bot.errors import OperatorError, StartupError

if TYPE_CHECKING:
    from bot.settings import Settings


@contextlib.contextmanager
def lasting_imports() -> Iterator[None]:
    """Imports whose objects live as long as the process (a running bot's modules): without
    the cyclic garbage collector meanwhile, then frozen out of its sight (`gc.freeze`).

    They are hundreds of thousands of objects and next to no garbage, yet the collector would
    walk them over and over while they are made (two full passes among others) and again in
    the full passes of a running bot: 60-80 ms of `aftercare run`'s start-up for nothing."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def said(exc: OperatorError) -> int:
    """What stopped a command, one line each on stderr; its exit code (2: settings, files,
    database, Telegram; 1: a refused operation)."""
    for line in str(exc).splitlines() or [type(exc).__name__]:
        print(f"aftercare: {line}", file=sys.stderr)
    return exc.code


def unexpected(exc: Exception) -> int:
    """A bug: one line with an error id, the traceback only when asked for; exit code 1."""
    import secrets

    error_id = secrets.token_hex(4)
    print(
        f"aftercare: unexpected {type(exc).__name__} (error {error_id}); "
        "AFTERCARE_LOG_LEVEL=DEBUG shows the traceback",
        file=sys.stderr,
    )
    if os.environ.get("AFTERCARE_LOG_LEVEL", "").upper() == "DEBUG":
        traceback.print_exception(exc)
    logging.getLogger("aftercare").debug("error %s", error_id, exc_info=exc)
    return 1


def settings_or_exit() -> Settings:
    """The settings; a missing or invalid one is a StartupError naming it. Their modules
    (pydantic, pydantic-settings) are imported here, when a command reads them (`--help`
    does not), and live as long as the process."""
    with lasting_imports():
        from bot.settings import SettingsError, load_settings

    try:
        return load_settings()
    except SettingsError as exc:
        raise StartupError(str(exc)) from None


def run_bot(*, webhook: bool) -> None:
    """`aftercare run`: the bot, until SIGINT or SIGTERM. OperatorError: one line to say."""
    with lasting_imports():
        # The Bot API clients' TLS context is made on a thread while the runner is imported.
        from bot.serve import tls

        tls.begin()
        # The runner, not bot/cli/work.py: the clinic side's import, replan and export code
        # is no part of a running bot's start-up.
        from bot.serve import runner

    runner.run(settings_or_exit(), webhook=webhook)


def _guarded(command: Callable[[], None]) -> int:
    """`command`'s exit code, its failure said as `main`'s commands say theirs."""
    try:
        command()
    except OperatorError as exc:
        return said(exc)
    except KeyboardInterrupt:  # as click says it
        print("\nAborted!", file=sys.stderr)
        return 1
    except Exception as exc:
        return unexpected(exc)
    return 0


def main() -> None:
    """`aftercare`: the commands. `aftercare run` (with `--webhook` or not) starts the bot
    without typer and the commands' modules, 20 ms of its start-up (typer's import and its
    dispatch); every other command line, `run --help` among them, goes through typer.

    The commands' modules (typer) live as long as the process: imported without the
    collector (`lasting_imports`), as the settings' are (`settings_or_exit`)."""
    args = sys.argv[1:]
    if args in (["run"], ["run", "--webhook"]):
        sys.exit(_guarded(lambda: run_bot(webhook=args == ["run", "--webhook"])))
    with lasting_imports():
        from bot.cli import commands
    commands.main()
