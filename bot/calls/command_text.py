"""The ``/call`` slash-command text: split it into a typed request. Pure, no I/O.

This module only splits words; it never decides whether a number may be dialled. The number and
caller-ID texts go on to :mod:`bot.phone`, which gives its own precise reasons. Splitting first
matters: ``phonenumbers.parse("+1 814 404 3093 escalation")`` fails as "too long".

Errors (the whole tree is drawn in bot/errors.py)::

    CallbotError
     └── CommandRejected       .reason: plain words plus a usage hint
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from bot.errors import CallbotError
from bot.phone import fold_width

__all__ = [
    "HELP_WORDS",
    "MAX_TEXT",
    "SUBCOMMANDS",
    "USAGE",
    "CallArgs",
    "Command",
    "CommandRejected",
    "FormArgs",
    "HelpArgs",
    "SubcommandArgs",
    "parse_command",
]

MAX_TEXT = 500
SUBCOMMANDS = frozenset({"history", "oncall", "test"})
HELP_WORDS = frozenset({"help", "-h", "--help", "?"})

USAGE = """\
Usage: /call <number> <flow> [caller ID]
  /call +18144043093 escalation
  /call (814) 404-3093 wake-up-call +18145550100
  /call          (opens a form)
  /call help     (shows this text)
  /call history [@person | number]   (recent calls; Managers and SystemAdministrators)
  /call test     (rings your own phone with the on-call flow)
  /call oncall   (who is on call now and next; /call oncall take: take the shift)"""

_NUMBER_TOKEN = re.compile(r"[0-9+().\-]+")
_DIGIT = re.compile(r"[0-9]")
# An extension written after the number ("x9", "ext 12", "#12"). Kept with the number so that
# bot.phone refuses it, instead of dialling the main number with a flow called "x9".
_EXTENSION_MARKER = re.compile(
    r"(?:;ext=|ext(?:ension)?\.?|x|\#)([0-9]*)", re.IGNORECASE | re.ASCII
)
_QUOTES = "'\"“”‘’"
_REJECTED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


@dataclass(frozen=True)
class CallArgs:
    number_text: str
    flow_text: str
    caller_id_text: str | None


@dataclass(frozen=True)
class HelpArgs:
    pass


@dataclass(frozen=True)
class FormArgs:
    """Open the call form, prefilled with the number when one was typed."""

    number_text: str | None


@dataclass(frozen=True)
class SubcommandArgs:
    name: str
    args: tuple[str, ...]


Command = CallArgs | HelpArgs | FormArgs | SubcommandArgs


class CommandRejected(CallbotError):
    """The command text can't be understood; ``reason`` says why and how to type it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_command(text: str) -> Command:
    """Split ``/call`` text into a Command, or raise CommandRejected."""
    text = text.strip()
    if len(text) > MAX_TEXT:
        raise CommandRejected(f"That command is too long (at most {MAX_TEXT} characters).\n{USAGE}")
    if any(unicodedata.category(ch) in _REJECTED_CATEGORIES for ch in text):
        # Bidi overrides and zero-width characters can make the text read differently from
        # what will be dialled; refuse rather than strip them.
        raise CommandRejected(
            "The command contains invisible or control characters (line breaks, tabs, "
            f"zero-width or direction marks). Retype it on one line.\n{USAGE}"
        )
    if not text:
        return FormArgs(number_text=None)

    tokens = text.split()
    # The subcommand's word is folded like a number's digits: a phone keyboard in a CJK input mode
    # types "ｈｅｌｐ" as readily as "＋８１". Its arguments stay as typed (names are matched as
    # written; numbers are folded where they are read).
    first = fold_width(tokens[0]).lower()
    if first in HELP_WORDS:
        return HelpArgs()
    if first in SUBCOMMANDS:
        return SubcommandArgs(name=first, args=tuple(tokens[1:]))

    # The numbers are read with full-width digits folded (CJK input methods type them); the flow's
    # words are kept as typed, since they are matched against names and shown back.
    folded = [fold_width(token) for token in tokens]
    number_end = _number_end(folded)
    if number_end == 0:
        raise CommandRejected(
            f"Start with the number to call: /call +18144043093 escalation\n{USAGE}"
        )
    number_text = " ".join(folded[:number_end])
    rest, folded_rest = tokens[number_end:], folded[number_end:]

    # The caller ID is the trailing run of number-like words, but at least one flow word must stay.
    caller_start = len(rest)
    while caller_start > 1 and _is_number_token(folded_rest[caller_start - 1]):
        caller_start -= 1
    flow_words, caller_words = rest[:caller_start], folded_rest[caller_start:]

    flow_text = " ".join(flow_words).strip(_QUOTES + " ")
    if not flow_text:
        return FormArgs(number_text=number_text)
    return CallArgs(
        number_text=number_text,
        flow_text=flow_text,
        caller_id_text=" ".join(caller_words) if caller_words else None,
    )


def _number_end(tokens: list[str]) -> int:
    """How many leading tokens make up the number (0 when the text doesn't start with one)."""
    if not _is_number_token(tokens[0]):
        # "555-CALL" or "+1814x9": still the number; bot.phone names exactly what is wrong with it.
        return 1 if _DIGIT.search(tokens[0]) else 0
    end = 1
    while end < len(tokens) and _is_number_token(tokens[end]):
        end += 1
    return _extension_end(tokens, end)


def _extension_end(tokens: list[str], end: int) -> int:
    """Extend the number over a trailing extension such as ``x9`` or ``ext 12``."""
    if end >= len(tokens):
        return end
    marker = _EXTENSION_MARKER.fullmatch(tokens[end])
    if marker is None:
        return end
    if marker.group(1):
        return end + 1
    if end + 1 < len(tokens) and tokens[end + 1].isascii() and tokens[end + 1].isdigit():
        return end + 2
    return end


def _is_number_token(token: str) -> bool:
    return _NUMBER_TOKEN.fullmatch(token) is not None
