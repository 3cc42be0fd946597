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
import signal
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from aiohttp import web
from telegram import Update

from bot.app import start_services, stop_services
from bot.context import AftercareApp, Services

log = logging.getLogger("aftercare.webhook")

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
SECRET_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,256}")  # what setWebhook accepts
MAX_UPDATE_BYTES = 1_000_000


def webhook_path(url: str) -> str:
    return urlsplit(url).path or "/"


def make_web_app(application: AftercareApp, *, path: str, secret: str) -> web.Application:
    """The HTTP side: the webhook at `path`, and `/healthz`."""
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

    async def health(_request: web.Request) -> web.Response:
        report = await health_report(services)
        return web.json_response(report, status=200 if report["ok"] else 503)

    app = web.Application(client_max_size=MAX_UPDATE_BYTES)
    app.router.add_post(path, receive)
    app.router.add_get("/healthz", health)
    return app


async def health_report(services: Services) -> dict[str, Any]:
    """Whether the database answers and the dispatcher is alive (`ok` is both)."""
    try:
        async with asyncio.timeout(3):
            async with services.engine.connect() as connection:
                await connection.execute(sa.text("SELECT 1"))
        database = True
    except Exception:
        database = False
    dispatcher = services.dispatcher.health() if services.dispatcher else {"alive": False}
    ok = database and bool(dispatcher["alive"])
    return {"ok": ok, "database": database, "dispatcher": dispatcher}


async def serve(
    application: AftercareApp, *, url: str, listen: str, port: int, secret: str
) -> None:
    """Until SIGTERM or SIGINT; then stop taking updates, finish, and stop the dispatcher."""
    services: Services = application.bot_data["services"]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(
        make_web_app(application, path=webhook_path(url), secret=secret),
        access_log=None,  # the URL path is ours, but keep request lines out of the logs
        shutdown_timeout=5.0,
    )
    await application.initialize()
    try:
        await start_services(application)
        await application.start()
        await runner.setup()
        await web.TCPSite(runner, listen, port).start()
        await application.bot.set_webhook(
            url=url, secret_token=secret, allowed_updates=Update.ALL_TYPES
        )
        log.info("webhook mode: listening on %s:%s", listen, port)
        await stop.wait()
        log.info("stopping: no more updates, finishing deliveries in flight")
    finally:
        await runner.cleanup()
        if application.running:
            await application.stop()
        await stop_services(application)
        await application.shutdown()
        await services.engine.dispose()
