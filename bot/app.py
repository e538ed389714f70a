"""create_app(): the Bolt AsyncApp with its listeners, its services in `context`, one error
handler."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from slack_bolt.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.middleware.async_middleware import AsyncMiddleware
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bot.config import Settings
from bot.errors import reference_id, unexpected_words
from bot.listeners import actions, confirm, escalation, home
from bot.listeners import call_command as command
from bot.listeners import call_form as form
from bot.listeners.restarting import refuse_while_restarting
from bot.services import Services
from bot.slack.lanes import ConnectionRetry, retry_after_seconds

logger = logging.getLogger(__name__)

SLACK_TIMEOUT_SECONDS = 10

Sleep = Callable[[float], Awaitable[None]]


class RateLimitRetry(AsyncRateLimitErrorRetryHandler):
    """slack_sdk's 429 handler, the same pause (Retry-After, else a second, plus up to a second of
    jitter), waited out with `sleep`: slack_sdk's own calls asyncio.sleep, so a test meeting 429s
    (a Slack rate-limiting the bot's start-up) would wait them out in real time."""

    def __init__(self, max_retry_count: int, sleep: Sleep = asyncio.sleep) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self.sleep = sleep

    async def prepare_for_next_attempt_async(
        self, *, state: RetryState, request: HttpRequest, response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> None:
        if response is None:
            raise error  # type: ignore[misc]
        state.next_attempt_requested = True
        given = {k.lower(): v for k, v in response.headers.items()}.get("retry-after")
        await self.sleep(retry_after_seconds(given[0] if given else None) + random.random())
        state.increment_current_attempt()


def slack_session(timeout: float = SLACK_TIMEOUT_SECONDS) -> aiohttp.ClientSession:
    """One connection pool for the Web API calls and response_url posts, each given up after
    `timeout` seconds. slack_sdk applies its own `timeout` only to sessions it makes itself: on a
    session of ours, a call Slack never answered waited aiohttp's default of five minutes."""
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout))


def create_slack_client(
    settings: Settings, session: aiohttp.ClientSession, *, sleep: Sleep = asyncio.sleep
) -> AsyncWebClient:
    """`session`: `slack_session()`'s, which bounds each call; `sleep`: what the pauses before a
    retry (a 429's, a dropped connection's) are waited out with (a test's clock)."""
    return AsyncWebClient(
        token=settings.slack_bot_token.get_secret_value(),
        base_url=settings.slack_api_url,
        session=session,
        timeout=SLACK_TIMEOUT_SECONDS,
        retry_handlers=[
            ConnectionRetry(sleep=sleep),
            RateLimitRetry(max_retry_count=2, sleep=sleep),
        ],
    )


def create_app(
    settings: Settings, services: Services, client: AsyncWebClient, identity: AsyncSlackResponse
) -> AsyncApp:
    """`identity` is the bot's `auth.test`, made once at start-up.

    Bolt's default single-team authorisation calls `auth.test` lazily, once per request until the
    first answer arrives: a cold burst of 1,000 commands made 1,000 calls. Handing Bolt the answer
    we already have avoids that.
    """
    secret = settings.slack_signing_secret
    authorized = AuthorizeResult.from_auth_test_response(
        auth_test_response=identity, bot_token=client.token
    )

    async def authorize(**_: Any) -> AuthorizeResult:
        return authorized

    app = AsyncApp(
        # Named: without a name Bolt reads the whole call stack (with source lines) to find one.
        name="callbot",
        # Without a token of its own (authorize supplies it), sharing the pool and base URL.
        client=AsyncWebClient(
            base_url=client.base_url, session=client.session, timeout=client.timeout,
            retry_handlers=client.retry_handlers,
        ),
        authorize=authorize,
        # Socket Mode requests are not signed; Bolt skips verification for them.
        signing_secret=secret.get_secret_value() if secret else "socket-mode-unsigned",
        # The answer to Slack leaves when the listener returns. Every listener acks and then only
        # spawns its work (services.tasks), so that is right after its ack(); Bolt's other mode
        # runs the listener aside and polls for its ack every 10 ms: every ack 10 ms late, and
        # during a burst a thousand pollers waking the event loop.
        process_before_response=True,
        raise_error_for_unhandled_request=False,
    )

    app.middleware(InjectServices(services))
    app.middleware(refuse_while_restarting)
    command.register(app, on_error)
    form.register(app)
    actions.register(app)
    escalation.register(app)
    confirm.register(app)
    home.register(app)
    app.error(on_error)
    return app


class InjectServices(AsyncMiddleware):
    """Puts the services in every request's `context`, for the listeners. An object rather than a
    function middleware, like RefuseWhileRestarting: for a function Bolt builds the keyword
    arguments it may ask for (a dozen payload lookups) on every request."""

    def __init__(self, services: Services) -> None:
        self._services = services

    async def async_process(
        self,
        *,
        req: AsyncBoltRequest,
        resp: BoltResponse,
        next: Callable[[], Awaitable[BoltResponse]],
    ) -> BoltResponse | None:
        req.context["services"] = self._services
        return await next()


async def on_error(
    error: Exception, body: dict[str, Any], response: BoltResponse | None = None
) -> BoltResponse | None:
    ref = reference_id()
    logger.error("unhandled error in a listener, reference %s", ref, exc_info=error)
    if response is None:
        # Raised after the ack: the answer is gone (Bolt asserts if we return one); the log has it.
        return None
    words = unexpected_words(ref)
    field = _first_field(body) if body.get("type") == "view_submission" else None
    if field is not None:
        # A form's answer shows no text: only field errors keep the modal open with the words.
        return BoltResponse(status=200, headers={"content-type": "application/json"},
                            body=json.dumps({"response_action": "errors",
                                             "errors": {field: words}}))
    return BoltResponse(status=200, body=words)


def _first_field(body: dict[str, Any]) -> str | None:
    """The block id of the submitted view's first input, where an error can be shown."""
    view = body.get("view")
    blocks = view.get("blocks") if isinstance(view, dict) else None
    for block in blocks if isinstance(blocks, list) else []:
        if isinstance(block, dict) and block.get("type") == "input" and block.get("block_id"):
            return str(block["block_id"])
    return None
