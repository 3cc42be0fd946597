"""Who gets into the dashboard: the checks, as pure functions of the bot token and `now`.

- Inside Telegram, the Mini App hands us `initData`, which Telegram signed with a key derived
  from the bot token (https://core.telegram.org/bots/webapps, "Validating data received via
  the Mini App"; aiogram's `utils/web_app.py` does the same): secret = HMAC-SHA256(key
  "WebAppData", the token); hash = hex HMAC-SHA256(secret, every other field as sorted
  `key=value` lines). Compared in constant time, and `auth_date` no older than a day.
- In a browser, `/dashboard` sends a login link whose token is a random nonce and our own
  signature of it (a forged token is refused before any database read); the database keeps
  its hash and lets it be used once (scheduler/dashboard.py).
- Every form that changes something carries a CSRF token: the session's cookie signed with a
  key of its own, so a page of another site cannot make a staff member's browser post.

Each key is derived from the bot token with a label of its own, so none can stand for another.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl

import msgspec

INIT_DATA_LIFE = timedelta(days=1)
CLOCK_SKEW = timedelta(minutes=5)  # an auth_date this far ahead of our clock still counts
MAX_INIT_DATA = 4096


def _mac(key: bytes, message: str) -> str:
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


class WebAppUser(msgspec.Struct, frozen=True):
    """The Telegram user a valid initData names."""

    id: int
    first_name: str
    language_code: str | None
    signed_at: datetime
    hash: str  # Telegram's signature: what makes this initData used once


def init_data_hash(init_data_fields: dict[str, str], bot_token: str) -> str:
    """Telegram's hash of the fields (all but `hash`): for checking, and for tests to sign."""
    secret = hmac.new(b"WebAppData", bot_token.encode(), hashlib.sha256).digest()
    check = "\n".join(f"{key}={init_data_fields[key]}" for key in sorted(init_data_fields))
    return _mac(secret, check)


def check_init_data(init_data: str, *, bot_token: str, now: datetime) -> WebAppUser | None:
    """The user of a Mini App's initData, if Telegram signed it for this bot within the last
    day; None for anything else (forged, altered, stale, malformed)."""
    if not init_data or len(init_data) > MAX_INIT_DATA:
        return None
    try:
        pairs = parse_qsl(init_data, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        return None
    fields = dict(pairs)
    if len(fields) != len(pairs) or "hash" not in fields:
        return None  # a field given twice: which one did Telegram sign?
    given = fields.pop("hash")
    if not hmac.compare_digest(given.encode(), init_data_hash(fields, bot_token).encode()):
        return None
    try:
        signed_at = datetime.fromtimestamp(int(fields["auth_date"]), tz=UTC)
        user = json.loads(fields["user"])
        user_id = int(user["id"])
        first_name = str(user.get("first_name", ""))
        language = user.get("language_code")
    except (KeyError, ValueError, TypeError, OverflowError, OSError):
        return None
    if not now - INIT_DATA_LIFE <= signed_at <= now + CLOCK_SKEW:
        return None
    return WebAppUser(user_id, first_name, str(language) if language else None, signed_at, given)


class Keys:
    """The dashboard's keys, each derived from the bot token with its own label."""

    def __init__(self, bot_token: str) -> None:
        self._login = hmac.new(b"AftercareDashboardLogin", bot_token.encode(), "sha256").digest()
        self._csrf = hmac.new(b"AftercareDashboardCSRF", bot_token.encode(), "sha256").digest()

    def new_login_token(self) -> str:
        """A login link's token: a random nonce and its signature."""
        nonce = secrets.token_urlsafe(24)
        return f"{nonce}.{_mac(self._login, nonce)[:32]}"

    def login_token_signed(self, token: str) -> bool:
        """Whether we made this token (forged or mangled ones never reach the database)."""
        nonce, _, signature = token.partition(".")
        if not nonce or len(token) > 100:
            return False
        return hmac.compare_digest(signature.encode(), _mac(self._login, nonce)[:32].encode())

    def csrf(self, session_token: str) -> str:
        """The CSRF token of a session: every form that changes something carries it."""
        return _mac(self._csrf, session_token)[:32]

    def csrf_ok(self, session_token: str, given: str) -> bool:
        return hmac.compare_digest(given.encode(), self.csrf(session_token).encode())


def new_session_token() -> str:
    return secrets.token_urlsafe(32)
