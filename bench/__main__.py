"""Run every benchmark and print its figures: `python -m bench [--rows N] [--pg URL]`.

- claim: 1,000 due rows claimed among N pending (SPEC: under 50 ms);
- start-up: `python -m bot run` on that database, time to polling and memory (SPEC: 2 s,
  150 MB with 1,000,000 pending);
- broadcast: a broadcast through the real limiter and Telegram sender into a sandbox that
  answers 429 past 30 messages in any second, with reminders falling due meanwhile (SPEC:
  93 % of the allowed rate, no 429, reminders on time);
- staff (`--only staff` runs it alone): every staff view, count, a broadcast to 100,000 and
  the delivery export, on 100,000 patients and 1,000,000 planned messages (bench/staff.py).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from pathlib import Path

from bench.broadcast import bench_broadcast
from bench.claim import bench_claim, bench_startup, prepare
from bench.staff import bench_staff


async def run(rows: int, pg_url: str | None, broadcast: int) -> None:
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
            ready, rss, peak = await bench_startup(url, Path(tmp))
            print(
                f"[start-up {kind}] {rows:,} pending: ready in {ready:.2f} s "
                f"(target < 2 s), rss={rss:.0f} MB peak={peak:.0f} MB (target < 150 MB)"
            )
        figures = await bench_broadcast(urls[0], broadcast)
        print("[broadcast] " + ", ".join(f"{k}={v}" for k, v in figures.items()))
    await run_staff(pg_url)


async def run_staff(pg_url: str | None) -> None:
    """The staff side at 100,000 patients and 1,000,000 planned messages."""
    with tempfile.TemporaryDirectory() as tmp:
        for url in [
            f"sqlite+aiosqlite:///{Path(tmp) / 'staff.db'}",
            *([pg_url] if pg_url else []),
        ]:
            for line in await bench_staff(url):
                print(line)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--rows", type=int, default=1_000_000, help="pending messages")
    parser.add_argument("--broadcast", type=int, default=600, help="broadcast recipients")
    parser.add_argument(
        "--pg", default=os.environ.get("AFTERCARE_TEST_PG_URL"), help="also on PostgreSQL"
    )
    parser.add_argument("--only", choices=["staff"], help="run only this benchmark")
    args = parser.parse_args()
    if args.only == "staff":
        asyncio.run(run_staff(args.pg))
        return
    asyncio.run(run(args.rows, args.pg, args.broadcast))


if __name__ == "__main__":
    main()
