"""Settings from the environment and `.env` (pydantic-settings), built once in `main`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from scheduler.quiet import parse_quiet_hours

PLACEHOLDER_TOKENS = {"changeme", "your-bot-token", "123456:ABC-DEF"}


class Settings(BaseSettings):
    """Every knob of a deployment. Prefix `AFTERCARE_`, e.g. `AFTERCARE_BOT_TOKEN`."""

    model_config = SettingsConfigDict(
        env_prefix="AFTERCARE_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        env_ignore_empty=True,  # `AFTERCARE_X=` (as .env.example leaves them): the default
    )

    bot_token: SecretStr | None = None
    database_url: str = "sqlite+aiosqlite:///aftercare.db"
    bot_api_base_url: str = "https://api.telegram.org/bot"
    clinic_name: str = "Our clinic"
    clinic_timezone: str = "Europe/London"
    clinic_address: str = "Please ask the clinic for the address"
    clinic_phone: str = "Please ask the clinic for the phone number"
    # Said with every red-flag answer and in /aftercare (112 works in the EU and India).
    emergency_phone: str = Field(default="112", min_length=1, max_length=32)
    # `[]` rather than `Field(default_factory=list)`: pydantic copies a mutable default for
    # each instance, and reads a factory's signature, which for a builtin (`list`, `dict`)
    # makes Python compile tokenize's patterns: 2-3 ms of the bot's start-up.
    staff_user_ids: Annotated[list[int], NoDecode] = []
    protocol_file: Path | None = None
    quiet_hours: str = "22:00-08:00"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Delivery
    dispatch_batch: int = Field(default=100, ge=1, le=1000)
    lease_seconds: int = Field(default=60, ge=5)
    dispatch_concurrency: int = Field(default=10, ge=1, le=200)  # the in-flight window
    retry_base_seconds: float = Field(default=5.0, gt=0)  # first back-off after an error
    send_timeout_seconds: float = Field(default=10.0, gt=0)  # a send's answer, then retry
    leader_poll_seconds: float = Field(default=1.0, gt=0)  # PostgreSQL: stand-by, take-over
    # Telegram unreachable: the first wait before trying again (it doubles, up to 30 s)
    telegram_retry_seconds: float = Field(default=5.0, gt=0, le=30)
    # Telegram's limits (docs/delivery.md); raise them only against a test server
    rate_overall_per_second: float = Field(default=30.0, gt=0)
    rate_chat_per_second: float = Field(default=1.0, gt=0)
    rate_group_per_minute: float = Field(default=20.0, gt=0)
    # All messages a second while a clinic's paid broadcast runs (`clinic.allow_paid_broadcast`)
    rate_paid_broadcast_per_second: float = Field(default=1000.0, gt=0)
    # Clinic side: how often a broadcast's progress message may be edited; the bot's
    # username for invite links printed by the command line (the bot itself asks getMe)
    broadcast_progress_seconds: float = Field(default=3.0, ge=0)
    bot_username: str | None = None
    # Webhook mode
    webhook_url: str | None = None
    webhook_listen: str = "127.0.0.1"
    webhook_port: int = Field(default=8443, ge=1, le=65535)
    webhook_secret: SecretStr | None = None
    # The clinic dashboard (bot/dashboard/): off unless a port is set. In webhook mode it is
    # served by the webhook's server (on this port too, if it is another one). `dashboard_url`
    # is its public address (https:// behind a TLS proxy: secure cookies and the Mini App).
    dashboard_port: int | None = Field(default=None, ge=1, le=65535)
    dashboard_listen: str = "127.0.0.1"
    dashboard_url: str | None = None

    @field_validator("bot_token")
    @classmethod
    def _real_token(cls, value: SecretStr | None) -> SecretStr | None:
        raw = value.get_secret_value().strip() if value is not None else ""
        if not raw:
            return None  # no token: the offline demo
        if raw.lower() in PLACEHOLDER_TOKENS:
            raise ValueError("is a placeholder: set the token BotFather gave you")
        if ":" not in raw:
            raise ValueError("does not look like a bot token (expected 123456:ABC...)")
        return SecretStr(raw)

    @field_validator("clinic_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("staff_user_ids", mode="before")
    @classmethod
    def _ids(cls, value: object) -> object:
        if isinstance(value, str):
            return [int(part) for part in value.replace(";", ",").split(",") if part.strip()]
        return value

    @field_validator("quiet_hours")
    @classmethod
    def _quiet(cls, value: str) -> str:
        if parse_quiet_hours(value) is None:
            raise ValueError(f"expected HH:MM-HH:MM, got {value!r}")
        return value

    @field_validator("dashboard_url")
    @classmethod
    def _dashboard_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError("expected http://... or https://... (the dashboard's address)")
        return value

    @property
    def dashboard_base(self) -> str | None:
        """The dashboard's public address without a trailing slash (None: it is off)."""
        if self.dashboard_port is None:
            return None
        return self.dashboard_url or f"http://{self.dashboard_listen}:{self.dashboard_port}"

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.clinic_timezone)

    @property
    def quiet(self) -> tuple[str, str]:
        """New patients' quiet hours ("22:00", "08:00")."""
        parsed = parse_quiet_hours(self.quiet_hours)
        assert parsed is not None  # checked on load
        return parsed


class SettingsError(Exception):
    """A setting is missing or invalid; the message is one line naming it."""


def load_settings(**overrides: object) -> Settings:
    """Build the settings, turning pydantic's report into one clear line."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "AFTERCARE_" + "_".join(str(p) for p in first["loc"][:1]).upper()
        message = str(first["msg"]).removeprefix("Value error, ")
        raise SettingsError(f"setting {name}: {message}") from None
