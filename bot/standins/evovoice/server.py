"""The Evo Voice stand-in's server: its routes, what it stores, and the test-side helpers."""

from __future__ import annotations

import asyncio
import itertools
import re
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any, Self

from aiohttp import web
from multidict import CIMultiDict

from bot.standins import ports
from bot.standins.evovoice.auth import (Logins, basic_login, invalid_role, no_login, refused_agent,
                                        refused_method)
from bot.standins.evovoice.behaviours import (Behaviour, Respond, error, field_error,
                                              in_the_format_asked, json_object, perform)
from bot.standins.evovoice.listing import in_accounts, page_of
from bot.standins.evovoice.rate import RateLimit
from bot.standins.evovoice.recorded import OUTGOING_PATH, Recorded, RequestLog
from bot.standins.evovoice.sessions import (as_read_alone, ended_hang_up, listed_sessions,
                                            no_session, sort_refusal, unreadable_dates,
                                            without_zone, written_address, written_number)

MANAGER_ROLES = frozenset({"Manager", "SystemAdministrator"})
END_SESSION_ROLE = "User"
CREDENTIALS_PATH = "/auth/credentials"
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")


class EvoVoiceStandIn(RequestLog):
    """The Evo Voice API on a free loopback port. All public attributes may be changed by tests.
    What it received: ``requests`` and the ways to read them (recorded.py)."""

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
        self.role_refusal = "body"  # or "status_line" (auth.py, invalid_role)
        self.basic_enabled = True  # False: only a session from /auth/credentials logs in
        self.logins = Logins()  # those sessions (auth.py)
        self.all_reading = "everything"  # or "every_page", "ignored"
        self.sessions_utc_offset = timedelta(0)  # the zone startDate and endDate are read in
        # How far its clock is ahead of the bot's host's (its dates, its Date headers).
        self.clock_offset = timedelta(0)
        self.end_date = "inclusive"  # or "exclusive", "one_day" (sessions.py)
        self.session_dates_offset: timedelta | None = None  # dates without a zone (sessions.py)
        self.session_dates_form = "iso"  # or "wcf": /Date(ms)/ (sessions.py)
        self.to_address_form = "e164"  # how a placed call's toAddress is written (sessions.py)
        self.phone_number_form = "e164"  # how GET /endpoints writes phoneNumber (sessions.py)
        self.sort_honoured = True
        # True: a sortField it doesn't know (any, since its values are undocumented) is a 400.
        self.sort_refused = False
        self.page_honoured = True  # False: every page is the first one
        self.specific_ids = "honoured"  # or "ignored" (sessions.py)
        self.omitted_from_listings: set[str] = set()  # session ids no listing holds
        self.patch_ends_calls = True  # False: PatchSession is accepted, the call goes on
        # Methods a front end turns away on every path, and with what: {"DELETE": 405} (auth.py).
        self.refused_methods: dict[str, int] = {}
        self.patch_writes_fields = False  # True: that PatchSession stores the callState sent
        self.ended_hang_up = "ends_again"  # ending a session that has ended (sessions.py)
        self.missing_session = "not_found"  # or "no_content": reading one it lacks (sessions.py)
        # None: no limit (nothing public says Evo Voice has one); else 429 past it (rate.py).
        self.rate_limit: RateLimit | None = None
        # What a request does when its queue is empty, by (method, path); else Respond(). E.g.
        # ``{("POST", "/sessions/outgoing"): Delayed(2.0)}``: every call is slow to set up.
        self.default_behaviours: dict[tuple[str, str], Behaviour] = {}
        self.url = ""
        self._queues: dict[tuple[str, str], list[Behaviour]] = {}
        self.session_ids = (f"sess-{n}" for n in itertools.count(1))  # Evo Voice: never one twice
        self._last_created = datetime(2000, 1, 1, tzinfo=UTC)
        self._changed = asyncio.Condition()
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._kept: socket.socket | None = None  # the port while stopped (stop(keep_port=True))

    # ------------------------------------------------------------------------------ lifecycle

    async def start(self, port: int = 0, tls: ssl.SSLContext | None = None) -> None:
        """Bind 127.0.0.1 on ``port`` (0: a free one; ``tls``: HTTPS) and set ``url``."""
        app = web.Application(middlewares=[self._dated, self._record_and_authenticate])
        app.router.add_get("/auth/status", self._auth_status)
        app.router.add_post(CREDENTIALS_PATH, self._sign_in)
        app.router.add_get("/flows", self._list_flows)
        app.router.add_get("/endpoints", self._list_endpoints)
        app.router.add_post(OUTGOING_PATH, self._new_outgoing_session)
        app.router.add_get("/sessions", self._find_sessions)
        app.router.add_delete("/sessions", self._delete_sessions)
        app.router.add_get("/sessions/{id}", self._get_session)
        app.router.add_delete("/sessions/{id}", self._hang_up)
        app.router.add_patch("/sessions/{id}", self._patch_session)
        app.router.add_route("*", "/{tail:.*}", self._unknown_route)
        self._stopping.clear()
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        # A burst of calls opens many connections at once (the benchmark); don't drop their SYNs.
        kept, self._kept = self._kept, None
        await ports.site(self._runner, port, kept, backlog=1024, tls=tls).start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"{'https' if tls else 'http'}://{host}:{port}"

    async def stop(self, *, keep_port: bool = False) -> None:
        """Stop serving; requests still waiting in ``Delayed`` are released at once.
        ``keep_port``: ``start(port=...)`` serves on it again (bot/standins/ports.py)."""
        self._stopping.set()
        port = self._runner.addresses[0][1] if self._runner and self._runner.addresses else 0
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._kept is not None:
            self._kept.close()
            self._kept = None
        if keep_port and port:
            self._kept = ports.keep(port)

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

    def hang_ups(self, session_id: str) -> list[str]:
        """How ``session_id`` was ended by a request, each time: ``"DELETE"`` or ``"PATCH"``."""
        return [method for method, sid in self.ended_by if sid == session_id]

    def add_session(self, **fields: Any) -> dict[str, Any]:
        """Store a session as if a call had been placed; ``fields`` (camelCase) override."""
        session: dict[str, Any] = {
            "id": next(self.session_ids),
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
        now = max(self.now(), self._last_created + timedelta(milliseconds=1))
        self._last_created = now
        return now.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def now(self) -> datetime:
        """The time on Evo Voice's clock, ``clock_offset`` from the bot's."""
        return datetime.now(UTC) + self.clock_offset

    @web.middleware
    async def _dated(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        response = await handler(request)
        if self.clock_offset and not response.prepared:  # its Date header, on its clock
            response.headers["Date"] = format_datetime(self.now(), usegmt=True)
        return response

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
            self.requests.append(Recorded(
                method=request.method, path=request.path,
                query={k: request.query[k] for k in request.query}, json=parsed,
                headers=CIMultiDict(request.headers), body=body,
            ))
            self._changed.notify_all()
        if (refused := refused_agent(request) or refused_method(request, self.refused_methods)):
            return refused
        if request.path != CREDENTIALS_PATH and not self._authenticated(request):
            return no_login(request, self.refused_login)
        refused = self.rate_limit.refusal() if self.rate_limit is not None else None
        if refused is not None:
            return refused
        response = await handler(request)
        if isinstance(response, web.Response) and not response.prepared:
            response = in_the_format_asked(request, response)
            if "ss-id" not in response.cookies:  # a Basic login's: no business keeping it
                response.set_cookie("ss-id", "standin-session")
        return response

    def _authenticated(self, request: web.Request) -> bool:
        basic = self.basic_enabled and basic_login(request) == (self.username, self.password)
        return basic or self.logins.holds(request)

    def _forbidden_unless_manager(self) -> web.Response | None:
        if MANAGER_ROLES.isdisjoint(self.roles):
            return invalid_role(self.role_refusal)
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
        return await perform(behaviour, request, produce, self._stopping)

    def _dated_as_written(self, session: dict[str, Any]) -> dict[str, Any]:
        return without_zone(session, self.session_dates_offset, self.session_dates_form)

    def _page(self, items: list[dict[str, Any]], query: Mapping[str, str]) -> dict[str, Any]:
        return page_of(items, query, max_page_size=self.max_page_size,
                       all_reading=self.all_reading, page_honoured=self.page_honoured)

    # ------------------------------------------------------------------------------- routes

    async def _auth_status(self, request: web.Request) -> web.StreamResponse:
        return await self._behave(
            request,
            lambda: web.json_response({
                "id": self.user_id, "userName": self.username, "displayName": self.display_name,
                "isAuthenticated": True, "roles": list(self.roles),
                "accountIds": [a for a, _ in self.accounts],
                "accountNames": [n for _, n in self.accounts],
            }),
        )

    async def _sign_in(self, request: web.Request) -> web.StreamResponse:
        body = await json_object(request)
        return await self._behave(request, lambda: self.logins.sign_in(body, self))

    async def _list_flows(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        name_filter = query.get("nameFilter", "").lower()
        flows = [f for f in self.flows
                 if in_accounts(f, query) and name_filter in str(f.get("name", "")).lower()]
        return await self._behave(request, lambda: web.json_response(self._page(flows, query)))

    async def _list_endpoints(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        numbers = [
            written_number(n, self.phone_number_form)
            for n in self.phone_numbers
            if in_accounts(n, query) and query.get("type", "PhoneNumber") == "PhoneNumber"
        ]
        return await self._behave(request, lambda: web.json_response(self._page(numbers, query)))

    async def _new_outgoing_session(self, request: web.Request) -> web.StreamResponse:
        forbidden = self._forbidden_unless_manager()
        if forbidden is not None:
            return forbidden
        body = await json_object(request)
        if isinstance(body, web.Response):
            return body
        flow_id, number = body.get("flowId"), body.get("numberToDial")
        caller_id = body.get("callerId")
        flow = next((f for f in self.flows if f.get("id") == flow_id), None)
        if not flow_id:
            return field_error("FlowId", "NotEmpty", "'Flow Id' must not be empty.")
        if flow is None:
            return field_error("FlowId", "NotFound", "Flow ID is not a known flow")
        if not isinstance(number, str) or not _E164.match(number):
            return field_error("NumberToDial", "Invalid",
                               "Number to dial must be an E164 number, e.g. +18144043093")
        # "an owned phone number" of the account the flow runs in (docs/evovoice-api.md).
        owned = [n.get("phoneNumber") for n in self.phone_numbers
                 if n.get("phoneNumber") and n.get("accountId") in (None, flow.get("accountId"))]
        if caller_id is not None and caller_id not in owned:
            return field_error("CallerId", "Invalid", "Caller ID is not an owned number")

        def place_call() -> web.Response:
            session = self.add_session(
                accountId=flow.get("accountId"),
                flowId=flow_id,
                toAddress=written_address(number, self.to_address_form),
                fromAddress=caller_id or (owned[0] if owned else None),
            )
            return web.json_response(self._dated_as_written(session))

        return await self._behave(request, place_call)

    async def _find_sessions(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        if (unread := unreadable_dates(query)) is not None:
            return error(400, "SerializationException", f"Could not read {unread} as a date")
        if self.sort_refused and "sortField" in query:
            return sort_refusal(query["sortField"])
        found = listed_sessions(
            self.sessions, query, utc_offset=self.sessions_utc_offset, end_date=self.end_date,
            sort_honoured=self.sort_honoured, specific_ids=self.specific_ids,
            omitted=self.omitted_from_listings, dates_offset=self.session_dates_offset,
            dates_form=self.session_dates_form,
        )
        return await self._behave(request, lambda: web.json_response(self._page(found, query)))

    async def _get_session(self, request: web.Request) -> web.StreamResponse:
        session_id = request.match_info["id"]

        def answer() -> web.Response:
            if session_id not in self.sessions:
                return no_session(self.missing_session)
            session = as_read_alone(self.sessions[session_id], self.session_dates_offset,
                                    self.session_dates_form)
            return web.json_response(session)

        return await self._behave(request, answer)

    def _end_session(self, method: str, session_id: str) -> web.Response:
        if (session := self.sessions.get(session_id)) is None:
            return error(404, "NotFound", "Session not found")
        if (answer := ended_hang_up(session, self.ended_hang_up)) is not None:
            return answer
        self.ended_by.append((method, session_id))
        self.set_session_state(session_id, ended=True, callState="Disconnected",
                               outcome="Hung up", dateCompleted=self._next_timestamp())
        return web.Response(status=204)

    async def _hang_up(self, request: web.Request) -> web.StreamResponse:
        # EndSession: "Requires Authentication · Required role: User" (its metadata page).
        if END_SESSION_ROLE not in self.roles:
            return invalid_role(self.role_refusal)
        session_id = request.match_info["id"]
        return await self._behave(request, lambda: self._end_session("DELETE", session_id))

    async def _patch_session(self, request: web.Request) -> web.StreamResponse:
        # PatchSession: authentication only.
        session_id = request.match_info["id"]
        body = await json_object(request)
        if isinstance(body, web.Response):
            return body

        def patch() -> web.Response:
            # Ending a call this way is only *likely* (docs/evovoice-api.md, Hang up).
            if body.get("callState") == "Disconnected" and self.patch_ends_calls:
                return self._end_session("PATCH", session_id)
            if session_id not in self.sessions:
                return error(404, "NotFound", "Session not found")
            if self.patch_writes_fields and "callState" in body:  # a patch of the record
                self.sessions[session_id]["callState"] = body["callState"]
            return web.json_response(self._dated_as_written(self.sessions[session_id]))

        return await self._behave(request, patch)

    async def _delete_sessions(self, request: web.Request) -> web.StreamResponse:
        # Without an id it "bulk-deletes an account's sessions" (docs/evovoice-api.md): so here.
        for session_id in [i for i, s in self.sessions.items() if in_accounts(s, request.query)]:
            del self.sessions[session_id]
        return web.Response(status=204)

    async def _unknown_route(self, request: web.Request) -> web.StreamResponse:
        return error(404, "NotFound", f"No route for {request.method} {request.path}")
