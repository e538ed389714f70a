"""Telling people: a parent message and thread replies in the channel, with `response_url` as
fallback.

The bot can't post where it isn't a member (`not_in_channel`, `channel_not_found`: private channels,
DMs between people). Then the command's `response_url` carries the news instead, but it keeps no
`ts`, so later replies go there too rather than into a thread. The requester must always learn the
outcome.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.calls.messages import combined
from bot.slack.blocks import Message

logger = logging.getLogger(__name__)

# What a Slack Web API call can fail with: Slack's refusal, or no answer at all.
SLACK_FAILURES = (SlackApiError, aiohttp.ClientError, asyncio.TimeoutError)


class NotDelivered(Exception):
    """Nothing we tried reached anyone."""


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


@dataclass(frozen=True)
class Posted:
    """Whether a reply reached anyone, and its `ts` when it is a message in the thread."""

    delivered: bool
    ts: str | None = None


def slack_error_code(exc: Exception) -> str:
    """Slack's error code (`not_in_channel`), or the exception's class for a network failure."""
    if isinstance(exc, SlackApiError):
        return str(exc.response.get("error", "unknown"))
    return type(exc).__name__


class Notifier:
    def __init__(self, client: AsyncWebClient) -> None:
        self._client = client

    async def open_thread(
        self,
        channel: str,
        parent: Message,
        *,
        user_id: str,
        response_url: str | None,
        thread_ts: str | None = None,
    ) -> Thread | None:
        """Post a call's parent message wherever it can be seen; None if nowhere.

        Runs alongside the dial, never before it: the channel first, else the command's
        `response_url` (seen in the channel, even one the bot isn't in), else a direct message to
        the requester, whose thread then carries the call's news.
        """
        try:
            return await self.start_thread(
                channel, parent, response_url=response_url, thread_ts=thread_ts
            )
        except NotDelivered:
            pass
        try:
            response = await self._client.chat_postMessage(channel=user_id, **parent.as_kwargs())
        except SLACK_FAILURES as exc:
            logger.error("could not tell user %s about their call anywhere (%s)", user_id,
                         slack_error_code(exc), extra={"user_id": user_id})
            return None
        ts = str(response["ts"])
        return Thread(channel=str(response.get("channel") or user_id), ts=ts, response_url=None,
                      parent=parent, parent_ts=ts)

    async def start_thread(
        self,
        channel: str,
        parent: Message,
        *,
        response_url: str | None,
        thread_ts: str | None = None,
    ) -> Thread:
        """Post the parent message (or reply under `thread_ts`), else through `response_url`;
        raise NotDelivered if nobody hears it."""
        try:
            response = await self._client.chat_postMessage(
                channel=channel, thread_ts=thread_ts, **parent.as_kwargs()
            )
        except SLACK_FAILURES as exc:
            logger.warning("posting to %s failed (%s)", channel, slack_error_code(exc))
            if response_url is None or not await self._respond(response_url, parent,
                                                               in_channel=True):
                raise NotDelivered(slack_error_code(exc)) from None
            return Thread(channel=channel, ts=None, response_url=response_url, parent=parent)
        ts = thread_ts or str(response["ts"])
        return Thread(channel=channel, ts=ts, response_url=response_url, parent=parent,
                      parent_ts=str(response["ts"]))

    async def post_reply(
        self, thread: Thread, message: Message, *, broadcast: bool = False
    ) -> Posted:
        """Post under the thread, or through `response_url`; `delivered` False if nobody could
        be told, `ts` the reply's (None when it went through response_url).

        `broadcast`: the reply is also shown in the channel (Slack's "Also send to channel").
        """
        if thread.ts is not None:
            try:
                response = await self._client.chat_postMessage(
                    channel=thread.channel, thread_ts=thread.ts,
                    reply_broadcast=True if broadcast else None, **message.as_kwargs()
                )
                return Posted(True, str(response["ts"]) if response.get("ts") else None)
            except SLACK_FAILURES as exc:
                logger.warning(
                    "thread reply in %s failed (%s)", thread.channel, slack_error_code(exc)
                )
                if thread.response_url is None:
                    return Posted(False)
                # Out of the thread, the result alone would lack context: send both together.
                return Posted(await self._respond(
                    thread.response_url, combined(thread.parent, message), in_channel=False
                ))
        if thread.response_url is None:
            return Posted(False)
        return Posted(await self._respond(thread.response_url, message, in_channel=True))

    async def update(self, channel: str, ts: str, message: Message) -> bool:
        """Edit a message the bot posted (`chat.update`); False if Slack refused."""
        try:
            await self._client.chat_update(channel=channel, ts=ts, **message.as_kwargs())
            return True
        except SLACK_FAILURES as exc:
            logger.warning("editing a message in %s failed (%s)", channel, slack_error_code(exc))
            return False

    async def react(self, channel: str, ts: str, emoji: str) -> bool:
        """Add a reaction to a message; one already there counts as done."""
        try:
            await self._client.reactions_add(channel=channel, timestamp=ts, name=emoji)
            return True
        except SLACK_FAILURES as exc:
            code = slack_error_code(exc)
            if code == "already_reacted":
                return True
            logger.warning("reacting in %s failed (%s)", channel, code)
            return False

    async def tell(
        self, *, user_id: str, channel_id: str | None, response_url: str | None, message: Message
    ) -> bool:
        """An ephemeral word for one person: `response_url`, else an ephemeral post, else a DM."""
        if response_url is not None and await self._respond(
            response_url, message, in_channel=False
        ):
            return True
        if channel_id is not None:
            try:
                await self._client.chat_postEphemeral(
                    channel=channel_id, user=user_id, **message.as_kwargs()
                )
                return True
            except SLACK_FAILURES as exc:
                logger.warning("ephemeral post failed (%s)", slack_error_code(exc))
        try:
            await self._client.chat_postMessage(channel=user_id, **message.as_kwargs())
            return True
        except SLACK_FAILURES as exc:
            logger.error("could not tell user %s anything (%s)", user_id, slack_error_code(exc))
            return False

    async def replace(self, response_url: str, message: Message) -> bool:
        """Replace the message an interaction came from (e.g. a question and its buttons)."""
        return await self._respond(response_url, message, in_channel=False, replace_original=True)

    async def _respond(
        self, url: str, message: Message, *, in_channel: bool, replace_original: bool = False
    ) -> bool:
        # The Web API client's connection pool: without it every post opens a session of its own.
        webhook = AsyncWebhookClient(url, timeout=10, session=self._client.session)
        try:
            response = await webhook.send(
                **message.as_kwargs(),
                response_type="in_channel" if in_channel else "ephemeral",
                replace_original=replace_original,
            )
        except (TimeoutError, aiohttp.ClientError) as exc:
            logger.warning("response_url post failed (%s)", type(exc).__name__)
            return False
        if response.status_code != 200:
            # An expired response_url answers 404 "expired_url"; never log the URL itself.
            logger.warning("response_url post refused: HTTP %s", response.status_code)
            return False
        return True
