"""A local stand-in for the Telegram Bot API, spoken to over real HTTP.

The offline demo and the tests run the real python-telegram-bot `Application` against this
server instead of mocking PTB: requests are encoded, sent and decoded exactly as in production,
and the answers copy Telegram's (object shapes, status codes, error descriptions), so a handler
that works here works against api.telegram.org. The patient's side (`SandboxUser`) produces the
updates a Telegram client would and shows what the patient would see. Every `date` comes from
the injected `Clock`, so a simulated clock drives the whole conversation.

Conventions: patient-side actions (`send`, `press`, `block`, ...) are synchronous, because all
they do is queue an update; everything that waits is `async` and takes a timeout, and waits on
an event rather than polling. Telegram features the product does not use (inline mode,
payments, webhooks delivery, Markdown parse modes, fetching photos by URL) are refused loudly
instead of being faked.
"""

from __future__ import annotations

import asyncio
import html
import json
import re
import time
from collections import Counter, deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import BytesIO
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import urlsplit

import msgspec
from aiohttp import web
from PIL import Image, UnidentifiedImageError

from scheduler.clock import Clock

JSON = dict[str, Any]
Button = tuple[str, str]
OutageMode = Literal["none", "refuse", "502"]

MAX_TEXT_LENGTH = 4096
MAX_CAPTION_LENGTH = 1024
MAX_CALLBACK_DATA_BYTES = 64
MAX_CALLBACK_ANSWER_LENGTH = 200
# Telegram's price of a paid broadcast message past the free rate.
STARS_PER_PAID_MESSAGE = Decimal("0.1")

# Faults imitate a flaky or rate-limited delivery path; polling is only hit by outages.
FAULTABLE_METHODS = frozenset(
    {"sendMessage", "sendPhoto", "editMessageText", "editMessageCaption", "editMessageReplyMarkup"}
)
# Update types Telegram sends only to bots that ask for them in `allowed_updates`.
_OPT_IN_UPDATES = frozenset({"chat_member", "message_reaction", "message_reaction_count"})
_CHAT_ACTIONS = frozenset(
    {
        "typing", "upload_photo", "record_video", "upload_video", "record_voice", "upload_voice",
        "upload_document", "choose_sticker", "find_location", "record_video_note",
        "upload_video_note",
    }
)  # fmt: skip
_NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup are "
    "exactly the same as a current content and reply markup of the message"
)
_QUERY_INVALID = (
    "Bad Request: query is too old and response timeout expired or query ID is invalid"
)
_NGINX_502 = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx/1.18.0</center>\r\n"
    "</body>\r\n</html>\r\n"
)


class ApiError(Exception):
    """An error answer of the Bot API; raised by method implementations and by `fail_next`."""

    def __init__(self, code: int, description: str, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.retry_after = retry_after

    def body(self) -> JSON:
        data: JSON = {"ok": False, "error_code": self.code, "description": self.description}
        if self.retry_after is not None:
            data["parameters"] = {"retry_after": self.retry_after}
        return data


class SentMessage(msgspec.Struct):
    """A bot message as the patient sees it now: edits change it in place, keeping history."""

    chat_id: int
    message_id: int
    date: datetime
    text: str  # plain text (the caption, for a photo)
    html: str | None  # the markup as sent, when parse_mode was HTML
    entities: list[JSON]
    inline_keyboard: list[list[JSON]]
    keyboard: list[list[str]] = msgspec.field(default_factory=list)  # a reply keyboard, if any
    photo: JSON | None = None  # the largest PhotoSize
    photo_bytes: int | None = None
    edit_date: datetime | None = None
    history: list[str] = msgspec.field(default_factory=list)  # earlier texts, oldest first

    @property
    def edited(self) -> bool:
        return self.edit_date is not None

    @property
    def buttons(self) -> list[list[Button]]:
        """Inline buttons as (label, callback_data or url)."""
        return [
            [(b["text"], str(b.get("callback_data", b.get("url", "")))) for b in row]
            for row in self.inline_keyboard
        ]


class CallbackAnswer(msgspec.Struct, frozen=True):
    """What the bot said in answerCallbackQuery (a toast, or an alert)."""

    query_id: str
    text: str | None
    show_alert: bool
    url: str | None


class ApiRequest(msgspec.Struct, frozen=True):
    """One Bot API call as received: params as sent (form values are strings), files as sizes."""

    method: str
    params: JSON
    status: int
    at: float = 0.0  # when it was answered, in real seconds (the limits' clock)


class _Signal:
    """Wakes every waiter on each change; waiters re-check their own condition."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, seconds: float) -> None:
        try:
            async with asyncio.timeout(seconds):
                await self._event.wait()
        except TimeoutError:
            pass


class _Params:
    """Request parameters; PTB sends non-string values JSON-encoded, a JSON body has them typed."""

    def __init__(self, values: JSON, files: dict[str, bytes]) -> None:
        self.values = values
        self.files = files

    def get_str(self, name: str) -> str | None:
        value = self.values.get(name)
        return None if value is None else str(value)

    def get_int(self, name: str) -> int | None:
        value = self.values.get(name)
        if value is None or isinstance(value, int):
            return value
        try:
            return int(str(value))
        except ValueError:
            raise ApiError(400, f"Bad Request: invalid {name} specified") from None

    def get_bool(self, name: str) -> bool:
        return self.values.get(name) in (True, "true", "True", "1", 1)

    def get_json(self, name: str) -> Any:
        value = self.values.get(name)
        if not isinstance(value, str):
            return value
        try:
            return json.loads(value)
        except ValueError:
            raise ApiError(400, f"Bad Request: can't parse {name} JSON object") from None


def _u16(text: str) -> int:
    """Length in UTF-16 code units: Telegram's unit for entity offsets and text limits."""
    return len(text.encode("utf-16-le")) // 2


_HTML_TAGS = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "a": "text_link",
    "code": "code",
    "pre": "pre",
    "tg-spoiler": "spoiler",
    "span": "spoiler",
    "blockquote": "blockquote",
}
_HTML_ENTITY = re.compile(r"&(?:#(\d{1,7})|#x([0-9a-fA-F]{1,6})|(lt|gt|amp|quot));")
_TAG_NAME = re.compile(r"<([^\s>]*)")
_ATTRIBUTE = re.compile(r"""([^\s=>]+)\s*(?:=\s*("[^"]*"?|'[^']*'?|[A-Za-z0-9.-]*))?""")
_BOT_COMMAND = re.compile(r"(?<![\w/@])/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{3,32})?")


