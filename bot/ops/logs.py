"""Logging set-up. Log lines are one line each: user text can't forge a line of its own.

Two formats (`LOG_FORMAT`): `text` for people (the default) and `json` for log collectors, one JSON
object per line. Each Slack request gets a short id (`request_context()`), kept in a context
variable: every line logged while handling it, including by the background tasks it starts (asyncio
tasks copy the context they are created in), carries the id, and so does any "reference" shown to
the user when something unexpected goes wrong.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import re
import secrets
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal, TextIO

from bot.masking import mask_numbers_in

# Newlines would start a fake log line, and so would Unicode's own line breaks (NEL, LINE and
# PARAGRAPH SEPARATOR: log viewers and str.splitlines() break there); bidi and zero-width controls
# can make one line read as another.
_UNSAFE = re.compile(
    r"[\r\n\x00-\x08\x0b-\x1f\x7f\x85\u200b-\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]"
)

# Libraries that log request URLs or bodies at INFO/DEBUG: bodies and `to=` queries hold phone
# numbers and response_urls, so these stay at WARNING whatever LOG_LEVEL says.
_QUIET = ("httpx", "httpcore", "slack_sdk", "slack_bolt", "aiohttp.access", "asyncio")

LogFormat = Literal["text", "json"]

_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "callbot_request_id", default=None
)


def new_request_id() -> str:
    """Short enough to read out over the phone, long enough not to collide within a day's logs."""
    return secrets.token_hex(4)


def current_request_id() -> str | None:
    return _request_id.get()


@contextmanager
def request_context(request_id: str | None = None) -> Iterator[str]:
    """Everything logged inside (and in tasks started inside) carries this request's id."""
    rid = request_id or new_request_id()
    token = _request_id.set(rid)
    try:
        yield rid
    finally:
        _request_id.reset(token)


def one_line(text: str) -> str:
    return _UNSAFE.sub(lambda m: "\\n" if m.group() == "\n" else "�", text)


class RequestIdFilter(logging.Filter):
    """Stamps each record with the current request id (None outside a Slack request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = current_request_id()
        return True


def _request_id_of(record: logging.LogRecord) -> str | None:
    rid = getattr(record, "request_id", None)
    return rid if isinstance(rid, str) else current_request_id()


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


# A Socket Mode URL's ticket opens the app's connection until it expires: slack_sdk logs the URL
# of a failed handshake at ERROR.
_TICKET = re.compile(r"([?&]ticket=)[^&\s'\"]+")


def redacted(text: str) -> str:
    return _TICKET.sub(r"\1•••", text) if "ticket=" in text else text


def _said(record: logging.LogRecord, message: str) -> str:
    """A record's message as logged: a library's with any number in it masked, since its words
    may quote what it was given (asyncio's "Task exception was never retrieved" names the task's
    exception); the bot's own lines are written with numbers masked already, and keep their ids
    and times as they are."""
    if record.name == "bot" or record.name.startswith("bot."):
        return message
    return mask_numbers_in(message)


class OneLineFormatter(logging.Formatter):
    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        record.message = _said(record, record.message)  # set afresh by each format()
        return one_line(redacted(super().formatMessage(record)))

    def format(self, record: logging.LogRecord) -> str:
        rid = _request_id_of(record)
        record.request_tag = f" [{rid}]" if rid else ""
        # The record's own line has no line break left (formatMessage); whatever follows it is a
        # traceback or a stack, kept readable but unmistakably part of this record.
        head, _, rest = super().format(record).partition("\n")
        if not rest:
            return head
        # A traceback quotes its exceptions' words, and those of the errors they were raised from.
        rest = redacted(mask_numbers_in(rest))
        return head + "\n" + "\n  | ".join(one_line(line) for line in rest.split("\n"))


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(request_tag)s: %(message)s"


# Structured fields a record may carry (`logger.info(..., extra={"call_id": 7})`); JSON lines show
# each one present, so the lines of one call, session or escalation can be found by field.
LOG_FIELDS = ("call_id", "session_id", "escalation_id", "user_id", "outcome")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, the structured fields
    (LOG_FIELDS) the record carries, and exception if any.

    `json.dumps` escapes newlines and (with ASCII output) every control or bidi character, so a
    record can't break out of its line.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ).replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": redacted(_said(record, record.getMessage())),
            "request_id": _request_id_of(record),
        }
        for name in LOG_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value if isinstance(value, int | float) else str(value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=True)

    def formatException(self, ei: Any) -> str:  # noqa: N802 (logging's name)
        return redacted(mask_numbers_in(super().formatException(ei)))

    def formatStack(self, stack_info: str) -> str:  # noqa: N802 (logging's name)
        return redacted(mask_numbers_in(super().formatStack(stack_info)))


def make_handler(log_format: LogFormat = "text", stream: TextIO | None = None) -> logging.Handler:
    handler: logging.StreamHandler[TextIO] = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.addFilter(QuietThirdParty())
    handler.setFormatter(JsonFormatter() if log_format == "json" else OneLineFormatter(TEXT_FORMAT))
    return handler


def configure_logging(level: str = "INFO", log_format: LogFormat = "text") -> None:
    root = logging.getLogger()
    root.handlers[:] = [make_handler(log_format)]
    root.setLevel(level)
    # A library's warnings.warn is a line of ours too (the `py.warnings` logger): in the chosen
    # format, numbers masked. Python's own hook prints raw text a JSON collector would drop.
    logging.captureWarnings(True)
    for name in _QUIET:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
