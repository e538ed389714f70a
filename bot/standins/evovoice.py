"""A loopback stand-in for the Evo Voice API (an aiohttp.web server on 127.0.0.1).

It speaks the parts of the real protocol the bot uses: HTTP Basic on every request, ServiceStack
error bodies, paged lists, and ``POST /sessions/outgoing`` with its undeclared response. Tests read
what the bot sent from ``requests`` and script how the server misbehaves with *behaviours*::

    standin = EvoVoiceStandIn()
    await standin.start()
    standin.flows.append({"id": "flow-esc", "name": "Escalation", "accountId": "acct-1"})
    standin.queue_outgoing(DropConnection(), Respond())   # first call: answer lost; second: fine
    ...                                                   # point EvoVoiceClient at standin.url
    assert len(standin.outgoing_posts) == 1
    await standin.stop()

Behaviours (consumed in order per ``(method, path)``; when the queue is empty, the route's entry in
``default_behaviours``, else ``Respond()``):

=====================  =========================================================  ============
behaviour              answer                                                     side effect*
=====================  =========================================================  ============
``Respond()``          what the route normally answers (outgoing: the session)    yes
``EmptyObject()``      200 ``{}``                                                 yes
``NoContent()``        204, no body                                               yes
``MalformedJson()``    200 with a body that is not JSON                           yes
``DropConnection()``   closes the socket after reading the request, no answer     yes
``ErrorStatus(s, m)``  status ``s`` with a ServiceStack error body (message m)    no
``TooManyRequests()``  429 with a ``Retry-After`` header                          no
``Delayed(n, then)``   waits ``n`` seconds, then does ``then`` (default Respond)  as ``then``
``Gated(gate, then)``  waits until the test sets ``gate`` (an asyncio.Event)       as ``then``
``Trickled(s)``        the normal answer, its body one byte every ``s`` seconds   yes
``Oversized(n)``       200 with a JSON body of ``n`` bytes, chunked (no length)   yes
=====================  =========================================================  ============

\\* the route's side effect: POST /sessions/outgoing creates a session (so ``GET /sessions?to=``
finds it even when the answer was lost), DELETE /sessions/{id} ends the session. ``POST
/sessions/outgoing`` checks auth, role and the body *before* taking a behaviour from its queue, so
an invalid request gets its 400 and leaves the queue alone.

Routes: GET /auth/status, GET /flows, GET /endpoints?type=PhoneNumber, POST /sessions/outgoing,
GET /sessions, GET /sessions/{id}, DELETE /sessions/{id}, PATCH /sessions/{id}. Anything else
answers 404 (and is still recorded, so a test can assert e.g. that ``POST /endpoints/phone-numbers``
was never sent).

It follows the evidence (docs/evovoice-api.md), not the bot's expectations:

- ``GET /auth/status`` has no ``[Authenticate]``: a wrong login gets 200 ``isAuthenticated:
  false`` (or, with ``refused_login="no_content"``, an empty 204), never 401. Every other route
  answers 401.
- EndSession (``DELETE /sessions/{id}``) requires the role ``User``: a Manager-only login (the
  default ``roles``) gets 403 "Invalid Role". PatchSession (``PATCH /sessions/{id}`` with
  ``{"callState": "Disconnected"}``) requires authentication only.
- ``GET /sessions``: ``to`` is a *contains* filter; ``startDate`` is a date read in
  ``sessions_utc_offset`` (unknown: tests try several); ``sort_honoured`` False ignores
  ``sortField`` (oldest first); lists default to ``countPerPage=25``.
- ``all=true`` on a list: ``all_reading`` says what it does, since nothing public does:
  ``"everything"`` (all items, no more pages), ``"every_page"`` (all items on every page, yet
  ``hasMorePages`` as if paged: what the issue feared), ``"ignored"`` (paging as usual).
- The server rejects clients that send a library's or curl's User-Agent (403, not a role).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Self

from aiohttp import web
from multidict import CIMultiDict

__all__ = [
    "MANAGER_ROLES",
    "Behaviour",
    "Delayed",
    "DropConnection",
    "EmptyObject",
    "ErrorStatus",
    "EvoVoiceStandIn",
    "Gated",
    "MalformedJson",
    "NoContent",
    "Recorded",
    "Respond",
    "TooManyRequests",
    "Trickled",
    "Oversized",
]

MANAGER_ROLES = frozenset({"Manager", "SystemAdministrator"})
END_SESSION_ROLE = "User"
# Default User-Agents of curl and of HTTP libraries: the vendor warns the server rejects curl.
_REJECTED_AGENTS = ("curl/", "python-httpx/", "python-requests/", "python/", "aiohttp/", "wget/")
OUTGOING_PATH = "/sessions/outgoing"
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")


@dataclass(frozen=True)
class Recorded:
    """One request as the stand-in received it."""

    method: str
    path: str
    query: dict[str, str]
    json: Any
    headers: Mapping[str, str]  # case-insensitive
    body: bytes = b""
    time: float = field(default_factory=time.monotonic)
    """``time.monotonic()`` when the request arrived (the clock of ``SlackStandIn`` records)."""


# ----------------------------------------------------------------------------------- behaviours


@dataclass(frozen=True)
class Respond:
    """Answer as the route normally does (POST /sessions/outgoing: 200 with the new session)."""


@dataclass(frozen=True)
class EmptyObject:
    """Do the route's side effect, answer 200 ``{}``."""


