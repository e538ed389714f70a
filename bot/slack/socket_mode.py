"""Socket Mode that stays alive: a watchdog for silently dead connections, and acks that go out.

slack_sdk's aiohttp client reconnects by itself when a connection closes, but it can also stop
receiving while believing it is connected (python-slack-sdk#1701, bolt-python#1529): then every
`/call` fails until someone restarts the bot. `SocketWatchdog` checks the connection every
`interval` seconds, independently of the client's own monitor, and forces a new connection when

    the websocket is closed, the client's receiving task has ended, the client says it is not
    connected, or a ping has gone unanswered for `max_silence` seconds.

It pings in the client's own format (`sdk-ping-pong:<time>`), so the client's receiver records the
answer in `last_ping_pong_time`, which the watchdog reads.

`ObservedSocketModeHandler` refuses an envelope Bolt would fail on (bot/slack/shapes.py), writes
a NUL in its text as U+FFFD (shapes.replace_nul), gives
each envelope a request id (for the logs; Bolt's aiohttp handler
runs every envelope in a task of its own, so the id is seen by that envelope's listener and the work
it starts, and by nothing else), times its ack for the metrics, and counts the envelopes being
handled, so that shutdown can let their acks go out before it closes the connection, and so that
the work they start waits for the acks still to send (bot/tasks.py, `AcksFirst`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import aiohttp
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest

from bot.config import ConfigError
from bot.ops.logs import request_context
from bot.ops.metrics import Metrics, request_kind
from bot.slack.shapes import MalformedRequest, replace_nul, unreadable_part
from bot.slack.start_up import start_failure
from bot.tasks import AcksFirst

logger = logging.getLogger(__name__)

WATCHDOG_INTERVAL_SECONDS = 10.0
# A ping unanswered this many intervals means the connection is dead, even if it looks open.
SILENT_INTERVALS = 3
# Socket Mode seen down this long (reconnects failing, or stuck) and /readyz says not ready: Slack
# reaches the bot over nothing else. A routine reconnect (Slack refreshing the connection, one
# dropped) takes a second or two, a few failed tries (retried every 5-10 s) stay under it.
SOCKET_DOWN_READY_SECONDS = 30.0


def connection_refused(
    exc: SlackApiError | TimeoutError | aiohttp.ClientError, client: SocketModeClient
) -> ConfigError:
    """What a failed `apps.connections.open` (at start-up, or reconnecting) means."""
    return start_failure(
        exc, method="apps.connections.open", token="SLACK_APP_TOKEN",
        fix="create an app-level token with the connections:write scope (Basic Information → "
        "App-Level Tokens) and turn Socket Mode on, or leave it empty for HTTP mode",
        url=client.web_client.base_url,
    )


class ObservedSocketModeHandler(AsyncSocketModeHandler):
    def __init__(
        self, app: AsyncApp, app_token: str, metrics: Metrics | None = None,
        acks: AcksFirst | None = None,
    ) -> None:
        super().__init__(app, app_token)
        self._metrics = metrics
        # The envelopes being handled: shutdown waits for their acks, new work too (bot/tasks.py).
        self._acks = acks if acks is not None else AcksFirst()

    async def handle(  # type: ignore[override]
        self, client: SocketModeClient, req: SocketModeRequest
    ) -> None:
        received = time.perf_counter()
        self._acks.entered()
        try:
            with request_context():
                if replace_nul(req.payload):
                    logger.warning("a NUL in the envelope's text was replaced "
                                   "(shapes.replace_nul)")
                if (part := unreadable_part(req.payload)) is not None:
                    # Bolt would fail on it (bot/slack/shapes.py): left unacknowledged, as Bolt
                    # leaves a request no listener takes (HTTP mode answers it 400).
                    logger.warning("envelope refused: %s", MalformedRequest(part))
                    return
                # Returns once the ack has been sent back over the websocket.
                await super().handle(client, req)
                if self._metrics is not None:
                    payload = req.payload if isinstance(req.payload, dict) else {}
                    self._metrics.slack_acked(request_kind(payload), time.perf_counter() - received)
        finally:
            self._acks.left()

    async def wait_acks(self, timeout: float) -> None:
        """Wait (at most `timeout` s) until every envelope received so far has been answered."""
        if not await self._acks.wait_none(timeout):
            logger.warning("closing Socket Mode with %d request(s) still unanswered",
                           self._acks.count)

    async def connect_first(self) -> None:
        """Connect, asking for the first websocket URL here: slack_sdk's client retries a refused
        app token forever (a traceback in the log every few seconds, start-up never ending)."""
        client: SocketModeClient = self.client
        try:
            answer = await client.web_client.apps_connections_open(app_token=client.app_token)
        except (SlackApiError, TimeoutError, aiohttp.ClientError) as exc:
            raise connection_refused(exc, client) from None
        client.wss_uri = answer["url"]
        await self.connect_async()  # type: ignore[no-untyped-call]


class NoConnection(Exception):
    """The websocket refused (or never answered) every try within the watchdog's time."""