def parse_html(source: str) -> tuple[str, list[JSON]]:
    """Plain text and MessageEntity list for Telegram's HTML parse mode, failing as Telegram's
    parser (tdlib `parse_html`) does: same accepted tags and the same error descriptions."""

    def fail(reason: str) -> ApiError:
        return ApiError(400, f"Bad Request: can't parse entities: {reason}")

    def at(pos: int) -> str:
        return f"byte offset {len(source[:pos].encode())}"

    out: list[str] = []
    length = 0
    entities: list[JSON] = []
    open_tags: list[tuple[str, int, JSON]] = []
    i, n = 0, len(source)
    while i < n:
        char = source[i]
        if char == "&" and (m := _HTML_ENTITY.match(source, i)):
            code, hex_code, name = m.groups()
            point = int(code, 10) if code else int(hex_code or "0", 16)
            if name or (0 < point <= 0x10FFFF and not 0xD800 <= point <= 0xDFFF):
                char = html.unescape(m.group()) if name else chr(point)
                out.append(char)
                length += _u16(char)
                i = m.end()
                continue
        if char != "<":
            out.append(char)
            length += _u16(char)
            i += 1
            continue
        begin = i
        if source.startswith("</", i):
            if not open_tags:
                raise fail(f"Unexpected end tag at {at(begin)}")
            end = source.find(">", i)
            if end < 0:
                raise fail(f"Unclosed end tag at {at(begin)}")
            name = source[i + 2 : end].strip().lower()
            tag, start, extra = open_tags.pop()
            if name and name != tag:
                raise fail(
                    f'Unmatched end tag at {at(begin)}, expected "</{tag}>", found "</{name}>"'
                )
            if length > start and extra.get("type") is not None:
                entities.append({"offset": start, "length": length - start, **extra})
            i = end + 1
            continue
        tag_match = _TAG_NAME.match(source, i)
        assert tag_match is not None  # the pattern matches any "<"
        tag, i = tag_match.group(1).lower(), tag_match.end()
        if i >= n:
            raise fail(f"Unclosed start tag at {at(begin)}")
        if tag not in _HTML_TAGS:
            raise fail(f'Unsupported start tag "{tag}" at {at(begin)}')
        attributes: dict[str, str] = {}
        while True:
            while i < n and source[i].isspace():
                i += 1
            if i >= n:
                raise fail(f"Unclosed start tag at {at(begin)}")
            if source[i] == ">":
                i += 1
                break
            attr = _ATTRIBUTE.match(source, i)
            if attr is None:
                raise fail(f'Empty attribute name in the tag "{tag}" at {at(begin)}')
            attr_name, value = attr.group(1).lower(), attr.group(2)
            if value is None and not (tag == "blockquote" and attr_name == "expandable"):
                raise fail(
                    f'Expected equal sign in declaration of an attribute of the tag "{tag}" '
                    f"at {at(begin)}"
                )
            i = attr.end()
            if value and value[0] in "\"'":
                value = html.unescape(value[1:].removesuffix(value[0]))
            else:  # an unquoted name token, case-insensitive
                value = (value or "").lower()
            attributes[attr_name] = value
        entity: JSON = {"type": _HTML_TAGS[tag]}
        if tag == "span" and attributes.get("class") != "tg-spoiler":
            raise fail(f'Tag "span" must have class "tg-spoiler" at {at(begin)}')
        if tag == "a":
            # Telegram drops a link it cannot use, keeping the text.
            href = attributes.get("href", "")
            entity = {"type": "text_link", "url": href} if href else {"type": None}
        if tag == "blockquote" and "expandable" in attributes:
            entity = {"type": "expandable_blockquote"}
        language = attributes.get("class", "")
        if tag == "code" and open_tags and open_tags[-1][0] == "pre" and language:
            # <pre><code class="language-x"> is one pre entity with a language.
            open_tags[-1][2]["language"] = language.removeprefix("language-")
            entity = {"type": None}
        open_tags.append((tag, length, entity))
    if open_tags:
        raise fail(f'Can\'t find end tag corresponding to start tag "{open_tags[-1][0]}"')
    entities.sort(key=lambda e: (e["offset"], -e["length"]))
    return "".join(out), entities


def _markup(markup: Any) -> tuple[list[list[JSON]], list[list[str]]]:
    """Validated (inline keyboard, reply keyboard labels) of a reply_markup parameter."""
    if markup is None:
        return [], []
    if not isinstance(markup, dict):
        raise ApiError(400, "Bad Request: can't parse reply keyboard markup JSON object")
    if "inline_keyboard" in markup:
        rows = markup["inline_keyboard"]
        if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
            raise ApiError(400, "Bad Request: can't parse inline keyboard button")
        for row in rows:
            for button in row:
                if not isinstance(button, dict) or not button.get("text"):
                    raise ApiError(400, "Bad Request: can't parse inline keyboard button")
                if len(set(button) - {"text", "style"}) != 1:
                    raise ApiError(
                        400, "Bad Request: text buttons are unallowed in the inline keyboard"
                    )
                data = button.get("callback_data")
                if data is not None and not (
                    1 <= len(str(data).encode()) <= MAX_CALLBACK_DATA_BYTES
                ):
                    raise ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
                url = button.get("url")
                if url is not None and not re.fullmatch(r"(https?|tg)://\S+", str(url)):
                    raise ApiError(400, "Bad Request: BUTTON_URL_INVALID")
        return [row for row in rows if row], []
    if "keyboard" in markup:
        return [], [
            [b if isinstance(b, str) else str(b.get("text", "")) for b in row]
            for row in markup["keyboard"]
        ]
    return [], []  # ReplyKeyboardRemove, ForceReply: nothing the patient sees on the message


