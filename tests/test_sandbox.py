"""The sandbox Bot API, driven by the real python-telegram-bot stack over HTTP.

These tests pin the sandbox to Telegram's behaviour as PTB sees it (which exception, which
message), because every other bot test trusts the sandbox to fail where Telegram would.
"""

from __future__ import annotations

import asyncio
import html
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from io import BytesIO
from typing import Any
from urllib.parse import urlsplit

import pytest
from PIL import Image
from telegram import (
    Bot,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    MenuButtonCommands,
    MenuButtonWebApp,
    Update,
    WebAppInfo,
)
from telegram.constants import ParseMode
from telegram.error import (
    BadRequest,
    EndPointNotFound,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
)
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from bot.offline.sandbox import SandboxBotAPI, SandboxUser, parse_html
from scheduler.clock import FakeClock

TOKEN = "123456:sandbox-test-token"
START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)

App = Application[Any, Any, Any, Any, Any, Any]


async def on_start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Greet with the deep-link payload and a two-button keyboard."""
    assert update.effective_message is not None
    keyboard = [
        [
            InlineKeyboardButton("Yes", callback_data="yes"),
            InlineKeyboardButton("Site", url="https://example.org"),
        ]
    ]
    await update.effective_message.reply_text(
        f"started: {' '.join(context.args or [])}", reply_markup=InlineKeyboardMarkup(keyboard)
    )


async def on_text(update: Update, _context: ContextTypes.DEFAULT_TYPE) -> None:
    """Echo the text back, HTML-escaped, with a bold prefix."""
    assert update.effective_message is not None
    assert update.effective_message.text is not None
    await update.effective_message.reply_html(
        f"<b>echo</b>: {html.escape(update.effective_message.text)}"
    )


async def on_button(update: Update, _context: ContextTypes.DEFAULT_TYPE) -> None:
    """Acknowledge the press, then replace the message text."""
    query = update.callback_query
    assert query is not None
    await query.answer(f"got {query.data}")
    await query.edit_message_text(f"chose {query.data}")


@pytest.fixture
async def api() -> AsyncIterator[SandboxBotAPI]:
    async with SandboxBotAPI(TOKEN, clock=FakeClock(START)) as server:
        yield server


@pytest.fixture
async def app(api: SandboxBotAPI) -> AsyncIterator[App]:
    """A real PTB Application polling the sandbox."""
    application: App = (
        ApplicationBuilder()
        .token(TOKEN)
        .base_url(api.base_url)
        .base_file_url(api.base_file_url)
        .build()
    )
    application.add_handler(CommandHandler("start", on_start))
    application.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, on_text))
    application.add_handler(CallbackQueryHandler(on_button))
    await application.initialize()
    await application.start()
    assert application.updater is not None
    await application.updater.start_polling(poll_interval=0, timeout=1)
    yield application
    await application.updater.stop()
    await application.stop()
    await application.shutdown()


@pytest.fixture
async def bot(api: SandboxBotAPI) -> AsyncIterator[Bot]:
    """A bare Bot, for calls whose outcome should not depend on a running poller."""
    async with Bot(TOKEN, base_url=api.base_url, base_file_url=api.base_file_url) as client:
        yield client


def started_user(api: SandboxUser | SandboxBotAPI, user_id: int = 1001) -> SandboxUser:
    """A patient who has opened the bot, so the bot may write to them."""
    user = api.user(user_id, "Ann") if isinstance(api, SandboxBotAPI) else api
    user.start()
    return user


def png(width: int = 64, height: int = 64) -> bytes:
    buffer = BytesIO()
    Image.new("RGB", (width, height), "white").save(buffer, format="PNG")
    return buffer.getvalue()


# -- the conversation through a running Application ---------------------------------------------


async def test_deep_link_start_reaches_command_handler_with_args(
    api: SandboxBotAPI, app: App
) -> None:
    user = api.user(1001, "Ann", username="ann")
    user.start("inv-42")

    [reply] = await user.wait_messages(1)

    assert reply.text == "started: inv-42"
    assert reply.buttons == [[("Yes", "yes"), ("Site", "https://example.org")]]
    assert reply.date == START
    assert app.bot.username == "aftercare_sandbox_bot"
    assert api.calls["getMe"] == 1


@pytest.mark.usefixtures("app")
async def test_text_echo_round_trips_with_html(api: SandboxBotAPI) -> None:
    user = api.user(1001, "Ann")
    user.send("hi <there> & you 👋")

    [reply] = await user.wait_messages(1)

    assert reply.text == "echo: hi <there> & you 👋"
    assert reply.html == "<b>echo</b>: hi &lt;there&gt; &amp; you 👋"
    assert reply.entities == [{"type": "bold", "offset": 0, "length": 4}]
    assert user.last() is reply


@pytest.mark.usefixtures("app")
async def test_button_press_answers_and_edits(api: SandboxBotAPI) -> None:
    user = started_user(api)
    [menu] = await user.wait_messages(1)

    user.press(menu.message_id, "yes")
    await api.wait_for(lambda: menu.edited, what="the menu edited")

    assert [a.text for a in user.answers] == ["got yes"]
    assert menu.text == "chose yes"
    assert menu.history == ["started: "]
    assert menu.buttons == []  # an edit without reply_markup drops the keyboard
    assert api.calls["answerCallbackQuery"] == 1
    with pytest.raises(ValueError, match="no button"):
        user.press(menu.message_id, "no")


@pytest.mark.usefixtures("app")
async def test_updates_are_handed_out_once_and_counted(api: SandboxBotAPI) -> None:
    user = api.user(1001, "Ann")
    user.send("one")
    user.send("two")

    await api.wait_fetched()
    await user.wait_messages(2)

    assert api.pending_update_count() == 0
    assert api.delivered_update_ids == [1, 2]
    assert [m.text for m in user.inbox] == ["echo: one", "echo: two"]
    assert {r.method for r in api.requests} >= {"getMe", "deleteWebhook", "getUpdates"}


@pytest.mark.usefixtures("app")
async def test_group_command_with_bot_username(api: SandboxBotAPI) -> None:
    group = api.group(-500, "Clinic staff")
    group.send(api.user(1001, "Ann"), "/start@aftercare_sandbox_bot x")

    [reply] = await group.wait_messages(1)

    assert reply.text == "started: x"


async def test_blocked_user_makes_sends_forbidden(api: SandboxBotAPI, app: App) -> None:
    user = started_user(api)
    await user.wait_messages(1)
    user.block()
    await api.wait_fetched()

    with pytest.raises(Forbidden, match="bot was blocked by the user"):
        await app.bot.send_message(user.chat_id, "reminder")

    user.unblock()
    await app.bot.send_message(user.chat_id, "reminder")
    assert user.last().text == "reminder"


# -- Bot API semantics, through a bare Bot ------------------------------------------------------


async def test_get_updates_long_poll_and_confirmation(api: SandboxBotAPI, bot: Bot) -> None:
    user = api.user(1001, "Ann")
    poll = asyncio.create_task(bot.get_updates(timeout=5))
    await api.wait_for(lambda: api.calls["getUpdates"] == 1)
    user.send("/help now")

    [update] = await asyncio.wait_for(poll, 1)

    assert update.message is not None
    assert update.message.text == "/help now"
    assert update.message.date == START
    assert update.message.entities[0].type == "bot_command"
    again = await bot.get_updates(offset=update.update_id)  # not confirmed yet
    assert [u.update_id for u in again] == [update.update_id]
    assert await bot.get_updates(offset=update.update_id + 1) == ()


async def test_other_update_kinds_parse_in_ptb(api: SandboxBotAPI, bot: Bot) -> None:
    user = started_user(api)
    user.edit(1, "/start again")
    user.block()
    api.channel_post(-100200, "news")

    start, edited, member, post = await bot.get_updates()

    assert start.message is not None
    assert start.message.message_id == 1
    assert edited.edited_message is not None
    assert edited.edited_message.text == "/start again"
    assert member.my_chat_member is not None
    assert member.my_chat_member.new_chat_member.status == "kicked"
    assert post.channel_post is not None
    assert post.channel_post.chat.type == "channel"


async def test_commands_are_stored_per_language(bot: Bot) -> None:
    await bot.set_my_commands([("start", "Begin")], language_code="en")

    assert [c.command for c in await bot.get_my_commands(language_code="en")] == ["start"]
    assert await bot.get_my_commands() == ()


async def test_chat_menu_buttons_take_the_bot_apis_shapes(api: SandboxBotAPI, bot: Bot) -> None:
    anna = api.user(1003, "Anna")
    app = MenuButtonWebApp("Open", WebAppInfo("https://clinic.example.test/dashboard/app"))

    assert await bot.set_chat_menu_button(chat_id=anna.chat_id, menu_button=app)
    assert await bot.set_chat_menu_button(menu_button=MenuButtonCommands())
    with pytest.raises(BadRequest, match=r"(?i)chat not found"):
        await bot.set_chat_menu_button(chat_id=999, menu_button=app)
    for bad, reason in (
        ({"type": "web_app", "text": "Open"}, 'Can\'t find field "web_app"'),
        ({"type": "link"}, "MenuButton has unsupported type"),
        ("[]", "MenuButton must be an Object"),
    ):
        with pytest.raises(BadRequest, match=f"(?i){reason}"):
            await bot.set_chat_menu_button(chat_id=anna.chat_id, api_kwargs={"menu_button": bad})
    assert api.menu_buttons == {
        anna.chat_id: {
            "type": "web_app",
            "text": "Open",
            "web_app": {"url": "https://clinic.example.test/dashboard/app"},
        },
        None: {"type": "commands"},
    }


async def test_send_photo_uploads_bytes(api: SandboxBotAPI, bot: Bot) -> None:
    user = started_user(api)
    data = png(120, 80)

    sent = await bot.send_photo(user.chat_id, data, caption="<b>QR</b>", parse_mode=ParseMode.HTML)

    assert (sent.photo[-1].width, sent.photo[-1].height) == (120, 80)
    assert sent.caption == "QR"
    assert user.last().photo_bytes == len(data)
    again = await bot.send_photo(user.chat_id, sent.photo[-1].file_id)
    assert again.photo[-1].file_id == sent.photo[-1].file_id


async def test_edit_errors_match_telegram(api: SandboxBotAPI, bot: Bot) -> None:
    user = started_user(api)
    sent = await bot.send_message(user.chat_id, "same")

    with pytest.raises(BadRequest, match=r"(?i)message is not modified"):
        await bot.edit_message_text("same", chat_id=user.chat_id, message_id=sent.message_id)
    with pytest.raises(BadRequest, match=r"(?i)message to edit not found"):
        await bot.edit_message_text("new", chat_id=user.chat_id, message_id=999)
    with pytest.raises(BadRequest, match=r"(?i)message can't be edited"):
        await bot.edit_message_text("new", chat_id=user.chat_id, message_id=1)  # the /start
    with pytest.raises(BadRequest, match=r"(?i)query is too old"):
        await bot.answer_callback_query("12345")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("<b>unclosed", 'find end tag corresponding to start tag "b"'),
        ("<div>x</div>", 'unsupported start tag "div" at byte offset 0'),
        ("a < b", 'unsupported start tag "" at byte offset 2'),
        ("<b>x</i>", 'unmatched end tag at byte offset 4, expected "</b>", found "</i>"'),
        ('<span class="x">x</span>', 'tag "span" must have class "tg-spoiler"'),
    ],
)
async def test_bad_html_is_a_bad_request(
    api: SandboxBotAPI, bot: Bot, text: str, reason: str
) -> None:
    user = started_user(api)

    with pytest.raises(BadRequest, match=r"(?i)can't parse entities") as error:
        await bot.send_message(user.chat_id, text, parse_mode=ParseMode.HTML)

    assert reason.lower() in str(error.value).lower()
    assert user.sent_count == 0


def test_html_entities_use_utf16_offsets() -> None:
    text, entities = parse_html('👋 <b>hi <i>you</i></b> &amp; <a href="https://x.org">go</a>')

    assert text == "👋 hi you & go"
    assert entities == [
        {"type": "bold", "offset": 3, "length": 6},
        {"type": "italic", "offset": 6, "length": 3},
        {"type": "text_link", "url": "https://x.org", "offset": 12, "length": 2},
    ]


async def test_text_length_limits(api: SandboxBotAPI, bot: Bot) -> None:
    user = started_user(api)

    await bot.send_message(user.chat_id, "x" * 4096)
    with pytest.raises(BadRequest, match=r"(?i)message is too long"):
        await bot.send_message(user.chat_id, "x" * 4097)
    with pytest.raises(BadRequest, match=r"(?i)message is too long"):
        await bot.send_message(user.chat_id, "<b>x</b>" + "👋" * 2048, parse_mode=ParseMode.HTML)
    with pytest.raises(BadRequest, match=r"(?i)message text is empty"):
        await bot.send_message(user.chat_id, "<b> </b>", parse_mode=ParseMode.HTML)


async def test_callback_data_over_64_bytes_is_rejected(api: SandboxBotAPI, bot: Bot) -> None:
    user = started_user(api)
    markup = InlineKeyboardMarkup([[InlineKeyboardButton("x", callback_data="é" * 33)]])

    with pytest.raises(BadRequest, match=r"(?i)button_data_invalid"):
        await bot.send_message(user.chat_id, "pick", reply_markup=markup)


async def test_unknown_and_unstarted_chats(api: SandboxBotAPI, bot: Bot) -> None:
    stranger = api.user(1002, "Never started")

    for chat_id in (999, stranger.chat_id):
        with pytest.raises(BadRequest, match=r"(?i)chat not found"):
            await bot.send_message(chat_id, "hello")
    api.group(-500, "Clinic staff").send(stranger, "hi all")
    with pytest.raises(Forbidden, match="can't initiate conversation"):
        await bot.send_message(stranger.chat_id, "hello")


async def test_wrong_token_and_unknown_method(api: SandboxBotAPI, bot: Bot) -> None:
    with pytest.raises(InvalidToken, match="rejected by the server"):
        async with Bot("123456:wrong", base_url=api.base_url):
            pass
    with pytest.raises(EndPointNotFound):
        await bot.do_api_request("noSuchMethod")


# -- fault injection ----------------------------------------------------------------------------


# PTB itself warns about the int `retry_after` when building the exception.
@pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")
async def test_fail_next_429_raises_retry_after_once(api: SandboxBotAPI, bot: Bot) -> None:
    user = started_user(api)
    api.fail_next("sendMessage", error_code=429, retry_after=7)

    with pytest.raises(RetryAfter, match="Retry in 7 seconds"):
        await bot.send_message(user.chat_id, "reminder")
    await bot.send_message(user.chat_id, "reminder")

    assert [(r.method, r.status) for r in api.requests if r.method == "sendMessage"] == [
        ("sendMessage", 429),
        ("sendMessage", 200),
    ]
    assert user.sent_count == 1


async def test_fail_next_counts_and_only_hits_send_methods(api: SandboxBotAPI, bot: Bot) -> None:
    user = started_user(api)
    api.fail_next(
        "sendMessage", count=2, error_code=400, description="Bad Request: chat not found"
    )

    for _ in range(2):
        with pytest.raises(BadRequest, match=r"(?i)chat not found"):
            await bot.send_message(user.chat_id, "x")
    await bot.get_updates()
    await bot.send_message(user.chat_id, "x")
    with pytest.raises(ValueError, match="faults apply to"):
        api.fail_next("getUpdates", error_code=500, description="Internal Server Error")


async def test_refused_connections_raise_network_error_then_recover(
    api: SandboxBotAPI, bot: Bot
) -> None:
    user = started_user(api)
    await bot.send_message(user.chat_id, "before")  # leaves a kept-alive connection behind

    await api.set_outage("refuse")
    with pytest.raises(NetworkError):
        await bot.send_message(user.chat_id, "during")
    await api.set_outage("none")
    await bot.send_message(user.chat_id, "after")

    assert [m.text for m in user.inbox] == ["before", "after"]


async def test_bad_gateway_raises_network_error_then_recovers(
    api: SandboxBotAPI, bot: Bot
) -> None:
    user = started_user(api)

    await api.set_outage("502")
    with pytest.raises(NetworkError, match="Bad Gateway"):
        await bot.get_updates()
    await api.set_outage("none")
    await bot.send_message(user.chat_id, "after")

    assert user.last().text == "after"


async def test_a_client_gone_in_the_middle_of_its_request_logs_no_error(
    api: SandboxBotAPI, caplog: pytest.LogCaptureFixture
) -> None:
    """A bot that drops a request while sending it (a poll or a send cancelled on its side)
    is not the server's error: Telegram's would log nothing in the bot's process, and the
    tests that count ERROR lines must not see one from the sandbox."""
    url = urlsplit(api.base_url)
    _, writer = await asyncio.open_connection(url.hostname, url.port)
    writer.write(
        f"POST {url.path}{TOKEN}/getUpdates HTTP/1.1\r\nHost: {url.hostname}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n"
        "offset=1".encode()
    )
    await writer.drain()
    await asyncio.sleep(0.1)  # the server is reading the rest of the body
    writer.transport.abort()  # as a cancelled aiohttp request leaves: the connection reset
    await asyncio.sleep(0.2)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
