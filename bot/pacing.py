"""PTB's rate-limiter hook over the process's one `RateLimiter` (scheduler/ratelimit.py).

Every Bot API request that writes to a chat passes here. The dispatcher's sends have already
waited for their slot (with their priority) and say so with `rate_limit_args=PACED`; every
other chat request (a handler's reply, an edit, a callback answer) waits here as an
interactive request, ahead of reminders and broadcasts. A 429 on any request pauses the
queued sends for `retry_after` (the global back-off) and is raised, never retried here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any

from telegram._utils.types import JSONDict
from telegram.error import RetryAfter
from telegram.ext import BaseRateLimiter

from scheduler.ratelimit import INTERACTIVE, RateLimiter

PACED = "paced"


def retry_after_seconds(exc: RetryAfter) -> float:
    # PTB 22.2+ keeps a timedelta and warns when the int-typed public attribute is read
    # (as its own AIORateLimiter does, read the stored value).
    stored = getattr(exc, "_retry_after", None)
    if isinstance(stored, timedelta):
        return stored.total_seconds()
    wait = exc.retry_after
    return wait.total_seconds() if isinstance(wait, timedelta) else float(wait)


class PacedRateLimiter(BaseRateLimiter[str]):
    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter

    async def initialize(self) -> None:
        """Nothing to set up: the limiter starts its loop on first use."""

    async def shutdown(self) -> None:
        await self.limiter.close()

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, bool | JSONDict | list[JSONDict]]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,  # noqa: ARG002
        data: dict[str, Any],
        rate_limit_args: str | None,
    ) -> bool | JSONDict | list[JSONDict]:
        chat_id = data.get("chat_id")
        granted: float | None = None
        if chat_id is not None and rate_limit_args != PACED:
            number = 0  # an @username counts as one shared chat
            with contextlib.suppress(TypeError, ValueError):
                number = int(chat_id)
            granted = await self.limiter.acquire(number, INTERACTIVE)
        try:
            return await callback(*args, **kwargs)
        except RetryAfter as exc:
            if rate_limit_args != PACED:  # the dispatcher pauses for its own sends
                self.limiter.pause(retry_after_seconds(exc))
            raise
        finally:
            if granted is not None:
                self.limiter.answered(granted)