class SocketWatchdog:
    def __init__(
        self,
        client: SocketModeClient,
        *,
        interval: float = WATCHDOG_INTERVAL_SECONDS,
        max_silence: float | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError("the watchdog interval must be positive")
        self._client = client
        self.interval = interval
        self.max_silence = max_silence if max_silence is not None else SILENT_INTERVALS * interval
        self.reconnects = 0
        self._unanswered_since: float | None = None
        # Since when a reconnect of slack_sdk's own has been seen under way (see check).
        self._reconnecting_since: float | None = None
        self._task: asyncio.Task[None] | None = None
        # Since when the connection has been seen down (by a check or a probe), on `clock`; and
        # why the watchdog's last reconnect failed, in words an operator acts on.
        self.clock: Callable[[], float] = time.monotonic  # public: a test moves it
        self._down_since: float | None = None
        self._last_failure: str | None = None

    @property
    def client(self) -> SocketModeClient:
        """The Socket Mode client it watches (and revives)."""
        return self._client

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="socket mode watchdog")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        while not self._client.closed:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception:
                # The watchdog must outlive any one failed reconnect; it tries again next time.
                logger.exception("Socket Mode watchdog check failed")

    async def check(self) -> str | None:
        """One look at the connection; reconnects and returns the reason if it looks dead."""
        client = self._client
        if client.closed:
            return None
        reason = await self._observe()
        if reason is None:
            await self._ping()
            return None
        if client.connect_operation_lock.locked():
            # slack_sdk's own reconnect is under way (waiting on Slack): a second beside it would
            # leave one connection open and read by nobody. Forced only once it seems stuck.
            now = time.time()
            self._reconnecting_since = self._reconnecting_since or now
            if now - self._reconnecting_since <= self.max_silence:
                logger.info("Socket Mode connection looks dead (%s); a reconnect is under way",
                            reason)
                return None
        self._reconnecting_since = None
        self.reconnects += 1
        logger.warning("Socket Mode connection looks dead (%s); reconnecting", reason)
        self._unanswered_since = None
        try:
            await self._reconnect()
        except NoConnection:
            # connect() turns slack_sdk's own reconnects off until it succeeds: back on.
            client.auto_reconnect_enabled = client.default_auto_reconnect_enabled
            self._failed(f"no connection within {self.max_silence:g} s")
            return reason
        except (SlackApiError, TimeoutError, aiohttp.ClientError) as exc:
            self._failed("; ".join(connection_refused(exc, client).problems))
            return reason
        logger.info("Socket Mode reconnected by the watchdog")
        return reason

    async def _reconnect(self) -> None:
        """slack_sdk's `connect_to_new_endpoint(force=True)`, without waiting 5 s for a lock held
        by a reconnect of its own that is stuck (see check): a fresh URL (the Web API client
        waits out a 429), then a connection, given up after `max_silence` (NoConnection).

        slack_sdk's connect() tries the URL it has again, every ping interval, for as long as the
        websocket refuses it. The URL is temporary: once it expired, the watchdog waiting on that
        waited for good, and the bot never came back. Given up, the next check asks for a fresh
        one (which a reconnect of slack_sdk's, sharing `wss_uri`, then tries too)."""
        client = self._client
        lock = client.connect_operation_lock
        owned = not lock.locked()
        if owned:
            await lock.acquire()
        try:
            answer = await client.web_client.apps_connections_open(app_token=client.app_token)
            client.wss_uri = answer["url"]
            try:
                async with asyncio.timeout(self.max_silence):
                    await client.connect()  # type: ignore[no-untyped-call]
            except TimeoutError:
                raise NoConnection from None
        finally:
            if owned:
                lock.release()

    def _failed(self, why: str) -> None:
        # Tried again at the next check; /readyz says it once it has lasted (readiness_problem).
        self._last_failure = why
        logger.error("Socket Mode could not reconnect: %s", why)

    async def readiness_problem(self) -> str | None:
        """For /readyz: None while connected, or down for at most SOCKET_DOWN_READY_SECONDS (a
        reconnect under way); else how long it has been down and why."""
        reason = await self._observe()
        if reason is None or self._down_since is None:
            return None
        down = self.clock() - self._down_since
        if down <= SOCKET_DOWN_READY_SECONDS:
            return None
        tried = (f"; the last reconnect failed: {self._last_failure}" if self._last_failure
                 else "; reconnecting")
        return f"Socket Mode connection to Slack down for {down:.0f} s ({reason}){tried}"

    async def _observe(self) -> str | None:
        """What is wrong with the connection now, remembering since when it has been wrong."""
        reason = await self._problem()
        if reason is None:
            self._down_since = self._last_failure = None
        elif self._down_since is None:
            self._down_since = self.clock()
        return reason

    async def _problem(self) -> str | None:
        client = self._client
        session = client.current_session
        if session is None or session.closed:
            return "the connection is closed"
        receiver = client.message_receiver
        if receiver is None or receiver.done():
            return "the client stopped receiving"
        answered = client.last_ping_pong_time
        if self._unanswered_since is not None:
            if answered is not None and answered >= self._unanswered_since:
                self._unanswered_since = None
            elif time.time() - self._unanswered_since > self.max_silence:
                return f"no answer to pings for {self.max_silence:g} s"
        if not await client.is_connected():
            return "the client reports it is not connected"
        return None

    async def _ping(self) -> None:
        session = self._client.current_session
        if session is None:
            return
        now = time.time()
        try:
            await session.ping(f"sdk-ping-pong:{now}".encode())
        except Exception as exc:  # a failing ping is only a sign; the next check decides
            logger.info("Socket Mode watchdog ping failed: %s", type(exc).__name__)
            return
        if self._unanswered_since is None:
            self._unanswered_since = now
