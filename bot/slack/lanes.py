"""Each channel's `chat.postMessage` calls, in order, within Slack's posting rate.

Slack accepts about one message per second per channel (short bursts allowed) and answers more with
429 and `Retry-After`. Every post goes through its channel's lane: posts start in the order they
were asked for, a few at a time (LANE_IN_FLIGHT: enough to keep up with Slack's rate when it answers
slowly), and a 429 holds the whole channel for its `Retry-After` before the post is sent again. A
burst of calls in one channel shows every thread as fast as Slack allows.
"""

from __future__ import annotations

import asyncio
import math
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

logger = logging.getLogger(__name__)

# A message waits out its channel's Retry-After for this long in all, and is rate-limited at most
# this often; beyond either, it takes the next way to the requester.
MAX_POSTING_WAIT_SECONDS = 60.0
MAX_RATE_LIMITED = 10
# Posts in flight per channel: enough to reach Slack's ~1 message per second per channel even when
# each answer takes 3 s, few enough that a burst doesn't throw itself at the limit all at once.
LANE_IN_FLIGHT = 4


# The Web API methods the bot calls that post a message: sent twice, it is there twice.
_POSTING_METHODS = frozenset({"chat.postMessage", "chat.postEphemeral"})


class ConnectionRetry(AsyncConnectionErrorRetryHandler):
    """slack_sdk's one retry after a connection error, made only where sending twice posts nothing
    twice: the connection never opened (nothing reached Slack), or the call is no post (an edit,
    a read, a reaction). A post whose connection dropped once it was sent (a proxy or the network
    failing mid-answer) may be in Slack already, its answer lost: it fails as a post Slack never
    answered does (a kept post is looked for in its thread, bot/slack/outbox.py; any other takes
    the next way). `posts`: every request of this client posts (a response_url's). `sleep`
    waits out the pause before the retry (half a second plus up to a second of jitter): slack_sdk's
    own calls asyncio.sleep, so a test whose Slack drops a connection would wait it in real time."""

    def __init__(
        self, *, posts: bool = False, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    ) -> None:
        super().__init__(max_retry_count=1)
        self._posts = posts
        self.sleep = sleep

    async def _can_retry_async(
        self, *, state: RetryState, request: HttpRequest, response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if isinstance(error, aiohttp.ClientConnectorError):
            return True
        if self._posts or request.url.rsplit("/", 1)[-1] in _POSTING_METHODS:
            return False
        return await super()._can_retry_async(state=state, request=request, response=response,
                                              error=error)

    async def prepare_for_next_attempt_async(
        self, *, state: RetryState, request: HttpRequest, response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> None:
        state.next_attempt_requested = True
        await self.sleep(self.interval_calculator.calculate_sleep_duration(state.current_attempt))
        state.increment_current_attempt()


def retry_after(exc: SlackApiError) -> float | None:
    """Seconds Slack asks to wait before posting again (429), else None."""
    if exc.response.status_code != 429:
        return None
    headers = {k.lower(): v for k, v in (exc.response.headers or {}).items()}
    raw = headers.get("retry-after")
    if isinstance(raw, list):
        raw = raw[0] if raw else None
    return retry_after_seconds(raw)


def without_rate_limit_waits(client: AsyncWebClient) -> AsyncWebClient:
    """`client` (its token, URL, connection pool, timeout and connection retries) without its
    waiting out of 429s: the caller decides what a Retry-After is worth."""
    return AsyncWebClient(
        token=client.token, base_url=client.base_url, session=client.session,
        timeout=client.timeout,
        retry_handlers=[h for h in client.retry_handlers
                        if not isinstance(h, AsyncRateLimitErrorRetryHandler)],
    )


def retry_after_seconds(given: str | None) -> float:
    """A 429's Retry-After in seconds; a second when it is missing or not a number of seconds
    (a proxy's HTTP date, say): unread, it would fail the call it was meant to delay."""
    try:
        seconds = float(given) if given is not None else 1.0
    except ValueError:
        return 1.0
    return max(0.0, seconds) if math.isfinite(seconds) else 1.0


# Slack's answers that say it failed for now, not that the request can't be granted.
_FAILED_FOR_NOW = {"ratelimited", "internal_error", "fatal_error", "service_unavailable",
                   "request_timeout"}


def failed_for_now(exc: Exception) -> bool:
    """Whether a failure of Slack's may pass on a later try: no answer, 429, 5xx, or an error
    of its own (as opposed to a refusal: a missing scope, a channel the bot can't read)."""
    if not isinstance(exc, SlackApiError):
        return True
    status = exc.response.status_code
    return status == 429 or status >= 500 or exc.response.get("error") in _FAILED_FOR_NOW


class ChannelHeld(TimeoutError):
    """The channel's Retry-After would keep a post waiting past MAX_POSTING_WAIT_SECONDS in all: it
    takes the next way to the requester instead (a timeout, for the Notifier's fallbacks)."""


@dataclass
class _Lane:
    """One channel's posts: they start in the order they came (the lock is fair), at most
    LANE_IN_FLIGHT at a time, and all wait out the channel's Retry-After."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(LANE_IN_FLIGHT))
    users: int = 0
    not_before: float = 0.0  # the channel's Retry-After, on the lanes' clock


class Lanes:
    def __init__(
        self,
        client: AsyncWebClient,
        *,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        # Posts wait out Retry-After in their channel's lane, in order; a client that waited on its
        # own would hold a lane's later posts behind one it retries blindly.
        self._poster = without_rate_limit_waits(client)
        # The clock Retry-After is waited out on (public: a test may run it faster).
        self.clock = clock
        self.sleep = sleep
        self._lanes: dict[str, _Lane] = {}

    async def post(self, channel: str, **kwargs: Any) -> AsyncSlackResponse:
        """`chat.postMessage` in `channel`'s lane: started in order, a few at a time, 429s waited
        out by every post of the channel."""
        lane = self._lanes.setdefault(channel, _Lane())
        lane.users += 1
        try:
            async with lane.lock:
                await lane.slots.acquire()
            try:
                # What this post has waited out: its own 429s' Retry-After and the channel's,
                # set by the posts before it.
                waited = 0.0
                for attempt in range(1, MAX_RATE_LIMITED + 1):
                    delay = lane.not_before - self.clock()
                    if delay > 0:
                        if waited + delay > MAX_POSTING_WAIT_SECONDS:
                            raise ChannelHeld(f"{channel} is rate-limited for {delay:.0f} s more")
                        await self.sleep(delay)
                        waited += delay
                    try:
                        return await self._poster.chat_postMessage(channel=channel, **kwargs)
                    except SlackApiError as exc:
                        wait = retry_after(exc)
                        if wait is not None:
                            # The channel's, whether or not this post waits it out: the posts
                            # after it must not meet another 429 inside it.
                            lane.not_before = max(lane.not_before, self.clock() + wait)
                        if (wait is None or waited + wait > MAX_POSTING_WAIT_SECONDS
                                or attempt == MAX_RATE_LIMITED):
                            raise
                        logger.info("posting in %s: rate-limited, waiting %.0f s", channel, wait)
                raise AssertionError("unreachable")  # the last attempt returns or raises
            finally:
                lane.slots.release()
        finally:
            lane.users -= 1
            if lane.users == 0 and lane.not_before <= self.clock():
                self._lanes.pop(channel, None)
