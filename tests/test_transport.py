"""The dispatcher's HTTP client (bot/transport.py) against the sandbox Bot API: what it sends
is what PTB's own client sends, and each failure becomes the PTB error the dispatcher
classifies (a timeout `TimedOut`, a refused connection `NetworkError`), without the token."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
from telegram import Bot, Message
from telegram.error import BadRequest, NetworkError, TimedOut

from bot.delivery import paid_broadcast_bot
from bot.offline.harness import SANDBOX_TOKEN
from bot.offline.sandbox import SandboxBotAPI
from bot.telegram_sender import PaidBroadcastBot, TelegramSender
from scheduler.clock import SystemClock
from scheduler.ports import Button, Outcome, Outgoing
from tests.test_sandbox import png


@pytest.fixture
async def api() -> AsyncIterator[SandboxBotAPI]:
    async with SandboxBotAPI(SANDBOX_TOKEN, clock=SystemClock()) as sandbox:
        sandbox.user(1001, "Ann").start()
        yield sandbox


@pytest.fixture
async def bot(api: SandboxBotAPI) -> AsyncIterator[PaidBroadcastBot]:
    sending = paid_broadcast_bot(SANDBOX_TOKEN, api.base_url)
    await sending.request.initialize()
    yield sending
    await sending.request.shutdown()


async def test_a_message_with_buttons_and_the_paid_flag_arrives_as_sent(
    api: SandboxBotAPI, bot: Bot
) -> None:
    sender = TelegramSender(bot)
    result = await sender.send(
        Outgoing(
            1001,
            "<b>Tonight</b>: no washing",
            ((Button("Fine", "ci:1:ok"), Button("Site", url="https://example.org")),),
            paid_broadcast=True,
        )
    )
    [message] = api.user(1001).messages()
    assert (result.outcome, result.message_id) == (Outcome.SENT, message.message_id)
    assert (message.text, message.html) == ("Tonight: no washing", "<b>Tonight</b>: no washing")
    assert message.buttons == [[("Fine", "ci:1:ok"), ("Site", "https://example.org")]]
    [request] = [r for r in api.requests if r.method == "sendMessage"]
    assert request.params["allow_paid_broadcast"] in (True, "true")


async def test_a_paid_send_is_sent_as_the_free_one_and_answers_the_same_outcomes(
    api: SandboxBotAPI, bot: PaidBroadcastBot, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The paid path (`message_id_of_send`) sends what `send_message` sends and gets the
    same outcomes, without building the answer's `Message`."""
    async with Bot(SANDBOX_TOKEN, base_url=api.base_url) as free:
        sender = TelegramSender(free, paid_bot=bot)
        buttons = ((Button("Fine", "ci:1:ok"),),)
        await sender.send(Outgoing(1001, "<b>Free</b>", buttons))
        built: list[object] = []
        de_json = Message.de_json

        def counted(*args: Any) -> Message | None:
            built.append(args)
            return de_json(*args)

        monkeypatch.setattr(Message, "de_json", counted)
        result = await sender.send(Outgoing(1001, "<b>Paid</b>", buttons, paid_broadcast=True))
        assert built == []
        free_message, paid_message = api.user(1001).messages()
        assert (result.outcome, result.message_id) == (Outcome.SENT, paid_message.message_id)
        assert (paid_message.html, paid_message.buttons) == ("<b>Paid</b>", free_message.buttons)
        free_request, paid_request = [r for r in api.requests if r.method == "sendMessage"]
        assert {k: v for k, v in paid_request.params.items() if k != "allow_paid_broadcast"} == {
            **free_request.params,
            "text": "<b>Paid</b>",
        }
        assert "allow_paid_broadcast" not in free_request.params

        api.fail_next("sendMessage", error_code=403, description="Forbidden: bot was blocked")
        api.fail_next("sendMessage", error_code=400, description="Bad Request: chat not found")
        api.fail_next("sendMessage", error_code=429, retry_after=3)
        outcomes = [await sender.send(Outgoing(1001, "x", paid_broadcast=True)) for _ in range(3)]
        assert [(r.outcome, r.error, r.retry_after) for r in outcomes] == [
            (Outcome.BLOCKED, "403 Forbidden: bot was blocked", None),
            (Outcome.FAILED, "400 Chat not found", None),
            (Outcome.RETRY, "429 retry after", 3.0),
        ]


async def test_a_file_goes_as_multipart(api: SandboxBotAPI, bot: Bot) -> None:
    image = png(40, 30)
    await bot.send_photo(1001, image, caption="QR")
    [message] = api.user(1001).messages()
    assert (message.text, message.photo_bytes) == ("QR", len(image))
    assert message.photo is not None and (message.photo["width"], message.photo["height"]) == (
        40,
        30,
    )


async def test_an_answer_later_than_the_read_timeout_is_a_timeout(
    api: SandboxBotAPI, bot: Bot
) -> None:
    api.delay_next("sendMessage", 1.0)
    with pytest.raises(TimedOut):
        await bot.send_message(1001, "late", read_timeout=0.2)
    assert (await TelegramSender(bot).send(Outgoing(1001, "again"))).outcome is Outcome.SENT


async def test_a_refused_connection_is_a_network_error_that_names_no_token(
    api: SandboxBotAPI, bot: Bot
) -> None:
    await api.set_outage("refuse")
    with pytest.raises(NetworkError) as refused:
        await bot.send_message(1001, "anyone?")
    assert not isinstance(refused.value, TimedOut)
    assert SANDBOX_TOKEN not in str(refused.value)
    assert str(refused.value).startswith("aiohttp.")
    result = await TelegramSender(bot).send(Outgoing(1001, "anyone?"))
    assert (result.outcome, result.error) == (Outcome.RETRY, "network: NetworkError")
    await api.set_outage("none")
    with pytest.raises(BadRequest, match="Chat not found"):
        await bot.send_message(999, "a stranger")  # served again, Telegram's errors as such


class _Lookups:
    """A finder on `sys.meta_path` that only counts the imports that reach it, by name."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def find_spec(self, name: str, *_where: Any) -> None:
        self.names.append(name)


async def test_requests_through_ptbs_own_client_import_nothing(
    api: SandboxBotAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every other request (replies, reminders, long polling) goes through PTB's httpx client,
    whose httpcore imports sniffio in each lock and shield it sets up: without sniffio
    installed each of those imports failed and searched the whole path again (about 0.6 ms
    of CPU a request; pyproject.toml)."""
    sending = Bot(SANDBOX_TOKEN, base_url=api.base_url)
    await sending.initialize()
    try:
        await sending.send_message(1001, "warm")  # what is imported once is imported now
        lookups = _Lookups()
        monkeypatch.setattr(sys, "meta_path", [lookups, *sys.meta_path])
        for i in range(5):
            await sending.send_message(1001, f"message {i}")
    finally:
        await sending.shutdown()
    assert lookups.names == []