@dataclass(frozen=True)
class NoContent:
    """Do the route's side effect, answer 204 with no body."""


@dataclass(frozen=True)
class MalformedJson:
    """Do the route's side effect, answer 200 with a body that does not parse as JSON."""

    body: str = '{"id": "sess-'


@dataclass(frozen=True)
class DropConnection:
    """Do the route's side effect, then close the socket without answering.

    The client sees ``httpx.RemoteProtocolError``: the call was placed but the answer was lost.
    """


@dataclass(frozen=True)
class ErrorStatus:
    """Answer ``status`` with a ServiceStack error body; no side effect."""

    status: int = 500
    message: str = "Internal server error"
    error_code: str | None = None
    field_errors: Sequence[Mapping[str, str]] = ()  # {"fieldName", "message", "errorCode"}


@dataclass(frozen=True)
class TooManyRequests:
    """Answer 429 with ``Retry-After: retry_after`` (seconds or an HTTP-date; None: no header)."""

    retry_after: str | None = "2"
    message: str = "Too many requests"


@dataclass(frozen=True)
class Delayed:
    """Wait ``seconds`` (cut short by ``stop()``), then behave as ``then``."""

    seconds: float
    then: Behaviour = field(default_factory=Respond)


@dataclass(frozen=True)
class Gated:
    """Wait until the test sets ``gate`` (or ``stop()``), then behave as ``then``.

    Holds a request open for exactly as long as a test needs, with no timing guess.
    """

    gate: asyncio.Event
    then: Behaviour = field(default_factory=Respond)


@dataclass(frozen=True)
class Trickled:
    """Do the route's side effect and answer as usual, but send the body one byte every
    ``seconds_per_byte`` (a server, or a proxy, that is slow while never quite silent)."""

    seconds_per_byte: float = 1.0


@dataclass(frozen=True)
class Oversized:
    """Do the route's side effect, answer 200 with ``size`` bytes of valid JSON, sent chunked
    (no Content-Length), so only counting what arrives can tell it is too large."""

    size: int = 40 * 1024 * 1024


Behaviour = (
    Respond
    | EmptyObject
    | NoContent
    | MalformedJson
    | DropConnection
    | ErrorStatus
    | TooManyRequests
    | Delayed
    | Gated
    | Trickled
    | Oversized
)


def _error_body(
    error_code: str | None, message: str, errors: Iterable[Mapping[str, str]] = ()
) -> dict[str, Any]:
    status: dict[str, Any] = {"message": message}
    if error_code:
        status["errorCode"] = error_code
    errors = [dict(e) for e in errors]
    if errors:
        status["errors"] = errors
    return {"responseStatus": status}


def _error(
    status: int, error_code: str | None, message: str, errors: Iterable[Mapping[str, str]] = ()
) -> web.Response:
    return web.json_response(_error_body(error_code, message, errors), status=status)


async def _json_object(request: web.Request) -> dict[str, Any] | web.Response:
    """The request's JSON object, or ServiceStack's 400 for a body that is not one."""
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return _error(400, "SerializationException", "The request body is not a JSON object")
    return body


