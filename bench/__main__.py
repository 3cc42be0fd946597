"""Run every benchmark and print its figures: `python -m bench [--rows N] [--pg URL]`.

- claim: 1,000 due rows claimed among N pending (SPEC: under 50 ms);
- start-up: `python -m bot run` on that database, time to polling and peak memory (issue 11:
  1 s, 90 MB with 1,000,000 pending), against a plain APScheduler job-per-reminder bot on as
  many jobs (at least 5x faster to start);
- broadcast: broadcasts through the real limiter, Telegram sender and dispatcher into a
  sandbox in its own process that answers 429 past 30 messages in any second (1,000 with
  paid broadcasts), with reminders falling due meanwhile (93 % of the allowed 30/s, no 429,
  reminders' lateness p99 under 2 s; paid: the rate against 1,000/s).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from pathlib import Path

from bench.baseline import startup_figures
from bench.broadcast import bench_broadcast
from bench.claim import bench_claim, prepare


async def run(rows: int, pg_url: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        urls = [f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"]
        if pg_url:
            urls.append(pg_url)
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
            for line in await startup_figures(url, Path(tmp), rows, baseline=kind == "sqlite"):
                print(line)
        for line in await bench_broadcast(Path(tmp)):
            print(line)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--rows", type=int, default=1_000_000, help="pending messages")
    parser.add_argument(
        "--pg", default=os.environ.get("AFTERCARE_TEST_PG_URL"), help="also on PostgreSQL"
    )
    args = parser.parse_args()
    asyncio.run(run(args.rows, args.pg))


if __name__ == "__main__":
    main()
