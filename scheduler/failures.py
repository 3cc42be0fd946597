"""Unexpected failures, logged for an operator: one line with an error id at ERROR, the
traceback at DEBUG only (under the same id, so the two can be matched)."""

from __future__ import annotations

import logging
import secrets


def report(log: logging.Logger, what: str, exc: BaseException) -> str:
    """Log `what` failed with `exc`; the error id (also worth telling the person affected)."""
    error_id = secrets.token_hex(4)
    log.error("%s: %s (error %s)", what, type(exc).__name__, error_id)
    log.debug("error %s", error_id, exc_info=(type(exc), exc, exc.__traceback__))
    return error_id
