"""Run every benchmark and print its figures with their targets:
`python -m bench [--rows N] [--pg URL] [--only NAME]`. docs/performance.md says how each
is measured.

- claim: 1,000 due rows claimed among N pending (SPEC: under 50 ms);
- startup: `python -m bot run` on that database, time to polling and peak memory (issue 11:
  1 s, 90 MB with 1,000,000 pending), against a plain APScheduler job-per-reminder bot on as
  many jobs (at least 5x faster to start);
- broadcast: broadcasts to 100,000 through the real limiter, Telegram sender and dispatcher into a
  sandbox in its own process that answers 429 past 30 messages in any second (1,000 with
  paid broadcasts), with reminders falling due meanwhile (93 % of the allowed 30/s, or of
  1,000/s with paid broadcasts; no 429; reminders' lateness p99 under 2 s);
- writes: bookings as the bot takes them (500 sessions/s, 3x the APScheduler baseline), the
  import of 10,000 appointments and a clinic-wide replan (5,000 sessions/s, 20x the
  baseline);
- lateness: reminders' lateness (p99 under 2 s) with the bot running while 10,000
  appointments are imported and replanned (on SQLite, and on PostgreSQL with --pg);
- staff: every staff view, count, a broadcast to 100,000 and the delivery export, on
  100,000 patients and 1,000,000 planned messages (each page or count under 100 ms; the
  broadcast created in under 10 s; the export at 50,000 rows/s, memory flat).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench.baseline import startup_figures
from bench.broadcast import bench_broadcast
from bench.claim import bench_claim, prepare
from bench.lateness import bench_lateness
from bench.staff import bench_staff
from bench.steal import cpu_ticks, percent, stolen
from bench.writes import bench_writes

Part = Callable[[list[str], Path, int], Awaitable[None]]


async def claim_and_startup(urls: list[str], tmp: Path, rows: int) -> None:
    for url in urls:
        kind = url.split("+")[0]
        seeded = await prepare(url, rows)
        print(f"[seed {kind}] pending={rows:,} due_now=1,000 seconds={seeded:.1f}")
        times = await bench_claim(url)
        print(
            f"[claim {kind}] 1,000 due among {rows:,} pending: "
            f"median={times[len(times) // 2] * 1000:.1f} ms max={max(times) * 1000:.1f} ms "
            f"(target < 50 ms)"
        )
        for line in await startup_figures(url, tmp, rows, baseline=kind == "sqlite"):
            print(line)


async def broadcast(_urls: list[str], tmp: Path, _rows: int) -> None:
    for line in await bench_broadcast(tmp):
        print(line)


async def writes(urls: list[str], tmp: Path, _rows: int) -> None:
    for line in await bench_writes(urls, tmp):
        print(line, flush=True)


async def lateness(urls: list[str], tmp: Path, _rows: int) -> None:
    for url in urls:
        print(await bench_lateness(url, tmp), flush=True)


async def staff(urls: list[str], _tmp: Path, _rows: int) -> None:
    for url in urls:
        for line in await bench_staff(url):
            print(line, flush=True)


PARTS: dict[str, Part] = {
    "claim": claim_and_startup,
    "broadcast": broadcast,
    "writes": writes,
    "lateness": lateness,
    "staff": staff,
}


async def run(rows: int, pg_url: str | None, only: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for name, part in PARTS.items():
            if only in (None, name):
                urls = [f"sqlite+aiosqlite:///{Path(tmp) / f'{name}.db'}"]
                if pg_url:
                    urls.append(pg_url)
                ticks = cpu_ticks()
                await part(urls, Path(tmp), rows)
                print(
                    f"[steal {name}] the hypervisor took {percent(stolen(ticks, cpu_ticks()))} "
                    "of the machine's CPU time meanwhile",
                    flush=True,
                )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--rows", type=int, default=1_000_000, help="pending messages")
    parser.add_argument(
        "--pg", default=os.environ.get("AFTERCARE_TEST_PG_URL"), help="also on PostgreSQL"
    )
    parser.add_argument("--only", choices=list(PARTS), help="run only this benchmark")
    args = parser.parse_args()
    asyncio.run(run(args.rows, args.pg, args.only))


if __name__ == "__main__":
    main()
