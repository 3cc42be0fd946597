"""What /healthz and /metrics report about the database's side (bot/serve/health.py): the
queue of planned messages and the patients by state. Each is an index range or a count
the staff views already pay for (docs/performance.md), cheap enough for a scrape."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlmodel.ext.asyncio.session import AsyncSession

from scheduler.models import MessageState
from scheduler.rows import PATIENT, PLANNED


def lateness(oldest_due: datetime | None, now: datetime) -> float:
    """Seconds the longest-waiting due message is late (0 when none is due)."""
    return max(0.0, (now - oldest_due).total_seconds()) if oldest_due else 0.0


@dataclass(frozen=True)
class Queue:
    pending: int
    """Planned messages waiting, due or not."""
    due: int
    """Of them, due now (the dispatcher's backlog)."""
    oldest_due: datetime | None
    """The due time of the longest-waiting due message."""


def _due(now: datetime) -> sa.ColumnElement[bool]:
    found: sa.ColumnElement[bool] = sa.and_(
        PLANNED.c.state == MessageState.PENDING.value, PLANNED.c.due_at <= now
    )
    return found


async def oldest_due(*, session: AsyncSession, now: datetime) -> datetime | None:
    """The due time of the longest-waiting due message: the first entry of the (state,
    due_at) index, whatever the size of the queue (what /healthz asks at every probe)."""
    db = await session.connection()
    found = await db.execute(sa.select(sa.func.min(PLANNED.c.due_at)).where(_due(now)))
    found_at: datetime | None = found.scalar_one()  # UTCDateTime: aware
    return found_at


async def queue(*, session: AsyncSession, now: datetime) -> Queue:
    """The queue's counts (for /metrics, at a scrape)."""
    db = await session.connection()
    pending = PLANNED.c.state == MessageState.PENDING.value
    total = (await db.execute(sa.select(sa.func.count()).where(pending))).scalar_one()
    due, oldest = (
        await db.execute(
            sa.select(sa.func.count(), sa.func.min(PLANNED.c.due_at)).where(_due(now))
        )
    ).one()
    return Queue(int(total), int(due), oldest)


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
