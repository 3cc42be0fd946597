"""Serving the dashboard: on its own aiohttp server next to long polling, or on the webhook's
server (bot/serve/webhook.py adds its routes, and listens on the dashboard's port too when
that is another one)."""

from __future__ import annotations

import logging

from aiohttp import web

from bot.context import AftercareApp, Services
from bot.dashboard.views import Config, add_routes, ensure_clinic
from bot.errors import StartupError
from bot.serve.health import add_health_routes
from bot.settings import Settings

log = logging.getLogger("aftercare.dashboard")


def config_of(settings: Settings, bot_token: str) -> Config | None:
    """The dashboard's configuration, or None when it is off (no port set)."""
    base = settings.dashboard_base
    return Config(bot_token=bot_token, base_url=base) if base is not None else None


def make_app(services: Services, config: Config) -> web.Application:
    app = web.Application(client_max_size=64_000)
    add_routes(app, services, config)
    add_health_routes(app, services)
    return app


async def listen(runner: web.AppRunner, host: str, port: int) -> None:
    """A site of the runner on host:port; a port that is taken is one line for the operator."""
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        raise StartupError(
            f"setting AFTERCARE_DASHBOARD_PORT: cannot listen on {host}:{port} "
            f"({exc.strerror or type(exc).__name__})"
        ) from None


class DashboardServer:
    """Polling mode's dashboard: its own HTTP server, started and stopped with the bot."""

    def __init__(self, config: Config, *, listen: str, port: int) -> None:
        self.config, self._listen, self._port = config, listen, port
        self._runner: web.AppRunner | None = None

    async def start(self, application: AftercareApp) -> None:
        services: Services = application.bot_data["services"]
        await ensure_clinic(services)
        # No access log: a login link's token is in its address.
        self._runner = web.AppRunner(
            make_app(services, self.config), access_log=None, shutdown_timeout=5.0
        )
        await self._runner.setup()
        await listen(self._runner, self._listen, self._port)
        log.info("dashboard: listening on %s:%s", self._listen, self._port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
