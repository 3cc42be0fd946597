"""The real bot against the sandbox Bot API, on a simulated clock: for the demo and tests.

Nothing here replaces a part of the bot: the `Application` is built by `build_application`
and talks HTTP to the sandbox. The harness only adds a way to know when everything the
patient did has been handled (`settle`), and to move the clock (`advance`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from bot.app import build_application, start_services, stop_services
from bot.context import AftercareApp, Services
from bot.offline.sandbox import SandboxBotAPI, SandboxUser
from bot.serve.polling import LeaderPolling
from bot.serve.runner import make_services
from bot.settings import Settings
from bot.turns import ChatTurns, side_by_side
from scheduler.clock import FakeClock

if TYPE_CHECKING:
    from bot.dashboard.server import DashboardServer

SANDBOX_TOKEN = "123456789:SANDBOX-token-not-a-secret"


class CountingProcessor(ChatTurns):
    """The bot's turns (as many at once as `aftercare run` takes on this database), counting
    the updates finished."""

    def __init__(self, max_concurrent_updates: int) -> None:
        super().__init__(max_concurrent_updates)
        self.processed = 0
        self.running = self.most_at_once = 0  # turns under way (past their chat's wait)
        self._done = asyncio.Event()

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        async def turn() -> None:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
            try:
                await coroutine
            finally:
                self.running -= 1

        try:
            await super().do_process_update(update, turn())
        finally:
            self.processed += 1
            self._done.set()

    async def wait_processed(self, count: int, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            while self.processed < count:
                self._done.clear()
                await self._done.wait()


class Harness:
    """Sandbox + real bot + fake clock. `async with Harness(...) as h:`."""

    def __init__(self, settings: Settings, clock: FakeClock) -> None:
        self.settings = settings
        self.clock = clock
        self.api = SandboxBotAPI(SANDBOX_TOKEN, clock=clock)
        self.application: AftercareApp | None = None
        self.services: Services | None = None
        self._processor: CountingProcessor | None = None
        self._processed_before = 0
        self.dashboard: DashboardServer | None = None
        self.poller: LeaderPolling | None = None

    async def __aenter__(self) -> Harness:
        await self.api.start()
        await self.start_bot()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop_bot()
        await self.api.stop()

    async def start_bot(self) -> None:
        """A new Application (as a new process would build one) on the same database."""
        self.services = make_services(self.settings, self.clock)
        if self.settings.dashboard_port is not None:
            # As `aftercare run`: prometheus-client only in a process that serves HTTP.
            from bot.serve.health import Metrics

            self.services.metrics = Metrics()
        self._processor = CountingProcessor(side_by_side(self.settings.database_url))
        self._processed_before = len(self.api.delivered_update_ids)
        self.application = build_application(
            self.services,
            token=SANDBOX_TOKEN,
            base_url=self.api.base_url,
            base_file_url=self.api.base_file_url,
            update_processor=self._processor,
        )
        await self.application.initialize()
        await self.application.start()
        await start_services(self.application)
        # Long polling as `aftercare run` polls (the leader only, the offset in the database).
        self.poller = LeaderPolling(self.application, retry_seconds=0.1)
        await self.poller.start()
        if self.settings.dashboard_port is not None:
            # The dashboard as `aftercare run` serves it, on this bot's services.
            from bot.dashboard.server import DashboardServer, config_of

            config = config_of(self.settings, SANDBOX_TOKEN)
            assert config is not None
            self.dashboard = DashboardServer(
                config, listen=self.settings.dashboard_listen, port=self.settings.dashboard_port
            )
            await self.dashboard.start(self.application)
        await self.settle()

    async def stop_bot(self) -> None:
        app, self.application = self.application, None
        if app is None:
            return
        if self.dashboard is not None:
            await self.dashboard.stop()
            self.dashboard = None
        if self.poller is not None:
            await self.poller.stop()
            self.poller = None
        await stop_services(app)
        await app.stop()
        await app.shutdown()
        if self.services is not None:
            await self.services.engine.dispose()

    async def restart_bot(self) -> None:
        await self.stop_bot()
        await self.start_bot()

    @property
    def most_turns_at_once(self) -> int:
        """The most turns that were under way at once since the bot started."""
        assert self._processor is not None
        return self._processor.most_at_once

    def patient(self, user_id: int, first_name: str, language_code: str = "en") -> SandboxUser:
        return self.api.user(user_id, first_name=first_name, language_code=language_code)

    async def settle(self) -> None:
        """Until every update sent so far is handled and nothing due now is left unsent."""
        assert self._processor is not None and self.services is not None
        for _ in range(100):
            await self.api.wait_fetched(timeout=10)
            delivered = len(self.api.delivered_update_ids) - self._processed_before
            await self._processor.wait_processed(delivered)
            assert self.services.dispatcher is not None
            await self.services.dispatcher.wait_idle()
            if self.api.pending_update_count() == 0 and self._processor.processed >= delivered:
                return
        raise TimeoutError("the bot did not settle")

    async def advance(self, delta: timedelta) -> None:
        self.clock.advance(delta)
        await self.settle()

    async def advance_to(self, at: datetime) -> None:
        self.clock.set(at)
        await self.settle()
