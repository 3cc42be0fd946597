"""What every command shares, without heavy imports: the settings, and failing in one line."""

from __future__ import annotations

from bot.errors import StartupError
from bot.settings import Settings, SettingsError, load_settings


def settings_or_exit() -> Settings:
    """The settings; a missing or invalid one is a StartupError naming it."""
    try:
        return load_settings()
    except SettingsError as exc:
        raise StartupError(str(exc)) from None
