"""The rate limiter on virtual time: limits, priorities and the global back-off."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from scheduler.models import Priority
from scheduler.ratelimit import INTERACTIVE, Limits, RateLimiter


class VirtualTime:
    """Monotonic seconds that move only when the limiter sleeps."""

    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += seconds
        await asyncio.sleep(0)


def limiter(vt: VirtualTime, **limits: float) -> RateLimiter:
    return RateLimiter(Limits(**limits), monotonic=vt.now, sleep=vt.sleep)  # type: ignore[arg-type]


async def grants(
    rl: RateLimiter, vt: VirtualTime, requests: list[tuple[str, int, int]]
) -> dict[str, float]:
    """Acquire for each (name, chat, priority) at once; when each was granted."""
    granted: dict[str, float] = {}

    async def one(name: str, chat: int, priority: int) -> None:
        await rl.acquire(chat, priority)
        granted[name] = vt.now()

    await asyncio.gather(*(one(*r) for r in requests))
    await rl.close()
    return granted


def most_in_any_window(times: list[float], window: float) -> int:
    times = sorted(times)
    return max(sum(1 for u in times if t <= u < t + window - 1e-9) for t in times)


async def test_overall_rate_after_the_burst() -> None:
    vt = VirtualTime()
    rl = limiter(vt, overall_per_second=30, overall_burst=30)
    got = await grants(rl, vt, [(f"m{i}", 1000 + i, Priority.REMINDER) for i in range(150)])
    times = list(got.values())
    assert most_in_any_window(times, 1.0) == 30
    assert max(times) == pytest.approx(4.0)  # 30 at once, then 30 in each second


async def test_a_free_broadcast_goes_evenly_not_in_bursts() -> None:
    """A broadcast's sends are spread 1/30 s apart, never 30 at once (two at most: the
    schedule's one gap of slack, where the second's window opens); a grant made late puts
    back no later one (the schedule holds)."""
    vt = VirtualTime()
    rl = limiter(vt, overall_per_second=30, overall_burst=30)
    got = await grants(rl, vt, [(f"m{i}", 1000 + i, Priority.BROADCAST) for i in range(150)])
    times = sorted(got.values())
    assert max(sum(1 for u in times if u == pytest.approx(t)) for t in times) == 2
    assert max(b - a for a, b in itertools.pairwise(times)) <= 2 / 30 + 1e-9
    assert most_in_any_window(times, 1.0) == 30
    assert max(times) == pytest.approx(148 / 30)

    # Woken 20 ms late for one grant: the next keeps its place in the schedule.
    rl = limiter(vt := VirtualTime(), overall_per_second=10, overall_burst=10)
    for chat in (1, 2):
        await rl.acquire(chat, Priority.BROADCAST)
    vt.t = 0.12  # the third was due at 0.1
    await rl.acquire(3, Priority.BROADCAST)
    fourth = await rl.acquire(4, Priority.BROADCAST)
    await rl.close()
    assert fourth == pytest.approx(0.2)


async def test_one_chat_gets_one_message_per_second_after_its_burst() -> None:
    vt = VirtualTime()
    rl = limiter(vt, chat_per_second=1, chat_burst=1)
    got = await grants(rl, vt, [(f"m{i}", 7, Priority.REMINDER) for i in range(5)])
    assert sorted(got.values()) == [0.0, 1.0, 2.0, 3.0, 4.0]


async def test_a_group_gets_twenty_per_minute() -> None:
    vt = VirtualTime()
    rl = limiter(vt, chat_per_second=100, chat_burst=100, group_per_minute=20)
    got = await grants(rl, vt, [(f"m{i}", -100, Priority.REMINDER) for i in range(25)])
    times = sorted(got.values())
    assert times[:20] == [0.0] * 20
    assert most_in_any_window(times, 60.0) == 20
    assert times[20] == pytest.approx(60.0)


async def test_a_reminder_overtakes_a_queued_broadcast() -> None:
    vt = VirtualTime()
    rl = limiter(vt, overall_per_second=10, overall_burst=1)
    granted: list[str] = []
    five = asyncio.Event()

    async def one(name: str, chat: int, priority: int) -> None:
        await rl.acquire(chat, priority)
        granted.append(name)
        if len(granted) == 5:
            five.set()

    broadcast = [asyncio.create_task(one(f"b{i}", 100 + i, Priority.BROADCAST)) for i in range(50)]
    await five.wait()
    reminder = asyncio.create_task(one("reminder", 1, Priority.REMINDER))
    reply = asyncio.create_task(one("reply", 2, INTERACTIVE))
    await asyncio.gather(*broadcast, reminder, reply)
    await rl.close()
    assert granted.index("reply") <= 6
    assert granted.index("reminder") == granted.index("reply") + 1


async def test_a_429_pauses_every_queued_send_but_replies() -> None:
    vt = VirtualTime()
    rl = limiter(vt)
    rl.pause(12)
    got = await grants(
        rl,
        vt,
        [
            ("reminder", 1, Priority.REMINDER),
            ("bulk", 2, Priority.BROADCAST),
            ("reply", 3, INTERACTIVE),
        ],
    )
    assert got["reply"] == 0.0
    assert got["reminder"] >= 12 and got["bulk"] >= 12
    assert rl.pauses == 1


async def test_a_cancelled_waiter_takes_no_slot() -> None:
    vt = VirtualTime()
    rl = limiter(vt, chat_per_second=1, chat_burst=1)
    await rl.acquire(5, Priority.REMINDER)
    waiting = asyncio.create_task(rl.acquire(5, Priority.REMINDER))
    await asyncio.sleep(0)
    waiting.cancel()
    got = await grants(rl, vt, [("other", 6, Priority.REMINDER)])
    assert got["other"] == 0.0
    assert rl.granted == 2


async def test_paid_broadcasts_take_what_reminders_leave_of_the_whole() -> None:
    vt = VirtualTime()
    rl = limiter(vt, overall_per_second=30, overall_burst=30, paid_per_second=1000)
    requests = [(f"paid{i}", 1000 + i, Priority.BROADCAST) for i in range(2000)]
    granted: dict[str, float] = {}

    async def one(name: str, chat: int, priority: int, *, paid: bool) -> None:
        await rl.acquire(chat, priority, paid=paid)
        granted[name] = vt.now()

    await asyncio.gather(
        *(one(*r, paid=True) for r in requests),
        *(one(f"reminder{i}", 10 + i, Priority.REMINDER, paid=False) for i in range(30)),
        *(one(f"later{i}", 100 + i, Priority.REMINDER, paid=False) for i in range(30)),
    )
    await rl.close()
    paid = [t for name, t in granted.items() if name.startswith("paid")]
    everything = list(granted.values())
    assert most_in_any_window(everything, 1.0) == 1000  # 1,000 in all, the free ones included
    # The first second: the free 30 first, the paid the other 970; the second: the next free
    # 30 (their own window was full) as soon as the whole has room, before any paid.
    assert all(granted[f"reminder{i}"] == 0.0 for i in range(30))
    assert sum(1 for t in paid if t < 1.0) == 970
    assert all(granted[f"later{i}"] == pytest.approx(1.0) for i in range(30))
    assert sum(1 for t in paid if 1.0 <= t < 2.0) == 970
    assert max(paid) == pytest.approx(2.0)


async def test_alone_a_paid_broadcast_has_the_whole_budget() -> None:
    vt = VirtualTime()
    rl = limiter(vt, overall_per_second=30, overall_burst=30, paid_per_second=1000)
    granted: list[float] = []

    async def one(chat: int) -> None:
        await rl.acquire(chat, Priority.BROADCAST, paid=True)
        granted.append(vt.now())

    await asyncio.gather(*(one(1000 + i) for i in range(1500)))
    await rl.close()
    assert most_in_any_window(granted, 1.0) == 1000
    assert sum(1 for t in granted if t < 1.0) == 1000


async def test_a_429_on_a_paid_send_pauses_only_the_paid_budget() -> None:
    vt = VirtualTime()
    rl = limiter(vt)
    rl.pause(5, paid=True)
    granted: dict[str, float] = {}

    async def one(name: str, paid: bool) -> None:
        await rl.acquire(hash(name) % 1000, Priority.BROADCAST, paid=paid)
        granted[name] = vt.now()

    await asyncio.gather(one("paid", True), one("free", False))
    await rl.close()
    assert granted == {"free": 0.0, "paid": 5.0}


async def test_a_grant_counts_from_its_answer() -> None:
    """A send answered late holds its slot from the answer: the next one a window later."""
    vt = VirtualTime()
    rl = limiter(vt, overall_per_second=1, overall_burst=1)
    granted = await rl.acquire(1, Priority.BROADCAST)
    vt.t = 0.4  # the answer came 0.4 s after the grant
    rl.answered(granted)
    await rl.acquire(2, Priority.BROADCAST)
    await rl.close()
    assert vt.now() == pytest.approx(1.4)


async def test_a_paid_rate_set_below_the_free_one_never_slows_replies_and_reminders() -> None:
    vt = VirtualTime()
    rl = limiter(vt, overall_per_second=30, overall_burst=30, paid_per_second=10)
    granted: list[float] = []

    async def one(chat: int) -> None:
        await rl.acquire(chat, Priority.REMINDER)
        granted.append(vt.now())

    await asyncio.gather(*(one(100 + i) for i in range(30)))
    await rl.close()
    assert granted == [0.0] * 30
