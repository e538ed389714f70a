"""Logging set-up. Log lines are one line each: user text can't forge a line of its own."""

from __future__ import annotations

import logging
import re
import sys

# Newlines would start a fake log line; bidi and zero-width controls can make one line read as another.
_UNSAFE = re.compile(r"[\r\n\x00-\x08\x0b-\x1f\x7f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")

# Libraries that log request URLs or bodies at INFO/DEBUG: bodies and `to=` queries hold phone
# numbers and response_urls, so these stay at WARNING whatever LOG_LEVEL says. aiosqlite logs
# every statement with its parameters (pending calls hold their number until confirmed).
_QUIET = ("httpx", "httpcore", "slack_sdk", "slack_bolt", "aiohttp.access", "asyncio", "aiosqlite")


def one_line(text: str) -> str:
    return _UNSAFE.sub(lambda m: "\\n" if m.group() == "\n" else "�", text)


class QuietThirdParty(logging.Filter):
    """Drops the quiet libraries' records below WARNING whatever their loggers' levels say.

    Setting the level of `slack_bolt` is not enough: Bolt gives each of its loggers the root's
    level when it creates them, so at LOG_LEVEL=DEBUG its Socket Mode client logged every
    envelope: phone numbers and live response_urls.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        return not any(record.name == name or record.name.startswith(name + ".")
                       for name in _QUIET)


class OneLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        formatted = super().format(record)
        if record.exc_info:
            # Keep tracebacks readable but unmistakably part of this record.
            head, _, rest = formatted.partition("\n")
            return one_line(head) + ("\n" + rest.replace("\n", "\n  | ") if rest else "")
        return one_line(formatted)


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(QuietThirdParty())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in _QUIET:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
