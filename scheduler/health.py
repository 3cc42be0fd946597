"""What /healthz and /metrics report about the database's side (bot/serve/health.py): the
queue of planned messages and the patients by state. Each is an index range or a count
the staff views already pay for (docs/performance.md), cheap enough for a scrape."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlmodel.ext.asyncio.session import AsyncSession

from scheduler.models import MessageState, Priority, pending_due, planned_state_is
from scheduler.rows import PATIENT, PLANNED


def lateness(oldest_due: datetime | None, now: datetime) -> float:
    """Seconds the longest-waiting due message is late (0 when none is due)."""
    return max(0.0, (now - oldest_due).total_seconds()) if oldest_due else 0.0


class Queue(msgspec.Struct, frozen=True):
    pending: int
    """Planned messages waiting, due or not."""
    due: int
    """Of them, due now (the dispatcher's backlog)."""
    oldest_due: datetime | None
    """The due time of the longest-waiting due message."""


def _each_priority(now: datetime, *figures: sa.ColumnElement[Any]) -> sa.Subquery:
    """`figures` of each priority's pending rows due by `now`: one range of the pending index
    each, whatever the size of the queue."""
    return sa.union_all(
        *(sa.select(*figures).where(pending_due(p, now)) for p in Priority.ALL)
    ).subquery()


def _oldest() -> sa.ColumnElement[datetime]:
    return sa.func.min(PLANNED.c.due_at).label("oldest")


async def oldest_due(*, session: AsyncSession, now: datetime) -> datetime | None:
    """The due time of the longest-waiting due message: the first entry of each priority's
    due range (what /healthz asks at every probe)."""
    db = await session.connection()
    each = _each_priority(now, _oldest())
    found = await db.execute(sa.select(sa.func.min(each.c.oldest)))
    found_at: datetime | None = found.scalar_one()  # UTCDateTime: aware
    return found_at


async def queue(*, session: AsyncSession, now: datetime) -> Queue:
    """The queue's counts (for /metrics, at a scrape)."""
    db = await session.connection()
    pending = planned_state_is(MessageState.PENDING)
    total = (await db.execute(sa.select(sa.func.count()).where(pending))).scalar_one()
    each = _each_priority(now, sa.func.count().label("due"), _oldest())
    due, oldest = (
        await db.execute(sa.select(sa.func.sum(each.c.due), sa.func.min(each.c.oldest)))
    ).one()
    return Queue(int(total), int(due or 0), oldest)


PATIENT_STATES = ("reachable", "paused", "blocked", "no_consent")


async def patients_by_state(*, session: AsyncSession) -> dict[str, int]:
    """Patients by what the bot may send them: reachable (consented, not paused, not
    blocked), paused, blocked (they blocked the bot), no consent yet."""
    state = sa.case(
        (PATIENT.c.blocked_at.is_not(None), "blocked"),
        (PATIENT.c.consent_at.is_(None), "no_consent"),
        (PATIENT.c.paused_at.is_not(None), "paused"),
        else_="reachable",
    )
    db = await session.connection()
    rows = await db.execute(sa.select(state, sa.func.count()).group_by(state))
    found = dict.fromkeys(PATIENT_STATES, 0)
    found.update({name: int(count) for name, count in rows})
    return found
