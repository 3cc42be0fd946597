"""Telegram's send limits as one limiter per process, with priorities and a global back-off.

Three sliding windows decide when a message may go: overall (30 in any second), per chat
(1 per second on average, 3 in any 3 seconds so that a reply and a reminder do not wait on
each other), and per group (20 in any minute). Waiters are granted in priority order (lower
first): interactive replies, then time-critical reminders, then broadcasts, so a broadcast
of thousands never delays a reminder by more than the sends already granted; a free
broadcast's sends go evenly, 1/rate apart (`Pace`), not 30 at once each second. A 429's
`retry_after` pauses every queued send (`pause`); interactive replies are not held by a
pause, because holding them would hold the handling of incoming updates.

Telegram's paid broadcasts (`allow_paid_broadcast`, billed in Stars) add a second window:
up to 1,000 messages in any second in all, the free ones included. A send that says `paid`
is paced on that window alone; every other send counts in it too, beside its own 30. Waiters
are still granted in priority order, so a paid broadcast takes only what replies and
reminders leave: one of them waits for the free window as before, and then at most for the
next slot of the whole (a millisecond at 1,000 a second). A 429 pauses the budget it was
answered on (paid, or free).

Telegram counts a message when it arrives, somewhere between the grant and the answer; the
delay varies (a busy event loop, the network). So a grant's place in its overall window
moves to the instant the answer came (`answered`): the next grant that this one's expiry
allows then arrives a full window after it, however late it was.

Time here is the event loop's monotonic clock (real seconds: limits are about real time),
injectable with `sleep` so tests run on virtual time.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

import msgspec

from scheduler.models import Priority

INTERACTIVE = -10  # replies to a person who just wrote; reminders are 0, broadcasts 10


class Limits(msgspec.Struct, frozen=True):
    overall_per_second: float = 30.0
    overall_burst: int = 30
    # All messages in any second when some are paid broadcasts (the free ones included).
    paid_per_second: float = 1000.0
    chat_per_second: float = 1.0
    chat_burst: int = 3
    group_per_minute: float = 20.0


class Window:
    """At most `count` grants in any `period` seconds (a sliding window: strict, no overshoot
    at window edges, unlike a token bucket that allows a full burst on top of its rate)."""

    __slots__ = ("count", "period", "times")

    def __init__(self, count: int, period: float) -> None:
        self.count = max(1, count)
        self.period = period
        self.times: deque[float] = deque()

    @classmethod
    def of_rate(cls, per_second: float, burst: int) -> Window:
        """`burst` at once at most, `per_second` on average."""
        burst = max(1, burst)
        return cls(burst, burst / per_second)

    def _prune(self, now: float) -> None:
        while self.times and self.times[0] <= now - self.period:
            self.times.popleft()

    def ready_at(self, now: float) -> float:
        """The earliest instant at which one more grant fits."""
        self._prune(now)
        return now if len(self.times) < self.count else self.times[0] + self.period

    def take(self, now: float) -> None:
        self.times.append(now)

    def restamp(self, granted: float, answered: float) -> None:
        """Count a grant from when it was answered (kept in order: the oldest first).

        Both places are looked for from the newest end: a grant is answered within moments,
        and at 1,000 a second a window holds a thousand older ones, which `in`, `remove` and
        `insort` on the deque walked from the oldest at every answer."""
        times = self.times
        index = len(times) - 1
        while index >= 0 and times[index] > granted:
            index -= 1
        if index >= 0 and times[index] == granted:
            del times[index]
        index = len(times)
        while index > 0 and times[index - 1] > answered:
            index -= 1
        times.insert(index, answered)

    def idle(self, now: float) -> bool:
        self._prune(now)
        return not self.times


class Pace:
    """One grant every `gap` seconds on average, evenly (the generic cell rate algorithm): a
    grant may come up to one gap early against its place in the schedule, so a grant made
    late (the event loop woke late) does not put every later one back as well."""

    __slots__ = ("gap", "scheduled")

    def __init__(self, gap: float) -> None:
        self.gap = gap
        self.scheduled = float("-inf")  # the next grant's place in the schedule

    def ready_at(self, now: float) -> float:
        return max(now, self.scheduled - self.gap)

    def take(self, now: float) -> None:
        self.scheduled = max(self.scheduled, now) + self.gap


class _Waiter(msgspec.Struct, order=True):
    """Ordered by priority, then by arrival: `seq` is unique, so the fields after it never
    decide an order."""

    priority: int
    seq: int
    chat_id: int
    paid: bool
    future: asyncio.Future[float]


class RateLimiter:
    """`granted = await acquire(chat_id, priority)` before each send, `answered(granted)` when
    its answer came; `pause(s)` after a 429."""

    def __init__(
        self,
        limits: Limits | None = None,
        *,
        monotonic: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.limits = limits or Limits()
        self._monotonic = monotonic
        self._sleep = sleep
        self._waiters: list[_Waiter] = []
        self._seq = itertools.count()
        # The windows of all chats: the free one's and the whole's (every message, up to
        # `paid_per_second`, never below the free rate: a paid rate set lower would slow
        # replies and reminders, not only paid broadcasts).
        limits = self.limits
        whole = max(1.0, limits.paid_per_second, limits.overall_per_second)
        total = Window.of_rate(whole, round(whole))
        overall = Window.of_rate(limits.overall_per_second, limits.overall_burst)
        self._paid_budgets = [total]
        self._free_budgets = [overall, total]
        # Free broadcasts one at a time, 1/rate apart, not 30 at once each second: a burst's
        # sends wait on each other (the event loop, the connections), and its slots came back
        # that much later (`answered`), so the burst came round every second *and* some.
        self._bulk_pace = Pace(1.0 / limits.overall_per_second)
        self._chats: dict[int, Window] = {}
        self._groups: dict[int, Window] = {}
        self.paused_until = 0.0
        self.paid_paused_until = 0.0
        self._changed = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None
        self.granted = 0
        self.pauses = 0

    def now(self) -> float:
        if self._monotonic is not None:
            return self._monotonic()
        return asyncio.get_running_loop().time()

    async def acquire(self, chat_id: int, priority: int, *, paid: bool = False) -> float:
        """Until this send may go (`paid`: on the paid broadcast budget); the instant of the
        grant. Cancel-safe: a cancelled waiter takes no slot."""
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiters.append(_Waiter(priority, next(self._seq), chat_id, paid, future))
        self._changed.set()
        if self._pump is None or self._pump.done():
            self._pump = asyncio.create_task(self._run(), name="rate-limiter")
        return await future

    def answered(self, granted: float, *, paid: bool = False) -> None:
        """The request granted at `granted` got its answer now (sent, or refused)."""
        now = self.now()
        for window in self._budgets(paid):
            window.restamp(granted, now)

    def pause(self, seconds: float, *, paid: bool = False) -> None:
        """Telegram said retry_after: hold every queued send (but replies) of that budget
        (`paid`: the paid broadcasts') that long."""
        until = self.now() + max(0.0, seconds)
        if paid and until > self.paid_paused_until:
            self.paid_paused_until = until
            self.pauses += 1
        elif not paid and until > self.paused_until:
            self.paused_until = until
            self.pauses += 1
        self._changed.set()

    async def close(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            await asyncio.gather(self._pump, return_exceptions=True)
            self._pump = None
        for waiter in self._waiters:
            if not waiter.future.done():
                waiter.future.cancel()
        self._waiters.clear()

    # -- the grant loop ------------------------------------------------------------------

    def _budgets(self, paid: bool) -> list[Window]:
        """The windows of all chats a send counts in: a paid one only the whole's; any
        other the free one's and the whole's."""
        return self._paid_budgets if paid else self._free_budgets

    def _buckets(self, waiter: _Waiter) -> Sequence[Window | Pace]:
        limits = self.limits
        chat_id = waiter.chat_id
        overall = self._budgets(waiter.paid)
        if waiter.priority <= INTERACTIVE:
            # A reply to someone who just wrote (often an edit of the message they pressed):
            # Telegram tolerates these bursts; pacing them per chat would slow the dialogue.
            return overall
        chat = self._chats.get(chat_id)
        if chat is None:
            chat = self._chats[chat_id] = Window.of_rate(limits.chat_per_second, limits.chat_burst)
        windows: list[Window | Pace] = [*overall, chat]
        if waiter.priority >= Priority.BROADCAST and not waiter.paid:
            windows.append(self._bulk_pace)
        if chat_id < 0:  # groups and channels
            group = self._groups.get(chat_id)
            if group is None:
                per_minute = limits.group_per_minute
                group = self._groups[chat_id] = Window.of_rate(per_minute / 60, int(per_minute))
            windows.append(group)
        return windows

    def _grant_or_wait(self, now: float) -> float | None:
        """Grant the first waiter that may go now; else the instant worth waking at."""
        self._waiters = [w for w in self._waiters if not w.future.done()]  # cancelled
        earliest: float | None = None
        for waiter in sorted(self._waiters):
            buckets = self._buckets(waiter)
            at = max(b.ready_at(now) for b in buckets)
            if waiter.priority > INTERACTIVE:
                at = max(at, self.paid_paused_until if waiter.paid else self.paused_until)
            if at <= now:
                for bucket in buckets:
                    bucket.take(now)
                self._waiters.remove(waiter)
                waiter.future.set_result(now)
                self.granted += 1
                return now
            earliest = at if earliest is None else min(earliest, at)
        return earliest

    def _forget_idle(self, now: float) -> None:
        if len(self._chats) > 10_000:
            self._chats = {k: w for k, w in self._chats.items() if not w.idle(now)}
        if len(self._groups) > 1_000:
            self._groups = {k: w for k, w in self._groups.items() if not w.idle(now)}

    async def _run(self) -> None:
        while self._waiters:
            self._changed.clear()
            now = self.now()
            wake = self._grant_or_wait(now)
            if wake == now:
                await asyncio.sleep(0)  # let the granted sender start
                continue
            self._forget_idle(now)
            if wake is None:
                continue
            await self._wait(wake - now)

    async def _wait(self, seconds: float) -> None:
        """`seconds`, or less if a waiter arrives or a pause changes."""
        timer = asyncio.ensure_future(self._sleep(seconds))
        changed = asyncio.ensure_future(self._changed.wait())
        try:
            await asyncio.wait({timer, changed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            changed.cancel()