def _field_error(field_name: str, error_code: str, message: str) -> web.Response:
    return _error(
        400,
        error_code,
        message,
        [{"errorCode": error_code, "fieldName": field_name, "message": message}],
    )


# -------------------------------------------------------------------------------------- server


class EvoVoiceStandIn:
    """The Evo Voice API on a free loopback port. All public attributes may be changed by tests."""

    def __init__(
        self,
        *,
        username: str = "bot@example.com",
        password: str = "secret",
        roles: Iterable[str] = ("Manager",),
        accounts: Iterable[tuple[str, str]] = (("acct-1", "Acme Ops"),),
        user_id: str = "user-1",
        display_name: str = "Callbot",
    ) -> None:
        self.username = username
        self.password = password
        self.roles: list[str] = list(roles)
        self.accounts: list[tuple[str, str]] = list(accounts)
        self.user_id = user_id
        self.display_name = display_name
        self.flows: list[dict[str, Any]] = []
        self.phone_numbers: list[dict[str, Any]] = []
        self.sessions: dict[str, dict[str, Any]] = {}
        self.requests: list[Recorded] = []
        # (method, session id) for every request that ended a session: DELETE or PATCH.
        self.ended_by: list[tuple[str, str]] = []
        # Caps every page (even with all=true), to make a client follow hasMorePages.
        self.max_page_size: int | None = None
        # Where the evidence is silent: each test may pick the variant it checks (see docstring).
        self.refused_login = "unauthenticated"  # or "no_content"
        self.all_reading = "everything"  # or "every_page", "ignored"
        self.sessions_utc_offset = timedelta(0)  # the zone startDate is read in
        self.sort_honoured = True
        self.page_honoured = True  # False: every page is the first one
        # What a request does when its queue is empty, by (method, path); else Respond(). E.g.
        # ``{("POST", "/sessions/outgoing"): Delayed(2.0)}``: every call is slow to set up.
        self.default_behaviours: dict[tuple[str, str], Behaviour] = {}
        self.url = ""
        self._queues: dict[tuple[str, str], list[Behaviour]] = {}
        self._ids = itertools.count(1)
        self._last_created = datetime(2000, 1, 1, tzinfo=UTC)
        self._changed = asyncio.Condition()
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None

    # ------------------------------------------------------------------------------ lifecycle

    async def start(self, port: int = 0) -> None:
        """Bind 127.0.0.1 on ``port`` (0: a free one) and set ``url``."""
        app = web.Application(middlewares=[self._record_and_authenticate])
        app.router.add_get("/auth/status", self._auth_status)
        app.router.add_get("/flows", self._list_flows)
        app.router.add_get("/endpoints", self._list_endpoints)
        app.router.add_post(OUTGOING_PATH, self._new_outgoing_session)
        app.router.add_get("/sessions", self._find_sessions)
        app.router.add_get("/sessions/{id}", self._get_session)
        app.router.add_delete("/sessions/{id}", self._hang_up)
        app.router.add_patch("/sessions/{id}", self._patch_session)
        app.router.add_route("*", "/{tail:.*}", self._unknown_route)
        self._stopping.clear()
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        # A burst of calls opens many connections at once (the benchmark); don't drop their SYNs.
        site = web.TCPSite(self._runner, "127.0.0.1", port, backlog=1024)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    async def stop(self) -> None:
        """Stop serving; requests still waiting in ``Delayed`` are released at once."""
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # ----------------------------------------------------------------------- test-side helpers

    def queue(self, method: str, path: str, *behaviours: Behaviour) -> None:
        """Script the next answers to ``method path`` (exact path, e.g. ``/sessions/sess-1``)."""
        self._queues.setdefault((method.upper(), path), []).extend(behaviours)

    def queue_outgoing(self, *behaviours: Behaviour) -> None:
        """Script the next answers to POST /sessions/outgoing."""
        self.queue("POST", OUTGOING_PATH, *behaviours)

    def requests_to(self, method: str, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method.upper() and r.path == path]

    def hang_ups(self, session_id: str) -> list[str]:
        """How ``session_id`` was ended by a request, each time: ``"DELETE"`` or ``"PATCH"``."""
        return [method for method, sid in self.ended_by if sid == session_id]

    @property
    def outgoing_posts(self) -> list[Recorded]:
        return self.requests_to("POST", OUTGOING_PATH)

    async def wait_for_posts(self, n: int, timeout: float = 5.0) -> list[Recorded]:
        """Wait until at least ``n`` POST /sessions/outgoing arrived; return them all."""
        try:
            async with self._changed:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: len(self.outgoing_posts) >= n), timeout
                )
        except TimeoutError:
            raise AssertionError(
                f"expected {n} POST {OUTGOING_PATH}, got {len(self.outgoing_posts)}"
            ) from None
        return self.outgoing_posts

    def add_session(self, **fields: Any) -> dict[str, Any]:
        """Store a session as if a call had been placed; ``fields`` (camelCase) override."""
        session: dict[str, Any] = {
            "id": f"sess-{next(self._ids)}",
            "accountId": self.accounts[0][0] if self.accounts else None,
            "channel": "Voice",
            "callState": "Ringing",
            "ended": False,
            "dateCreated": self._next_timestamp(),
        }
        session.update(fields)
        self.sessions[session["id"]] = session
        return session

    def set_session_state(self, session_id: str, **fields: Any) -> dict[str, Any]:
        """Move a session along, e.g. ``callState="Connected"`` or ``ended=True``."""
        self.sessions[session_id].update(fields)
        return self.sessions[session_id]

    # ---------------------------------------------------------------------------- plumbing

    def _next_timestamp(self) -> str:
        # Strictly increasing, so "newest first" is well defined even within one millisecond.
        now = max(datetime.now(UTC), self._last_created + timedelta(milliseconds=1))
        self._last_created = now
        return now.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    @web.middleware
    async def _record_and_authenticate(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        body = await request.read()
        try:
            parsed: Any = await request.json() if body else None
        except ValueError:
            parsed = None
        async with self._changed:
            self.requests.append(
                Recorded(
                    method=request.method,
                    path=request.path,
                    query={k: request.query[k] for k in request.query},
                    json=parsed,
                    headers=CIMultiDict(request.headers),
                    body=body,
                )
            )
            self._changed.notify_all()
        agent = request.headers.get("User-Agent", "")
        if not agent or agent.lower().startswith(_REJECTED_AGENTS):
            return _error(403, "Forbidden", "Access denied")
        if not self._authenticated(request):
            if request.path == "/auth/status" and request.method == "GET":
                # No [Authenticate] on AuthStatus: a failed Basic login is "no session".
                if self.refused_login == "no_content":
                    return web.Response(status=204)
                return web.json_response({"isAuthenticated": False})
            return _error(401, "Unauthorized", "Invalid UserName or Password")
        response = await handler(request)
        if isinstance(response, web.Response) and not response.prepared:
            # Like ServiceStack: hand out a session cookie the client has no business keeping.
            response.set_cookie("ss-id", "standin-session")
        return response

    def _authenticated(self, request: web.Request) -> bool:
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except ValueError:
            return False
        return (user, password) == (self.username, self.password)

    def _forbidden_unless_manager(self) -> web.Response | None:
        if MANAGER_ROLES.isdisjoint(self.roles):
            return _error(403, "Forbidden", "Invalid Role")
        return None

    async def _behave(
        self, request: web.Request, produce: Callable[[], web.Response]
    ) -> web.StreamResponse:
        """Answer per the next queued behaviour; ``produce`` does the side effect and answer."""
        queue = self._queues.get((request.method, request.path))
        behaviour: Behaviour = (
            queue.pop(0)
            if queue
            else self.default_behaviours.get((request.method, request.path), Respond())
        )
        while isinstance(behaviour, (Delayed, Gated)):
            if isinstance(behaviour, Gated):
                stopping = asyncio.ensure_future(self._stopping.wait())
                opened = asyncio.ensure_future(behaviour.gate.wait())
                await asyncio.wait({stopping, opened}, return_when=asyncio.FIRST_COMPLETED)
                stopping.cancel()
                opened.cancel()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), behaviour.seconds)
            behaviour = behaviour.then
        if isinstance(behaviour, ErrorStatus):
            return _error(
                behaviour.status, behaviour.error_code, behaviour.message, behaviour.field_errors
            )
        if isinstance(behaviour, TooManyRequests):
            response = _error(429, "TooManyRequests", behaviour.message)
            if behaviour.retry_after is not None:
                response.headers["Retry-After"] = behaviour.retry_after
            return response
        normal = produce()
        if isinstance(behaviour, EmptyObject):
            return web.json_response({})
        if isinstance(behaviour, NoContent):
            return web.Response(status=204)
        if isinstance(behaviour, MalformedJson):
            return web.Response(text=behaviour.body, content_type="application/json")
        if isinstance(behaviour, DropConnection):
            if request.transport is not None:
                request.transport.close()
            return web.Response()
        if isinstance(behaviour, Trickled):
            return await self._trickle(request, normal, behaviour.seconds_per_byte)
        if isinstance(behaviour, Oversized):
            return await self._oversized(request, behaviour.size)
        return normal

    async def _trickle(
        self, request: web.Request, normal: web.Response, seconds_per_byte: float
    ) -> web.StreamResponse:
        body = normal.body if isinstance(normal.body, bytes) else b""
        response = web.StreamResponse(status=normal.status, headers=normal.headers)
        response.content_length = len(body)
        await response.prepare(request)
        for i in range(len(body)):
            await response.write(body[i:i + 1])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), seconds_per_byte)
            if self._stopping.is_set() or request.transport is None:
                break
        return response

    @staticmethod
    async def _oversized(request: web.Request, size: int) -> web.StreamResponse:
        response = web.StreamResponse(status=200)
        response.content_type = "application/json"
        response.enable_chunked_encoding()
        await response.prepare(request)
        head, tail = b'{"items": [], "padding": "', b'"}'
        chunk = b"x" * 65536
        await response.write(head)
        left = max(0, size - len(head) - len(tail))
        try:
            while left > 0:
                await response.write(chunk[:left])
                left -= min(left, len(chunk))
            await response.write(tail)
        except (ConnectionResetError, RuntimeError):  # the client stopped reading: fine
            pass
        return response

    def _page(self, items: list[dict[str, Any]], query: Mapping[str, str]) -> dict[str, Any]:
        per_page = int(query.get("countPerPage", "25"))
        page = int(query.get("page", "0")) if self.page_honoured else 0
        if self.max_page_size is not None:
            per_page = min(per_page, self.max_page_size)
        everything = query.get("all", "").lower() == "true" and self.all_reading != "ignored"
        if everything and self.all_reading == "every_page":
            return {
                "items": items,
                "totalCount": len(items),
                "totalPages": math.ceil(len(items) / per_page) if per_page > 0 else 0,
                "hasMorePages": (page + 1) * per_page < len(items),
            }
        if everything and self.max_page_size is None:
            per_page = max(len(items), 1)
            page = 0
        chunk = items[page * per_page : (page + 1) * per_page]
        return {
            "items": chunk,
            "totalCount": len(items),
            "totalPages": math.ceil(len(items) / per_page) if per_page > 0 else 0,
            "hasMorePages": (page + 1) * per_page < len(items),
        }

    @staticmethod
    def _in_accounts(item: Mapping[str, Any], query: Mapping[str, str]) -> bool:
        wanted = {a for a in query.get("accountIds", "").split(",") if a}
        return not wanted or item.get("accountId") in wanted

    # ------------------------------------------------------------------------------- routes

    async def _auth_status(self, request: web.Request) -> web.StreamResponse:
        return await self._behave(
            request,
            lambda: web.json_response(
                {
                    "id": self.user_id,
                    "userName": self.username,
                    "displayName": self.display_name,
                    "isAuthenticated": True,
                    "roles": list(self.roles),
                    "accountIds": [a for a, _ in self.accounts],
                    "accountNames": [n for _, n in self.accounts],
                }
            ),
        )

    async def _list_flows(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        name_filter = query.get("nameFilter", "").lower()
        flows = [
            f
            for f in self.flows
            if self._in_accounts(f, query) and name_filter in str(f.get("name", "")).lower()
        ]
        return await self._behave(request, lambda: web.json_response(self._page(flows, query)))

    async def _list_endpoints(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        numbers = [
            n
            for n in self.phone_numbers
            if self._in_accounts(n, query) and query.get("type", "PhoneNumber") == "PhoneNumber"
        ]
        return await self._behave(request, lambda: web.json_response(self._page(numbers, query)))

    async def _new_outgoing_session(self, request: web.Request) -> web.StreamResponse:
        forbidden = self._forbidden_unless_manager()
        if forbidden is not None:
            return forbidden
        body = await _json_object(request)
        if isinstance(body, web.Response):
            return body
        flow_id, number, caller_id = (
            body.get("flowId"),
            body.get("numberToDial"),
            body.get("callerId"),
        )
        flow = next((f for f in self.flows if f.get("id") == flow_id), None)
        if not flow_id:
            return _field_error("FlowId", "NotEmpty", "'Flow Id' must not be empty.")
        if flow is None:
            return _field_error("FlowId", "NotFound", "Flow ID is not a known flow")
        if not isinstance(number, str) or not _E164.match(number):
            return _field_error(
                "NumberToDial",
                "Invalid",
                "Number to dial must be an E164 number, e.g. +18144043093",
            )
        owned = [n.get("phoneNumber") for n in self.phone_numbers if n.get("phoneNumber")]
        if caller_id is not None and caller_id not in owned:
            return _field_error("CallerId", "Invalid", "Caller ID is not an owned number")

        def place_call() -> web.Response:
            session = self.add_session(
                accountId=flow.get("accountId"),
                flowId=flow_id,
                toAddress=number,
                fromAddress=caller_id or (owned[0] if owned else None),
            )
            return web.json_response(dict(session))

        return await self._behave(request, place_call)

    def _local_date(self, stamp: Any) -> str:
        try:
            created = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
        except ValueError:
            return ""
        return (created.astimezone(UTC) + self.sessions_utc_offset).date().isoformat()

    async def _find_sessions(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        to, start = query.get("to"), query.get("startDate")
        order = {sid: i for i, sid in enumerate(self.sessions)}
        found = sorted(
            (
                s
                for s in self.sessions.values()
                if self._in_accounts(s, query)
                and (to is None or to in str(s.get("toAddress") or ""))
                and (start is None or self._local_date(s.get("dateCreated")) >= start)
            ),
            key=lambda s: (str(s.get("dateCreated", "")), order[s["id"]]),
            reverse=self.sort_honoured and query.get("sortOrder") == "Descend",
        )
        return await self._behave(request, lambda: web.json_response(self._page(found, query)))

    async def _get_session(self, request: web.Request) -> web.StreamResponse:
        session_id = request.match_info["id"]

        def answer() -> web.Response:
            if session_id not in self.sessions:
                return _error(404, "NotFound", "Session not found")
            return web.json_response(self.sessions[session_id])

        return await self._behave(request, answer)

    def _end_session(self, method: str, session_id: str) -> web.Response:
        if session_id not in self.sessions:
            return _error(404, "NotFound", "Session not found")
        self.ended_by.append((method, session_id))
        self.set_session_state(
            session_id,
            ended=True,
            callState="Disconnected",
            outcome="Hung up",
            dateCompleted=self._next_timestamp(),
        )
        return web.Response(status=204)

    async def _hang_up(self, request: web.Request) -> web.StreamResponse:
        # EndSession: "Requires Authentication · Required role: User" (its metadata page).
        if END_SESSION_ROLE not in self.roles:
            return _error(403, "Forbidden", "Invalid Role")
        session_id = request.match_info["id"]
        return await self._behave(request, lambda: self._end_session("DELETE", session_id))

    async def _patch_session(self, request: web.Request) -> web.StreamResponse:
        # PatchSession: authentication only.
        session_id = request.match_info["id"]
        body = await _json_object(request)
        if isinstance(body, web.Response):
            return body

        def patch() -> web.Response:
            if body.get("callState") == "Disconnected":
                return self._end_session("PATCH", session_id)
            if session_id not in self.sessions:
                return _error(404, "NotFound", "Session not found")
            return web.json_response(self.sessions[session_id])

        return await self._behave(request, patch)

    async def _unknown_route(self, request: web.Request) -> web.StreamResponse:
        return _error(404, "NotFound", f"No route for {request.method} {request.path}")
