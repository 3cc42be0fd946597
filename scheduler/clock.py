"""The only place that reads the system time.

Everything else takes a `Clock` (or a `now` argument) so that tests and the demo can move
time forward instead of sleeping on it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """Source of the current instant, and the bridge to real (wall) time for timers."""

    def now(self) -> datetime:
        """The current instant, aware, in UTC."""
        ...

    def real_time_for(self, at: datetime) -> datetime | None:
        """The real (system) instant at which `at` will be reached, or None if only an
        explicit `advance` can reach it (simulated clocks)."""
        ...

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Call `callback` whenever time jumps (never for a system clock)."""
        ...


def utcnow() -> datetime:
    """The system time, aware, in UTC."""
    return datetime.now(UTC)


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return utcnow()

    def real_time_for(self, at: datetime) -> datetime | None:
        return at

    def subscribe(self, callback: Callable[[], None]) -> None:
        """The system clock never jumps."""


class FakeClock:
    """A clock that stands still until told to move (tests and the offline demo)."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("FakeClock needs an aware start time")
        self._now = start.astimezone(UTC)
        self._subscribers: list[Callable[[], None]] = []

    def now(self) -> datetime:
        return self._now

    def real_time_for(self, at: datetime) -> datetime | None:
        # What is already due runs at once; the future is reached only by `advance`.
        return utcnow() if at <= self._now else None

    def subscribe(self, callback: Callable[[], None]) -> None:
        self._subscribers.append(callback)

    def set(self, at: datetime) -> None:
        """Jump to `at` (never backwards) and wake the subscribers."""
        at = at.astimezone(UTC)
        if at < self._now:
            raise ValueError("time does not go backwards")
        self._now = at
        for callback in list(self._subscribers):
            callback()

    def advance(self, delta: timedelta) -> None:
        """Move forward by `delta` and wake the subscribers."""
        self.set(self._now + delta)
