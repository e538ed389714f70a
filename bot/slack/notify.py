"""Telling people: a parent message and thread replies in the channel, with `response_url` as
fallback.

The bot can't post where it isn't a member (`not_in_channel`, `channel_not_found`: private channels,
DMs between people). Then the command's `response_url` carries the news instead: it keeps no `ts`,
so the call's status is kept current by replacing that message (`replace_original`; Slack takes 5
posts within 30 minutes, the last kept for the outcome), then by a direct message. The requester
must always learn the outcome.

Every `chat.postMessage` goes through its channel's lane (lanes.py: in order, within Slack's rate).
A post whose result matters (`kept`: a call's status message, an escalation's thread posts) goes
through the outbox (outbox.py): written to the database before it is sent, so a restart in between
repairs it instead of losing it. None of this is on a call's dialling path (see calls/service.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.calls.messages import combined
from bot.slack.blocks import Message, context, escape
from bot.slack.lanes import ChannelHeld, ConnectionRetry, Lanes, failed_for_now
from bot.slack.modals import is_response_url
from bot.slack.threads import (
    NOT_EDITABLE, NOT_POSTABLE, Edit, KeepsPosts, Kept, NotDelivered, Once, Posted, Relay, Thread,
    ThreadUnread, nothing_kept,
)

logger = logging.getLogger(__name__)

# What a Slack Web API call can fail with: Slack's refusal, or no answer at all.
SLACK_FAILURES = (SlackApiError, aiohttp.ClientError, asyncio.TimeoutError)

# Slack: a response_url takes up to 5 posts within 30 minutes (a minute kept as a margin).
RESPONSE_URL_USES = 5
RESPONSE_URL_LIFETIME_SECONDS = 29 * 60.0
# Seconds a response_url post waits for Slack's answer; one that times out may have been shown.
RESPONSE_URL_TIMEOUT = 10.0


# reactions.add's answers that a later try can't change (among Slack's documented errors).
_SETTLED_REACTIONS = frozenset({
    "already_reacted", "missing_scope", "not_allowed_token_type", "no_permission", "invalid_name",
    "too_many_emoji", "too_many_reactions", "message_not_found", "channel_not_found",
    "is_archived", "thread_locked"})


def slack_error_code(exc: Exception) -> str:
    """Slack's error code (`not_in_channel`), or the exception's class for a network failure."""
    if isinstance(exc, SlackApiError):
        return str(exc.response.get("error", "unknown"))
    return type(exc).__name__


class Notifier:
    def __init__(
        self,
        client: AsyncWebClient,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        banner: str | None = None,
        trusted_origins: Iterable[str] = (),
    ) -> None:
        self._client = client
        self.trusted_origins = list(trusted_origins)  # response_url hosts besides Slack's
        # Said at the end of every message posted (EVOVOICE_MODE=simulate says calls are simulated).
        self._banner = banner
        self.lanes = Lanes(client, clock=clock, sleep=sleep)
        # The clock a response_url's age is read on (public: a test may move it on).
        self.clock = clock
        # Where kept posts go (bot/slack/outbox.py); without one they are posted like any other.
        self.outbox: KeepsPosts | None = None
        # How long a response_url post waits for Slack's answer (public: a test may shorten it).
        self.response_timeout = RESPONSE_URL_TIMEOUT

    def for_ack(self, message: Message) -> dict[str, Any]:
        """`message` as an ack's answer (`/call help`, a refusal at once): with the banner too."""
        return self._out(message)

    def _out(self, message: Message) -> dict[str, Any]:
        if self._banner is None:
            return message.as_kwargs()
        text = f"{message.text}\n{self._banner}"
        if not message.blocks:  # a text-only message stays one
            return Message(text=text).as_kwargs()
        blocks = [*message.blocks, context(escape(self._banner))]
        return Message(text=text, blocks=blocks).as_kwargs()

    async def _post_message(self, channel: str, **kwargs: Any) -> AsyncSlackResponse:
        return await self.lanes.post(channel, **kwargs)

    async def open_thread(
        self,
        channel: str,
        parent: Message,
        *,
        user_id: str,
        response_url: str | None,
        response_url_used: int = 0,
        thread_ts: str | None = None,
    ) -> Thread | None:
        """Post a call's parent message wherever it can be seen; None if nowhere.

        Runs alongside the dial, never before it: the channel first, else the command's
        `response_url` (seen in the channel, even one the bot isn't in), else a direct message to
        the requester, whose thread then carries the call's news. `response_url_used`: posts the
        `response_url` carried before (a question's answer), counted against Slack's five.
        """
        try:
            thread = await self.start_thread(
                channel, parent, response_url=response_url, thread_ts=thread_ts
            )
        except NotDelivered:
            pass
        else:
            thread.requester = user_id
            thread.response_url_uses += response_url_used
            if thread.ts is None and thread.response_url is not None:
                thread.relay = Relay(thread.response_url, user_id, parent, self.clock(),
                                     uses=thread.response_url_uses)
            return thread
        try:
            response = await self._post_message(user_id, **self._out(parent))
        except SLACK_FAILURES as exc:
            logger.error("could not tell user %s about their call anywhere (%s)", user_id,
                         slack_error_code(exc), extra={"user_id": user_id})
            return None
        ts = str(response["ts"])
        return Thread(channel=str(response.get("channel") or user_id), ts=ts, response_url=None,
                      parent=parent, parent_ts=ts, requester=user_id)

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
            response = await self._post_message(
                channel, thread_ts=thread_ts, **self._out(parent)
            )
        except SLACK_FAILURES as exc:
            logger.warning("posting to %s failed (%s)", channel, slack_error_code(exc))
            if response_url is None or not await self._respond(response_url, parent,
                                                               in_channel=True):
                raise NotDelivered(slack_error_code(exc)) from None
            return Thread(channel=channel, ts=None, response_url=response_url, parent=parent,
                          response_url_uses=1)
        ts = thread_ts or str(response["ts"])
        return Thread(channel=channel, ts=ts, response_url=response_url, parent=parent,
                      parent_ts=str(response["ts"]))

    async def post_reply(
        self, thread: Thread, message: Message, *, broadcast: bool = False,
        kept: Kept | None = None, once: Once | None = None,
    ) -> Posted:
        """Post under the thread, or through `response_url`; `delivered` False if nobody could
        be told (or `once` was not granted), `ts` the reply's (None when it went through
        response_url).

        `broadcast`: the reply is also shown in the channel (Slack's "Also send to channel").
        `kept`: a post whose result matters, kept in the outbox until it is delivered.
        `once`: the claim it is made under, taken with the outbox's row (threads.Once).
        """
        if kept is not None and self.outbox is not None and thread.ts is not None:
            return await self.outbox.post(thread, message, broadcast=broadcast, kept=kept,
                                          once=once)
        if once is not None and not await once(nothing_kept):
            return Posted(False)
        return await self.send_reply(thread, message, broadcast=broadcast)

    async def send_reply(
        self, thread: Thread, message: Message, *, broadcast: bool = False,
        metadata: dict[str, Any] | None = None,
    ) -> Posted:
        """post_reply() itself, `metadata` attached to a post in the thread (Slack's message
        metadata: how the outbox finds a post it sent)."""
        if thread.ts is not None:
            try:
                response = await self._post_message(
                    thread.channel, thread_ts=thread.ts,
                    reply_broadcast=True if broadcast else None, metadata=metadata,
                    **self._out(message)
                )
                return Posted(True, str(response["ts"]) if response.get("ts") else None)
            except SLACK_FAILURES as exc:
                logger.warning(
                    "thread reply in %s failed (%s)", thread.channel, slack_error_code(exc)
                )
                try:
                    if (found := await self._landed(thread, metadata, exc)) is not None:
                        return Posted(True, found)
                except ThreadUnread:
                    # Slack may have taken it: told another way now, the one in the thread
                    # would stay at "Ringing…" for good. Its outbox looks for it again (and sends
                    # it again only if it isn't there).
                    return Posted(False)
                if thread.requester is not None:
                    # Out of the thread, the status alone would lack context: the relay sends
                    # both together, and keeps them current (never a status left at Ringing).
                    # One relay per thread: its response_url's posts are counted once.
                    if thread.relay is None:
                        thread.relay = Relay(thread.response_url, thread.requester, thread.parent,
                                             self.clock(), uses=thread.response_url_uses,
                                             in_channel=False)
                    return Posted(await self.relay_status(thread.relay, message, final=False))
                if thread.response_url is None:
                    return Posted(False, gone=slack_error_code(exc) in NOT_POSTABLE)
                return Posted(await self._respond(
                    thread.response_url, combined(thread.parent, message), in_channel=False
                ))
        if thread.relay is not None:
            return Posted(await self.relay_status(thread.relay, message, final=False))
        if thread.response_url is None:
            return Posted(False)
        return Posted(await self._respond(thread.response_url, message, in_channel=True))

    async def _landed(
        self, thread: Thread, metadata: dict[str, Any] | None, exc: Exception
    ) -> str | None:
        """The `ts` of a reply carrying `metadata` that Slack took though its answer was lost
        (no answer in time, a 5xx): found in the thread, else None. A refusal posted nothing.
        ThreadUnread if Slack failed to show the thread: whether it is there is unknown."""
        refused = isinstance(exc, ChannelHeld) or (
            isinstance(exc, SlackApiError) and exc.response.status_code < 500)
        if metadata is None or thread.ts is None or refused:
            return None
        return await self.find_reply(thread.channel, thread.ts, metadata)

    async def relay_status(self, relay: Relay, message: Message, *, final: bool) -> bool:
        """Show `message` under the relay's parent: replace the response_url's message while it
        lasts (its last use kept for the `final` status), then a direct message, edited after.
        False if nothing reached the requester."""
        shown = combined(relay.parent, message)
        if relay.dm is None:
            fresh = (relay.url is not None
                     and self.clock() - relay.opened < RESPONSE_URL_LIFETIME_SECONDS)
            room = RESPONSE_URL_USES - relay.uses - (0 if final else 1)
            if relay.url is not None and fresh and room > 0:
                # The first post of a relay that follows a failed thread reply has nothing to
                # replace yet (but a question's answer, when the response_url carried one).
                replace = relay.in_channel or relay.uses > 0
                relay.uses += 1
                if await self._respond(relay.url, shown, in_channel=relay.in_channel,
                                       replace_original=replace):
                    return True
                # Refused (expired, used up): by direct message from now on, not taken for the
                # last use kept for the outcome (which would tell nobody until the call ends).
                relay.url = None
            elif fresh and not final:
                return True  # not worth the last use: the outcome will replace it
            try:
                response = await self._post_message(relay.user_id, **self._out(shown))
            except SLACK_FAILURES as exc:
                logger.error("could not tell user %s how their call goes (%s)", relay.user_id,
                             slack_error_code(exc), extra={"user_id": relay.user_id})
                return False
            relay.dm = (str(response.get("channel") or relay.user_id), str(response["ts"]))
            return True
        return bool(await self.update(relay.dm[0], relay.dm[1], shown))

    async def update(self, channel: str, ts: str, message: Message) -> Edit:
        """Edit a message the bot posted (`chat.update`); false if Slack refused (threads.Edit)."""
        try:
            await self._client.chat_update(channel=channel, ts=ts, **self._out(message))
            return Edit.EDITED
        except SLACK_FAILURES as exc:
            logger.warning("editing a message in %s failed (%s)", channel, slack_error_code(exc))
            return Edit.GONE if slack_error_code(exc) in NOT_EDITABLE else Edit.REFUSED

    async def direct_message(self, user_id: str, message: Message) -> tuple[str, str] | None:
        """Post in the bot's direct messages with `user_id` (the app's Messages tab): the DM's
        channel and the message's ts, or None if Slack refused."""
        try:
            response = await self._client.chat_postMessage(channel=user_id, **self._out(message))
        except SLACK_FAILURES as exc:
            logger.warning("direct message to %s failed (%s)", user_id, slack_error_code(exc))
            return None
        channel, ts = response.get("channel"), response.get("ts")
        if not isinstance(channel, str) or not isinstance(ts, str):
            return None
        return channel, ts

    async def find_reply(
        self, channel: str, thread_ts: str, metadata: dict[str, Any]
    ) -> str | None:
        """The `ts` of the bot's reply under `thread_ts` that carries `metadata`, found by reading
        the thread (`conversations.replies`, which needs the conversation's history scope); None
        if it isn't there or Slack won't show the thread; ThreadUnread if Slack failed to show it
        for now (whether the reply is there is unknown)."""
        cursor: str | None = None
        while True:
            try:
                response = await self._client.conversations_replies(
                    channel=channel, ts=thread_ts, include_all_metadata=True, cursor=cursor,
                    limit=200,
                )
            except SLACK_FAILURES as exc:
                logger.info("reading a thread in %s failed (%s)", channel, slack_error_code(exc))
                if failed_for_now(exc):
                    raise ThreadUnread(slack_error_code(exc)) from None
                return None
            for message in response.get("messages") or []:
                if message.get("metadata") == metadata and isinstance(message.get("ts"), str):
                    return str(message["ts"])
            cursor = (response.get("response_metadata") or {}).get("next_cursor") or None
            if cursor is None:
                return None

    async def permalink(self, channel: str, ts: str) -> str | None:
        """A link to a message (`chat.getPermalink`); None if Slack refused."""
        try:
            response = await self._client.chat_getPermalink(channel=channel, message_ts=ts)
        except SLACK_FAILURES as exc:
            logger.info("chat.getPermalink failed (%s)", slack_error_code(exc))
            return None
        link = response.get("permalink")
        return link if isinstance(link, str) and link.startswith("https://") else None

    async def react(self, channel: str, ts: str, emoji: str) -> bool:
        """Add a reaction; True once it is there, or once Slack says it never will be (no
        reactions:write: the edited message says the outcome; retrying would spend rate limits)."""
        try:
            await self._client.reactions_add(channel=channel, timestamp=ts, name=emoji)
            return True
        except SLACK_FAILURES as exc:
            code = slack_error_code(exc)
            if code != "already_reacted":
                logger.warning("reacting in %s failed (%s)", channel, code)
            return code in _SETTLED_REACTIONS

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
                    channel=channel_id, user=user_id, **self._out(message)
                )
                return True
            except SLACK_FAILURES as exc:
                logger.warning("ephemeral post failed (%s)", slack_error_code(exc))
        try:
            await self._post_message(user_id, **self._out(message))
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
        if not is_response_url(url, self.trusted_origins):
            # Whichever payload carried it (a click, a command): never post where a payload says.
            logger.warning("response_url refused: not one of Slack's webhook hosts")
            return False
        # The Web API client's pool (else a session a post); never sent twice (ConnectionRetry).
        webhook = AsyncWebhookClient(url, session=self._client.session,
                                     retry_handlers=[ConnectionRetry(posts=True)])
        try:
            # Timed here too (bot/app.py slack_session bounds every call): a test shortens it.
            async with asyncio.timeout(self.response_timeout):
                response = await webhook.send(
                    **self._out(message),
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