def _typed_text(text: str) -> JSON:
    """`text` and the entities a Telegram client attaches to what a person types (commands)."""
    commands = [
        {"type": "bot_command", "offset": _u16(text[: m.start()]), "length": _u16(m.group())}
        for m in _BOT_COMMAND.finditer(text)
    ]
    return {"text": text, "entities": commands} if commands else {"text": text}


def _port(url: str) -> int | None:
    """An https URL's port (443 when none is given; None when it is not a number)."""
    try:
        return urlsplit(url).port or 443
    except ValueError:
        return None


def _image_size(data: bytes) -> tuple[int, int]:
    if not data:
        raise ApiError(400, "Bad Request: file must be non-empty")
    try:
        with Image.open(BytesIO(data)) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError):
        raise ApiError(400, "Bad Request: IMAGE_PROCESS_FAILED") from None
    if width + height > 10_000 or max(width, height) > 20 * min(width, height):
        raise ApiError(400, "Bad Request: PHOTO_INVALID_DIMENSIONS")
    return width, height


class SandboxChat:
    """One chat as the Telegram client shows it: the bot's messages as they look now."""

    def __init__(self, api: SandboxBotAPI, info: JSON) -> None:
        self._api = api
        self.info = info
        self.chat_id: int = info["id"]
        # The bot may write to groups and channels it is in, but to a person only after they
        # wrote first.
        self.started = info["type"] != "private"
        self.blocked = False
        self.actions: list[str] = []  # sendChatAction
        self.deleted: list[int] = []  # ids the bot deleted
        self.sent_count = 0  # bot messages ever sent here, deleted ones included
        self._bot_messages: dict[int, SentMessage] = {}
        self._user_messages: dict[int, JSON] = {}
        self._last_id = 0

    @property
    def inbox(self) -> list[SentMessage]:
        """The bot's messages still in the chat, oldest first."""
        return list(self._bot_messages.values())

    def messages(self) -> list[SentMessage]:
        return self.inbox

    def last(self) -> SentMessage:
        if not self._bot_messages:
            raise LookupError(f"the bot has sent nothing to chat {self.chat_id}")
        return next(reversed(self._bot_messages.values()))

    def message(self, message_id: int) -> SentMessage:
        try:
            return self._bot_messages[message_id]
        except KeyError:
            raise LookupError(f"no bot message {message_id} in chat {self.chat_id}") from None

    async def wait_messages(self, n: int, timeout: float = 5.0) -> list[SentMessage]:  # noqa: ASYNC109
        """The inbox, once the bot has sent at least `n` messages here (deleted ones count)."""
        await self._api.wait_for(
            lambda: self.sent_count >= n,
            timeout=timeout,
            what=lambda: f"{n} bot message(s) in chat {self.chat_id}, got {self.sent_count}",
        )
        return self.inbox

    def _next_id(self) -> int:
        self._last_id += 1
        return self._last_id

    def _incoming(self, sender: JSON | None, text: str, *, content: JSON | None = None) -> JSON:
        """A message typed by a person (or posted in a channel) into this chat, remembered;
        `content` in place of the text (a photo and its caption)."""
        message: JSON = {
            "message_id": self._next_id(),
            "date": self._api._timestamp(),
            "chat": self.info,
        }
        if sender is None:
            message["sender_chat"] = self.info
        else:
            message["from"] = sender
        message.update(_typed_text(text) if content is None else content)
        self._user_messages[message["message_id"]] = message
        return message


class SandboxUser(SandboxChat):
    """A patient in a private chat with the bot (chat id == user id, as in Telegram)."""

    def __init__(self, api: SandboxBotAPI, user: JSON) -> None:
        info = {"id": user["id"], "type": "private", "first_name": user["first_name"]}
        info.update({k: user[k] for k in ("last_name", "username") if k in user})
        super().__init__(api, info)
        self.user = user
        self.answers: list[CallbackAnswer] = []
        # Seen by the bot elsewhere (a group): then writing before /start is a 403, not a 400.
        self.seen = False

    @property
    def user_id(self) -> int:
        return self.chat_id

    def send(self, text: str) -> int:
        """Type a message (/commands get bot_command entities, as clients add); its message_id."""
        return self._post(text)

    def _post(self, text: str, content: JSON | None = None) -> int:
        """The person sends `text` (or `content` instead); its message_id."""
        if self.blocked:
            raise RuntimeError("the user has blocked the bot; unblock() first")
        self.started = True
        message = self._incoming(self.user, text, content=content)
        self._api.enqueue("message", message)
        return int(message["message_id"])

    def send_photo(self, caption: str | None = None) -> int:
        """Send a photo, with a caption when given, as the bot receives one: the sizes
        Telegram made of it, the caption's commands as `caption_entities`; its message_id."""
        number = f"{self.chat_id}-{len(self._user_messages) + 1}"
        sizes = [
            {
                "file_id": f"sandbox-user-photo-{number}-{side}",
                "file_unique_id": f"p{number}-{side}",
                "width": side,
                "height": side * 3 // 4,
                "file_size": side * side // 10,
            }
            for side in (90, 320, 800)
        ]
        content: JSON = {"photo": sizes}
        if caption:
            typed = _typed_text(caption)
            content["caption"] = typed["text"]
            if "entities" in typed:
                content["caption_entities"] = typed["entities"]
        return self._post("", content)

    def start(self, payload: str | None = None) -> int:
        """Open the bot, through a deep link `t.me/<bot>?start=<payload>` when given."""
        return self.send("/start" if payload is None else f"/start {payload}")

    def press(self, message_id: int, data: str) -> str:
        """Press the inline button carrying `data` on a bot message; the callback query id."""
        message = self.message(message_id)
        available = [
            d for row in message.inline_keyboard for b in row if (d := b.get("callback_data"))
        ]
        if data not in available:
            raise ValueError(f"message {message_id} has no button {data!r}; it has {available}")
        query_id = self._api._new_query(self)
        self._api.enqueue(
            "callback_query",
            {
                "id": query_id,
                "from": self.user,
                "message": self._api.message_json(message),
                "chat_instance": str(abs(self.chat_id) * 1_000_003 + 17),
                "data": data,
            },
        )
        return query_id

    def edit(self, message_id: int, text: str) -> None:
        """Edit one of the patient's own messages."""
        if message_id not in self._user_messages:
            raise ValueError(f"the user sent no message {message_id}")
        message = {**self._user_messages[message_id], "edit_date": self._api._timestamp()}
        message.pop("entities", None)
        message.update(_typed_text(text))
        self._user_messages[message_id] = message
        self._api.enqueue("edited_message", message)

    def block(self) -> None:
        """Block the bot: a my_chat_member update, and sends to this chat get 403 until
        `unblock`."""
        self._member_change(blocked=True)

    def unblock(self) -> None:
        self._member_change(blocked=False)

    def _member_change(self, *, blocked: bool) -> None:
        if self.blocked == blocked:
            raise RuntimeError(f"the user has {'already' if blocked else 'not'} blocked the bot")
        self.blocked = blocked
        member: JSON = {"status": "member", "user": self._api.bot_user}
        kicked: JSON = {"status": "kicked", "user": self._api.bot_user, "until_date": 0}
        self._api.enqueue(
            "my_chat_member",
            {
                "chat": self.info,
                "from": self.user,
                "date": self._api._timestamp(),
                "old_chat_member": member if blocked else kicked,
                "new_chat_member": kicked if blocked else member,
            },
        )


