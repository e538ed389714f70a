"""A loopback stand-in for Slack, speaking Slack's real wire protocols.

One aiohttp server on 127.0.0.1 (free port) plays three parts of Slack:

* the **Web API** (``/api/<method>``): point ``AsyncWebClient(base_url=standin.api_url)`` (or
  ``SLACK_API_URL``) at it. Every call is recorded as an :class:`ApiCall`; messages, threads,
  reactions and views are kept as state; failures can be injected with :meth:`SlackStandIn.fail`,
  calls held at a gate with :meth:`SlackStandIn.hold`, every answer delayed by ``latency`` (Slack on
  a bad day), and Slack's per-channel posting limit switched on with
  :meth:`SlackStandIn.limit_posting`.
* **response_url** endpoints (``/response/<id>``): mint one with :meth:`SlackStandIn.response_url`,
  put it in a slash-command or interactive payload, and read what the app posted back.
* **Socket Mode** (``/link/``): ``apps.connections.open`` answers ``ws_url``; the stand-in sends
  ``hello``, then envelopes (:meth:`SlackStandIn.send_envelope`) and routes the client's acks back
  by ``envelope_id``.

Module-level helpers build what Slack sends to an app: signed HTTP bodies (:func:`sign`,
:func:`slash_command_body`, :func:`interactive_body`) and payloads (:func:`slash_command_payload`,
:func:`message_shortcut_payload`, :func:`global_shortcut_payload`, :func:`block_actions_payload`,
:func:`view_submission_payload`, :func:`block_suggestion_payload`).

Times recorded here (``ApiCall.time``, ``EnvelopeRecord.sent_at`` …) are ``time.monotonic()``,
the same clock as ``asyncio.get_running_loop().time()``.

Nothing here reaches the network beyond the loopback interface.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import inspect
import itertools
import json
import math
import socket
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Awaitable, Callable

from aiohttp import WSCloseCode, WSMsgType, web

__all__ = [
    "ApiCall",
    "ApiReply",
    "EnvelopeRecord",
    "Gate",
    "Message",
    "ResponsePost",
    "SlackStandIn",
    "View",
    "block_actions_payload",
    "block_suggestion_payload",
    "global_shortcut_payload",
    "interactive_body",
    "message_shortcut_payload",
    "sign",
    "slash_command_body",
    "slash_command_payload",
    "view_submission_payload",
]

JSONDict = dict[str, Any]

APP_ID = "A0APP"
BOT_ID = "B0BOT"
TEAM_DOMAIN = "test"
WORKSPACE_URL = "https://test.slack.com/"
DEFAULT_TRIGGER_ID = "13345224609.738474920.8088930838d88f008e0"
VERIFICATION_TOKEN = "vErIfIcAtIoNtOkEnStAnDiN"
DEFAULT_BOT_SCOPES = (
    "commands",
    "chat:write",
    "chat:write.public",
    "usergroups:read",
    "users:read",
)

# Parameters that slack_sdk sends JSON-encoded inside form bodies; decoded for convenience.
_JSON_PARAMS = ("blocks", "attachments", "view", "metadata")


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


@dataclass
class ApiCall:
    """One Web API call as the stand-in received it."""

    method: str
    params: JSONDict
    """Query string, form body and JSON body merged; ``token`` removed (see ``token``);
    ``blocks``/``attachments``/``view``/``metadata`` JSON strings decoded."""
    token: str | None
    """From ``Authorization: Bearer …`` or else the ``token`` parameter."""
    time: float
    """``time.monotonic()`` when the request arrived."""
    http_method: str = "POST"
    content_type: str = ""
    status: int = 200
    """HTTP status the stand-in answered."""
    response: JSONDict | None = None
    """JSON body the stand-in answered."""
    answered: float = 0.0
    """``time.monotonic()`` when the stand-in answered (after ``latency`` and any gate)."""

    @property
    def ok(self) -> bool:
        return bool(self.response and self.response.get("ok"))

    def get(self, key: str, default: Any = None) -> Any:
        return self.params.get(key, default)

    def __getitem__(self, key: str) -> Any:
        return self.params[key]

    def brief(self) -> str:
        shown = {k: _short(v) for k, v in self.params.items()}
        answer = "pending" if self.response is None else _short(self.response, 160)
        return f"{self.method} {shown} -> {self.status} {answer}"


@dataclass
class ApiReply:
    """What an :meth:`SlackStandIn.on` handler may return to control the HTTP status/headers."""

    body: JSONDict
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Message:
    """A message in a channel, as the stand-in keeps it."""

    channel: str
    ts: str
    text: str | None
    blocks: list[Any] | None = None
    attachments: list[Any] | None = None
    thread_ts: str | None = None
    user: str | None = None
    bot_id: str | None = None
    metadata: Any = None
    reactions: list[str] = field(default_factory=list)
    versions: list[JSONDict] = field(default_factory=list)
    """Every version of the content in order (``{"text", "blocks", "attachments"}``); the last one
    is the current one, so ``len(versions) - 1`` is the number of ``chat.update`` edits."""
    params: JSONDict = field(default_factory=dict)
    """Parameters of the call that created the message (``chat.postMessage``)."""

    @property
    def is_reply(self) -> bool:
        return self.thread_ts is not None and self.thread_ts != self.ts

    @property
    def edits(self) -> int:
        return max(0, len(self.versions) - 1)

    def to_api(self, team_id: str) -> JSONDict:
        """The message object as Slack returns it in API responses."""
        msg: JSONDict = {"type": "message", "ts": self.ts, "text": self.text or ""}
        if self.user is not None:
            msg["user"] = self.user
        if self.bot_id is not None:
            msg["bot_id"] = self.bot_id
            msg["app_id"] = APP_ID
            msg["bot_profile"] = {
                "id": self.bot_id,
                "app_id": APP_ID,
                "name": "callbot",
                "team_id": team_id,
            }
        msg["team"] = team_id
        if self.blocks is not None:
            msg["blocks"] = self.blocks
        if self.attachments is not None:
            msg["attachments"] = self.attachments
        if self.thread_ts is not None:
            msg["thread_ts"] = self.thread_ts
        if self.metadata is not None:
            msg["metadata"] = self.metadata
        if self.edits:
            msg["edited"] = {"user": self.user, "ts": self.ts}
        return msg


@dataclass
class View:
    """A modal (or home tab) opened through ``views.open``/``views.push``/``views.publish``."""

    id: str
    hash: str
    view: JSONDict
    """The current view, as Slack returns it (posted fields plus ``id``, ``hash``, ``state`` …)."""
    versions: list[JSONDict] = field(default_factory=list)
    """Every posted view (as sent by the app), in order; the last one is current."""
    trigger_id: str | None = None
    opened_by: str = "views.open"
    external_id: str | None = None
    user_id: str | None = None


@dataclass
class ResponsePost:
    """One POST to a response_url, accepted or not."""

    id: str
    url: str
    body: Any
    """Parsed JSON (or the raw text if it was not JSON)."""
    status: int
    answer: str
    time: float


@dataclass
class EnvelopeRecord:
    """A Socket Mode envelope the stand-in sent and (maybe) the ack it got back."""

    envelope_id: str
    type: str
    payload: JSONDict
    connection: int
    """Which websocket connection (1-based, in order of acceptance) carried it."""
    sent_at: float
    ack: JSONDict | None = None
    acked_at: float | None = None


@dataclass
class _Failure:
    error: str
    remaining: int | None
    when: Callable[[ApiCall], bool] | None
    status: int
    headers: dict[str, str]


class Gate:
    """Holds the calls to one Web API method until :meth:`open` (see :meth:`SlackStandIn.hold`).

    A held call has arrived but is not answered: it is not yet in ``SlackStandIn.calls``.
    """

    def __init__(self, when: Callable[[ApiCall], bool] | None) -> None:
        self.when = when
        self.waiting = 0
        """How many calls are held now."""
        self.arrived = asyncio.Event()
        self._open = asyncio.Event()

    def open(self) -> None:
        self._open.set()

    async def wait_until_held(self, n: int = 1, timeout: float = 5.0) -> None:
        """Wait until at least ``n`` calls are held at the gate."""
        async with asyncio.timeout(timeout):
            while self.waiting < n:
                self.arrived.clear()
                await self.arrived.wait()

    async def _pass(self, call: ApiCall) -> None:
        if self._open.is_set() or (self.when is not None and not self.when(call)):
            return
        self.waiting += 1
        self.arrived.set()
        try:
            await self._open.wait()
        finally:
            self.waiting -= 1


@dataclass
class _Bucket:
    """Slack's per-channel posting limit: about one message per second, short bursts allowed."""

    tokens: float
    updated: float


