"""What the commands share, without heavy imports: failing in one line, counts, files."""

from __future__ import annotations

import errno
import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

import typer

from bot.cli import said
from bot.errors import OperatorError, Refused

P = ParamSpec("P")
R = TypeVar("R")


def one_line(command: Callable[P, R]) -> Callable[P, R]:
    """A command whose OperatorError is said on stderr, one line each, with its exit code
    (2: settings, files, database, Telegram; 1: a refused operation). Every command has it,
    so that typer's own runner (and the tests through it) see what an operator sees."""

    @functools.wraps(command)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except OperatorError as exc:
            raise typer.Exit(said(exc)) from None

    return guarded


def counted(number: int, noun: str) -> str:
    """`number` and `noun`, in the plural unless it is one ("1 session", "3,000 sessions")."""
    return f"{number:,} {noun}" + ("" if number == 1 else "s")


def writable(path: Path) -> None:
    """Refused in one line, in the system's words, unless a file can be written at `path`:
    checked before the work whose result goes there (an import's invite links, an export),
    so that nothing done is lost to a folder that does not exist."""
    folder = path.parent
    if path.is_dir():
        problem = errno.EISDIR
    elif not folder.is_dir():
        problem = errno.ENOENT
    elif not os.access(path if path.exists() else folder, os.W_OK):
        problem = errno.EACCES
    else:
        return
    raise Refused(f"{path}: {os.strerror(problem)}")