class SandboxGroup(SandboxChat):
    """A group the bot is a member of, for checking that group traffic is handled (or ignored)."""

    def send(self, user: SandboxUser, text: str) -> int:
        """`user` writes `text` into the group; the message_id."""
        user.seen = True
        message = self._incoming(user.user, text)
        self._api.enqueue("message", message)
        return int(message["message_id"])


class SandboxBotAPI:
    """The Bot API over HTTP on localhost, for one bot token, with a scriptable other side.

    Faults: `fail_next` makes the next sends fail with a given error (429 carries retry_after),
    `set_outage` imitates the network: "refuse" closes the socket, "502" answers like a proxy
    whose upstream is down. Observability for tests: `calls`, `requests`, `delivered_update_ids`,
    `pending_update_count`, `wait_fetched` and `wait_for`.

    Broadcast limits, when `free_per_second` is given (benchmarks, rate tests): a message
    without `allow_paid_broadcast` is answered 429 past `free_per_second` such messages in
    any second; one with it, past `paid_per_second` messages of any kind, and it is counted
    as paid (`paid_messages`, `stars`) when `free_per_second` messages already went in the
    second before it. These windows are real seconds, whatever the clock: Telegram's limits
    are about real time. Without `free_per_second` nothing is limited (the demo, the tests
    on a simulated clock).
    """

    def __init__(
        self,
        token: str,
        *,
        clock: Clock,
        host: str = "127.0.0.1",
        port: int = 0,
        bot_username: str = "aftercare_sandbox_bot",
        free_per_second: int | None = None,
        paid_per_second: int = 1000,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._token = token
        self.clock = clock
        self._host = host
        self._port = port
        prefix = token.partition(":")[0]
        self.bot_user: JSON = {
            "id": int(prefix) if prefix.isdigit() else 100_000,
            "is_bot": True,
            "first_name": "Aftercare",
            "username": bot_username,
        }
        self.calls: Counter[str] = Counter()
        self.requests: list[ApiRequest] = []
        self.delivered_update_ids: list[int] = []
        self.commands: dict[tuple[str, str], list[JSON]] = {}  # (scope JSON, language) -> list
        self.webhook_url = ""
        # setChatMenuButton: chat id (None: the bot's default) -> the MenuButton as sent.
        self.menu_buttons: dict[int | None, JSON] = {}
        self.free_per_second = free_per_second
        self._monotonic = monotonic
        self.paid_per_second = paid_per_second
        self._sent_free: deque[float] = deque()  # sends without the paid flag, last second
        self._sent_all: deque[float] = deque()  # every send, last second
        self.too_many = 0  # 429s answered for the broadcast limits
        self.paid_messages = 0
        self._updates: list[JSON] = []
        self._next_update_id = 1
        self._fetched_upto = 0
        self._allowed: frozenset[str] | None = None  # None: all but the opt-in types
        self._poll_generation = 0
        self._chats: dict[int, SandboxChat] = {}
        self._queries: dict[str, SandboxUser] = {}  # unanswered callback queries
        self._query_seq = 0
        self._files: dict[str, JSON] = {}  # file_id -> PhotoSize
        self._faults: dict[str, list[tuple[int, ApiError]]] = {}
        self._delays: dict[str, list[float]] = {}  # seconds before answering (timeouts)
        self._outage: OutageMode = "none"
        self._closing = False
        self._changed = _Signal()
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._methods = {
            name.lower(): (name, fn)
            for name, fn in {
                "getMe": self._get_me,
                "getUpdates": self._get_updates,
                "setWebhook": self._set_webhook,
                "deleteWebhook": self._delete_webhook,
                "getWebhookInfo": self._get_webhook_info,
                "setMyCommands": self._set_my_commands,
                "getMyCommands": self._get_my_commands,
                "deleteMyCommands": self._delete_my_commands,
                "setChatMenuButton": self._set_chat_menu_button,
                "sendMessage": self._send_message,
                "sendPhoto": self._send_photo,
                "editMessageText": self._edit_message_text,
                "editMessageCaption": self._edit_message_caption,
                "editMessageReplyMarkup": self._edit_message_reply_markup,
                "deleteMessage": self._delete_message,
                "answerCallbackQuery": self._answer_callback_query,
                "sendChatAction": self._send_chat_action,
            }.items()
        }

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """For `ApplicationBuilder().base_url(...)`; PTB appends `{token}/{method}`."""
        return f"http://{self._host}:{self._port}/bot"

    @property
    def base_file_url(self) -> str:
        return f"http://{self._host}:{self._port}/file/bot"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        # No access log: the request path carries the token.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await self._listen()

    async def stop(self) -> None:
        self._closing = True
        self._changed.fire()  # long polls answer at once
        if self._runner is not None:
            await self._runner.cleanup()
        self._runner = self._site = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _listen(self) -> None:
        assert self._runner is not None, "start() first"
        self._site = web.TCPSite(self._runner, self._host, self._port)
        await self._site.start()
        self._port = int(self._runner.addresses[0][1])  # the real port when asked for port 0

    # -- faults --------------------------------------------------------------------------------

    def fail_next(
        self,
        method: str,
        *,
        count: int = 1,
        error_code: int,
        description: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        """Answer the next `count` calls of a send-type `method` with this error (queued after
        faults already pending). A 429 needs `retry_after` and gets Telegram's description."""
        if method not in FAULTABLE_METHODS:
            raise ValueError(f"faults apply to {sorted(FAULTABLE_METHODS)}, not {method}")
        if error_code == 429:
            if retry_after is None:
                raise ValueError("a 429 needs retry_after")
            description = description or f"Too Many Requests: retry after {retry_after}"
        elif description is None:
            raise ValueError("describe the error, e.g. 'Bad Request: chat not found'")
        error = ApiError(error_code, description, retry_after)
        self._faults.setdefault(method, []).append((count, error))

    def delay_next(self, method: str, seconds: float, *, count: int = 1) -> None:
        """Answer the next `count` calls of a send-type `method` only after `seconds` (real
        time): a client with a shorter timeout gives up, though the call still succeeds, as
        on Telegram when an answer is lost on the way back."""
        if method not in FAULTABLE_METHODS:
            raise ValueError(f"delays apply to {sorted(FAULTABLE_METHODS)}, not {method}")
        self._delays.setdefault(method, []).extend([seconds] * count)

    async def set_outage(self, mode: OutageMode) -> None:
        """Imitate the network. "refuse": stop listening and drop open connections; "502":
        answer every request like nginx with a dead upstream; "none": serve again (same port)."""
        if mode == self._outage:
            return
        if self._outage == "refuse":
            await self._listen()
        self._outage = mode
        if mode == "refuse" and self._site is not None and self._runner is not None:
            await self._site.stop()
            self._site = None
            if self._runner.server is not None:
                for connection in self._runner.server.connections:
                    connection.force_close()
        self._changed.fire()

    def _take_fault(self, method: str) -> ApiError | None:
        queue = self._faults.get(method)
        if not queue:
            return None
        count, error = queue[0]
        if count > 1:
            queue[0] = (count - 1, error)
        else:
            queue.pop(0)
        return error

    @property
    def stars(self) -> Decimal:
        """What the paid messages so far would cost the bot's owner."""
        return STARS_PER_PAID_MESSAGE * self.paid_messages

    def _pace(self, params: _Params) -> None:
        """Accept one more message under the broadcast limits, or answer 429 (see the class)."""
        if self.free_per_second is None:
            return
        now = self._monotonic()
        for window in (self._sent_free, self._sent_all):
            while window and window[0] <= now - 1.0:
                window.popleft()
        paid = params.get_bool("allow_paid_broadcast")
        if len(self._sent_all) >= self.paid_per_second or (
            not paid and len(self._sent_free) >= self.free_per_second
        ):
            self.too_many += 1
            raise ApiError(429, "Too Many Requests: retry after 1", retry_after=1)
        if not paid:
            self._sent_free.append(now)
        elif len(self._sent_all) >= self.free_per_second:
            self.paid_messages += 1
        self._sent_all.append(now)

    # -- the patient's side --------------------------------------------------------------------

    def user(
        self,
        user_id: int,
        first_name: str = "Pat",
        *,
        language_code: str | None = "en",
        username: str | None = None,
        last_name: str | None = None,
    ) -> SandboxUser:
        """The patient with this id (created on first use; the same object afterwards)."""
        existing = self._chats.get(user_id)
        if isinstance(existing, SandboxUser):
            return existing
        if existing is not None or user_id <= 0:
            raise ValueError(f"{user_id} is not a user id")
        user: JSON = {"id": user_id, "is_bot": False, "first_name": first_name}
        optional = {"last_name": last_name, "username": username, "language_code": language_code}
        user.update({k: v for k, v in optional.items() if v is not None})
        chat = SandboxUser(self, user)
        self._chats[user_id] = chat
        return chat

    def group(self, chat_id: int, title: str, *, supergroup: bool = False) -> SandboxGroup:
        """A group (negative id) that has the bot as a member."""
        if chat_id >= 0:
            raise ValueError("group chat ids are negative")
        info = {"id": chat_id, "type": "supergroup" if supergroup else "group", "title": title}
        chat = self._chats.setdefault(chat_id, SandboxGroup(self, info))
        assert isinstance(chat, SandboxGroup)
        return chat

    def channel_post(self, chat_id: int, text: str, *, title: str = "Channel") -> int:
        """A post in a channel where the bot is an admin; the message_id."""
        info = {"id": chat_id, "type": "channel", "title": title}
        message = self._chats.setdefault(chat_id, SandboxChat(self, info))._incoming(None, text)
        self.enqueue("channel_post", message)
        return int(message["message_id"])

    def chat(self, chat_id: int) -> SandboxChat:
        return self._chats[chat_id]

    def raw_update(self, update: JSON) -> int:
        """Queue any update as given (an update_id is assigned when missing); its update_id."""
        update = dict(update)
        update_id = int(update.setdefault("update_id", self._next_update_id))
        if len(update) != 2 or update_id < self._next_update_id:
            raise ValueError("an update has one fresh update_id and one kind of content")
        self._next_update_id = max(self._next_update_id, update_id + 1)
        self._updates.append(update)
        self._changed.fire()
        return update_id

    def enqueue(self, kind: str, payload: JSON) -> int:
        return self.raw_update({"update_id": self._next_update_id, kind: payload})

    def _new_query(self, user: SandboxUser) -> str:
        self._query_seq += 1
        query_id = str(4_000_000_000_000_000 + self._query_seq)
        self._queries[query_id] = user
        return query_id

    def _timestamp(self) -> int:
        return int(self.clock.now().timestamp())

    def message_json(self, message: SentMessage) -> JSON:
        """The Bot API Message object of a bot message, as getUpdates and send* return it."""
        data: JSON = {
            "message_id": message.message_id,
            "from": self.bot_user,
            "chat": self._chats[message.chat_id].info,
            "date": int(message.date.timestamp()),
        }
        text_key, entities_key = (
            ("caption", "caption_entities") if message.photo else ("text", "entities")
        )
        if message.photo is not None:
            data["photo"] = [message.photo]
        if message.text or not message.photo:
            data[text_key] = message.text
        if message.entities:
            data[entities_key] = message.entities
        if message.inline_keyboard:
            data["reply_markup"] = {"inline_keyboard": message.inline_keyboard}
        if message.edit_date is not None:
            data["edit_date"] = int(message.edit_date.timestamp())
        return data

    # -- synchronisation -----------------------------------------------------------------------

    def pending_update_count(self) -> int:
        """Queued updates that no getUpdates has handed out yet."""
        return sum(1 for u in self._updates if u["update_id"] > self._fetched_upto)

    async def wait_fetched(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Until every queued update has been handed out by getUpdates."""
        await self.wait_for(
            lambda: self.pending_update_count() == 0,
            timeout=timeout,
            what=lambda: f"all updates fetched, {self.pending_update_count()} still pending",
        )

    async def wait_for(
        self,
        condition: Callable[[], bool],
        *,
        timeout: float = 5.0,  # noqa: ASYNC109 (the error names what was awaited)
        what: Callable[[], str] | str = "the condition",
    ) -> None:
        """Until `condition()` holds, re-checked after every request and every queued update."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not condition():
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise TimeoutError(f"waited {timeout}s for {what() if callable(what) else what}")
            await self._changed.wait(remaining)

    # -- HTTP ----------------------------------------------------------------------------------

    async def _not_found(self, _request: web.Request) -> web.StreamResponse:
        if self._outage == "502":
            return self._bad_gateway()
        return web.json_response(ApiError(404, "Not Found").body(), status=404)

    @staticmethod
    def _bad_gateway() -> web.Response:
        return web.Response(status=502, text=_NGINX_502, content_type="text/html")

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if self._outage == "502":
            return self._bad_gateway()
        if request.match_info["token"] != self._token:
            return web.json_response(ApiError(401, "Unauthorized").body(), status=401)
        name = request.match_info["method"]
        canonical, method = self._methods.get(name.lower(), (name, None))
        self.calls[canonical] += 1
        params = _Params({}, {})
        try:
            params = await self._read_params(request)
            if method is None:
                raise ApiError(404, "Not Found")
            fault = self._take_fault(canonical)
            if fault is not None:
                raise fault
            if self._delays.get(canonical):
                await asyncio.sleep(self._delays[canonical].pop(0))
            body: JSON = {"ok": True, "result": await method(params)}
            status = 200
        except ApiError as exc:
            body, status = exc.body(), exc.code
        except ConnectionResetError:
            # The bot dropped the request while sending it (a poll or a send cancelled on
            # its side): nobody to answer, and nothing Telegram's server would log in the
            # bot's process. aiohttp would log it as the handler's error.
            return web.Response(status=400)
        broken = self._outage != "none"  # the network died while a long poll was waiting
        logged = {**params.values, **{k: f"<{len(v)} bytes>" for k, v in params.files.items()}}
        answered = ApiRequest(canonical, logged, 502 if broken else status, self._monotonic())
        self.requests.append(answered)
        self._changed.fire()
        return self._bad_gateway() if broken else web.json_response(body, status=status)

    @staticmethod
    async def _read_params(request: web.Request) -> _Params:
        values: JSON = dict(request.query)
        files: dict[str, bytes] = {}
        if request.content_type == "application/json":
            try:
                body = await request.json() if request.can_read_body else {}
            except ValueError:
                raise ApiError(400, "Bad Request: can't parse JSON encoded request") from None
            if isinstance(body, dict):
                values.update(body)
        elif request.can_read_body:
            for key, value in (await request.post()).items():
                if isinstance(value, web.FileField):
                    files[key] = value.file.read()
                elif isinstance(value, bytes | bytearray):
                    values[key] = value.decode()
                else:
                    values[key] = value
        return _Params(values, files)

    # -- methods -------------------------------------------------------------------------------

    async def _get_me(self, _params: _Params) -> JSON:
        return {
            **self.bot_user,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    async def _get_updates(self, params: _Params) -> list[JSON]:
        if self.webhook_url:
            raise ApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; use "
                "deleteWebhook to delete the webhook first",
            )
        offset = params.get_int("offset") or 0
        limit = min(max(params.get_int("limit") or 100, 1), 100)
        timeout = max(params.get_int("timeout") or 0, 0)
        allowed = params.get_json("allowed_updates")
        if allowed is not None:
            self._allowed = frozenset(allowed) if allowed else None
        # Confirming: everything below `offset` is forgotten; a negative offset keeps the tail.
        if offset < 0:
            self._updates = self._updates[offset:]
        elif offset:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
        self._poll_generation += 1
        generation = self._poll_generation
        self._changed.fire()  # an older long poll ends with a conflict, as on Telegram
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if generation != self._poll_generation:
                raise ApiError(
                    409,
                    "Conflict: terminated by other getUpdates request; make sure that only "
                    "one bot instance is running",
                )
            if self.webhook_url:
                raise ApiError(409, "Conflict: terminated by setWebhook request")
            if self._closing or self._outage != "none":
                return []
            batch = self._take_updates(limit)
            remaining = deadline - loop.time()
            if batch or remaining <= 0:
                return batch
            await self._changed.wait(remaining)

    def _take_updates(self, limit: int) -> list[JSON]:
        def wanted(update: JSON) -> bool:
            kind = next(k for k in update if k != "update_id")
            return (
                kind in self._allowed if self._allowed is not None else kind not in _OPT_IN_UPDATES
            )

        # Telegram never produces updates of types the bot did not ask for.
        self._updates = [u for u in self._updates if wanted(u)]
        batch = self._updates[:limit]
        for update in batch:
            if update["update_id"] > self._fetched_upto:
                self._fetched_upto = update["update_id"]
                self.delivered_update_ids.append(update["update_id"])
        return batch

    async def _set_webhook(self, params: _Params) -> bool:
        url = params.get_str("url") or ""
        if url and not url.startswith("https://"):
            raise ApiError(
                400, "Bad Request: bad webhook: An HTTPS URL must be provided for webhook"
            )
        if url and _port(url) not in (80, 88, 443, 8443):
            raise ApiError(
                400,
                "Bad Request: bad webhook: Webhook can be set up only on ports 80, 88, 443 or "
                "8443",
            )
        self.webhook_url = url
        self._changed.fire()  # a long poll waiting now ends with a conflict, as on Telegram
        return True

    async def _delete_webhook(self, params: _Params) -> bool:
        self.webhook_url = ""
        if params.get_bool("drop_pending_updates"):
            self._updates.clear()
        return True

    async def _get_webhook_info(self, _params: _Params) -> JSON:
        return {
            "url": self.webhook_url,
            "has_custom_certificate": False,
            "pending_update_count": len(self._updates),
        }

    @staticmethod
    def _commands_key(params: _Params) -> tuple[str, str]:
        scope = params.get_json("scope") or {"type": "default"}
        return json.dumps(scope, sort_keys=True), params.get_str("language_code") or ""

    async def _set_my_commands(self, params: _Params) -> bool:
        commands = params.get_json("commands")
        if not isinstance(commands, list) or len(commands) > 100:
            raise ApiError(400, "Bad Request: can't parse commands JSON object")
        for command in commands:
            if not re.fullmatch(r"[a-z0-9_]{1,32}", str(command.get("command", ""))):
                raise ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
            if not 1 <= len(str(command.get("description", ""))) <= 256:
                raise ApiError(400, "Bad Request: BOT_COMMAND_DESCRIPTION_INVALID")
        self.commands[self._commands_key(params)] = [
            {"command": c["command"], "description": c["description"]} for c in commands
        ]
        return True

    async def _get_my_commands(self, params: _Params) -> list[JSON]:
        return self.commands.get(self._commands_key(params), [])

    async def _delete_my_commands(self, params: _Params) -> bool:
        self.commands.pop(self._commands_key(params), None)
        return True

    async def _set_chat_menu_button(self, params: _Params) -> bool:
        """A private chat's menu button (the bot's default without chat_id), checked as the
        Bot API server checks it: an object of a known type, a web_app one with its text and
        its web_app's url. (Telegram also refuses a Mini App URL it cannot open; that check,
        and its wording, are not imitated here.)"""
        chat_id = params.get_int("chat_id")
        if chat_id is not None and chat_id not in self._chats:
            raise ApiError(400, "Bad Request: chat not found")
        button = params.get_json("menu_button")
        if button is None:
            button = {"type": "default"}
        if not isinstance(button, dict):
            raise ApiError(
                400, "Bad Request: can't parse menu button: MenuButton must be an Object"
            )
        kind = button.get("type")
        if kind == "web_app":
            web_app = button.get("web_app")
            for field, value in (("text", button.get("text")), ("web_app", web_app)):
                if value is None:
                    raise ApiError(
                        400, f"Bad Request: can't parse menu button: Can't find field \"{field}\""
                    )
            if not isinstance(web_app, dict) or not isinstance(web_app.get("url"), str):
                raise ApiError(
                    400, "Bad Request: can't parse menu button: Can't find field \"url\""
                )
            button = {
                "type": kind,
                "text": str(button["text"]),
                "web_app": {"url": web_app["url"]},
            }
        elif kind in ("commands", "default"):
            button = {"type": kind}
        else:
            raise ApiError(
                400, "Bad Request: can't parse menu button: MenuButton has unsupported type"
            )
        self.menu_buttons[chat_id] = button
        return True

    def _chat(self, params: _Params, *, writing: bool) -> SandboxChat:
        raw = params.get_str("chat_id")
        if not raw:
            raise ApiError(400, "Bad Request: chat_id is empty")
        try:
            chat = self._chats.get(int(raw))
        except ValueError:  # an @username: only channels have one here, and none do
            chat = None
        if chat is None:
            raise ApiError(400, "Bad Request: chat not found")
        if writing and chat.blocked:
            raise ApiError(403, "Forbidden: bot was blocked by the user")
        if writing and not chat.started:
            if isinstance(chat, SandboxUser) and chat.seen:
                raise ApiError(403, "Forbidden: bot can't initiate conversation with a user")
            raise ApiError(400, "Bad Request: chat not found")
        return chat

    @staticmethod
    def _formatted(
        params: _Params, name: str, entities_name: str
    ) -> tuple[str, str | None, list[JSON]]:
        """(plain text, raw HTML or None, entities) of a text or caption parameter."""
        raw = params.get_str(name) or ""
        mode = (params.get_str("parse_mode") or "").lower()
        if mode == "html":
            text, entities = parse_html(raw)
            return text, raw, entities
        if mode in ("markdown", "markdownv2"):
            raise ApiError(400, f"Bad Request: the sandbox does not implement parse_mode {mode}")
        if mode:
            raise ApiError(400, "Bad Request: unsupported parse_mode")
        return raw, None, list(params.get_json(entities_name) or [])

    def _message_text(self, params: _Params) -> tuple[str, str | None, list[JSON]]:
        text, source, entities = self._formatted(params, "text", "entities")
        if not text.strip():
            raise ApiError(400, "Bad Request: message text is empty")
        if _u16(text) > MAX_TEXT_LENGTH:
            raise ApiError(400, "Bad Request: message is too long")
        return text, source, entities

    def _caption(self, params: _Params) -> tuple[str, str | None, list[JSON]]:
        caption, source, entities = self._formatted(params, "caption", "caption_entities")
        if _u16(caption) > MAX_CAPTION_LENGTH:
            raise ApiError(400, "Bad Request: message caption is too long")
        return caption, source, entities

    def _now(self) -> datetime:
        return self.clock.now().replace(microsecond=0)

    def _deliver(self, chat: SandboxChat, message: SentMessage) -> JSON:
        chat._bot_messages[message.message_id] = message
        chat.sent_count += 1
        return self.message_json(message)

    async def _send_message(self, params: _Params) -> JSON:
        chat = self._chat(params, writing=True)
        text, source, entities = self._message_text(params)
        inline, keyboard = _markup(params.get_json("reply_markup"))
        message = SentMessage(
            chat.chat_id, chat._next_id(), self._now(), text, source, entities, inline, keyboard
        )
        self._pace(params)
        return self._deliver(chat, message)

    async def _send_photo(self, params: _Params) -> JSON:
        chat = self._chat(params, writing=True)
        caption, source, entities = self._caption(params)
        inline, keyboard = _markup(params.get_json("reply_markup"))
        if "photo" in params.files:
            data = params.files["photo"]
            width, height = _image_size(data)
            file_id = f"sandbox-photo-{len(self._files) + 1}"
            photo: JSON = {
                "file_id": file_id,
                "file_unique_id": f"u{len(self._files) + 1}",
                "width": width,
                "height": height,
                "file_size": len(data),
            }
            self._files[file_id] = photo
        elif not params.get_str("photo"):
            raise ApiError(400, "Bad Request: there is no photo in the request")
        else:  # a file_id sent before; URLs would need fetching, which the sandbox refuses
            known = self._files.get(params.get_str("photo") or "")
            if known is None:
                raise ApiError(400, "Bad Request: wrong file identifier/HTTP URL specified")
            photo = known
        message = SentMessage(
            chat.chat_id, chat._next_id(), self._now(), caption, source, entities, inline, keyboard
        )
        message.photo, message.photo_bytes = photo, photo["file_size"]
        self._pace(params)
        return self._deliver(chat, message)

    def _editable(self, params: _Params) -> SentMessage:
        if params.get_str("inline_message_id"):
            raise ApiError(400, "Bad Request: MESSAGE_ID_INVALID")  # no inline mode here
        chat = self._chat(params, writing=True)
        message_id = params.get_int("message_id")
        if message_id is None:
            raise ApiError(400, "Bad Request: message identifier is not specified")
        if message_id in chat._user_messages:
            raise ApiError(400, "Bad Request: message can't be edited")
        if message_id not in chat._bot_messages:
            raise ApiError(400, "Bad Request: message to edit not found")
        return chat._bot_messages[message_id]

    def _apply_edit(
        self, message: SentMessage, text: tuple[str, str | None, list[JSON]], params: _Params
    ) -> JSON:
        inline, _ = _markup(params.get_json("reply_markup"))
        new_text, source, entities = text
        if (new_text, entities, inline) == (
            message.text,
            message.entities,
            message.inline_keyboard,
        ):
            raise ApiError(400, _NOT_MODIFIED)
        if new_text != message.text:
            message.history.append(message.text)
        message.text, message.html, message.entities = new_text, source, entities
        message.inline_keyboard = inline  # an edit without reply_markup removes the keyboard
        message.edit_date = self._now()
        return self.message_json(message)

    async def _edit_message_text(self, params: _Params) -> JSON:
        message = self._editable(params)
        if message.photo is not None:
            raise ApiError(400, "Bad Request: there is no text in the message to edit")
        return self._apply_edit(message, self._message_text(params), params)

    async def _edit_message_caption(self, params: _Params) -> JSON:
        message = self._editable(params)
        if message.photo is None:
            raise ApiError(400, "Bad Request: there is no caption in the message to edit")
        return self._apply_edit(message, self._caption(params), params)

    async def _edit_message_reply_markup(self, params: _Params) -> JSON:
        message = self._editable(params)
        return self._apply_edit(message, (message.text, message.html, message.entities), params)

    async def _delete_message(self, params: _Params) -> bool:
        chat = self._chat(params, writing=False)
        message_id = params.get_int("message_id")
        if message_id in chat._bot_messages:
            sent = chat._bot_messages[message_id].date
        elif message_id in chat._user_messages:
            sent = datetime.fromtimestamp(chat._user_messages[message_id]["date"], UTC)
        else:
            raise ApiError(400, "Bad Request: message to delete not found")
        if self.clock.now() - sent > timedelta(hours=48):
            raise ApiError(400, "Bad Request: message can't be deleted for everyone")
        chat._bot_messages.pop(message_id, None)
        chat._user_messages.pop(message_id, None)
        chat.deleted.append(message_id)
        return True

    async def _answer_callback_query(self, params: _Params) -> bool:
        query_id = params.get_str("callback_query_id") or ""
        user = self._queries.pop(query_id, None)  # a query is answered once
        if user is None:
            raise ApiError(400, _QUERY_INVALID)
        text = params.get_str("text")
        if text is not None and len(text) > MAX_CALLBACK_ANSWER_LENGTH:
            raise ApiError(400, "Bad Request: MESSAGE_TOO_LONG")
        user.answers.append(
            CallbackAnswer(query_id, text, params.get_bool("show_alert"), params.get_str("url"))
        )
        return True

    async def _send_chat_action(self, params: _Params) -> bool:
        chat = self._chat(params, writing=True)
        action = params.get_str("action") or ""
        if action not in _CHAT_ACTIONS:
            raise ApiError(400, "Bad Request: wrong parameter action in request")
        chat.actions.append(action)
        return True