@dataclass
class _Conn:
    number: int
    ws: web.WebSocketResponse
    request: web.Request
    send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    open: bool = True
    silent: bool = False


HandlerResult = JSONDict | ApiReply | None
Handler = Callable[[ApiCall], HandlerResult | Awaitable[HandlerResult]]


def _short(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=repr)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _err(error: str, **extra: Any) -> JSONDict:
    return {"ok": False, "error": error, **extra}


# --------------------------------------------------------------------------------------------
# The stand-in
# --------------------------------------------------------------------------------------------


class SlackStandIn:
    """Slack's Web API, response_url endpoints and Socket Mode on a loopback port.

    Use as ``async with SlackStandIn() as slack: ...`` or call :meth:`start`/:meth:`stop`.
    """

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
        self.ephemerals: list[JSONDict] = []
        """chat.postEphemeral calls: their params plus ``message_ts``."""
        self.views: dict[str, View] = {}
        self.home_views: dict[str, View] = {}
        self._handlers: dict[str, Handler] = {}
        self._failures: dict[str, list[_Failure]] = {}
        self._gates: dict[str, list[Gate]] = {}
        self.latency: float = 0.0
        """Seconds every Web API call waits before it is answered (0.25, 3: a slow Slack)."""
        self.posting_rate: float | None = None
        """Messages per second per channel ``chat.postMessage`` accepts (None: no limit)."""
        self.posting_burst: int = 1
        self._buckets: dict[str, _Bucket] = {}
        self._ts_counter = itertools.count(1)
        self._id_counter = itertools.count(1)
        self._triggers: dict[str, float] = {}
        self._used_triggers: set[str] = set()

        # response_url state
        self.responses: dict[str, list[JSONDict]] = {}
        self.response_posts: list[ResponsePost] = []
        self._expired_responses: set[str] = set()

        # Socket Mode state
        self.socket_connections: int = 0
        self.socket_messages: list[JSONDict] = []
        """Every text message a Socket Mode client sent (parsed JSON; ``{"raw": text}`` if not
        JSON)."""
        self.envelopes: dict[str, EnvelopeRecord] = {}
        self._conns: list[_Conn] = []
        self._ack_futures: dict[str, asyncio.Future[JSONDict]] = {}

        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._stopping = False

        self._defaults: dict[str, Callable[[ApiCall], HandlerResult]] = {
            "api.test": self._api_test,
            "auth.test": self._auth_test,
            "apps.connections.open": self._apps_connections_open,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.delete": self._chat_delete,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "chat.getPermalink": self._chat_get_permalink,
            "reactions.add": self._reactions_add,
            "views.open": self._views_open,
            "views.push": self._views_push,
            "views.update": self._views_update,
            "views.publish": self._views_publish,
            "usergroups.users.list": self._usergroups_users_list,
            "users.info": self._users_info,
            "users.list": self._users_list,
            "users.lookupByEmail": self._users_lookup_by_email,
            "users.profile.get": self._users_profile_get,
            "conversations.info": self._conversations_info,
            "conversations.open": self._conversations_open,
        }

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("SlackStandIn already started")
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._handle_api)
        app.router.add_post("/response/{rid}", self._handle_response_url)
        app.router.add_get("/link/", self._handle_ws)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5.0)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        site = web.SockSite(runner, sock, backlog=1024)
        await site.start()
        self._runner = runner
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.api_url = f"{self.base_url}/api/"
        self.ws_url = f"ws://127.0.0.1:{self.port}/link/"

    async def stop(self) -> None:
        if self._runner is None:
            return
        self._stopping = True
        for gates in self._gates.values():
            for gate in gates:
                gate.open()
        conns = [c for c in self._conns if c.open or c.silent]
        for c in conns:
            c.open = False
        await asyncio.gather(*(self._close_ws(c) for c in conns), return_exceptions=True)
        for envelope_id, fut in self._ack_futures.items():
            if not fut.done():
                fut.set_exception(
                    AssertionError(f"SlackStandIn stopped before envelope {envelope_id} was acked")
                )
                fut.exception()  # mark retrieved: nobody may be waiting
        self._ack_futures.clear()
        runner, self._runner = self._runner, None
        await runner.cleanup()

    async def __aenter__(self) -> SlackStandIn:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

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
        """Remove an :meth:`on` handler and any :meth:`fail` injections for ``method``; open its
        gates."""
        self._handlers.pop(method, None)
        self._failures.pop(method, None)
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

    def hold(self, method: str, *, when: Callable[[ApiCall], bool] | None = None) -> Gate:
        """Hold calls to ``method`` (those for which ``when`` is true) unanswered until the returned
        gate is opened: a Slack that hangs, for exactly as long as a test needs."""
        gate = Gate(when)
        self._gates.setdefault(method, []).append(gate)
        return gate

    def limit_posting(self, per_second: float = 1.0, burst: int = 3) -> None:
        """Enforce Slack's per-channel posting limit on ``chat.postMessage``.

        Slack documents about one message per second per channel, short bursts allowed, and
        answers a message over the limit with HTTP 429 ``ratelimited`` and ``Retry-After`` in whole
        seconds; the message is not posted. Modelled as a token bucket of ``burst`` messages
        refilled at ``per_second``; ephemeral messages and edits don't count.
        """
        self.posting_rate = per_second
        self.posting_burst = burst
        self._buckets.clear()

    def _over_posting_limit(self, call: ApiCall) -> ApiReply | None:
        if self.posting_rate is None or call.method != "chat.postMessage":
            return None
        channel = self._dm_channel_if_user(str(call.params.get("channel") or ""))
        now = time.monotonic()
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

        trigger_ids not minted here are always accepted by ``views.open``/``views.push``.
        """
        n = next(self._id_counter)
        tid = f"{1000000 + n}.{738474920}.{uuid.uuid4().hex[:20]}"
        self._triggers[tid] = time.monotonic()
        return tid

    # ---------------------------------------------------------------- Web API: server side

    async def _handle_api(self, request: web.Request) -> web.StreamResponse:
        received = time.monotonic()
        method = request.match_info["method"]
        params: JSONDict = dict(request.query)
        ctype = request.content_type
        bad_body: str | None = None
        if request.method == "POST" and request.body_exists:
            if ctype == "application/json":
                try:
                    body = await request.json()
                except ValueError:
                    bad_body = "invalid_json"
                else:
                    if isinstance(body, dict):
                        params.update(body)
                    else:
                        bad_body = "invalid_json"
            elif ctype in ("application/x-www-form-urlencoded", "multipart/form-data"):
                form = await request.post()
                for key, value in form.items():
                    if isinstance(value, web.FileField):
                        params[key] = value.file.read()
                    else:
                        params[key] = value
            else:
                text = await request.text()
                params.update(dict(urllib.parse.parse_qsl(text, keep_blank_values=True)))
        token: str | None = None
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            token = auth[len("Bearer ") :].strip() or None
        param_token = params.pop("token", None)
        if token is None and isinstance(param_token, str) and param_token:
            token = param_token
        for key in _JSON_PARAMS:
            encoded = params.get(key)
            if isinstance(encoded, str) and encoded[:1] in ("[", "{"):
                try:
                    params[key] = json.loads(encoded)
                except ValueError:
                    pass

        call = ApiCall(
            method=method,
            params=params,
            token=token,
            time=received,
            http_method=request.method,
            content_type=ctype,
        )
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        for gate in self._gates.get(method, []):
            await gate._pass(call)
        if bad_body is not None:
            reply = ApiReply(_err(bad_body))
        else:
            reply = await self._dispatch(call)
        call.status = reply.status
        call.response = reply.body
        call.answered = time.monotonic()
        self.calls.append(call)
        self._notify()
        headers = dict(reply.headers)
        if token == self.bot_token and bad_body is None and self.bot_scopes is not None:
            headers.setdefault("x-oauth-scopes", ",".join(self.bot_scopes))
        return web.json_response(reply.body, status=reply.status, headers=headers)

    async def _dispatch(self, call: ApiCall) -> ApiReply:
        method = call.method
        if method not in self._defaults and method not in self._handlers:
            return ApiReply(_err("unknown_method", req_method=method))
        auth_error = self._check_token(method, call.token)
        if auth_error is not None:
            return ApiReply(_err(auth_error))
        failures = self._failures.get(method, [])
        for failure in list(failures):
            if failure.when is not None and not failure.when(call):
                continue
            if failure.remaining is not None:
                failure.remaining -= 1
                if failure.remaining <= 0:
                    failures.remove(failure)
            return ApiReply(_err(failure.error), failure.status, dict(failure.headers))
        limited = self._over_posting_limit(call)
        if limited is not None:
            return limited
        handler = self._handlers.get(method)
        if handler is not None:
            result = handler(call)
            if inspect.isawaitable(result):
                result = await result
            if isinstance(result, ApiReply):
                return result
            if isinstance(result, dict):
                return ApiReply(result)
            if result is not None:
                raise TypeError(
                    f"on({method!r}) handler returned {type(result).__name__}, "
                    "not dict/ApiReply/None"
                )
        default = self._defaults.get(method)
        if default is None:
            return ApiReply(_err("unknown_method", req_method=method))
        result = default(call)
        if isinstance(result, ApiReply):
            return result
        assert result is not None
        return ApiReply(result)

    def _check_token(self, method: str, token: str | None) -> str | None:
        expected = self.app_token if method == "apps.connections.open" else self.bot_token
        if token is None:
            return "not_authed"
        if token == expected:
            return None
        if token in (self.bot_token, self.app_token):
            return "not_allowed_token_type"
        return "invalid_auth"

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
        if isinstance(text, str) and len(text) > 40000:
            return "msg_too_long"
        return None

    # ---- default method implementations (each returns the JSON body or an ApiReply)

    def _api_test(self, call: ApiCall) -> JSONDict:
        return {"ok": True, "args": call.params}

    def _auth_test(self, call: ApiCall) -> JSONDict:
        return {
            "ok": True,
            "url": WORKSPACE_URL,
            "team": "Test Team",
            "user": "callbot",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _apps_connections_open(self, call: ApiCall) -> JSONDict:
        if self._stopping:
            return _err("service_unavailable")
        return {"ok": True, "url": self.ws_url}

    def _chat_post_message(self, call: ApiCall) -> JSONDict:
        p = call.params
        channel = p.get("channel")
        if not channel or not isinstance(channel, str):
            return _err("channel_not_found")
        problem = self._validate_message_content(p)
        if problem:
            return _err(problem)
        channel = self._dm_channel_if_user(channel)
        ts = self._next_ts()
        thread_ts = p.get("thread_ts") or None
        msg = Message(
            channel=channel,
            ts=ts,
            text=p.get("text"),
            blocks=p.get("blocks"),
            attachments=p.get("attachments"),
            thread_ts=self._thread_root(channel, thread_ts),
            user=self.bot_user_id,
            bot_id=self.bot_id,
            metadata=p.get("metadata"),
            versions=[
                {
                    "text": p.get("text"),
                    "blocks": p.get("blocks"),
                    "attachments": p.get("attachments"),
                }
            ],
            params=dict(p),
        )
        self.messages[(channel, ts)] = msg
        return {"ok": True, "channel": channel, "ts": ts, "message": msg.to_api(self.team_id)}

    def _chat_update(self, call: ApiCall) -> JSONDict:
        p = call.params
        channel, ts = p.get("channel"), p.get("ts")
        if not channel:
            return _err("channel_not_found")
        msg = self.messages.get((channel, ts or ""))
        if msg is None:
            return _err("message_not_found")
        if msg.bot_id != self.bot_id:
            return _err("cant_update_message")
        problem = self._validate_message_content(p, require_content=False)
        if problem:
            return _err(problem)
        if "text" in p:
            msg.text = p["text"]
        if "blocks" in p:
            msg.blocks = p["blocks"] or None
        if "attachments" in p:
            msg.attachments = p["attachments"] or None
        if "metadata" in p:
            msg.metadata = p["metadata"]
        msg.versions.append(
            {"text": msg.text, "blocks": msg.blocks, "attachments": msg.attachments}
        )
        return {
            "ok": True,
            "channel": channel,
            "ts": ts,
            "text": msg.text or "",
            "message": msg.to_api(self.team_id),
        }

    def _chat_delete(self, call: ApiCall) -> JSONDict:
        channel, ts = call.params.get("channel", ""), call.params.get("ts", "")
        msg = self.messages.get((channel, ts))
        if msg is None:
            return _err("message_not_found")
        if msg.bot_id != self.bot_id:
            return _err("cant_delete_message")
        del self.messages[(channel, ts)]
        self.deleted_messages.append(msg)
        return {"ok": True, "channel": channel, "ts": ts}

    def _chat_post_ephemeral(self, call: ApiCall) -> JSONDict:
        p = call.params
        if not p.get("channel"):
            return _err("channel_not_found")
        if not p.get("user"):
            return _err("user_not_in_channel")
        problem = self._validate_message_content(p)
        if problem:
            return _err(problem)
        ts = self._next_ts()
        self.ephemerals.append({**p, "message_ts": ts})
        return {"ok": True, "message_ts": ts}

    def _chat_get_permalink(self, call: ApiCall) -> JSONDict:
        channel, ts = call.params.get("channel", ""), call.params.get("message_ts", "")
        if not channel:
            return _err("channel_not_found")
        msg = self.messages.get((channel, ts))
        if msg is None:
            return _err("message_not_found")
        link = f"{WORKSPACE_URL}archives/{channel}/p{ts.replace('.', '')}"
        if msg.is_reply:
            link += f"?thread_ts={msg.thread_ts}&cid={channel}"
        return {"ok": True, "channel": channel, "permalink": link}

    def _reactions_add(self, call: ApiCall) -> JSONDict:
        p = call.params
        msg = self.messages.get((p.get("channel", ""), p.get("timestamp", "")))
        if msg is None:
            return _err("message_not_found")
        name = str(p.get("name", "")).strip(":")
        if not name:
            return _err("invalid_name")
        if name in msg.reactions:
            return _err("already_reacted")
        msg.reactions.append(name)
        return {"ok": True}

    def _check_trigger(self, trigger_id: Any) -> str | None:
        if not trigger_id or not isinstance(trigger_id, str):
            return "invalid_arguments"
        minted = self._triggers.get(trigger_id)
        if minted is None:
            return None
        if trigger_id in self._used_triggers:
            return "exchanged_trigger_id"
        if time.monotonic() - minted > self.trigger_ttl:
            return "expired_trigger_id"
        self._used_triggers.add(trigger_id)
        return None

    def _store_view(
        self, posted: JSONDict, *, view_id: str | None, opened_by: str, trigger_id: str | None
    ) -> View:
        if view_id is None:
            view_id = self._new_id("V")
            record = View(
                id=view_id,
                hash="",
                view={},
                trigger_id=trigger_id,
                opened_by=opened_by,
                external_id=posted.get("external_id") or None,
            )
        else:
            record = self.views[view_id]
        record.hash = f"{int(time.time())}.{uuid.uuid4().hex[:8]}"
        record.versions.append(posted)
        if posted.get("external_id"):
            record.external_id = posted["external_id"]
        full: JSONDict = {
            "id": view_id,
            "team_id": self.team_id,
            "type": posted.get("type"),
            "blocks": posted.get("blocks", []),
            "private_metadata": posted.get("private_metadata", ""),
            "callback_id": posted.get("callback_id", ""),
            "state": {"values": {}},
            "hash": record.hash,
            "title": posted.get("title"),
            "clear_on_close": bool(posted.get("clear_on_close", False)),
            "notify_on_close": bool(posted.get("notify_on_close", False)),
            "close": posted.get("close"),
            "submit": posted.get("submit"),
            "previous_view_id": None,
            "root_view_id": view_id,
            "app_id": self.app_id,
            "external_id": record.external_id or "",
            "app_installed_team_id": self.team_id,
            "bot_id": self.bot_id,
        }
        record.view = full
        return record

    def _validated_view(self, call: ApiCall) -> JSONDict | ApiReply:
        view = call.params.get("view")
        if not isinstance(view, dict):
            return ApiReply(
                _err(
                    "invalid_arguments",
                    response_metadata={"messages": ["[ERROR] missing required field: view"]},
                )
            )
        problems = _view_problems(view)
        if problems:
            return ApiReply(_err("invalid_arguments", response_metadata={"messages": problems}))
        return view

    def _views_open(self, call: ApiCall) -> JSONDict | ApiReply:
        view = self._validated_view(call)
        if isinstance(view, ApiReply):
            return view
        trigger_id = call.params.get("trigger_id") or call.params.get("interactivity_pointer")
        problem = self._check_trigger(trigger_id)
        if problem:
            return _err(problem)
        record = self._store_view(view, view_id=None, opened_by=call.method, trigger_id=trigger_id)
        self.views[record.id] = record
        return {"ok": True, "view": record.view}

    def _views_push(self, call: ApiCall) -> JSONDict | ApiReply:
        return self._views_open(call)

    def _views_update(self, call: ApiCall) -> JSONDict | ApiReply:
        view_id = call.params.get("view_id")
        external_id = call.params.get("external_id")
        record: View | None = None
        if view_id:
            record = self.views.get(view_id)
        elif external_id:
            record = next((v for v in self.views.values() if v.external_id == external_id), None)
        else:
            return _err("invalid_arguments")
        if record is None:
            return _err("not_found")
        posted = self._validated_view(call)
        if isinstance(posted, ApiReply):
            return posted
        expected_hash = call.params.get("hash")
        if expected_hash and expected_hash != record.hash:
            return _err("hash_conflict")
        self._store_view(
            posted, view_id=record.id, opened_by=record.opened_by, trigger_id=record.trigger_id
        )
        return {"ok": True, "view": record.view}

    def _views_publish(self, call: ApiCall) -> JSONDict | ApiReply:
        user_id = call.params.get("user_id")
        if not user_id:
            return _err("invalid_arguments")
        posted = self._validated_view(call)
        if isinstance(posted, ApiReply):
            return posted
        existing = self.home_views.get(user_id)
        if existing is None:
            record = self._store_view(posted, view_id=None, opened_by=call.method, trigger_id=None)
            self.views[record.id] = record
            record.user_id = user_id
            self.home_views[user_id] = record
        else:
            record = self._store_view(
                posted, view_id=existing.id, opened_by=call.method, trigger_id=None
            )
        return {"ok": True, "view": record.view}

    def _usergroups_users_list(self, call: ApiCall) -> JSONDict:
        group = call.params.get("usergroup")
        if not group:
            return _err("invalid_arguments")
        if group not in self.usergroups:
            return _err("no_such_subteam")
        return {"ok": True, "users": list(self.usergroups[group])}

    def _user(self, user_id: str) -> JSONDict:
        given = self.users.get(user_id, {})
        name = given.get("name", user_id.lower())
        real_name = given.get("real_name", f"User {user_id}")
        profile: JSONDict = {
            "real_name": real_name,
            "display_name": name,
            "real_name_normalized": real_name,
            "display_name_normalized": name,
            "email": f"{name}@example.com",
            "phone": "",
            "title": "",
            "team": self.team_id,
        }
        profile.update(given.get("profile", {}))
        user: JSONDict = {
            "id": user_id,
            "team_id": self.team_id,
            "name": name,
            "deleted": False,
            "real_name": real_name,
            "tz": "America/New_York",
            "tz_label": "Eastern Standard Time",
            "tz_offset": -18000,
            "is_admin": False,
            "is_owner": False,
            "is_bot": user_id == self.bot_user_id,
            "is_app_user": False,
            "updated": 1700000000,
        }
        user.update({k: v for k, v in given.items() if k != "profile"})
        user["profile"] = profile
        return user

    def _user_exists(self, user_id: str) -> bool:
        if not self.only_added_users_exist:
            return True
        return user_id in self.users or user_id == self.bot_user_id

    def _users_info(self, call: ApiCall) -> JSONDict:
        user_id = call.params.get("user")
        if not user_id or not self._user_exists(str(user_id)):
            return _err("user_not_found")
        return {"ok": True, "user": self._user(user_id)}

    def _users_list(self, call: ApiCall) -> JSONDict:
        # Paginated like Slack's: `limit` per page, an opaque cursor, "" once there is no more.
        everyone = [self._user(uid) for uid in dict.fromkeys([*self.users, self.bot_user_id])]
        try:
            limit = int(call.params.get("limit") or 0) or len(everyone) or 1
            start = int(str(call.params.get("cursor") or "0").removeprefix("dXNlcjo") or 0)
        except ValueError:
            return _err("invalid_cursor")
        page = everyone[start:start + limit]
        after = start + limit
        cursor = f"dXNlcjo{after}" if after < len(everyone) else ""
        return {"ok": True, "members": page, "response_metadata": {"next_cursor": cursor}}

    def _users_lookup_by_email(self, call: ApiCall) -> JSONDict:
        email = str(call.params.get("email") or "").strip().lower()
        if not email:
            return _err("invalid_arguments")
        for uid in self.users:
            user = self._user(uid)
            if str(user["profile"].get("email", "")).lower() == email:
                return {"ok": True, "user": user}
        return _err("users_not_found")

    def _users_profile_get(self, call: ApiCall) -> JSONDict:
        user_id = call.params.get("user") or self.bot_user_id
        return {"ok": True, "profile": self._user(user_id)["profile"]}

    def _conversations_info(self, call: ApiCall) -> JSONDict:
        channel = call.params.get("channel")
        if not channel:
            return _err("channel_not_found")
        info: JSONDict = {
            "id": channel,
            "name": channel.lower(),
            "is_channel": channel.startswith("C"),
            "is_group": channel.startswith("G"),
            "is_im": channel.startswith("D"),
            "is_private": not channel.startswith("C"),
            "is_archived": False,
            "is_member": True,
            "created": 1700000000,
            "context_team_id": self.team_id,
        }
        info.update(self.channels.get(channel, {}))
        return {"ok": True, "channel": info}

    def _conversations_open(self, call: ApiCall) -> JSONDict:
        users = str(call.params.get("users", "")).split(",")
        users = [u for u in users if u]
        if not users:
            return _err("users_list_not_supplied")
        return {
            "ok": True,
            "channel": {"id": self.dm_channel(users[0]) if len(users) == 1 else self._new_id("G")},
        }

    # ---------------------------------------------------------------- response_url

    def response_url(self) -> str:
        """Mint a fresh response_url (``http://127.0.0.1:PORT/response/<id>``)."""
        if not self.base_url:
            raise RuntimeError("start() the stand-in first")
        rid = uuid.uuid4().hex
        self.responses[rid] = []
        return f"{self.base_url}/response/{rid}"

    def _response_id(self, url_or_id: str) -> str:
        return url_or_id.rstrip("/").rsplit("/", 1)[-1]

    def responses_to(self, url: str) -> list[JSONDict]:
        """The JSON bodies accepted at ``url`` (a response_url or its id), in order."""
        return self.responses.get(self._response_id(url), [])

    async def wait_for_response(self, url: str, n: int = 1, timeout: float = 5.0) -> list[JSONDict]:
        """Wait until ``n`` posts to ``url`` (or its id) were accepted; return the first ``n``."""
        rid = self._response_id(url)

        def check() -> list[JSONDict] | None:
            got = self.responses.get(rid, [])
            return list(got[:n]) if len(got) >= n else None

        def describe() -> str:
            got = self.responses.get(rid, [])
            lines = [
                f"Timed out after {timeout}s waiting for {n} post(s) to response_url {rid}; "
                f"got {len(got)}:"
            ]
            lines += [f"  {_short(b, 300)}" for b in got]
            others = [p for p in self.response_posts if p.id != rid]
            if others:
                lines.append("Posts to other response_urls:")
                lines += [f"  {p.id}: {p.status} {_short(p.body, 200)}" for p in others[-20:]]
            rejected = [p for p in self.response_posts if p.id == rid and p.status != 200]
            if rejected:
                lines.append("Rejected posts to this one:")
                lines += [f"  {p.status} {p.answer}: {_short(p.body, 200)}" for p in rejected]
            return "\n".join(lines)

        result: list[JSONDict] = await self._wait_until(check, timeout, describe)
        return result

    def expire_response_url(self, url: str) -> None:
        """Later posts to ``url`` (or its id) are answered 404 ``expired_url``, as Slack does."""
        self._expired_responses.add(self._response_id(url))

    async def _handle_response_url(self, request: web.Request) -> web.StreamResponse:
        rid = request.match_info["rid"]
        raw = await request.text()
        body: Any
        try:
            body = json.loads(raw)
        except ValueError:
            form = dict(urllib.parse.parse_qsl(raw))
            try:
                body = json.loads(form["payload"])
            except (KeyError, ValueError):
                body = raw
        status, answer = 200, "ok"
        if rid not in self.responses or rid in self._expired_responses:
            status, answer = 404, "expired_url"
        elif not isinstance(body, dict):
            status, answer = 400, "invalid_payload"
        elif len(self.responses[rid]) >= self.response_url_max_posts:
            status, answer = 404, "used_url"
        elif not (
            body.get("text")
            or body.get("blocks")
            or body.get("attachments")
            or body.get("delete_original")
        ):
            status, answer = 400, "no_text"
        elif (problem := self._validate_message_content(body, require_content=False)) is not None:
            # Slack refuses a response_url post it would refuse from chat.postMessage, as a 400.
            status, answer = 400, problem
        self.response_posts.append(
            ResponsePost(
                id=rid,
                url=f"{self.base_url}/response/{rid}",
                body=body,
                status=status,
                answer=answer,
                time=time.monotonic(),
            )
        )
        if status == 200:
            self.responses[rid].append(body)
        self._notify()
        return web.Response(status=status, text=answer, content_type="text/plain")

    # ---------------------------------------------------------------- Socket Mode

    @property
    def open_socket_connections(self) -> int:
        return sum(1 for c in self._conns if c.open)

    async def wait_connected(self, timeout: float = 5.0) -> None:
        """Wait until a Socket Mode client is connected (and was sent ``hello``)."""
        await self._wait_until(
            lambda: self.open_socket_connections > 0,
            timeout,
            lambda: self._socket_state(
                f"Timed out after {timeout}s waiting for a Socket Mode connection."
            ),
        )

    async def wait_socket_connections(self, n: int, timeout: float = 5.0) -> None:
        """Wait until ``socket_connections >= n`` and one of them is open (e.g. after a
        reconnect)."""
        await self._wait_until(
            lambda: self.socket_connections >= n and self.open_socket_connections > 0,
            timeout,
            lambda: self._socket_state(
                f"Timed out after {timeout}s waiting for Socket Mode connection #{n}."
            ),
        )

    def _socket_state(self, headline: str) -> str:
        opens = self.calls_to("apps.connections.open")
        lines = [
            headline,
            f"socket_connections accepted so far: {self.socket_connections}, "
            f"open now: {self.open_socket_connections}",
            f"apps.connections.open calls: {len(opens)}",
        ]
        lines += [f"  {c.brief()}" for c in opens[-5:]]
        return "\n".join(lines)

    async def _handle_ws(self, request: web.Request) -> web.StreamResponse:
        if self._stopping:
            return web.Response(status=503, text="stopping")
        # Pings are answered by hand, so that silence_socket() can stop answering them.
        ws = web.WebSocketResponse(autoping=False, max_msg_size=0)
        await ws.prepare(request)
        self.socket_connections += 1
        conn = _Conn(number=self.socket_connections, ws=ws, request=request)
        self._conns.append(conn)
        hello = {
            "type": "hello",
            "num_connections": self.open_socket_connections,
            "debug_info": {
                "host": "applink-standin",
                "build_number": 1,
                "approximate_connection_time": 18060,
            },
            "connection_info": {"app_id": self.app_id},
        }
        try:
            async with conn.send_lock:
                await ws.send_str(json.dumps(hello))
            self._notify()
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    if not conn.silent:
                        self._on_client_text(msg.data)
                elif msg.type == WSMsgType.PING:
                    if not conn.silent:
                        async with conn.send_lock:
                            await ws.pong(msg.data)
                elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.ERROR):
                    break
        finally:
            conn.open = False
            if conn in self._conns:
                self._conns.remove(conn)
            self._notify()
        return ws

    def _on_client_text(self, data: str) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            message = {"raw": data}
        if not isinstance(message, dict):
            message = {"raw": data}
        self.socket_messages.append(message)
        envelope_id = message.get("envelope_id")
        if isinstance(envelope_id, str):
            record = self.envelopes.get(envelope_id)
            if record is not None and record.ack is None:
                record.ack = message
                record.acked_at = time.monotonic()
            fut = self._ack_futures.pop(envelope_id, None)
            if fut is not None and not fut.done():
                fut.set_result(message)

    def _current_conn(self) -> _Conn | None:
        for conn in reversed(self._conns):
            if conn.open and not conn.ws.closed:
                return conn
        return None

    async def post_envelope(
        self,
        type: str,
        payload: JSONDict,
        *,
        accepts_response_payload: bool = True,
        timeout: float = 5.0,
        envelope_id: str | None = None,
    ) -> str:
        """Send an envelope to the newest open connection (waiting up to ``timeout`` for one);
        return its ``envelope_id`` without waiting for the ack (see :meth:`wait_for_ack`)."""
        conn = self._current_conn()
        if conn is None:
            await self.wait_connected(timeout)
            conn = self._current_conn()
            assert conn is not None
        envelope_id = envelope_id or str(uuid.uuid4())
        envelope: JSONDict = {
            "envelope_id": envelope_id,
            "payload": payload,
            "type": type,
            "accepts_response_payload": accepts_response_payload,
        }
        if type == "events_api":
            envelope["retry_attempt"] = 0
            envelope["retry_reason"] = ""
        self.envelopes[envelope_id] = EnvelopeRecord(
            envelope_id=envelope_id,
            type=type,
            payload=payload,
            connection=conn.number,
            sent_at=time.monotonic(),
        )
        self._ack_futures[envelope_id] = asyncio.get_running_loop().create_future()
        text = json.dumps(envelope)
        async with conn.send_lock:
            await conn.ws.send_str(text)
        return envelope_id

    async def wait_for_ack(self, envelope_id: str, timeout: float = 5.0) -> JSONDict:
        """The client's ack for ``envelope_id`` (``{"envelope_id", "payload"?}``)."""
        record = self.envelopes.get(envelope_id)
        if record is not None and record.ack is not None:
            return record.ack
        fut = self._ack_futures.get(envelope_id)
        if fut is None:
            raise AssertionError(f"No envelope {envelope_id!r} was sent")
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            raise AssertionError(self._ack_timeout_dump(envelope_id, timeout)) from None

    def _ack_timeout_dump(self, envelope_id: str, timeout: float) -> str:
        record = self.envelopes.get(envelope_id)
        lines = [
            f"Timed out after {timeout}s waiting for the ack of envelope {envelope_id}"
            + (
                f" (type {record.type!r}, sent on connection #{record.connection})"
                if record
                else ""
            ),
            "Note: slack_bolt sends NO ack when the request is unhandled (no matching listener: "
            "404) or authorization failed (e.g. auth.test failed), and none if the listener never "
            "calls ack().",
            self._socket_state("Socket Mode state:"),
            f"acked envelopes: {sum(1 for r in self.envelopes.values() if r.ack is not None)} "
            f"of {len(self.envelopes)}",
        ]
        if record is not None:
            lines.append(f"payload: {_short(record.payload, 400)}")
        lines.append("last messages from the client:")
        lines += [f"  {_short(m, 200)}" for m in self.socket_messages[-5:]] or ["  (none)"]
        lines.append("last Web API calls:")
        lines += [f"  {c.brief()}" for c in self.calls[-10:]] or ["  (none)"]
        return "\n".join(lines)

    async def send_envelope(
        self,
        type: str,
        payload: JSONDict,
        *,
        accepts_response_payload: bool = True,
        timeout: float = 5.0,
    ) -> JSONDict:
        """Send ``{"envelope_id", "type", "payload", "accepts_response_payload"}`` to the connected
        client and return its ack. Many may be in flight at once; acks are routed by envelope_id.
        Raises AssertionError (with a state dump) if no connection or ack comes within
        ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        envelope_id = await self.post_envelope(
            type, payload, accepts_response_payload=accepts_response_payload, timeout=timeout
        )
        return await self.wait_for_ack(envelope_id, timeout=max(0.0, deadline - loop.time()))

    async def _close_ws(self, conn: _Conn) -> None:
        try:
            await asyncio.wait_for(
                conn.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server closing"), 5.0
            )
        except (TimeoutError, ConnectionError):
            pass

    async def disconnect_socket(self, *, abrupt: bool = False) -> None:
        """Close every open Socket Mode connection from the server side.

        Default: a clean websocket close (the slack_sdk aiohttp client reconnects at once: a new
        apps.connections.open, then a new connection). ``abrupt=True`` drops the TCP connection
        without a close frame, like a network failure; the client notices only in its monitor loop
        (up to ``ping_interval`` seconds later).
        """
        conns = [c for c in self._conns if c.open]
        for conn in conns:
            conn.open = False
        self._notify()
        if abrupt:
            for conn in conns:
                transport = conn.request.transport
                if transport is not None:
                    transport.abort()
        else:
            await asyncio.gather(*(self._close_ws(c) for c in conns))

    def silence_socket(self) -> None:
        """Make every open connection go silent without closing it: pings go unanswered, the
        client's messages are ignored and no envelope is sent on it again, like a connection
        that died somewhere in the network (python-slack-sdk#1701). Only a client that notices
        and opens a new connection is reachable again."""
        for conn in self._conns:
            if conn.open:
                conn.open = False
                conn.silent = True
        self._notify()

    async def send_disconnect_message(self, reason: str = "refresh_requested") -> None:
        """Send Slack's ``{"type": "disconnect", "reason": …}`` message (as before a connection
        refresh) to every open connection. The slack_sdk client then opens a new connection
        itself."""
        message = json.dumps(
            {"type": "disconnect", "reason": reason, "debug_info": {"host": "applink-standin"}}
        )
        for conn in [c for c in self._conns if c.open]:
            async with conn.send_lock:
                await conn.ws.send_str(message)


def _ts_key(ts: str) -> tuple[int, int]:
    sec, _, frac = ts.partition(".")
    return int(sec), int(frac or 0)


# --------------------------------------------------------------------------------------------
# Light Block Kit / view validation (the limits that Slack enforces and bots trip over)
# --------------------------------------------------------------------------------------------


def _text_of(obj: Any) -> str | None:
    if isinstance(obj, dict):
        text = obj.get("text")
        return text if isinstance(text, str) else None
    return None


def _block_problems(blocks: list[Any], pointer: str) -> list[str]:
    problems: list[str] = []

    def walk(node: Any, ptr: str) -> None:
        if isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{ptr}/{i}")
            return
        if not isinstance(node, dict):
            return
        block_id = node.get("block_id")
        if isinstance(block_id, str) and len(block_id) > 255:
            problems.append(
                f"[ERROR] must be less than 256 characters [json-pointer:{ptr}/block_id]"
            )
        for key in ("label", "hint"):
            text = _text_of(node.get(key))
            if text is not None and len(text) > 2000:
                problems.append(
                    f"[ERROR] must be less than 2001 characters [json-pointer:{ptr}/{key}/text]"
                )
        problems.extend(_element_problems(node, ptr))
        options = node.get("options")
        if (
            isinstance(options, list)
            and options
            and all(isinstance(o, dict) and "value" in o for o in options)
        ):
            if len(options) > 100:
                problems.append(
                    f"[ERROR] must provide no more than 100 items [json-pointer:{ptr}/options]"
                )
            for i, option in enumerate(options):
                text = _text_of(option.get("text"))
                if text is not None and len(text) > 75:
                    problems.append(
                        "[ERROR] must be less than 76 characters "
                        f"[json-pointer:{ptr}/options/{i}/text/text]"
                    )
                value = option.get("value")
                if isinstance(value, str) and len(value) > 150:
                    problems.append(
                        "[ERROR] must be less than 151 characters "
                        f"[json-pointer:{ptr}/options/{i}/value]"
                    )
        for key, value in node.items():
            if isinstance(value, (dict, list)) and key != "options":
                walk(value, f"{ptr}/{key}")

    walk(blocks, pointer)
    return problems


def _element_problems(node: JSONDict, ptr: str) -> list[str]:
    """Text objects (1 to 3,000 characters), buttons, confirm dialogs, and the element counts."""
    problems: list[str] = []

    def longer(value: Any, limit: int, where: str) -> None:
        if isinstance(value, str) and len(value) > limit:
            problems.append(
                f"[ERROR] must be less than {limit + 1} characters [json-pointer:{ptr}/{where}]"
            )

    def more(items: Any, most: int, where: str) -> None:
        if isinstance(items, list) and len(items) > most:
            problems.append(
                f"[ERROR] must provide no more than {most} items [json-pointer:{ptr}/{where}]"
            )

    kind = node.get("type")
    if kind in ("plain_text", "mrkdwn"):
        text = node.get("text")
        if not isinstance(text, str) or not text:
            problems.append(f"[ERROR] must be more than 0 characters [json-pointer:{ptr}/text]")
        longer(text, 3000, "text")
    limits: tuple[tuple[str, int], ...] = ()
    if kind == "button":
        limits = (("text", 75),)
        longer(node.get("value"), 2000, "value")
    elif kind == "header":
        limits = (("text", 150),)
    elif "confirm" in node and "deny" in node and "title" in node:
        limits = (("title", 100), ("text", 300), ("confirm", 30), ("deny", 30))
    for key, limit in limits:
        longer(_text_of(node.get(key)), limit, f"{key}/text")
    longer(node.get("action_id"), 255, "action_id")
    most = {"context": 10, "actions": 25}.get(str(kind))
    if most is not None:
        more(node.get("elements"), most, "elements")
    fields = node.get("fields")
    if kind == "section" and isinstance(fields, list):
        more(fields, 10, "fields")
        for i, item in enumerate(fields):
            longer(_text_of(item), 2000, f"fields/{i}/text")
    return problems


def message_problems(body: Any) -> list[str]:
    """Why Slack would refuse ``body`` as a message (an ack, a ``response_url`` post): blocks."""
    if not isinstance(body, dict):
        return []
    blocks = body.get("blocks")
    if blocks is None:
        return []
    if not isinstance(blocks, list):
        return ["[ERROR] must be an array [json-pointer:/blocks]"]
    problems = _block_problems(blocks, "/blocks")
    if len(blocks) > 50:
        problems.append("[ERROR] must provide no more than 50 items [json-pointer:/blocks]")
    return problems


def _view_problems(view: JSONDict) -> list[str]:
    problems: list[str] = []
    vtype = view.get("type")
    if vtype not in ("modal", "home"):
        problems.append("[ERROR] must be one of [modal, home] [json-pointer:/view/type]")
    if vtype == "modal":
        title = _text_of(view.get("title"))
        if title is None:
            problems.append("[ERROR] missing required field: title [json-pointer:/view]")
        elif len(title) > 24:
            problems.append(
                "[ERROR] must be less than 25 characters [json-pointer:/view/title/text]"
            )
        for key in ("submit", "close"):
            text = _text_of(view.get(key))
            if text is not None and len(text) > 24:
                problems.append(
                    f"[ERROR] must be less than 25 characters [json-pointer:/view/{key}/text]"
                )
    blocks = view.get("blocks")
    if not isinstance(blocks, list):
        problems.append("[ERROR] missing required field: blocks [json-pointer:/view]")
    else:
        if len(blocks) > 100:
            problems.append(
                "[ERROR] must provide no more than 100 items [json-pointer:/view/blocks]"
            )
        if (
            vtype == "modal"
            and view.get("submit") is None
            and any(isinstance(b, dict) and b.get("type") == "input" for b in blocks)
        ):
            problems.append(
                "[ERROR] must provide a submit property when using input blocks "
                "[json-pointer:/view]"
            )
        problems += _block_problems(blocks, "/view/blocks")
    for key, limit in (("private_metadata", 3000), ("callback_id", 255), ("external_id", 255)):
        value = view.get(key)
        if isinstance(value, str) and len(value) > limit:
            problems.append(
                f"[ERROR] must be less than {limit + 1} characters [json-pointer:/view/{key}]"
            )
    return problems


# --------------------------------------------------------------------------------------------
# What Slack sends to an app: signed HTTP bodies and payloads
# --------------------------------------------------------------------------------------------


def sign(body: bytes, signing_secret: str, timestamp: int | None = None) -> dict[str, str]:
    """Headers Slack puts on an HTTP request: ``v0=hex(HMAC_SHA256(secret, "v0:{ts}:{body}"))``."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    base = b"v0:" + ts.encode() + b":" + body
    digest = hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()
    return {
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": "v0=" + digest,
        "Content-Type": "application/x-www-form-urlencoded",
    }


