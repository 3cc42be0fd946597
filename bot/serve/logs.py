"""Logging set-up: structured lines, no token, no message texts.

httpx logs every request URL at INFO, and Bot API URLs contain the token: it is turned
down to WARNING, and the formatter redacts the token from every line it writes (message,
arguments and tracebacks alike), whatever logger produced it.
"""

from __future__ import annotations

import logging
import sys

NOISY = ("httpx", "httpcore", "apscheduler", "aiosqlite", "asyncio", "alembic")
# At DEBUG these log whole requests and updates: message texts, names. Never below INFO.
CONTENT = ("telegram.Bot", "telegram.ext.ExtBot", "telegram.ext.Application")


class RedactingFormatter(logging.Formatter):
    def __init__(self, fmt: str, secrets: list[str]) -> None:
        super().__init__(fmt)
        self._secrets = [s for s in secrets if s]

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        for secret in self._secrets:
            line = line.replace(secret, "<token>")
        return line


def setup_logging(level: str, *, secrets: list[str]) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        RedactingFormatter("%(asctime)s level=%(levelname)s logger=%(name)s %(message)s", secrets)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    floor = max(logging.WARNING, logging.getLevelNamesMapping()[level])
    for name in NOISY:
        logging.getLogger(name).setLevel(floor)
    for name in CONTENT:
        logging.getLogger(name).setLevel(max(logging.INFO, logging.getLevelNamesMapping()[level]))
