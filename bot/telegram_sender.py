"""The `Sender` port over python-telegram-bot: every Telegram error becomes an outcome."""

from __future__ import annotations

import json
from typing import Any

from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, LinkPreviewOptions
from telegram.constants import ParseMode
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TelegramError

from bot.pacing import PACED, retry_after_seconds
from bot.transport import form_fields
from scheduler.ports import Button, Outcome, Outgoing, SendResult

NO_PREVIEW = LinkPreviewOptions(is_disabled=True)


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


NO_PREVIEW_JSON = json.dumps(NO_PREVIEW.to_dict())


class PaidBroadcastBot(Bot):
    """The bot paid broadcasts are sent with (bot/delivery.py `paid_broadcast_bot`).

    `message_id_of_send` is `send_message` with its form fields written here (`form_fields`:
    the values `send_message` would send, encoded as PTB encodes them) and without the
    `Message` PTB builds from the answer: a broadcast reads only the new message's id, and
    building the rest (the chat, the sender, the entities, each attribute set through a
    frozen-object check) was about a sixth of a paid message's CPU. The request goes through
    the same client (`Bot.request`), and its errors are PTB's (`BaseRequest.post`)."""

    async def message_id_of_send(self, message: Outgoing, *, read_timeout: float) -> int:
        fields = {
            "chat_id": str(message.chat_id),
            "text": message.text,
            "parse_mode": ParseMode.HTML.value,
            "link_preview_options": NO_PREVIEW_JSON,
            "allow_paid_broadcast": "true",
        }
        buttons = markup(message.buttons)
        if buttons is not None:
            fields["reply_markup"] = json.dumps(buttons.to_dict())
        answer = await self.request.post(
            f"{self.base_url}/sendMessage", form_fields(fields), read_timeout=read_timeout
        )
        assert isinstance(answer, dict)
        return int(answer["message_id"])


class TelegramSender:
    """Sends one message; classifies failures so the dispatcher can decide what to do.

    The dispatcher has already waited for this send's slot in the rate limiter, with the
    row's priority: the request says so (`PACED`) so that PTB's limiter hook lets it through.
    A paid broadcast goes through `paid_bot`, whose HTTP client is fast enough for 1,000
    messages a second (bot/transport.py).
    """

    def __init__(
        self, bot: Bot, *, timeout: float = 10.0, paid_bot: PaidBroadcastBot | None = None
    ) -> None:
        self._bot = bot
        self._paid_bot = paid_bot
        self._timeout = timeout
        paced = getattr(bot, "rate_limiter", None) is not None
        self._extra: dict[str, Any] = {"rate_limit_args": PACED} if paced else {}
        self._extra["read_timeout"] = timeout

    async def send(self, message: Outgoing) -> SendResult:
        try:
            if message.paid_broadcast and self._paid_bot is not None:
                message_id = await self._paid_bot.message_id_of_send(
                    message, read_timeout=self._timeout
                )
            else:
                sent = await self._bot.send_message(
                    chat_id=message.chat_id,
                    text=message.text,
                    parse_mode=ParseMode.HTML,
                    reply_markup=markup(message.buttons),
                    link_preview_options=NO_PREVIEW,
                    # Only when the clinic allows it (absent otherwise): Telegram bills each
                    # paid message past the free rate in Stars.
                    allow_paid_broadcast=True if message.paid_broadcast else None,
                    **self._extra,
                )
                message_id = sent.message_id
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
        return SendResult(Outcome.SENT, message_id=message_id)