def slash_command_payload(
    *,
    text: str,
    user_id: str = "U0MANAGER",
    channel_id: str = "C0OPS",
    team_id: str = "T0TEAM",
    command: str = "/call",
    response_url: str,
    trigger_id: str = DEFAULT_TRIGGER_ID,
    user_name: str = "manager",
    channel_name: str = "ops",
) -> dict[str, str]:
    """A slash command's fields as Slack sends them (all strings), e.g. the Socket Mode
    ``slash_commands`` envelope payload."""
    return {
        "token": VERIFICATION_TOKEN,
        "team_id": team_id,
        "team_domain": TEAM_DOMAIN,
        "channel_id": channel_id,
        "channel_name": channel_name,
        "user_id": user_id,
        "user_name": user_name,
        "command": command,
        "text": text,
        "api_app_id": APP_ID,
        "is_enterprise_install": "false",
        "response_url": response_url,
        "trigger_id": trigger_id,
    }


def slash_command_body(
    *,
    text: str,
    user_id: str = "U0MANAGER",
    channel_id: str = "C0OPS",
    team_id: str = "T0TEAM",
    command: str = "/call",
    response_url: str,
    trigger_id: str = DEFAULT_TRIGGER_ID,
    user_name: str = "manager",
    channel_name: str = "ops",
) -> bytes:
    """The form-encoded body Slack POSTs for a slash command in HTTP mode (sign it with
    :func:`sign`)."""
    payload = slash_command_payload(
        text=text,
        user_id=user_id,
        channel_id=channel_id,
        team_id=team_id,
        command=command,
        response_url=response_url,
        trigger_id=trigger_id,
        user_name=user_name,
        channel_name=channel_name,
    )
    return urllib.parse.urlencode(payload).encode()


