"""Block Kit primitives, and Slack's limits on them, in one place.

Every message, modal and `response_url` body the bot builds is made of these pieces, so nothing it
posts can exceed what Slack accepts. Slack does not shorten an oversized post: it refuses the whole
of it (`invalid_blocks`, or a 400 on a `response_url`), and the person waiting hears nothing. So:

    escape()             user text can't become a mention or a link
    slack_time()         a time each reader sees in their own time zone (`<!date^…>`)
    clip()               a string within a limit, ending "…"; never cut inside `<…>` or `&…;`
    quoted()             a name in quotes, shortened: it can't crowd out the words after it
    plain(), mrkdwn()    text objects, clipped to the place's limit
    section(), context() the two blocks every view uses, clipped to 3,000 characters
    listing()            "a, b, c and 197 more": a list that fits a length
    sections()           lines packed into as few sections as fit, each within the limit
    fit_blocks()         at most N blocks, the buttons kept, "and N more not shown" in between
    Message              a message's `text` fallback and blocks; `as_kwargs()` keeps both within
                         a message's limits (50 blocks, 40,000 characters) wherever it is sent

The limits are Slack's documented ones (docs.slack.dev, "Block Kit" reference pages): the Slack
stand-in (bot/standins/slack.py) refuses the same posts, so a builder that forgets one fails a test.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

Block = dict[str, Any]

# Text objects: a section's text, a context element, a confirm dialog's text (300), a button (75).
MAX_TEXT = 3000
MAX_BUTTON_TEXT = 75
MAX_BUTTON_VALUE = 2000
MAX_CONFIRM_TITLE = 100
MAX_CONFIRM_TEXT = 300
MAX_CONFIRM_BUTTON = 30
MAX_CONTEXT_ELEMENTS = 10
MAX_ACTION_ELEMENTS = 25
# Menus: options per menu, characters in an option's text and value.
MAX_OPTIONS = 100
MAX_OPTION_TEXT = 75
MAX_OPTION_VALUE = 150
# Messages and modals.
MAX_MESSAGE_BLOCKS = 50
MAX_MODAL_BLOCKS = 100
MAX_MESSAGE_TEXT = 40_000
MAX_METADATA = 3000
MAX_VIEW_TITLE = 24
MAX_LABEL = 2000

ELLIPSIS = "…"


class Markup(str):
    """Words already in Slack mrkdwn (a mention, a `<!date…>`), whatever they quote escaped: a
    refusal shows them as written, where it escapes plain words (bot/calls/messages.refusal)."""


def escape(text: str) -> str:
    """Slack mrkdwn escaping: user text must not turn into mentions or links."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_length(text: str) -> int:
    """How long `text` is against one of Slack's limits. Slack says "characters" and no more: read
    strictly, as JavaScript counts (UTF-16 code units, two for an emoji outside the Basic
    Multilingual Plane, 🔥 say), which is never less than Python's count of code points. A text
    measured by `len()` alone could be refused (invalid_blocks) and its news never shown."""
    if text.isascii():
        return len(text)
    return len(text.encode("utf-16-le")) // 2


def _head(text: str, units: int) -> str:
    """The longest start of `text` within `units` (slack_length), never half an emoji."""
    if text.isascii():
        return text[:units]
    return text.encode("utf-16-le")[: 2 * units].decode("utf-16-le", "ignore")


def clip(text: str, limit: int, *, markup: bool = True) -> str:
    """`text` within `limit` characters (as Slack may count them: slack_length), ending "…" when
    shortened.

    A cut never splits a mention or link (`<@U123>`) nor an entity (`&amp;`): half of one shows
    as garbage, or as markup the user never wrote. `markup` False: plain text, where `<` and `&`
    are just characters (cut back to a lone `<`, two long names would read the same).
    """
    if len(text) <= limit // 2 or slack_length(text) <= limit:
        return text
    cut = _head(text, max(0, limit - len(ELLIPSIS)))
    if not markup:
        return cut.rstrip() + ELLIPSIS
    opened, closed = cut.rfind("<"), cut.rfind(">")
    if opened > closed:
        cut = cut[:opened]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:] and len(cut) - amp <= 5:
        cut = cut[:amp]
    return cut.rstrip() + ELLIPSIS


