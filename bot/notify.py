"""Telling people: a parent message and thread replies in the channel, with `response_url` as fallback.

The bot can't post where it isn't a member (`not_in_channel`, `channel_not_found`: private channels,
DMs between people). Then the command's `response_url` carries the news instead, but it keeps no `ts`,
so later replies go there too rather than into a thread. The requester must always learn the outcome.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.views import Message, combined

logger = logging.getLogger(__name__)

_SLACK_FAILURES = (SlackApiError, aiohttp.ClientError, asyncio.TimeoutError)


class NotDelivered(Exception):
    """Nothing we tried reached anyone."""


@dataclass
class Thread:
    """Where a call's news goes: a channel thread (`ts`), or `response_url` when the bot can't post."""

    channel: str
    ts: str | None
    response_url: str | None
    parent: Message

    @property
    def threaded(self) -> bool:
        return self.ts is not None


def _error_code(exc: Exception) -> str:
    if isinstance(exc, SlackApiError):
        return str(exc.response.get("error", "unknown"))
    return type(exc).__name__


class Notifier:
    def __init__(self, client: AsyncWebClient) -> None:
        self._client = client

    async def start_thread(
        self,
        channel: str,
        parent: Message,
        *,
        response_url: str | None,
        thread_ts: str | None = None,
    ) -> Thread:
        """Post the parent message (or reply under `thread_ts`); raise NotDelivered if nobody hears it.

        Called before dialling: a call is only placed once we know its news can reach someone.
        """
        try:
            response = await self._client.chat_postMessage(
                channel=channel, thread_ts=thread_ts, **parent.as_kwargs()
            )
        except _SLACK_FAILURES as exc:
            logger.warning("posting to %s failed (%s)", channel, _error_code(exc))
            if response_url is None or not await self._respond(response_url, parent,
                                                               in_channel=True):
                raise NotDelivered(_error_code(exc)) from None
            return Thread(channel=channel, ts=None, response_url=response_url, parent=parent)
        ts = thread_ts or str(response["ts"])
        return Thread(channel=channel, ts=ts, response_url=response_url, parent=parent)

    async def reply(self, thread: Thread, message: Message) -> bool:
        """Post under the thread, or through `response_url`. False if nobody could be told."""
        if thread.ts is not None:
            try:
                await self._client.chat_postMessage(
                    channel=thread.channel, thread_ts=thread.ts, **message.as_kwargs()
                )
                return True
            except _SLACK_FAILURES as exc:
                logger.warning("thread reply in %s failed (%s)", thread.channel, _error_code(exc))
                if thread.response_url is None:
                    return False
                # Out of the thread, the result alone would lack context: send both together.
                return await self._respond(
                    thread.response_url, combined(thread.parent, message), in_channel=False
                )
        if thread.response_url is None:
            return False
        return await self._respond(thread.response_url, message, in_channel=True)

    async def tell(
        self, *, user_id: str, channel_id: str | None, response_url: str | None, message: Message
    ) -> bool:
        """An ephemeral word for one person: `response_url`, else an ephemeral post, else a DM."""
        if response_url is not None and await self._respond(response_url, message, in_channel=False):
            return True
        if channel_id is not None:
            try:
                await self._client.chat_postEphemeral(
                    channel=channel_id, user=user_id, **message.as_kwargs()
                )
                return True
            except _SLACK_FAILURES as exc:
                logger.warning("ephemeral post failed (%s)", _error_code(exc))
        try:
            await self._client.chat_postMessage(channel=user_id, **message.as_kwargs())
            return True
        except _SLACK_FAILURES as exc:
            logger.error("could not tell user %s anything (%s)", user_id, _error_code(exc))
            return False

    async def replace(self, response_url: str, message: Message) -> bool:
        """Replace the message an interaction came from (e.g. a question and its buttons)."""
        return await self._respond(response_url, message, in_channel=False, replace_original=True)

    async def _respond(
        self, url: str, message: Message, *, in_channel: bool, replace_original: bool = False
    ) -> bool:
        webhook = AsyncWebhookClient(url, timeout=10)
        try:
            response = await webhook.send(
                text=message.text,
                blocks=message.blocks or None,
                response_type="in_channel" if in_channel else "ephemeral",
                replace_original=replace_original,
            )
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            logger.warning("response_url post failed (%s)", type(exc).__name__)
            return False
        if response.status_code != 200:
            # An expired response_url answers 404 "expired_url"; never log the URL itself.
            logger.warning("response_url post refused: HTTP %s", response.status_code)
            return False
        return True
