"""Hand-written fakes for the ports (recording calls, with assert helpers)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlmodel.ext.asyncio.session import AsyncSession

from scheduler.clock import FakeClock
from scheduler.db import SessionFactory
from scheduler.dispatcher import Composer, Dispatcher
from scheduler.models import PlannedMessage
from scheduler.ports import Outcome, Outgoing, Sender, SendResult


@dataclass
class FakeSender:
    """Records what was sent; scripted results are used first, then success."""

    sent: list[Outgoing] = field(default_factory=list)
    script: deque[SendResult] = field(default_factory=deque)
    gate: asyncio.Event | None = None
    _next_id: int = 1

    async def send(self, message: Outgoing) -> SendResult:
        if self.gate is not None:
            await self.gate.wait()
        if self.script:
            result = self.script.popleft()
            if result.outcome is not Outcome.SENT:
                return result
        self.sent.append(message)
        self._next_id += 1
        return SendResult(Outcome.SENT, message_id=self._next_id)

    def texts(self) -> list[str]:
        return [m.text for m in self.sent]

    def assert_sent_once_each(self, expected: list[str]) -> None:
        assert self.texts() == expected, f"sent {self.texts()}, expected {expected}"


class RowComposer(Protocol):
    async def __call__(
        self, *, session: AsyncSession, row: PlannedMessage, now: datetime
    ) -> Outgoing | None: ...


def row_by_row(compose: RowComposer) -> Composer:
    """A dispatcher's composer that renders each row of a batch with `compose`."""

    async def each(
        *, session: AsyncSession, rows: Sequence[PlannedMessage], now: datetime
    ) -> list[Outgoing | None]:
        return [await compose(session=session, row=row, now=now) for row in rows]

    return each


async def text_of_id(
    *,
    session: AsyncSession,  # noqa: ARG001
    row: PlannedMessage,
    now: datetime,  # noqa: ARG001
) -> Outgoing:
    """The row's id as the text, to the patient's id as the chat."""
    return Outgoing(chat_id=row.patient_id, text=f"{row.id}")


def make_dispatcher(
    sessions: SessionFactory,
    clock: FakeClock,
    sender: Sender,
    *,
    composer: Composer | None = None,
    worker_id: str = "w1",
    **kw: Any,
) -> Dispatcher:
    """A dispatcher on the test's database and clock; each row rendered by `text_of_id`
    unless another composer is given."""
    return Dispatcher(
        sessions=sessions,
        sender=sender,
        clock=clock,
        composer=composer or row_by_row(text_of_id),
        worker_id=worker_id,
        **kw,
    )