def quoted(name: str, limit: int = 80) -> str:
    """`“name”`, plain text, the name within `limit`: a name of hundreds of characters (Evo Voice
    sets no limit on a flow's) would crowd what follows it out of its block."""
    return f"“{clip(name, limit, markup=False)}”"


def slack_time(at: float) -> str:
    """A time every reader sees in their own time zone (Slack's `<!date>`), UTC as fallback."""
    when = dt.datetime.fromtimestamp(int(at), dt.UTC)
    return f"<!date^{int(at)}^{{date_short_pretty}} {{time}}|{when:%Y-%m-%d %H:%M} UTC>"


def plain(text: str, limit: int = MAX_TEXT, *, emoji: bool | None = None) -> Block:
    obj: Block = {"type": "plain_text", "text": clip(text, limit, markup=False) or " "}
    if emoji is not None:
        obj["emoji"] = emoji
    return obj


def mrkdwn(text: str, limit: int = MAX_TEXT) -> Block:
    return {"type": "mrkdwn", "text": clip(text, limit) or " "}


def section(markdown: str) -> Block:
    return {"type": "section", "text": mrkdwn(markdown)}


def context(markdown: str) -> Block:
    return {"type": "context", "elements": [mrkdwn(markdown)]}


def listing(
    items: Sequence[str], max_chars: int, *, separator: str = ", ", empty: str = "none"
) -> str:
    """The items joined, as many as fit in `max_chars`, then "and N more"."""
    if not items:
        return empty
    whole = separator.join(items)
    if slack_length(whole) <= max_chars:
        return whole
    shown: list[str] = []
    for index, item in enumerate(items):
        rest = len(items) - index - 1
        tail = f" and {rest} more" if rest else ""
        candidate = separator.join([*shown, item]) + tail
        if slack_length(candidate) > max_chars:
            break
        shown.append(item)
    hidden = len(items) - len(shown)
    if not shown:
        return clip(f"{len(items)} items", max_chars)
    return separator.join(shown) + f" and {hidden} more"


def sections(lines: Iterable[str], *, max_chars: int = MAX_TEXT) -> list[Block]:
    """Lines packed, in order, into as few sections as fit; a line too long alone is clipped."""
    blocks: list[Block] = []
    current: list[str] = []
    size = 0
    for line in lines:
        line = clip(line, max_chars)
        extra = slack_length(line) + (1 if current else 0)
        if current and size + extra > max_chars:
            blocks.append(section("\n".join(current)))
            current, size = [], 0
            extra = slack_length(line)
        current.append(line)
        size += extra
    if current:
        blocks.append(section("\n".join(current)))
    return blocks


def fit_blocks(blocks: Sequence[Block], max_blocks: int) -> list[Block]:
    """At most `max_blocks`: the first ones and the last `actions` block (the buttons must stay),
    with a context line saying what was left out in between."""
    if len(blocks) <= max_blocks:
        return list(blocks)
    tail = [b for b in blocks[-1:] if b.get("type") == "actions"]
    room = max_blocks - 1 - len(tail)
    head = list(blocks[:room])
    hidden = len(blocks) - len(head) - len(tail)
    return [*head, context(f"{ELLIPSIS} and {hidden} more not shown"), *tail]


@dataclass(frozen=True)
class Message:
    text: str
    blocks: list[Block] = field(default_factory=list)

    def within_limits(self) -> Message:
        return Message(
            text=clip(self.text, MAX_MESSAGE_TEXT),
            blocks=fit_blocks(self.blocks, MAX_MESSAGE_BLOCKS),
        )

    def as_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `chat.postMessage`, `chat.update`, an ack or a `response_url`."""
        fitted = self.within_limits()
        kwargs: dict[str, Any] = {"text": fitted.text}
        if fitted.blocks:
            kwargs["blocks"] = fitted.blocks
        return kwargs
