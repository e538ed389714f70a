"""Where a call's news goes, as values: a channel thread, else the command's `response_url` and
then a direct message (`Relay`); what a post did (`Posted`); a post whose result matters (`Kept`,
for the outbox). The Notifier (notify.py) does the telling."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from bot.slack.blocks import Message
from bot.storage.backend import Connection

# A claim (bot/storage/claims.py: `Claims.claim_when_answered(key, …, then=…)`) that a post is
# made under, taken in the transaction that keeps the post (the write it is given): True if
# granted. A post claimed is then never lost to a crash between the claim and the post.
Once = Callable[[Callable[[Connection], Awaitable[None]]], Awaitable[bool]]


async def nothing_kept(conn: Connection) -> None:
    """What a post made `Once` writes with its claim where no outbox keeps it: nothing."""


# chat.update's answers for a message that can't be edited any more: deleted, in a channel archived
# or deleted (`is_inactive`, `is_archived`), or in a private channel the bot was removed from.
NOT_EDITABLE = frozenset({"message_not_found", "cant_update_message", "channel_not_found",
                          "is_inactive", "is_archived", "edit_window_closed"})


# chat.postMessage's answers for a channel that won't take the bot's posts until a person acts: a
# private channel the bot is out of (or was removed from), a public one it isn't in, one archived.
NOT_POSTABLE = frozenset({"not_in_channel", "channel_not_found", "is_archived"})


class Edit(enum.Enum):
    """What an edit (`chat.update`) did; true only when Slack shows it. REFUSED: for now (tried
    again later); GONE: never again (NOT_EDITABLE), so its news must go another way."""

    EDITED = "edited"
    REFUSED = "refused"
    GONE = "gone"

    def __bool__(self) -> bool:
        return self is Edit.EDITED


class NotDelivered(Exception):
    """Nothing we tried reached anyone."""


class ThreadUnread(Exception):
    """Slack failed to show a thread for now (rate-limited, an error of its own, no answer):
    whether a post is in it is unknown, so it is read again rather than the post sent twice."""


@dataclass
class Relay:
    """A call's news where there is no thread: one message through `response_url`, replaced as the
    call goes on, then a direct message to the requester, edited likewise."""

    url: str | None  # None: straight to the direct message
    user_id: str
    parent: Message
    opened: float  # the Notifier's clock when the response_url was first used
    uses: int = 1
    dm: tuple[str, str] | None = None  # (channel, ts) of the direct message, once it took over
    # Seen by the channel (the parent is nowhere else), or by the requester alone (the parent is
    # in the channel, only its thread failed).
    in_channel: bool = True


@dataclass
class Thread:
    """Where a call's news goes: a channel thread (`ts`), or `response_url` when the bot can't
    post."""

    channel: str
    ts: str | None
    response_url: str | None
    parent: Message
    # The parent message's own ts: `ts` itself, unless the parent is a reply in an existing thread.
    parent_ts: str | None = None
    # Where there is no thread (`ts` None, or its replies fail): how the news keeps reaching the
    # requester.
    relay: Relay | None = None
    requester: str | None = None  # who asked (open_thread): the direct message's recipient
    # Posts `response_url` has carried (the parent, when it went that way; a question's answer).
    response_url_uses: int = 0


def untold(channel: str, parent: Message, user_id: str, response_url: str | None, *,
           uses: int, opened: float) -> Thread:
    """Where a call's news goes when Slack took its parent nowhere (the channel, `response_url`
    and the direct message all refused: Slack failing): no thread, a relay nothing reached yet.
    The call is followed as any other, and the relay tried again at each poll until it reaches
    the requester, parent and status together (`response_url` while it lives, else a direct
    message). `uses`: posts `response_url` may have carried (a refused one included: a post
    whose answer was lost may have been shown)."""
    relay = Relay(response_url, user_id, parent, opened, uses=uses)
    return Thread(channel=channel, ts=None, response_url=response_url, parent=parent,
                  relay=relay, requester=user_id, response_url_uses=uses)


@dataclass(frozen=True)
class Posted:
    """Whether a reply reached anyone, and its `ts` when it is a message in the thread. `gone`:
    not delivered, and never will be where it was sent (NOT_POSTABLE), with nowhere else to go."""

    delivered: bool
    ts: str | None = None
    gone: bool = False


@dataclass(frozen=True)
class Kept:
    """A post whose result matters: `purpose` names what it is for ("call_status"), `subject`
    the row it belongs to (the call's id)."""

    purpose: str
    subject: int | None = None


class KeepsPosts(Protocol):
    """The outbox (bot/slack/outbox.py), as the Notifier sees it."""

    async def post(self, thread: Thread, message: Message, *, broadcast: bool,
                   kept: Kept, once: Once | None = None) -> Posted: ...

    async def holds(self, kept: Kept) -> bool: ...

    async def held_for(self, kept: Kept) -> float | None: ...