def interactive_body(payload: JSONDict) -> bytes:
    """The form-encoded ``payload=<json>`` body Slack POSTs for interactions in HTTP mode."""
    return urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()


def _team(team_id: str) -> JSONDict:
    return {"id": team_id, "domain": TEAM_DOMAIN}


def _user_obj(user_id: str, user_name: str, team_id: str) -> JSONDict:
    return {"id": user_id, "username": user_name, "name": user_name, "team_id": team_id}


def global_shortcut_payload(
    *,
    callback_id: str,
    user_id: str = "U0MANAGER",
    user_name: str = "manager",
    team_id: str = "T0TEAM",
    trigger_id: str = DEFAULT_TRIGGER_ID,
) -> JSONDict:
    """A global shortcut (``type: shortcut``): no channel and no response_url."""
    return {
        "type": "shortcut",
        "token": VERIFICATION_TOKEN,
        "action_ts": "1700000000.123456",
        "team": _team(team_id),
        "user": _user_obj(user_id, user_name, team_id),
        "is_enterprise_install": False,
        "enterprise": None,
        "callback_id": callback_id,
        "trigger_id": trigger_id,
    }


def message_shortcut_payload(
    *,
    callback_id: str,
    channel_id: str = "C0OPS",
    message_ts: str,
    message_text: str = "",
    message_user: str = "U0SOMEONE",
    thread_ts: str | None = None,
    response_url: str,
    user_id: str = "U0MANAGER",
    user_name: str = "manager",
    channel_name: str = "ops",
    team_id: str = "T0TEAM",
    trigger_id: str = DEFAULT_TRIGGER_ID,
) -> JSONDict:
    """A message shortcut (``type: message_action``) on the message ``(channel_id, message_ts)``."""
    message: JSONDict = {
        "type": "message",
        "user": message_user,
        "ts": message_ts,
        "text": message_text,
    }
    if thread_ts is not None:
        message["thread_ts"] = thread_ts
    return {
        "type": "message_action",
        "token": VERIFICATION_TOKEN,
        "action_ts": "1700000000.123456",
        "team": _team(team_id),
        "user": _user_obj(user_id, user_name, team_id),
        "channel": {"id": channel_id, "name": channel_name},
        "is_enterprise_install": False,
        "enterprise": None,
        "callback_id": callback_id,
        "trigger_id": trigger_id,
        "response_url": response_url,
        "message_ts": message_ts,
        "message": message,
        "api_app_id": APP_ID,
    }


