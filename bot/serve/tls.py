"""The TLS context of the Bot API clients, made on a thread while `aftercare run` imports
the bot: reading the CA bundle (about 20 ms) lets go of the GIL, so it runs beside the
imports (about 0.4 s of Python) instead of after them."""

from __future__ import annotations

import ssl
import threading
from concurrent.futures import Future


def made_meanwhile() -> Future[ssl.SSLContext]:
    """httpx's own TLS context (`httpx.create_ssl_context`: certifi's CA bundle, or
    SSL_CERT_FILE / SSL_CERT_DIR when set), made on a thread of its own."""
    # Imported here, before the thread starts: the thread imports nothing while the caller
    # goes on importing.
    import httpx

    made: Future[ssl.SSLContext] = Future()

    def make() -> None:
        try:
            made.set_result(httpx.create_ssl_context())
        except BaseException as exc:  # the caller's to raise, where it awaits the context
            made.set_exception(exc)

    threading.Thread(target=make, name="tls-context", daemon=True).start()
    return made
