"""The write path's baseline: what a typical python-telegram-bot reminder bot does, one
APScheduler 3 job per reminder in a `SQLAlchemyJobStore`, on SQLite with this project's
pragmas (scheduler/db.py), as bench/baseline_bot.py sets it up for the start-up baseline.

A booking adds one job per reminder of the session; an import adds them for each line; a
replan removes a session's jobs and adds them again. As in such a bot (PTB's JobQueue), the
scheduler is an `AsyncIOScheduler` running on the bot's event loop: each added job wakes it
up, and it looks for due jobs and its next wake-up in the store between two bookings.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta
from pathlib import Path

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bench.baseline_bot import sqlite_engine
from scheduler.db import SQLITE_PRAGMAS


def send_reminder(chat_id: int, step: str) -> None:
    """The job's function (a plain bot would send the reminder here)."""
    del chat_id, step


class Baseline:
    def __init__(self, path: Path) -> None:
        self.engine = sqlite_engine(str(path), list(SQLITE_PRAGMAS))
        self.scheduler = AsyncIOScheduler(
            jobstores={"default": SQLAlchemyJobStore(engine=self.engine)}, timezone="UTC"
        )
        self.scheduler.start()

    def close(self) -> None:
        self.scheduler.shutdown(wait=False)
        self.engine.dispose()

    def book(self, session: int, due: list[datetime]) -> None:
        """One session's reminders: a job each."""
        for k, at in enumerate(due):
            self.scheduler.add_job(
                send_reminder,
                "date",
                run_date=at,
                args=(session, f"step-{k}"),
                id=f"{session}-{k}",
                misfire_grace_time=3600,
            )

    def replan(self, session: int, due: list[datetime]) -> None:
        """One session replanned: its jobs removed and added again."""
        for k in range(len(due)):
            self.scheduler.remove_job(f"{session}-{k}")
        self.book(session, due)


def reminders(start: datetime, count: int) -> list[datetime]:
    """`count` reminder times around a session at `start`, all still to come (their spacing
    does not matter)."""
    return [start + timedelta(hours=6 * k - 48) for k in range(count)]


async def bench_baseline(
    path: Path, sessions: int, per_session: int, now: datetime
) -> dict[str, float]:
    """Sessions per second for bookings (one per update the bot handles) and for a replan
    of all of them."""
    baseline = Baseline(path)
    try:
        starts = [now + timedelta(days=3, minutes=15 * i) for i in range(sessions)]
        began = time.perf_counter()
        for i, start in enumerate(starts):
            baseline.book(i, reminders(start, per_session))
            await asyncio.sleep(0)  # the next update: the scheduler's wake-up runs meanwhile
        booked = sessions / (time.perf_counter() - began)
        began = time.perf_counter()
        for i, start in enumerate(starts):
            baseline.replan(i, reminders(start + timedelta(hours=1), per_session))
            await asyncio.sleep(0)
        replanned = sessions / (time.perf_counter() - began)
    finally:
        baseline.close()
    return {"book": booked, "replan": replanned}
