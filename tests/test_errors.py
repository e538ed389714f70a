"""The error tree drawn in bot/errors.py is the whole tree, and words are apart from logging."""

from __future__ import annotations

import importlib
import logging
import pkgutil
import re

import pytest

import bot
from bot import errors
from bot.calls.command_text import CommandRejected
from bot.evovoice.client import EvoVoiceError, EvoVoiceTimeout, MalformedResponse, OutcomeUnknown
from bot.phone import NumberRejected, RejectCode


def all_subclasses(root: type) -> set[type]:
    found: set[type] = set()
    todo = [root]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub.__module__.startswith("bot.") and sub not in found:
                found.add(sub)
                todo.append(sub)
    return found


def test_the_docstring_draws_every_error_class() -> None:
    for module in pkgutil.walk_packages(bot.__path__, "bot."):
        if module.name != "bot.__main__":
            importlib.import_module(module.name)
    drawn = set(re.findall(r"[├└]─ (\w+)", errors.__doc__ or ""))
    classes = all_subclasses(errors.CallbotError) | all_subclasses(EvoVoiceError)
    assert {cls.__name__ for cls in classes} <= drawn


def test_parse_refusals_are_callbot_errors() -> None:
    rejected = NumberRejected(RejectCode.TYPE_NOT_ALLOWED, "+1 900 ••• 0123 is premium rate")
    assert isinstance(rejected, errors.CallbotError)
    assert errors.describe(rejected) == rejected.reason
    command = CommandRejected("That command is too long.")
    assert errors.describe(command) == "That command is too long."


@pytest.mark.parametrize("exc", [
    EvoVoiceTimeout("Evo Voice did not answer (no answer in time)."),
    MalformedResponse("Evo Voice sent an answer the bot could not read."),
    MalformedResponse("no full stop"),
])
def test_the_voice_apis_own_words_end_in_one_full_stop(exc: EvoVoiceError) -> None:
    text = errors.describe(exc)
    assert exc.message.rstrip(".") in text and ".." not in text, text
    assert text.endswith("Try again in a minute."), text


def test_describing_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    errors.describe(OutcomeUnknown("no clear answer", cause="timeout"))
    errors.describe(errors.CannotNotify())
    assert caplog.records == []


def test_an_unexpected_error_is_logged_once_with_the_reference_it_shows(
    caplog: pytest.LogCaptureFixture,
) -> None:
    text = errors.describe_any(RuntimeError("bug"))
    ref = re.search(r"reference (\w+)", text)
    assert ref is not None
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert ref.group(1) in record.getMessage() and record.exc_info is not None
