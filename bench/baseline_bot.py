"""Issue 11's baseline: a plain python-telegram-bot reminder bot, one APScheduler 3 job per
reminder in a `SQLAlchemyJobStore` on SQLite (with this project's pragmas, given by the
bench, so that both use the database alike).

`main()`, with the job store's file as its first argument, starts the scheduler as such
bots do (in PTB's post_init) and polls the Bot API at $BASELINE_BASE_URL. It imports what
such a bot imports and no module of this project: its start-up time and memory are its own.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import sqlalchemy as sa
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from telegram.ext import Application, ApplicationBuilder

JOB_FUNC = "bench.baseline_bot:remind"

# ATTENTION! GLOBAL VARIABLE! A pickled job names a module-level function, which reaches
# the bot through a global: what a job-per-reminder bot does.
_application: Application[Any, Any, Any, Any, Any, Any] | None = None


def sqlite_engine(path: str, pragmas: list[str]) -> sa.Engine:
    engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 30})

    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        for pragma in pragmas:
            cursor.execute(pragma)
        cursor.close()

    return engine


async def remind(chat_id: int) -> None:
    assert _application is not None
    await _application.bot.send_message(chat_id, "Reminder")


def main() -> None:
    global _application
    pragmas = os.environ["BASELINE_PRAGMAS"].split(";")
    store = SQLAlchemyJobStore(engine=sqlite_engine(sys.argv[1], pragmas))
    scheduler = AsyncIOScheduler(jobstores={"default": store}, timezone="UTC")

    async def post_init(_app: Application[Any, Any, Any, Any, Any, Any]) -> None:
        scheduler.start()

    _application = (
        ApplicationBuilder()
        .token(os.environ["BASELINE_TOKEN"])
        .base_url(os.environ["BASELINE_BASE_URL"])
        .post_init(post_init)
        .build()
    )
    _application.run_polling()


if __name__ == "__main__":
    main()
