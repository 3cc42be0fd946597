"""Assembling the services from settings, and running the bot for real."""

from __future__ import annotations

import asyncio

from telegram import Update

from bot.app import build_application
from bot.context import Services
from bot.serve.logs import setup_logging
from bot.settings import Settings
from messages.protocol import Protocol, default_protocol_path, load_protocol
from scheduler.care import ClinicInfo
from scheduler.clock import Clock, SystemClock
from scheduler.db import ensure_migrated, make_engine, make_session_factory


def protocol_of(settings: Settings) -> Protocol:
    return load_protocol(settings.protocol_file or default_protocol_path())


def clinic_of(settings: Settings) -> ClinicInfo:
    return ClinicInfo(
        name=settings.clinic_name,
        timezone=settings.clinic_timezone,
        address=settings.clinic_address,
        phone=settings.clinic_phone,
        emergency_phone=settings.emergency_phone,
    )


def make_services(settings: Settings, clock: Clock) -> Services:
    """Services over a new engine (created lazily: no connection until first use)."""
    engine = make_engine(settings.database_url)
    return Services(
        settings=settings,
        engine=engine,
        sessions=make_session_factory(engine),
        clock=clock,
        protocol=protocol_of(settings),
        clinic=clinic_of(settings),
    )


async def check_schema(url: str) -> None:
    engine = make_engine(url)
    try:
        await ensure_migrated(engine, url)
    finally:
        await engine.dispose()


def run_polling(settings: Settings) -> None:
    """Long polling until SIGINT/SIGTERM; PTB stops the application and its dispatcher."""
    assert settings.bot_token is not None
    token = settings.bot_token.get_secret_value()
    setup_logging(settings.log_level, secrets=[token])
    asyncio.run(check_schema(settings.database_url))
    services = make_services(settings, SystemClock())
    application = build_application(services, token=token, base_url=settings.bot_api_base_url)
    application.run_polling(allowed_updates=Update.ALL_TYPES)


class WebhookSettingsError(Exception):
    """Webhook mode is missing a setting; the message names it."""


def run_webhook(settings: Settings) -> None:
    """Webhook mode until SIGINT/SIGTERM (bot/serve/webhook.py), with /healthz on the same port."""
    from bot.serve.webhook import SECRET_PATTERN, serve

    assert settings.bot_token is not None
    if not settings.webhook_url or not settings.webhook_url.startswith("https://"):
        raise WebhookSettingsError("setting AFTERCARE_WEBHOOK_URL: an https:// URL is required")
    secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else ""
    if not SECRET_PATTERN.fullmatch(secret):
        raise WebhookSettingsError(
            "setting AFTERCARE_WEBHOOK_SECRET: required, 1-256 of A-Z a-z 0-9 _ -"
        )
    token = settings.bot_token.get_secret_value()
    setup_logging(settings.log_level, secrets=[token, secret])
    asyncio.run(check_schema(settings.database_url))
    services = make_services(settings, SystemClock())
    application = build_application(services, token=token, base_url=settings.bot_api_base_url)
    asyncio.run(
        serve(
            application,
            url=settings.webhook_url,
            listen=settings.webhook_listen,
            port=settings.webhook_port,
            secret=secret,
        )
    )
