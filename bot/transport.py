"""The HTTP client of paid broadcasts: python-telegram-bot's `BaseRequest` over aiohttp
(bot/delivery.py: `paid_broadcast_bot`).

PTB's own client (httpx) spends about 1.2 ms of CPU on each request on the 2-core CI machine,
aiohttp about 0.2 ms (sendMessage into the sandbox in its own process, ten at a time, no
database). At Telegram's 1,000 paid broadcast messages a second, httpx alone would need more
than the one core the bot's event loop has. aiohttp is already here (the webhook server and
the sandbox), but not loaded at start-up: it costs about 0.1 s and 8 MB, so it is imported,
and the connection pool made, at the first request (a process that has nothing to deliver
never loads it). Every other request (replies, reminders, free broadcasts, long polling)
keeps PTB's client.

Requests are encoded as PTB's client encodes them (form fields, multipart with files), and
failures become PTB's errors the same way: a timeout `TimedOut`, any other failure of the
connection `NetworkError` (so the dispatcher retries them). An error names the aiohttp class
only: some of aiohttp's messages carry the request's URL, and so the bot token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlencode

from telegram._utils.defaultvalue import DefaultValue
from telegram._utils.types import ODVInput
from telegram.error import NetworkError, TimedOut
from telegram.request import BaseRequest, RequestData
from telegram.request._requestparameter import RequestParameter

if TYPE_CHECKING:
    import aiohttp
    from yarl import URL

# As PTB's ApplicationBuilder sets up its own client.
CONNECTIONS = 256


class AiohttpRequest(BaseRequest):
    """Timeouts as in PTB's HTTPXRequest: `read` for the answer (a send's answer: its
    `read_timeout`), `connect`, `pool` for a free connection, and `write`, which aiohttp
    does not have on its own: it bounds the whole request together with the others."""

    __slots__ = ("_connections", "_media_write", "_session", "_timeouts", "_urls")

    def __init__(
        self,
        *,
        connections: int = CONNECTIONS,
        read_timeout: float | None = 5.0,
        write_timeout: float | None = 5.0,
        connect_timeout: float | None = 5.0,
        pool_timeout: float | None = 1.0,
        media_write_timeout: float | None = 20.0,
    ) -> None:
        self._connections = connections
        self._timeouts = (read_timeout, write_timeout, connect_timeout, pool_timeout)
        self._media_write = media_write_timeout
        self._session: aiohttp.ClientSession | None = None
        # Each method's URL parsed once: a bot sends to a handful (yarl parses a string
        # given to aiohttp at every request).
        self._urls: dict[str, URL] = {}

    @property
    def read_timeout(self) -> float | None:
        return self._timeouts[0]

    async def initialize(self) -> None:
        """Nothing yet: the connection pool is made at the first request."""

    async def shutdown(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    def _pool(self) -> aiohttp.ClientSession:
        import aiohttp  # here, not at start-up: see the module's docstring

        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._connections)
            )
        return self._session

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        write_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        connect_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        pool_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        import aiohttp
        from yarl import URL

        session = self._pool()
        parsed = self._urls.get(url)
        if parsed is None:
            parsed = self._urls[url] = URL(url)
        files = request_data is not None and request_data.contains_files
        default_read, default_write, default_connect, default_pool = self._timeouts
        read = _given(read_timeout, default_read)
        write = _given(write_timeout, self._media_write if files else default_write)
        connect = _given(connect_timeout, default_connect)
        pool = _given(pool_timeout, default_pool)
        parts = (read, write, connect, pool)
        timeout = aiohttp.ClientTimeout(
            total=None if None in parts else sum(p or 0.0 for p in parts),
            connect=None if connect is None or pool is None else connect + pool,
            sock_connect=connect,
            sock_read=read,
        )
        try:
            data, content_type = _body(request_data)
            headers = {"User-Agent": self.USER_AGENT}
            if content_type is not None:
                headers["Content-Type"] = content_type
            async with session.request(
                method, parsed, data=data, headers=headers, timeout=timeout
            ) as response:
                return response.status, await response.read()
        except TimeoutError as exc:  # aiohttp's timeouts are TimeoutErrors too
            raise TimedOut(f"aiohttp.{type(exc).__name__}") from exc
        except aiohttp.ClientError as exc:
            raise NetworkError(f"aiohttp.{type(exc).__name__}") from exc


def form_fields(fields: dict[str, str]) -> RequestData:
    """A request's form fields already as the Bot API takes them (each value its text, as
    PTB's `RequestParameter.json_value` makes it), for `BaseRequest.post`. PTB has no public
    way to post a method's parameters but `Bot._post`, which converts each value again
    through `RequestParameter.from_input` at every request (with the `to_dict` of each
    object): about a tenth of a paid broadcast's event loop. `RequestParameter` is PTB's
    internal class (22.x); tests/test_transport.py checks that a paid send's fields are
    those of `send_message`. No files."""
    return RequestData([RequestParameter(name, value, None) for name, value in fields.items()])


FORM = "application/x-www-form-urlencoded"
"""The content type of a request's form fields without files (`_body`)."""


def _given(value: ODVInput[float], default: float | None) -> float | None:
    return default if isinstance(value, DefaultValue) else value


def _body(request_data: RequestData | None) -> tuple[aiohttp.FormData | bytes | None, str | None]:
    """The request's body and its content type (None: aiohttp's own). Form fields (values
    JSON-encoded, as PTB sends them) urlencoded here: the same bytes aiohttp's `FormData`
    makes of them, in 16-23 µs a message against its 50 (it builds a dictionary of options
    for each field), where a paid broadcast has about a millisecond a message in all;
    multipart with the files through `FormData`."""
    import aiohttp

    if request_data is None:
        return None, None
    if not request_data.contains_files:
        fields = urlencode(request_data.json_parameters, doseq=True).encode()
        return fields, FORM
    body = aiohttp.FormData(request_data.json_parameters)
    for name, (filename, content, mimetype) in request_data.multipart_data.items():
        body.add_field(name, content, filename=filename, content_type=mimetype)
    return body, None
