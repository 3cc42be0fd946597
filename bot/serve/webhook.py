"""Webhook mode: Telegram pushes updates to us over HTTPS; we also answer health checks.

An aiohttp server (rather than PTB's built-in tornado one) so that the same port serves
`GET /healthz` next to the webhook. Telegram signs every push with the secret token given
to setWebhook, in the `X-Telegram-Bot-Api-Secret-Token` header: a request without it, or
with another, gets 403 and is never parsed. TLS is terminated in front (a reverse proxy);
`webhook_url` is the public HTTPS address, `webhook_listen`/`webhook_port` the local one.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from aiohttp import web
from telegram import Update
from telegram.error import BadRequest, NetworkError

from bot.context import AftercareApp, Services
from bot.errors import StartupError
from bot.serve.health import add_health_routes
from bot.settings import Settings

if TYPE_CHECKING:
    from bot.dashboard.views import Config

log = logging.getLogger("aftercare.webhook")

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
SECRET_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,256}")  # what setWebhook accepts
MAX_UPDATE_BYTES = 1_000_000
SET_WEBHOOK_ATTEMPTS = 3


def webhook_path(url: str) -> str:
    return urlsplit(url).path or "/"


def make_web_app(
    application: AftercareApp, *, path: str, secret: str, dashboard: Config | None = None
) -> web.Application:
    """The HTTP side: the webhook at `path`, `/healthz`, and the dashboard when it is on."""
    services: Services = application.bot_data["services"]
    expected = secret.encode()

    async def receive(request: web.Request) -> web.Response:
        given = request.headers.get(SECRET_HEADER, "").encode()
        if not hmac.compare_digest(given, expected):
            log.warning("webhook request refused: missing or wrong secret token")
            return web.Response(status=403, text="forbidden")
        if request.content_length is not None and request.content_length > MAX_UPDATE_BYTES:
            return web.Response(status=413, text="too large")
        try:
            data = await request.json()
            update = Update.de_json(data, application.bot)
        except (ValueError, TypeError, KeyError):
            log.warning("webhook request refused: not an update")
            return web.Response(status=400, text="bad update")
        await application.update_queue.put(update)
        return web.Response(status=200, text="ok")

    app = web.Application(client_max_size=MAX_UPDATE_BYTES)
    app.router.add_post(path, receive)
    add_health_routes(app, services)
    if dashboard is not None:
        from bot.dashboard.views import add_routes

        add_routes(app, services, dashboard)
    return app


class Receiver:
    """Webhook mode's way to take updates (bot/serve/runner.py `serve`): the HTTP server with
    the webhook and /healthz, and Telegram told where to push (setWebhook)."""

    def __init__(
        self,
        *,
        url: str,
        listen: str,
        port: int,
        secret: str,
        dashboard: Settings | None = None,
    ) -> None:
        self._url, self._listen, self._port, self._secret = url, listen, port, secret
        self._dashboard = dashboard
        self._runner: web.AppRunner | None = None

    async def start(self, application: AftercareApp) -> None:
        services: Services = application.bot_data["services"]
        config = None
        if self._dashboard is not None:
            # Imported when the dashboard is on only (Jinja2, the templates).
            from bot.dashboard.server import config_of
            from bot.dashboard.views import ensure_clinic

            config = config_of(self._dashboard, application.bot.token)
            await ensure_clinic(services)
        self._runner = web.AppRunner(
            make_web_app(
                application, path=webhook_path(self._url), secret=self._secret, dashboard=config
            ),
            # The URL path is ours, but keep request lines out of the logs (a dashboard login
            # link's token is in its address).
            access_log=None,
            shutdown_timeout=5.0,
        )
        await self._runner.setup()
        await web.TCPSite(self._runner, self._listen, self._port).start()
        settings = self._dashboard
        if settings is not None and settings.dashboard_port not in (None, self._port):
            assert settings.dashboard_port is not None
            from bot.dashboard.server import listen

            await listen(self._runner, settings.dashboard_listen, settings.dashboard_port)
        for attempt in range(1, SET_WEBHOOK_ATTEMPTS + 1):
            try:
                await application.bot.set_webhook(
                    url=self._url, secret_token=self._secret, allowed_updates=Update.ALL_TYPES
                )
                break
            except BadRequest as exc:  # Telegram's words say what is wrong with the URL
                raise StartupError(
                    f"setting AFTERCARE_WEBHOOK_URL: Telegram refused it ({exc.message})"
                ) from None
            except NetworkError as exc:
                if attempt == SET_WEBHOOK_ATTEMPTS:
                    raise StartupError(
                        f"Telegram did not accept the webhook ({type(exc).__name__}), tried "
                        f"{attempt} times; check AFTERCARE_WEBHOOK_URL"
                    ) from None
                log.warning("setWebhook failed (%s); trying again", type(exc).__name__)
                await asyncio.sleep(2.0 * attempt)
        log.info("webhook mode: listening on %s:%s", self._listen, self._port)

    async def stop(self, _application: AftercareApp) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