def _view_payload(
    view: JSONDict | None,
    *,
    view_id: str,
    callback_id: str,
    private_metadata: str,
    values: dict[str, dict[str, JSONDict]],
    team_id: str,
) -> JSONDict:
    base: JSONDict = {
        "id": view_id,
        "team_id": team_id,
        "type": "modal",
        "blocks": [],
        "private_metadata": private_metadata,
        "callback_id": callback_id,
        "hash": "1700000000.abcdef12",
        "title": {"type": "plain_text", "text": "Modal"},
        "clear_on_close": False,
        "notify_on_close": False,
        "close": None,
        "submit": {"type": "plain_text", "text": "Submit"},
        "previous_view_id": None,
        "root_view_id": view_id,
        "app_id": APP_ID,
        "external_id": "",
        "app_installed_team_id": team_id,
        "bot_id": BOT_ID,
    }
    if view is not None:
        base.update(view)
        base["callback_id"] = view.get("callback_id", callback_id)
        base["private_metadata"] = view.get("private_metadata", private_metadata)
    base["state"] = {"values": values}
    return base


def view_submission_payload(
    *,
    callback_id: str,
    values: dict[str, dict[str, JSONDict]],
    private_metadata: str = "",
    view: JSONDict | None = None,
    view_id: str = "V0VIEW",
    user_id: str = "U0MANAGER",
    user_name: str = "manager",
    team_id: str = "T0TEAM",
    trigger_id: str = DEFAULT_TRIGGER_ID,
    response_urls: list[JSONDict] | None = None,
) -> JSONDict:
    """A ``view_submission``. ``values`` is ``view.state.values``:
    ``{block_id: {action_id: {"type": "plain_text_input", "value": "..."}}}``.
    ``view`` (e.g. the one the app opened, from ``standin.views[id].versions[-1]``) fills the
    rest."""
    return {
        "type": "view_submission",
        "team": _team(team_id),
        "user": _user_obj(user_id, user_name, team_id),
        "api_app_id": APP_ID,
        "token": VERIFICATION_TOKEN,
        "trigger_id": trigger_id,
        "view": _view_payload(
            view,
            view_id=view_id,
            callback_id=callback_id,
            private_metadata=private_metadata,
            values=values,
            team_id=team_id,
        ),
        "response_urls": response_urls or [],
        "is_enterprise_install": False,
        "enterprise": None,
    }


