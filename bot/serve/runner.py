"""Assembling the services from settings, and running the bot for real.

Start-up, in order: the checks of bot/serve/preflight.py (protocol, database), the schema,
then Telegram. Telegram that cannot be reached, or answers 5xx, is waited for with back-off,
one log line per attempt, and the bot starts as soon as it answers; a token Telegram refuses
stops the process with one line. While running, a failing long poll is one line per attempt
too, never a traceback; only the leading process polls (bot/serve/polling.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
from collections.abc import Awaitable, Callable

import msgspec
from sqlalchemy.ext.asyncio import AsyncEngine
from telegram.error import InvalidToken, TelegramError

from bot.app import build_application, set_menus, start_services, stop_services
from bot.context import AftercareApp, Services
from bot.errors import StartupError
from bot.serve import preflight, tls
from bot.serve.logs import setup_logging
from bot.serve.polling import LeaderPolling, telegram_trouble
from bot.settings import Settings
from messages.protocol import Protocol
from scheduler.care import ClinicInfo
from scheduler.clock import Clock, SystemClock
from scheduler.db import SchemaNotReady, ensure_migrated, make_engine, make_session_factory

log = logging.getLogger("aftercare.run")

LONGEST_RETRY = 30.0


def clinic_of(settings: Settings) -> ClinicInfo:
    return ClinicInfo(
        name=settings.clinic_name,
        timezone=settings.clinic_timezone,
        address=settings.clinic_address,
        phone=settings.clinic_phone,
        emergency_phone=settings.emergency_phone,
    )


def make_services(
    settings: Settings,
    clock: Clock,
    protocol: Protocol | None = None,
    engine: AsyncEngine | None = None,
) -> Services:
    """Services over `engine`, else a new one (created lazily: no connection until first
    use); the settings' protocol, read and checked unless it already was."""
    engine = engine if engine is not None else make_engine(settings.database_url)
    return Services(
        settings=settings,
        engine=engine,
        sessions=make_session_factory(engine),
        clock=clock,
        protocol=protocol if protocol is not None else preflight.protocol(settings),
        clinic=clinic_of(settings),
    )


class Ready(msgspec.Struct, frozen=True):
    """What start-up checked and built before the application: the protocol (read once: its
    checks of every language's texts are about 35 ms), the TLS context, and the engine that
    checked the database (its connection goes on to serve the bot: one engine and one
    connection made at start-up, not three)."""

    protocol: Protocol
    tls: ssl.SSLContext
    engine: AsyncEngine


async def ready(settings: Settings) -> Ready:
    """Everything but Telegram: the protocol, the database, its schema (StartupError); and the
    TLS context of the Bot API clients, made on a thread meanwhile (bot/serve/tls.py), or
    since `aftercare run` began it."""
    context = asyncio.wrap_future(tls.take())
    protocol, engine = await preflight.all_checks(settings)
    try:
        await ensure_migrated(engine)
        return Ready(protocol, await context, engine)
    except SchemaNotReady as exc:
        await engine.dispose()
        raise StartupError(str(exc)) from None
    except BaseException:
        await engine.dispose()
        raise


