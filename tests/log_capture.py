"""What the bot logs, captured through its own handler (bot/ops/logs.py), for tests that read it."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

from bot.ops.logs import LogFormat, make_handler

_NAMED_CALL = re.compile(r"\bcall (\d+)\b")
_NAMED_ESCALATION = re.compile(r"\bescalation (\d+)\b")


@contextlib.contextmanager
def logged(log_format: LogFormat) -> Iterator[io.StringIO]:
    """The root logger writing through the bot's own handler, at INFO, into the buffer yielded."""
    stream = io.StringIO()
    handler = make_handler(log_format, stream)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def entries_of(stream: io.StringIO) -> list[dict[str, Any]]:
    """The JSON lines written so far, each checked: a line naming a call or an escalation by its
    id carries that id as a field, so searching the logs by field finds it."""
    entries = [json.loads(line) for line in stream.getvalue().splitlines()]
    for entry in entries:
        message = entry["message"]
        for pattern, field in ((_NAMED_CALL, "call_id"), (_NAMED_ESCALATION, "escalation_id")):
            named = pattern.search(message)
            if named is not None:
                assert entry.get(field) == int(named.group(1)), (field, entry)
    return entries


def the_line(entries: list[dict[str, Any]], text: str) -> dict[str, Any]:
    """The one line whose message holds `text`."""
    found = [e for e in entries if text in e["message"]]
    assert len(found) == 1, (text, [e["message"] for e in entries])
    return found[0]
