"""The Slack stand-in's core: its state, waits, injected failures and the Web API's dispatch."""

from __future__ import annotations

import asyncio
import itertools
import math
import time
import uuid
from collections.abc import Callable
from typing import Any

from aiohttp import web

from bot.standins.slack.limits import characters, message_problems
from bot.standins.slack.records import (
    APP_ID,
    BOT_ID,
    DEFAULT_BOT_SCOPES,
    ApiCall,
    ApiReply,
    Cut,
    EnvelopeRecord,
    Gate,
    Handler,
    HandlerResult,
    JSONDict,
    Message,
    ResponsePost,
    View,
    _Bucket,
    _Conn,
    _err,
    _Failure,
    _ts_key,
)


class StandInCore:
    """The stand-in's state, its waits, and what tests do to it (inject failures, hold calls,
    read what was called)."""

    def __init__(
        self,
        *,
        bot_token: str = "xoxb-test",
        app_token: str = "xapp-test",
        team_id: str = "T0TEAM",
        bot_user_id: str = "U0BOT",
        response_url_max_posts: int = 5,
        trigger_ttl: float = 3.0,
    ) -> None:
        self.bot_token = bot_token
        self.app_token = app_token
        self.team_id = team_id
        self.enterprise_id: str | None = None
        """Set: this workspace is one of an Enterprise Grid organisation's, as auth.test says
        (`enterprise_id`), and its people's user objects carry `enterprise_user` with it."""
        self.bot_user_id = bot_user_id
        self.bot_id = BOT_ID
        self.app_id = APP_ID
        self.response_url_max_posts = response_url_max_posts
        self.trigger_ttl = trigger_ttl

        self.port: int = 0
        self.base_url: str = ""
        self.api_url: str = ""
        self.ws_url: str = ""

        # Web API state
        self.bot_scopes: list[str] | None = list(DEFAULT_BOT_SCOPES)
        """Scopes reported, like Slack, in the ``x-oauth-scopes`` header of calls made with the bot
        token (``None``: no header)."""
        self.calls: list[ApiCall] = []
        self.usergroups: dict[str, list[str]] = {}
        self.users: dict[str, JSONDict] = {}
        self.only_added_users_exist = False
        """True: like a real workspace, users.info and users.lookupByEmail know only ``users`` (and
        the bot), anyone else is ``user_not_found``. False: every ID answers as a user, for tests
        that don't care who exists. users.list always lists ``users`` and the bot."""
        self.channels: dict[str, JSONDict] = {}
        """conversations.info overrides by channel id, merged over a default public channel."""
        self.messages: dict[tuple[str, str], Message] = {}
        self.deleted_messages: list[Message] = []
        self.custom_emoji: set[str] = set()
        """The workspace's own emoji names, taken by reactions.add besides the standard ones."""
        self.ephemerals: list[JSONDict] = []
        """chat.postEphemeral calls: their params plus ``message_ts``."""
        self.views: dict[str, View] = {}
        self.home_views: dict[str, View] = {}
        self._handlers: dict[str, Handler] = {}
        self._failures: dict[str, list[_Failure]] = {}
        self._gates: dict[str, list[Gate]] = {}
        self._cuts: dict[str, list[Cut]] = {}  # by method; "response_url" for its posts
        self.latency: float = 0.0
        """Seconds every Web API call waits before it is answered (0.25, 3: a slow Slack)."""
        self.posting_rate: float | None = None
        """Messages per second per channel ``chat.postMessage`` accepts (None: no limit)."""
        self.posting_burst: int = 1
        self.posting_clock: Callable[[], float] = time.monotonic
        self._buckets: dict[str, _Bucket] = {}
        self._ts_counter = itertools.count(1)
        self._id_counter = itertools.count(1)
        self._triggers: dict[str, float] = {}
        self._used_triggers: set[str] = set()

        # response_url state
        self.response_url_clock: Callable[[], float] = time.monotonic
        """The time a response_url's 30 minutes are counted on (a test's clock, to spend them
        without waiting)."""
        self._response_minted: dict[str, float] = {}
        self.responses: dict[str, list[JSONDict]] = {}
        self.response_posts: list[ResponsePost] = []
        self._response_gates: list[tuple[Callable[[Any], bool] | None, Gate]] = []
        self._expired_responses: set[str] = set()

        # Socket Mode state
        self.socket_connections: int = 0
        self.socket_messages: list[JSONDict] = []
        """Every text message a Socket Mode client sent (parsed JSON; ``{"raw": text}`` if not
        JSON)."""
        self.envelopes: dict[str, EnvelopeRecord] = {}
        self._conns: list[_Conn] = []
        # Several replicas each hold a connection and Slack spreads envelopes over them (up to 10
        # per app); which one gets an envelope is Slack's choice. True: round-robin over the open
        # connections; False: the newest (one client reconnecting).
        self.spread_envelopes = False
        self._spread_turn = 0
        self._ack_futures: dict[str, asyncio.Future[JSONDict]] = {}
        # apps.connections.open's tickets, and the websocket host refusing (socket_mode.py).
        self._tickets: set[str] = set()
        self._expired_tickets: set[str] = set()
        self.refusing_sockets = False
        self.refused_sockets = 0

        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._stopping = False

        self._defaults: dict[str, Callable[[ApiCall], HandlerResult]] = self._methods()

    def _methods(self) -> dict[str, Callable[[ApiCall], HandlerResult]]:
        """The Web API methods answered by default (WebApiMethods lists them)."""
        return {}

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait_until(
        self, check: Callable[[], Any], timeout: float, describe: Callable[[], str]
    ) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            event = self._changed
            result = check()
            if result is not None and result is not False:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(describe())
            try:
                await asyncio.wait_for(event.wait(), remaining)
            except TimeoutError:
                pass

    # ---------------------------------------------------------------- Web API: public helpers

    def calls_to(self, method: str) -> list[ApiCall]:
        return [c for c in self.calls if c.method == method]

    async def wait_for_call(
        self,
        method: str,
        predicate: Callable[[ApiCall], bool] | None = None,
        timeout: float = 5.0,
    ) -> ApiCall:
        """The first call to ``method`` (matching ``predicate``) already received or still to come.

        Calls are recorded once answered, so ``call.response`` and the stand-in's state (messages,
        views …) already reflect the call when this returns.
        """
        calls = await self.wait_for_calls(method, 1, predicate, timeout)
        return calls[0]

    async def wait_for_calls(
        self,
        method: str,
        n: int,
        predicate: Callable[[ApiCall], bool] | None = None,
        timeout: float = 5.0,
    ) -> list[ApiCall]:
        """The first ``n`` calls to ``method`` (matching ``predicate``), waiting for them if
        needed."""

        def check() -> list[ApiCall] | None:
            found = [c for c in self.calls_to(method) if predicate is None or predicate(c)]
            return found[:n] if len(found) >= n else None

        def describe() -> str:
            matching = self.calls_to(method)
            lines = [
                f"Timed out after {timeout}s waiting for {n} call(s) to {method!r}"
                + (" matching the predicate" if predicate else "")
                + f"; {len(matching)} call(s) to {method!r} received.",
                f"All {len(self.calls)} Web API call(s) received, oldest first:",
            ]
            lines += [f"  {c.brief()}" for c in self.calls[-50:]] or ["  (none)"]
            return "\n".join(lines)

        result: list[ApiCall] = await self._wait_until(check, timeout, describe)
        return result

    def on(self, method: str, handler: Handler) -> None:
        """Answer ``method`` with ``handler(call)`` (sync or async).

        The handler returns the JSON body (a dict; ``"ok"`` is not added for you), an
        :class:`ApiReply` to also set the HTTP status/headers, or ``None`` to fall through to the
        default behaviour (handy for observing calls). Token checks and :meth:`fail` come first.
        Registering a handler for a method the stand-in doesn't know makes that method known.
        """
        self._handlers[method] = handler

    def off(self, method: str) -> None:
        """Remove an :meth:`on` handler and any :meth:`fail` or :meth:`cut` injections for
        ``method``; open its gates."""
        self._handlers.pop(method, None)
        self._failures.pop(method, None)
        self._cuts.pop(method, None)
        for gate in self._gates.pop(method, []):
            gate.open()

    def fail(
        self,
        method: str,
        error: str,
        times: int | None = None,
        *,
        when: Callable[[ApiCall], bool] | None = None,
        retry_after: int = 1,
    ) -> None:
        """Answer ``{"ok": false, "error": error}`` to calls to ``method``.

        ``times``: only the next ``times`` matching calls fail (``None``: all of them until
        :meth:`off`). ``when``: only calls for which it is true fail (e.g.
        ``when=lambda c: c["channel"] == "C0PRIV"``). ``"ratelimited"`` is answered like Slack:
        HTTP 429 with a ``Retry-After`` header. A failed call changes no state.
        """
        status, headers = 200, {}
        if error == "ratelimited":
            status, headers = 429, {"Retry-After": str(retry_after)}
        self._failures.setdefault(method, []).append(_Failure(error, times, when, status, headers))

    def hold(
        self, method: str, *, when: Callable[[ApiCall], bool] | None = None, after: bool = False
    ) -> Gate:
        """Hold calls to ``method`` (those for which ``when`` is true) unanswered until the returned
        gate is opened: a Slack that hangs, for exactly as long as a test needs. ``after``: the
        call is carried out first (e.g. the message is posted), only its answer is held."""
        gate = Gate(when, after=after)
        self._gates.setdefault(method, []).append(gate)
        return gate

    def limit_posting(
        self, per_second: float = 1.0, burst: int = 3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Enforce Slack's per-channel posting limit on ``chat.postMessage``.

        Slack documents about one message per second per channel, short bursts allowed, and
        answers a message over the limit with HTTP 429 ``ratelimited`` and ``Retry-After`` in whole
        seconds; the message is not posted. Modelled as a token bucket of ``burst`` messages
        refilled at ``per_second``; ephemeral messages and edits don't count. ``clock``: the
        bucket's time (a test's clock, shared with the bot's, to refill it without waiting).
        """
        self.posting_clock = clock
        self.posting_rate = per_second
        self.posting_burst = burst
        self._buckets.clear()

    def _hold_channel(self, call: ApiCall, seconds: float) -> None:
        """A 429 answered to ``chat.postMessage`` (a :meth:`fail` ``ratelimited``) holds its
        channel as Slack does: nothing more is posted there until ``Retry-After`` has passed on
        the posting clock (with :meth:`limit_posting` on)."""
        if self.posting_rate is None or call.method != "chat.postMessage":
            return
        channel = self._dm_channel_if_user(str(call.params.get("channel") or ""))
        self._buckets[channel] = _Bucket(1.0 - seconds * self.posting_rate, self.posting_clock())

    def _over_posting_limit(self, call: ApiCall) -> ApiReply | None:
        if self.posting_rate is None or call.method != "chat.postMessage":
            return None
        channel = self._dm_channel_if_user(str(call.params.get("channel") or ""))
        now = self.posting_clock()
        bucket = self._buckets.setdefault(channel, _Bucket(float(self.posting_burst), now))
        bucket.tokens = min(float(self.posting_burst),
                            bucket.tokens + (now - bucket.updated) * self.posting_rate)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        wait = (1.0 - bucket.tokens) / self.posting_rate
        return ApiReply(_err("ratelimited"), 429, {"Retry-After": str(max(1, math.ceil(wait)))})

    def add_message(
        self,
        channel: str,
        text: str,
        *,
        user: str = "U0SOMEONE",
        thread_ts: str | None = None,
        blocks: list[Any] | None = None,
    ) -> Message:
        """Seed a message posted by a person (e.g. the target of a message shortcut)."""
        ts = self._next_ts()
        msg = Message(
            channel=channel,
            ts=ts,
            text=text,
            blocks=blocks,
            thread_ts=self._thread_root(channel, thread_ts),
            user=user,
            versions=[{"text": text, "blocks": blocks, "attachments": None}],
        )
        self.messages[(channel, ts)] = msg
        self._notify()
        return msg

    def thread(self, channel: str, ts: str) -> list[Message]:
        """Replies under the parent ``(channel, ts)``, oldest first (the parent is not included).

        A user id as ``channel`` is mapped to the bot's DM channel with that user.
        """
        channel = self._dm_channel_if_user(channel)
        replies = [
            m
            for m in self.messages.values()
            if m.channel == channel and m.thread_ts == ts and m.ts != ts
        ]
        return sorted(replies, key=lambda m: _ts_key(m.ts))

    def channel_messages(self, channel: str) -> list[Message]:
        """Top-level messages in ``channel`` (not thread replies), oldest first."""
        channel = self._dm_channel_if_user(channel)
        top = [m for m in self.messages.values() if m.channel == channel and not m.is_reply]
        return sorted(top, key=lambda m: _ts_key(m.ts))

    def dm_channel(self, user_id: str) -> str:
        """The id of the bot's DM channel with ``user_id`` (what chat.postMessage answers)."""
        return "D" + user_id[1:]

    def new_trigger_id(self) -> str:
        """Mint a trigger_id that, like Slack's, works once and expires after ``trigger_ttl`` s.

        ``views.open``/``views.push`` refuse a trigger_id not minted here (``invalid_trigger_id``).
        """
        n = next(self._id_counter)
        tid = f"{1000000 + n}.{738474920}.{uuid.uuid4().hex[:20]}"
        self._triggers[tid] = time.monotonic()
        return tid

    # ---------------------------------------------------------------- shared by the parts

    def _next_ts(self) -> str:
        micros = 1_700_000_000_000_000 + next(self._ts_counter) * 100
        return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}0{next(self._id_counter):08X}"

    def _dm_channel_if_user(self, channel: str) -> str:
        if channel[:1] in ("U", "W"):
            return self.dm_channel(channel)
        return channel

    def _thread_root(self, channel: str, thread_ts: str | None) -> str | None:
        """Slack threads a reply to a reply under the reply's parent."""
        if not thread_ts:
            return None
        parent = self.messages.get((channel, thread_ts))
        if parent is not None and parent.thread_ts and parent.thread_ts != parent.ts:
            return parent.thread_ts
        return thread_ts

    def _validate_message_content(
        self, params: JSONDict, *, require_content: bool = True
    ) -> str | None:
        text, blocks, attachments = (
            params.get("text"),
            params.get("blocks"),
            params.get("attachments"),
        )
        if require_content and not text and not blocks and not attachments:
            return "no_text"
        if message_problems(params):
            return "invalid_blocks"
        if isinstance(text, str) and characters(text) > 40000:
            return "msg_too_long"
        return None
