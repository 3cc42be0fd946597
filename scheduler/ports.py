"""The edge between the timeline and Telegram: what the dispatcher needs from a sender."""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

import msgspec


class Button(msgspec.Struct, frozen=True):
    text: str
    data: str | None = None
    url: str | None = None


class Outgoing(msgspec.Struct, frozen=True):
    """One message to one chat, already rendered (Telegram HTML)."""

    chat_id: int
    text: str
    buttons: tuple[tuple[Button, ...], ...] = msgspec.field(default_factory=tuple)
    # A broadcast of a clinic that allows Telegram's paid broadcasts: sent with
    # `allow_paid_broadcast` (billed in Stars past the free rate) and paced on that budget.
    paid_broadcast: bool = False


class Outcome(StrEnum):
    SENT = "sent"
    RETRY = "retry"  # network, timeout, 5xx, 429: try again while still valid
    BLOCKED = "blocked"  # 403: the patient blocked the bot or is gone
    FAILED = "failed"  # 400 and the like: retrying cannot help


class SendResult(msgspec.Struct, frozen=True):
    outcome: Outcome
    message_id: int | None = None
    error: str | None = None
    retry_after: float | None = None


class Sender(Protocol):
    """Delivers one message; never raises for a Telegram or network error."""

    async def send(self, message: Outgoing) -> SendResult: ...


class DeliveryObserver(Protocol):
    """What the dispatcher tells about its work as it goes (bot/serve/health.py counts it
    for /metrics); the outcomes only once they are recorded in the database."""

    def claimed(self, *, seconds: float, rows: int) -> None: ...

    def expired(self, count: int) -> None: ...

    def recorded(
        self, *, priority: int, state: str, lateness: float | None, throttled: bool
    ) -> None:
        """One send's outcome: the row's new state ('sent', 'pending' again to retry,
        'expired', 'failed', or 'blocked' for a failed send to a patient who blocked the
        bot), how late a sent row went (seconds past its due time), and
        whether Telegram asked to slow down (429)."""
