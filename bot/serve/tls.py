"""The TLS context of the Bot API clients, made on a thread while the bot's modules load.

httpx reads the CA bundle into it: about 20 ms of CPU, mostly without the GIL. `aftercare
run` begins it before it imports the bot (about 0.3 s of imports, which hold the GIL), so
it is made meanwhile; begun at the start-up's checks instead, the start-up waited for it
(about 16 ms: the checks hold the GIL, and the thread got it only in turns).
"""

from __future__ import annotations

import ssl
import threading
from concurrent.futures import Future

import httpx

_begun: Future[ssl.SSLContext] | None = None


def begin() -> None:
    """Start making the context on a thread (once until `take`)."""
    global _begun
    if _begun is None:
        _begun = _made_on_a_thread()


def take() -> Future[ssl.SSLContext]:
    """The context begun (else begun now), for one start-up: the next `begin` makes a new
    one, reading the environment again (httpx's SSL_CERT_FILE and SSL_CERT_DIR)."""
    global _begun
    begin()
    taken, _begun = _begun, None
    assert taken is not None
    return taken


def _made_on_a_thread() -> Future[ssl.SSLContext]:
    made: Future[ssl.SSLContext] = Future()

    def make() -> None:
        try:
            made.set_result(httpx.create_ssl_context())
        except BaseException as exc:  # the start-up that takes it raises it
            made.set_exception(exc)

    threading.Thread(target=make, name="tls-context", daemon=True).start()
    return made