def block_actions_payload(
    *,
    action_id: str,
    block_id: str = "actions",
    value: str | None = None,
    action_type: str = "button",
    channel_id: str | None = "C0OPS",
    message_ts: str | None = None,
    message: JSONDict | None = None,
    view: JSONDict | None = None,
    response_url: str | None = None,
    user_id: str = "U0MANAGER",
    user_name: str = "manager",
    channel_name: str = "ops",
    team_id: str = "T0TEAM",
    trigger_id: str = DEFAULT_TRIGGER_ID,
    extra_action: JSONDict | None = None,
) -> JSONDict:
    """A ``block_actions`` payload for one action, from a message (give ``message_ts``) or from a
    view (give ``view``, a full view as in :func:`view_submission_payload`)."""
    action: JSONDict = {
        "action_id": action_id,
        "block_id": block_id,
        "type": action_type,
        "action_ts": "1700000000.654321",
    }
    if action_type == "button":
        action["text"] = {"type": "plain_text", "text": "Button", "emoji": True}
    if value is not None:
        action["value"] = value
    action.update(extra_action or {})
    payload: JSONDict = {
        "type": "block_actions",
        "user": _user_obj(user_id, user_name, team_id),
        "api_app_id": APP_ID,
        "token": VERIFICATION_TOKEN,
        "trigger_id": trigger_id,
        "team": _team(team_id),
        "enterprise": None,
        "is_enterprise_install": False,
        "actions": [action],
    }
    if view is not None:
        payload["container"] = {"type": "view", "view_id": view.get("id", "V0VIEW")}
        payload["view"] = view
        payload["state"] = view.get("state", {"values": {}})
    else:
        ts = message_ts or (message or {}).get("ts") or "1700000000.000100"
        payload["container"] = {
            "type": "message",
            "message_ts": ts,
            "channel_id": channel_id,
            "is_ephemeral": False,
        }
        payload["channel"] = {"id": channel_id, "name": channel_name}
        payload["message"] = message or {"type": "message", "ts": ts, "text": "", "bot_id": BOT_ID}
        payload["state"] = {"values": {}}
    if response_url is not None:
        payload["response_url"] = response_url
    return payload


def block_suggestion_payload(
    *,
    action_id: str,
    value: str,
    block_id: str = "block",
    view: JSONDict | None = None,
    user_id: str = "U0MANAGER",
    user_name: str = "manager",
    team_id: str = "T0TEAM",
) -> JSONDict:
    """A ``block_suggestion`` (options load for an ``external_select`` in a modal)."""
    full_view = view or _view_payload(
        None, view_id="V0VIEW", callback_id="", private_metadata="", values={}, team_id=team_id
    )
    return {
        "type": "block_suggestion",
        "user": _user_obj(user_id, user_name, team_id),
        "container": {"type": "view", "view_id": full_view.get("id", "V0VIEW")},
        "api_app_id": APP_ID,
        "token": VERIFICATION_TOKEN,
        "action_id": action_id,
        "block_id": block_id,
        "value": value,
        "team": _team(team_id),
        "enterprise": None,
        "is_enterprise_install": False,
        "view": full_view,
    }