async def reach_telegram(application: AftercareApp, stop: asyncio.Event, first: float) -> bool:
    """Initialise the application (it asks Telegram who the bot is) until Telegram answers,
    waiting `first` seconds, then twice as long each time (at most LONGEST_RETRY); False if a
    stop signal came first. StartupError if Telegram refuses the token."""
    delay = first
    while not stop.is_set():
        try:
            await application.initialize()
            return True
        except InvalidToken:
            raise StartupError(
                "setting AFTERCARE_BOT_TOKEN: Telegram refused this token (check it with"
                " @BotFather)"
            ) from None
        except TelegramError as exc:  # network, timeout, 5xx
            log.warning(
                "Telegram is not reachable (%s); retrying in %.0f s", telegram_trouble(exc), delay
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        delay = min(delay * 2, LONGEST_RETRY)
    return False


def stop_event() -> asyncio.Event:
    """Set on SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def serve(
    application: AftercareApp,
    receive: Callable[[AftercareApp], Awaitable[None]],
    release: Callable[[AftercareApp], Awaitable[None]],
) -> None:
    """Reach Telegram, start the services, take updates (`receive`) until a stop signal;
    then stop taking them (`release`), finish what is in flight, stop the dispatcher."""
    services: Services = application.bot_data["services"]
    stop = stop_event()
    menus: asyncio.Task[None] | None = None
    try:
        first = services.settings.telegram_retry_seconds
        if not await reach_telegram(application, stop, first):
            return
        await start_services(application, wake=False, menus=False)
        await application.start()
        await receive(application)
        # The dispatcher's first round once the receiver has asked Telegram for updates: what
        # patients wrote while the bot was down is asked for first, not after the backlog's
        # first batch (its claim and renders held the first long poll back by 25 ms here).
        services.poke()
        menus = asyncio.create_task(_menus(application))
        await stop.wait()
        log.info("stopping: no more updates, finishing deliveries in flight")
    finally:
        if menus is not None and not menus.done():
            menus.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await menus
        with contextlib.suppress(Exception):  # a half-started receiver has nothing to release
            await release(application)
        if application.running:
            await application.stop()
        await stop_services(application)
        await application.shutdown()
        await services.engine.dispose()


async def _menus(application: AftercareApp) -> None:
    """The command menus, set once the bot takes updates: a patient's message is not kept
    waiting for them (10-16 ms of each start here, one round trip and three requests), and
    Telegram keeps a bot's menus from one start to the next. A failure is a warning, not a
    stop: the bot works without them, and the next start sets them again."""
    try:
        await set_menus(application)
    except TelegramError as exc:
        log.warning("the command menus were not set (%s)", telegram_trouble(exc))


async def _poll(application: AftercareApp) -> None:
    services: Services = application.bot_data["services"]
    poller = LeaderPolling(application, retry_seconds=services.settings.telegram_retry_seconds)
    application.bot_data["poller"] = poller
    await poller.start()


async def _unpoll(application: AftercareApp) -> None:
    poller: LeaderPolling | None = application.bot_data.pop("poller", None)
    if poller is not None:
        await poller.stop()


def _application(settings: Settings, checked: Ready, *, http: bool) -> AftercareApp:
    """The application; `http`: the process serves HTTP (/metrics counts its deliveries)."""
    assert settings.bot_token is not None
    services = make_services(settings, SystemClock(), checked.protocol, checked.engine)
    if http:
        # Imported only when the process serves HTTP (prometheus-client, aiohttp's server).
        from bot.serve.health import Metrics

        services.metrics = Metrics()
    token = settings.bot_token.get_secret_value()
    return build_application(
        services, token=token, base_url=settings.bot_api_base_url, tls=checked.tls
    )


def run(settings: Settings, *, webhook: bool) -> None:
    """`aftercare run`: long polling, or webhook mode. StartupError: one line for the operator."""
    if settings.bot_token is None:
        raise StartupError(
            "setting AFTERCARE_BOT_TOKEN: missing (copy .env.example to .env and set it)"
        )
    if webhook:
        run_webhook(settings)
    else:
        run_polling(settings)


async def _checked_then_served(
    settings: Settings,
    receive: Callable[[AftercareApp], Awaitable[None]],
    release: Callable[[AftercareApp], Awaitable[None]],
    *,
    http: bool,
) -> None:
    """The start-up's checks (`ready`), then `serve`, in one event loop: the engine the checks
    connected goes on to serve the bot."""
    checked = await ready(settings)
    await serve(_application(settings, checked, http=http), receive, release)


def run_polling(settings: Settings) -> None:
    """Long polling until SIGINT/SIGTERM, and the dashboard when its port is set (its own
    HTTP server). StartupError: one line for the operator."""
    assert settings.bot_token is not None
    token = settings.bot_token.get_secret_value()
    setup_logging(settings.log_level, secrets=[token])
    receive, release = _poll, _unpoll
    if settings.dashboard_port is not None:
        # Imported only when it is on: aiohttp's server and Jinja2 cost start-up time.
        from bot.dashboard.server import DashboardServer, config_of

        config = config_of(settings, token)
        assert config is not None
        server = DashboardServer(
            config, listen=settings.dashboard_listen, port=settings.dashboard_port
        )

        async def receive_and_serve(application: AftercareApp) -> None:
            await server.start(application)
            await _poll(application)

        async def release_both(application: AftercareApp) -> None:
            await _unpoll(application)
            await server.stop()

        receive, release = receive_and_serve, release_both
    http = settings.dashboard_port is not None
    asyncio.run(_checked_then_served(settings, receive, release, http=http))


class WebhookSettingsError(StartupError):
    """Webhook mode is missing a setting; the message names it."""


def run_webhook(settings: Settings) -> None:
    """Webhook mode until SIGINT/SIGTERM (bot/serve/webhook.py), /healthz on the same port."""
    # Imported in webhook mode only: aiohttp's server costs long polling start-up time and
    # memory for nothing.
    from bot.serve.webhook import SECRET_PATTERN, Receiver

    assert settings.bot_token is not None
    if not settings.webhook_url or not settings.webhook_url.startswith("https://"):
        raise WebhookSettingsError("setting AFTERCARE_WEBHOOK_URL: an https:// URL is required")
    secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else ""
    if not SECRET_PATTERN.fullmatch(secret):
        raise WebhookSettingsError(
            "setting AFTERCARE_WEBHOOK_SECRET: required, 1-256 of A-Z a-z 0-9 _ -"
        )
    setup_logging(settings.log_level, secrets=[settings.bot_token.get_secret_value(), secret])
    receiver = Receiver(
        url=settings.webhook_url,
        listen=settings.webhook_listen,
        port=settings.webhook_port,
        secret=secret,
        dashboard=settings if settings.dashboard_port is not None else None,
    )
    asyncio.run(_checked_then_served(settings, receiver.start, receiver.stop, http=True))
