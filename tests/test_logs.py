"""The token never reaches a log line, whatever logger writes it and at whatever level."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from bot.serve.logs import CONTENT, NOISY, setup_logging

TOKEN = "123456789:AAH-secret-part-of-the-token"


@pytest.fixture
def restored_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    names = (*NOISY, *CONTENT)
    levels = {name: logging.getLogger(name).level for name in names}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, old in levels.items():
        logging.getLogger(name).setLevel(old)


@pytest.mark.usefixtures("restored_logging")
def test_the_token_is_redacted_from_messages_arguments_and_tracebacks(
    capsys: pytest.CaptureFixture[str],
) -> None:
    setup_logging("DEBUG", secrets=[TOKEN])
    url = f"https://api.telegram.org/bot{TOKEN}/getMe"
    logging.getLogger("httpx").warning("HTTP Request: GET %s", url)
    logging.getLogger("aftercare.test").debug(f"inline {url}")
    try:
        raise ConnectionError(f"cannot reach {url}")
    except ConnectionError:
        logging.getLogger("telegram.ext.Updater").exception("polling failed")
    err = capsys.readouterr().err
    assert err.count("<token>") == 3  # the two lines, and the exception in the traceback
    assert "ConnectionError: cannot reach https://api.telegram.org/bot<token>/getMe" in err
    assert TOKEN not in err and TOKEN.partition(":")[2] not in err


@pytest.mark.usefixtures("restored_logging")
def test_request_and_update_logs_stay_off_even_at_debug() -> None:
    setup_logging("DEBUG", secrets=[TOKEN])
    assert logging.getLogger("httpx").getEffectiveLevel() == logging.WARNING
    for name in CONTENT:  # they log whole requests and updates: texts and names
        assert logging.getLogger(name).getEffectiveLevel() == logging.INFO
    assert logging.getLogger("aftercare.dispatch").isEnabledFor(logging.DEBUG)
