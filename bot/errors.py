"""What the operator is told when something stops: one line, and the exit code.

Kept free of heavy imports: the command line's error boundary (bot/cli/commands.py) catches
these without loading SQLAlchemy or the Bot API client.
"""

from __future__ import annotations


class OperatorError(Exception):
    """One line for the operator: what is wrong and what to change."""

    code = 1


class StartupError(OperatorError):
    """A setting, a file, the database or Telegram stops the start (exit code 2)."""

    code = 2


class Refused(OperatorError):
    """The command was understood but cannot be done (an unknown clinic, a bad value)."""

    code = 1
