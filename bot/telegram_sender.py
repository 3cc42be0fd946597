"""The `Sender` port over python-telegram-bot: every Telegram error becomes an outcome."""

from __future__ import annotations

from typing import Any

from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, LinkPreviewOptions
from telegram.constants import ParseMode
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TelegramError

from bot.pacing import PACED, retry_after_seconds
from scheduler.ports import Button, Outcome, Outgoing, SendResult


def markup(rows: tuple[tuple[Button, ...], ...]) -> InlineKeyboardMarkup | None:
    if not rows:
        return None
    return InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton(b.text, url=b.url)
                if b.url
                else InlineKeyboardButton(b.text, callback_data=b.data)
                for b in row
            ]
            for row in rows
        ]
    )


class TelegramSender:
    """Sends one message; classifies failures so the dispatcher can decide what to do.

    The dispatcher has already waited for this send's slot in the rate limiter, with the
    row's priority: the request says so (`PACED`) so that PTB's limiter hook lets it through.
    A paid broadcast goes through `paid_bot` (bot/delivery.py `paid_broadcast_bot`), whose
    HTTP client is fast enough for 1,000 messages a second.
    """

    def __init__(self, bot: Bot, *, timeout: float = 10.0, paid_bot: Bot | None = None) -> None:
        self._bot = _Via(bot, timeout)
        self._paid = _Via(paid_bot, timeout) if paid_bot is not None else self._bot

    async def send(self, message: Outgoing) -> SendResult:
        via = self._paid if message.paid_broadcast else self._bot
        try:
            sent = await via.bot.send_message(
                chat_id=message.chat_id,
                text=message.text,
                parse_mode=ParseMode.HTML,
                reply_markup=markup(message.buttons),
                link_preview_options=LinkPreviewOptions(is_disabled=True),
                # Only when the clinic allows it (absent otherwise): Telegram bills each paid
                # message past the free rate in Stars.
                allow_paid_broadcast=True if message.paid_broadcast else None,
                **via.extra,
            )
        except RetryAfter as exc:
            seconds = retry_after_seconds(exc)
            return SendResult(Outcome.RETRY, error="429 retry after", retry_after=seconds)
        except Forbidden as exc:
            return SendResult(Outcome.BLOCKED, error=f"403 {exc.message}")
        except BadRequest as exc:
            return SendResult(Outcome.FAILED, error=f"400 {exc.message}")
        except NetworkError as exc:  # includes TimedOut; 5xx arrive as NetworkError too
            return SendResult(Outcome.RETRY, error=f"network: {type(exc).__name__}")
        except TelegramError as exc:
            return SendResult(Outcome.FAILED, error=f"telegram: {exc.message}")
        return SendResult(Outcome.SENT, message_id=sent.message_id)


class _Via:
    """A bot to send with, and what its requests say: `PACED` if it has PTB's limiter hook."""

    def __init__(self, bot: Bot, timeout: float) -> None:
        self.bot = bot
        paced = getattr(bot, "rate_limiter", None) is not None
        self.extra: dict[str, Any] = {"rate_limit_args": PACED} if paced else {}
        self.extra["read_timeout"] = timeout
