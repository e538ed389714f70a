"""A call's status message is a kept post (bot/slack/outbox.py): written to the database before
it is sent, so a bot that dies between Slack's answer and saving its `ts` does not leave the message
at "Ringing" unfollowed. Its `ts` goes into the call's row in the transaction that forgets the post;
a message sent again after a restart is brought up to date by the follower at once, and one its
thread will never take (the bot removed from the channel, the channel archived) goes to the
requester by direct message instead, kept current as a relayed call's status is."""

from __future__ import annotations

from bot.calls.follow import CallFollower
from bot.calls.status_message import STATUS_POST, status_post
from bot.calls.store import CallStore
from bot.storage.database import Connection

__all__ = ["STATUS_POST", "StatusPosts", "status_post"]


class StatusPosts:
    """The outbox's owner of status messages (`Outbox.belongs_to(STATUS_POST, …)`)."""

    def __init__(self, follower: CallFollower) -> None:
        self._follower = follower

    async def delivered(self, conn: Connection, subject: int | None, ts: str) -> None:
        if subject is not None:
            await CallStore.keep_status_ts(conn, subject, ts)

    async def undelivered(self, conn: Connection, subject: int | None) -> None:
        if subject is not None:
            await CallStore.status_by_dm(conn, subject)

    async def repaired(self, subject: int | None) -> None:
        if subject is not None:
            await self._follower.refresh(subject)
