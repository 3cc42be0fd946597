"""One active dispatcher per PostgreSQL database: a session-level advisory lock.

Several bot processes may serve one database (webhooks behind a load balancer, a standby
for availability). Claims are already safe between them (`FOR UPDATE SKIP LOCKED` and
conditional updates), but Telegram's overall rate limit is per bot, not per process: so
only the process holding the advisory lock delivers, and the others stand by, trying the
lock every `poll` seconds. The lock lives as long as the holder's connection: a process
that dies (even by kill -9) or loses its connection loses the lock at once, and a standby
takes over at its next try.
"""

from __future__ import annotations

import logging
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = logging.getLogger("aftercare.dispatch")

# Any fixed 64-bit number; advisory locks are per database, so one key serves every clinic.
LOCK_KEY = 0x41667465_72636172  # "Aftercar"


class Leadership(Protocol):
    """Who may deliver: `acquire` tries (or confirms) and says whether this process may."""

    async def acquire(self) -> bool: ...

    async def release(self) -> None: ...


class AdvisoryLockLeader:
    """`pg_try_advisory_lock` on a connection held for as long as this process leads."""

    def __init__(self, engine: AsyncEngine, key: int = LOCK_KEY) -> None:
        self._engine = engine
        self._key = key
        self._connection: AsyncConnection | None = None

    @property
    def held(self) -> bool:
        return self._connection is not None

    async def acquire(self) -> bool:
        if self._connection is not None:
            try:
                await self._connection.execute(sa.text("SELECT 1"))
                return True
            except Exception:
                log.warning("leader connection lost: standing by")
                await self._drop()
        connection = await self._engine.connect()
        try:
            connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
            got = (
                await connection.execute(
                    sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": self._key}
                )
            ).scalar_one()
        except BaseException:
            await connection.close()
            raise
        if not got:
            await connection.close()
            return False
        self._connection = connection
        return True

    async def release(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            await connection.execute(
                sa.text("SELECT pg_advisory_unlock(:key)"), {"key": self._key}
            )
        except Exception:
            await connection.invalidate()  # the server drops the lock with the connection
        finally:
            await connection.close()

    async def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                await connection.invalidate()
                await connection.close()
            except Exception:
                log.debug("closing a dead leader connection failed", exc_info=True)
