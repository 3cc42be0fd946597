"""The command line (`aftercare`, also `python -m bot`): `main` imports the commands
(bot/cli/commands.py) and runs them."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


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


def main() -> None:
    """`aftercare`: the commands. Their modules (typer, the settings, pydantic) live as long
    as the process too: without the collector, 10-15 ms of every command's start."""
    with lasting_imports():
        from bot.cli import commands
    commands.main()
