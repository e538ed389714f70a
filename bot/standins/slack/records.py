"""What the Slack stand-in records and answers: calls, messages, views, envelopes, gates."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

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
    "channels:history",
    "groups:history",
    "im:history",
    "reactions:write",
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


@dataclass
class Cut:
    """Calls (or response_url posts) that are carried out and then get no answer: their connection
    is dropped (see :meth:`SlackStandIn.cut`)."""

    when: Callable[[Any], bool] | None
    remaining: int | None

    def takes(self, item: Any) -> bool:
        """Whether this cut drops the answer to ``item`` (counted against ``remaining``)."""
        if (self.when is not None and not self.when(item)) or self.remaining == 0:
            return False
        if self.remaining is not None:
            self.remaining -= 1
        return True


class Gate:
    """Holds the calls to one Web API method until :meth:`open` (see :meth:`SlackStandIn.hold`).

    A held call has arrived but is not answered: it is not yet in ``SlackStandIn.calls``. With
    ``after``, the call has taken effect (a posted message is there, and can be clicked) and only
    its answer is held: Slack's reply still on its way to the bot.
    """

    def __init__(self, when: Callable[[ApiCall], bool] | None, *, after: bool = False) -> None:
        self.when = when
        self.after = after
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
        if self.when is not None and not self.when(call):
            return
        await self._hold()

    async def _hold(self) -> None:
        if self._open.is_set():
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


def _ts_key(ts: str) -> tuple[int, int]:
    sec, _, frac = ts.partition(".")
    return int(sec), int(frac or 0)
