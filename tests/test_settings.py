"""Settings: defaults, parsing, and one clear line (exit 2) for anything wrong."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bot.settings import SettingsError, load_settings


def test_defaults_need_no_configuration(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings.bot_token is None
    assert settings.database_url.startswith("sqlite+aiosqlite:///")
    assert settings.quiet == ("22:00", "08:00")
    assert str(settings.zone) == "Europe/London"


def test_empty_values_are_the_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(
        "AFTERCARE_BOT_TOKEN=\nAFTERCARE_PROTOCOL_FILE=\nAFTERCARE_WEBHOOK_URL=\n"
        "AFTERCARE_QUIET_HOURS=21-7\n"
    )
    settings = load_settings()
    assert settings.bot_token is None and settings.protocol_file is None
    assert settings.webhook_url is None
    assert settings.quiet == ("21:00", "07:00")


def test_staff_ids_and_token_are_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AFTERCARE_STAFF_USER_IDS", "11, 22;33")
    monkeypatch.setenv("AFTERCARE_BOT_TOKEN", "123:abc")
    settings = load_settings()
    assert settings.staff_user_ids == [11, 22, 33]
    assert settings.bot_token is not None
    assert "123:abc" not in repr(settings)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("CLINIC_TIMEZONE", "Mars/Olympus", "AFTERCARE_CLINIC_TIMEZONE"),
        ("BOT_TOKEN", "changeme", "AFTERCARE_BOT_TOKEN"),
        ("BOT_TOKEN", "no-colon", "AFTERCARE_BOT_TOKEN"),
        ("QUIET_HOURS", "late", "AFTERCARE_QUIET_HOURS"),
        ("LOG_LEVEL", "LOUD", "AFTERCARE_LOG_LEVEL"),
        ("STAFF_USER_IDS", "x,y", "AFTERCARE_STAFF_USER_IDS"),
    ],
)
def test_a_bad_setting_is_named(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(f"AFTERCARE_{name}", value)
    with pytest.raises(SettingsError, match=expected):
        load_settings()


def test_the_command_line_exits_2_with_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bot", "migrate"],
        env={"AFTERCARE_CLINIC_TIMEZONE": "Nowhere/Land", "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "aftercare: setting AFTERCARE_CLINIC_TIMEZONE: unknown time zone 'Nowhere/Land'"
    ]
    assert "Traceback" not in result.stderr
