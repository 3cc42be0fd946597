"""Where long polling resumes: the next update a bot's leader asks Telegram for.

Telegram keeps an update until a getUpdates asks for a later one (its `offset`); PTB's own
poller asks for the next batch as soon as it has queued one, so updates a process had
fetched but not handled died with it. The leader here writes the offset after it handles
each update, and asks Telegram again only then: a process that takes over reads it and gets
every update not yet handled (bot/serve/polling.py).
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel.ext.asyncio.session import AsyncSession

from scheduler.models import UpdateOffset

_OFFSETS = UpdateOffset.__table__  # type: ignore[attr-defined]


async def next_update(*, session: AsyncSession, bot_id: int) -> int | None:
    """The update id to ask Telegram for next (None: this bot never polled here). A Core
    read: the first long poll waits on it, and an ORM read would first configure every
    mapper (8 ms of start-up), which the first batch or update does, after the poll is out."""
    db = await session.connection()
    found = await db.scalar(
        sa.select(_OFFSETS.c.next_update_id).where(_OFFSETS.c.bot_id == bot_id)
    )
    return None if found is None else int(found)


async def handled(
    *, session: AsyncSession, bot_id: int, next_update_id: int, now: datetime
) -> None:
    """Updates before `next_update_id` are handled. Only the leader writes it."""
    db = await session.connection()
    values = {"next_update_id": next_update_id, "updated_at": now}
    changed = await db.execute(_OFFSETS.update().where(_OFFSETS.c.bot_id == bot_id).values(values))
    if not changed.rowcount:
        await db.execute(_OFFSETS.insert().values(bot_id=bot_id, **values))
