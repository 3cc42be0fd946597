"""Real bot processes against the sandbox Bot API in the test process (fault tests)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Self

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.seed import states
from bot.offline.harness import SANDBOX_TOKEN
from bot.offline.sandbox import SandboxBotAPI

# High limits so that a fault test finishes fast; the limiter itself is tested on virtual time.
FAST = {
    "AFTERCARE_RATE_OVERALL_PER_SECOND": "5000",
    "AFTERCARE_LEASE_SECONDS": "5",
    "AFTERCARE_RETRY_BASE_SECONDS": "0.2",
    "AFTERCARE_LEADER_POLL_SECONDS": "0.5",
}
# What `aftercare run --webhook` registers with Telegram, and the secret Telegram sends back.
HOOK = "https://bot.example.test/tg/hook"
SECRET = "webhook-Secret_42"


class BotProcess:
    """`python -m bot run` (or any CLI command) as a subprocess, logging at DEBUG to a file.

    As an async context manager: killed at the end if still running, whatever happened."""

    def __init__(
        self,
        api: SandboxBotAPI,
        db_url: str,
        workdir: Path,
        *,
        name: str = "bot",
        args: Iterable[str] = ("run",),
        env: dict[str, str] | None = None,
    ) -> None:
        self.api = api
        self.args = list(args)
        self.workdir = workdir
        self.log_path = workdir / f"{name}.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AFTERCARE_")}
        self.env.update(
            {
                "AFTERCARE_BOT_TOKEN": SANDBOX_TOKEN,
                "AFTERCARE_BOT_API_BASE_URL": api.base_url,
                "AFTERCARE_DATABASE_URL": db_url,
                "AFTERCARE_LOG_LEVEL": "DEBUG",
                **FAST,
                **(env or {}),
            }
        )
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop_quietly()

    async def start(self) -> None:
        assert self.proc is None or self.proc.returncode is not None
        self.starts += 1
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bot",
                *self.args,
                env=self.env,
                cwd=self.workdir,
                stdout=log,
                stderr=log,
            )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def kill(self) -> None:
        """kill -9: no clean-up of any kind."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def terminate(self, timeout: float = 20.0) -> int:  # noqa: ASYNC109
        """SIGTERM, then the exit code (a clean stop)."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(timeout):
            return await self.proc.wait()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def stop_quietly(self) -> None:
        if self.running:
            assert self.proc is not None
            self.proc.kill()
            await self.proc.wait()


def webhook_bot(
    api: SandboxBotAPI, db_url: str, workdir: Path, port: int, **env: str
) -> BotProcess:
    """`aftercare run --webhook`: HOOK registered with SECRET, served on 127.0.0.1:`port`."""
    return BotProcess(
        api,
        db_url,
        workdir,
        args=["run", "--webhook"],
        env={
            "AFTERCARE_WEBHOOK_URL": HOOK,
            "AFTERCARE_WEBHOOK_SECRET": SECRET,
            "AFTERCARE_WEBHOOK_LISTEN": "127.0.0.1",
            "AFTERCARE_WEBHOOK_PORT": str(port),
            **env,
        },
    )


def aftercare(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """The real `aftercare` command in a clean environment (no AFTERCARE_ settings but `env`),
    as an operator runs it."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AFTERCARE_")}
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        env={**clean, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def received(api: SandboxBotAPI, chat_ids: Iterable[int]) -> dict[int, int]:
    """Messages each chat received (each seeded patient is owed exactly one)."""
    return {chat: api.chat(chat).sent_count for chat in chat_ids}


def open_chats(api: SandboxBotAPI, chat_ids: Iterable[int]) -> None:
    """Each patient has written to the bot, so the bot may write to them."""
    for chat in chat_ids:
        api.user(chat).started = True


def report(capsys: pytest.CaptureFixture[str], title: str, figures: Mapping[str, object]) -> None:
    """Print the figures to the terminal even when pytest captures output."""
    line = f"\n[{title}] " + ", ".join(f"{k}={v}" for k, v in figures.items())
    with capsys.disabled():
        print(line)  # noqa: T201


def free_port() -> int:
    """A TCP port on localhost that nothing listens on now, and that no connection will take
    before the server binds it: one below the range the kernel gives outgoing connections
    their local ports from (`ip_local_port_range`). A port the kernel picked (binding port
    0) is from that range, and a client connection of the test (to the database, to the Bot
    API sandbox) could take it in the meantime: "address already in use" (seen once in CI)."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768  # Linux's default
    for port in random.sample(range(max(1024, low - 10_000), low), 100):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port below {low}")


async def all_recorded(engine: AsyncEngine, timeout: float) -> None:  # noqa: ASYNC109
    """Until no row is pending or sending (a row sent by a killed process stays `sending`
    until its lease runs out, then is sent again: one of the duplicates)."""
    async with asyncio.timeout(timeout):
        while True:  # the database is another process's: it can only be looked at
            if not any(s in ("pending", "sending") for s in (await states(engine)).values()):
                return
            await asyncio.sleep(0.2)
