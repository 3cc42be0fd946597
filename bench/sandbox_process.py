"""The sandbox Bot API in a process of its own, enforcing Telegram's broadcast limits.

`python -m bench.sandbox_process --user FIRST:COUNT ...` starts it with those chats started
and prints its base URL on one line; then each line `report` on stdin is answered with one
JSON line (every sendMessage as [chat_id, monotonic time, status, paid flag], the 429s, the
paid messages and their Stars). End of input stops it. Time is `time.monotonic()`, the
same clock in every process of the machine, so the bench can compare it with its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from bot.offline.harness import SANDBOX_TOKEN
from bot.offline.sandbox import SandboxBotAPI
from scheduler.clock import SystemClock

FREE_PER_SECOND = 30
PAID_PER_SECOND = 1000


def report(api: SandboxBotAPI) -> dict[str, object]:
    sends = [
        [
            int(r.params.get("chat_id", 0)),
            r.at,
            r.status,
            r.params.get("allow_paid_broadcast") in (True, "true"),
        ]
        for r in api.requests
        if r.method == "sendMessage"
    ]
    return {
        "sends": sends,
        "too_many": api.too_many,
        "paid_messages": api.paid_messages,
        "stars": str(api.stars),
    }


async def serve(users: list[tuple[int, int]]) -> None:
    api = SandboxBotAPI(
        SANDBOX_TOKEN,
        clock=SystemClock(),
        free_per_second=FREE_PER_SECOND,
        paid_per_second=PAID_PER_SECOND,
    )
    async with api:
        for first, count in users:
            for chat in range(first, first + count):
                api.user(chat).started = True
        print(api.base_url, flush=True)
        loop = asyncio.get_running_loop()
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            if line.strip() == "report":
                print(json.dumps(report(api)), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sandbox_process")
    parser.add_argument("--user", action="append", default=[], metavar="FIRST:COUNT")
    args = parser.parse_args()
    users = [(int(a), int(b)) for a, b in (u.split(":") for u in args.user)]
    asyncio.run(serve(users))


if __name__ == "__main__":
    main()
