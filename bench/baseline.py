"""Start-up with 1,000,000 pending, against issue 11's baseline: bench/baseline_bot.py over
a job store holding as many jobs as this project's database holds planned messages, 1,000
of them due now. The two start in turn, `ROUNDS` times each (medians): the first round of
each delivers its due work, the later ones start on what is left, alike for both.
"""

from __future__ import annotations

import compileall
import pickle
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from apscheduler.job import Job
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.util import datetime_to_utc_timestamp

from bench.baseline_bot import JOB_FUNC, sqlite_engine
from bench.claim import bench_startup, startup
from bot.offline.harness import SANDBOX_TOKEN
from scheduler.db import SQLITE_PRAGMAS

ROOT = Path(__file__).resolve().parent.parent
DUE_NOW = 1000
CHUNK = 10_000
ROUNDS = 3
READY_TARGET, PEAK_TARGET, RATIO_TARGET = 1.0, 90.0, 5.0


def seed_jobs(path: Path, jobs: int) -> None:
    """`jobs` date jobs: `DUE_NOW` due now, the rest over the next days.

    How the baseline is seeded: the job store's rows are inserted directly, because
    `add_job` one by one (a transaction each) would take many minutes for 1,000,000. Each
    row is what `SQLAlchemyJobStore.add_job` writes: one real `Job`'s state, pickled as the
    store pickles it, with its id, chat and next run time varied per row.
    """
    _insert(path, range(DUE_NOW, jobs), later=True)
    _insert(path, range(DUE_NOW), later=False)


def due_jobs_again(path: Path) -> None:
    """The `DUE_NOW` jobs due now again (the bot ran and removed them): every start-up
    measured starts with the same work."""
    _insert(path, range(DUE_NOW), later=False)


def _insert(path: Path, numbers: range, *, later: bool) -> None:
    """Jobs `numbers`, due now or (`later`) a day and `number` seconds from now."""
    store = SQLAlchemyJobStore(engine=sqlite_engine(str(path), list(SQLITE_PRAGMAS)))
    store.jobs_t.create(store.engine, True)
    now = datetime.now(UTC)
    job = Job(
        AsyncIOScheduler(timezone="UTC"),
        id="reminder",
        func=JOB_FUNC,
        args=(0,),
        kwargs={},
        trigger=DateTrigger(now, timezone=UTC),
        executor="default",
        name="reminder",
        misfire_grace_time=3600,
        coalesce=True,
        max_instances=1,
        next_run_time=now,
    )
    state = job.__getstate__()
    with store.engine.begin() as db:
        if not later:  # replaced, whether the bot ran them (and removed them) or not
            ids = [f"reminder-{i}" for i in numbers]
            db.execute(store.jobs_t.delete().where(store.jobs_t.c.id.in_(ids)))
        for start in range(numbers.start, numbers.stop, CHUNK):
            rows = []
            for i in range(start, min(numbers.stop, start + CHUNK)):
                at = now + timedelta(days=1, seconds=i) if later else now
                state.update(id=f"reminder-{i}", args=(1_000 + i,), next_run_time=at)
                rows.append(
                    {
                        "id": state["id"],
                        "next_run_time": datetime_to_utc_timestamp(at),
                        "job_state": pickle.dumps(state, store.pickle_protocol),
                    }
                )
            db.execute(store.jobs_t.insert(), rows)
    store.engine.dispose()


async def bench_baseline_startup(path: Path) -> tuple[float, float, float]:
    """The baseline bot on its seeded job store: seconds until it polls, RSS, peak RSS."""

    def env(base_url: str) -> dict[str, str]:
        return {
            "BASELINE_TOKEN": SANDBOX_TOKEN,
            "BASELINE_BASE_URL": base_url,
            "BASELINE_PRAGMAS": ";".join(SQLITE_PRAGMAS),
        }

    # Imported, not run as __main__: the pickled jobs name bench.baseline_bot's function.
    command = [sys.executable, "-c", "from bench.baseline_bot import main; main()", str(path)]
    return await startup(command, env, ROOT)


def compiled() -> None:
    """The project's modules compiled to bytecode, as a deployed bot's are: pip compiles the
    packages it installs (the baseline's APScheduler, and both bots' libraries), but an
    editable install's own modules are compiled at their first import, and at every import
    where PYTHONDONTWRITEBYTECODE is set (then about 120 ms of each start here)."""
    for package in ("bot", "scheduler", "messages", "bench"):
        compileall.compile_dir(ROOT / package, quiet=1)


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


async def startup_figures(url: str, workdir: Path, rows: int, *, baseline: bool) -> list[str]:
    """This project's start-up on `url` (seeded with `rows`), and with `baseline` the
    baseline's on as many jobs, interleaved; one line each, with the targets."""
    compiled()
    jobs = workdir / "baseline-jobs.db"
    if baseline:
        seed_jobs(jobs, rows)
    ours: list[tuple[float, float, float]] = []
    theirs: list[tuple[float, float, float]] = []
    for _ in range(ROUNDS):
        ours.append(await bench_startup(url, workdir))
        if baseline:
            due_jobs_again(jobs)
            theirs.append(await bench_baseline_startup(jobs))
    kind = url.split("+")[0]
    ready, peak = _median([r for r, _, _ in ours]), _median([p for _, _, p in ours])
    lines = [
        f"[start-up {kind}] {rows:,} pending: ready in {ready:.2f} s (target < "
        f"{READY_TARGET:.0f} s), peak RSS {peak:.1f} MB (target < {PEAK_TARGET:.0f} MB), "
        f"medians of {ROUNDS}"
    ]
    if theirs:
        their_ready, their_peak = (
            _median([r for r, _, _ in theirs]),
            _median([p for _, _, p in theirs]),
        )
        lines.append(
            f"[start-up baseline] APScheduler 3 job-per-reminder, {rows:,} jobs in a "
            f"SQLAlchemyJobStore on SQLite: ready in {their_ready:.2f} s, peak RSS "
            f"{their_peak:.1f} MB; this project {their_ready / ready:.1f}x faster to start "
            f"(target >= {RATIO_TARGET:.0f}x), {peak / their_peak:.2f}x the memory"
        )
    return lines
