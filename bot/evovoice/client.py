"""The Evo Voice client: the API's operations, on one long-lived connection (``Requester``).

Its errors are drawn in bot/evovoice/errors.py, its models in models.py, how a request is sent
and retried in requester.py; all are importable from here as before. Every request waits its turn
in the client's ``budget`` (budget.py): placing a call and hanging up go first, polls are routine
and read many sessions a request (``poll_session``, lookups.py).

What the evidence says about the server (docs/evovoice-api.md, with grades) and how this client
copes where it is unsure:

- ``GET /auth/status`` carries no ``[Authenticate]``: a refused Basic login answers 200 with
  ``isAuthenticated: false`` or an empty 204, not 401. All three are ``BadLogin``, once signing
  in with ``POST /auth/credentials`` is refused too (a server may not read Basic at all: login.py).
- Hanging up: ``DELETE /sessions/{id}`` (EndSession) needs the role User, which a Manager-only
  login lacks; ``PATCH /sessions/{id}`` ``{"callState": "Disconnected"}`` (PatchSession) needs
  authentication only. ``hang_up`` tries one, falls back to the other on 403 "Invalid Role" or
  on the method turned away (405, 501), and remembers which worked (``hang_up_method``); a 429
  is waited out and the hang-up sent again (``HANG_UP_TRIES``).
- Listing flows and numbers: one paging scheme (``page``/``countPerPage``, never ``all=true``
  alongside), items de-duplicated by id, bounded, and stopping when a page brings nothing new.
- ``get_session``: a session the server doesn't have is a 404, or (a ServiceStack service that
  returned null) a 204 No Content: both are ``NotFound``.
- ``find_sessions`` (finding.py): the filters' meanings are unconfirmed; it asks a wide window,
  pages through (bounded), and keeps only voice sessions to exactly that number created since the
  given instant.
- The server rejects some clients by User-Agent: every request says ``callbot/<version>``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import cached_property
from typing import Self, TypeVar
from urllib.parse import quote

from bot.evovoice.budget import Priority, RequestBudget
from bot.evovoice.errors import (
    MAX_RETRY_AFTER_SECONDS,
    UNREADABLE_JSON,
    AlreadyEnded,
    BadLogin,
    BadRequest,
    Conflict,
    ConflictPlacing,
    EvoVoiceError,
    EvoVoiceStatusError,
    EvoVoiceTimeout,
    EvoVoiceUnreachable,
    FieldError,
    Forbidden,
    MalformedResponse,
    MissingRole,
    NotFound,
    OutcomeUnknown,
    RateLimited,
    ServerError,
    StillGoingOn,
    cannot_answer_now,
    capped_retry_after,
    parse_retry_after,
    unreadable_answer,
)
from bot.evovoice.finding import (
    FIND_MAX_PAGES,
    FIND_PAGE_SIZE,
    SESSIONS_SORT,
    SessionFinder,
    SessionsFound,
)
from bot.evovoice.lookups import SessionPolls
from bot.evovoice.models import (
    OUTGOING_PATH,
    AuthStatus,
    CallPlaced,
    Flow,
    OwnedNumber,
    Session,
    as_e164,
    is_address_of,
    parse_call_placed,
)
from bot.evovoice.reading import read_items, read_model
from bot.evovoice.requester import (
    DEFAULT_CONNECT_RETRIES,
    DEFAULT_RETRY_BACKOFF,
    DEFAULT_TIMEOUT,
    USER_AGENT,
    RequestObserved,
    RequestObserver,
    route_of,
)

__all__ = [
    "DEFAULT_CONNECT_RETRIES", "DEFAULT_RETRY_BACKOFF", "DEFAULT_TIMEOUT", "FIND_MAX_PAGES",
    "FIND_PAGE_SIZE", "KNOWN_HOSTS", "SESSIONS_SORT",
    "MAX_RETRY_AFTER_SECONDS", "USER_AGENT", "AlreadyEnded", "AuthStatus", "BadLogin",
    "BadRequest", "CallPlaced", "Conflict", "ConflictPlacing",
    "EvoVoiceClient", "EvoVoiceError", "EvoVoiceStatusError", "EvoVoiceTimeout",
    "EvoVoiceUnreachable", "FieldError", "Flow", "Forbidden", "MalformedResponse", "MissingRole",
    "NotFound", "OutcomeUnknown", "OwnedNumber", "Priority", "RateLimited", "RequestBudget",
    "RequestObserved", "RequestObserver", "ServerError", "Session", "SessionsFound",
    "StillGoingOn", "as_e164",
    "cannot_answer_now", "capped_retry_after", "is_address_of", "other_host", "parse_retry_after",
]

logger = logging.getLogger(__name__)

# The vendor's CLI names evovoice.io production and team.evovoice.io staging; the API page this bot
# was built from shows team.evovoice.io. Either may be the one a login belongs to.
KNOWN_HOSTS = ("https://evovoice.io", "https://team.evovoice.io")


def other_host(url: str) -> str | None:
    """The other of the two known hosts, for a URL naming one of them; else None."""
    here = url.rstrip("/").lower()
    if here not in KNOWN_HOSTS:
        return None
    return KNOWN_HOSTS[1 - KNOWN_HOSTS.index(here)]


PAGE_SIZE = 100
MAX_PAGES = 50
# The role EndSession (DELETE /sessions/{id}) requires; PatchSession requires none.
HANG_UP_ROLE = "User"
# A hang-up's method turned away, not the call: 405 is ServiceStack's answer to a service that
# throws NotSupportedException, and IIS's WebDAV module's to DELETE before ServiceStack sees it
# (an older IIS answers 501). The other method may work.
METHOD_TURNED_AWAY = frozenset({405, 501})
# A hang-up answered 429 is sent again after the pause, this many times in all (_send_hang_up).
HANG_UP_TRIES = 3
_REFUSED_LOGIN = "Evo Voice refused the login; check the username, the password and EVOVOICE_URL."

_HasId = TypeVar("_HasId", Flow, OwnedNumber, Session)


class EvoVoiceClient(SessionFinder):
    """The Evo Voice API's operations, each a typed answer or one of the errors above (finding a
    call's session: finding.py)."""

    # DELETE until the server says this login lacks the role for it, then PATCH for good.
    hang_up_method = "DELETE"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if "polls" in self.__dict__:
            self.polls.close()
        await super().aclose()

    # ----------------------------------------------------------------------------- operations

    async def auth_status(self) -> AuthStatus:
        """Who the bot is logged in as: its roles and the accounts it can reach.

        BadLogin when the login is refused, whichever way the server says so: 401, an empty 204,
        or 200 with ``isAuthenticated: false`` (ServiceStack's answer to wrong Basic credentials),
        and signing in with ``POST /auth/credentials`` is refused too.
        """
        for attempt in range(2):
            generation = self.login.generation
            response = await self._send("GET", "/auth/status")
            refused = response.status_code == 204 or not response.content.strip()
            if not refused:
                try:
                    data = response.json()
                except UNREADABLE_JSON:
                    raise unreadable_answer(response) from None
                status = read_model(AuthStatus, data, "/auth/status")
                if status.is_authenticated:
                    return status
            # The server did not read the login (bot/evovoice/login.py): sign in, ask again.
            if attempt > 0 or not await self.sign_in_again(generation):
                break
        raise BadLogin(204 if refused else response.status_code, _REFUSED_LOGIN)

    async def list_flows(self, account_ids: list[str]) -> list[Flow]:
        # Never all=true: with page/countPerPage a server honouring both could send every flow on
        # every page; the vendor's CLI sends it alone. Paging alone means one thing everywhere.
        return await self._get_all_pages(Flow, "/flows", {"accountIds": ",".join(account_ids)})

    async def list_phone_numbers(self, account_ids: list[str]) -> list[OwnedNumber]:
        # Read-only on purpose: POST /endpoints/phone-numbers would *buy* a number.
        return await self._get_all_pages(
            OwnedNumber,
            "/endpoints",
            {"type": "PhoneNumber", "accountIds": ",".join(account_ids)},
        )

    async def create_outgoing_session(
        self, flow_id: str, number_to_dial: str, caller_id: str | None = None, *,
        before_send: Callable[[], Awaitable[None]] | None = None,
    ) -> CallPlaced:
        """Ask Evo Voice to dial ``number_to_dial`` and run ``flow_id`` once answered.

        Any 2xx is success whatever its body (the response type is undeclared), unless it carries
        a ServiceStack error. Raises ``OutcomeUnknown`` when the call may have been placed without
        a clear answer. ``before_send``: awaited once the POST's turn has come, just before it
        leaves (the budget may hold it back up to a minute after a 429): whoever asked for the
        call may no longer want it (an escalation stopped meanwhile); what it raises comes out,
        nothing sent.
        """
        body = {"flowId": flow_id, "numberToDial": number_to_dial}
        if caller_id is not None:
            body["callerId"] = caller_id
        response = await self._send("POST", OUTGOING_PATH, json=body, before_send=before_send)
        return parse_call_placed(response)

    async def get_session(
        self, session_id: str, *, priority: Priority = Priority.ROUTINE
    ) -> Session:
        """One session by id (routine: a poll, unless the caller says otherwise).

        NotFound for a 404, and for a 204: ServiceStack answers a service that returned null (no
        such session) with 204 No Content, as readily as a service throws a 404. Any other
        answer without a body is unreadable, as ever (a front end's, say)."""
        path = _session_path(session_id)
        response = await self._send("GET", path, priority=priority)
        if response.status_code == 204:
            raise NotFound(204, "Evo Voice has no such session.")
        try:
            data = response.json()
        except UNREADABLE_JSON:
            raise unreadable_answer(response) from None
        return read_model(Session, data, path)

    @cached_property
    def polls(self) -> SessionPolls:
        """Polls of many sessions, read a batch a request (bot/evovoice/lookups.py)."""
        return SessionPolls(self)

    async def poll_session(self, session_id: str, account_ids: list[str]) -> Session:
        """One session, as a poll: read together with the other sessions polled meanwhile."""
        return await self.polls.get(session_id, account_ids)

    async def sessions_page(
        self, ids: list[str], account_ids: list[str], page: int, *, admitted: bool
    ) -> tuple[list[Session], bool]:
        """One page of ``GET /sessions?specificIds=…``: its sessions, and whether more follow."""
        params = {"specificIds": ",".join(ids), "page": str(page), "countPerPage": str(len(ids))}
        if account_ids:
            params["accountIds"] = ",".join(account_ids)
        data = await self._get_json(
            "/sessions", params, priority=Priority.ROUTINE, admitted=admitted
        )
        more = isinstance(data, dict) and data.get("hasMorePages") is True
        return read_items(Session, data, "/sessions"), more

    async def hang_up(self, session_id: str) -> None:
        """End a live call: EndSession, or PatchSession when the login lacks the role for it, or
        when the method is turned away (405, 501: ``METHOD_TURNED_AWAY``).

        Whichever works is remembered; a 403 other than "Invalid Role" is not a missing role and is
        raised as it is. The path is built from a non-empty id only: ``DELETE /sessions`` without
        one deletes an account's sessions in bulk.

        A refusal (400, 409, 5xx) of a call that had just ended, or was hung up a moment ago, is
        AlreadyEnded when its session says it has ended: never "it may still ring" for a call
        that can't.
        """
        try:
            await self._end_session(session_id)
        except (BadRequest, Conflict, ServerError) as refused:
            if await self._has_ended(session_id):
                logger.info("Evo Voice refused to end a session that had ended (%s)",
                            type(refused).__name__, extra={"session_id": session_id})
                raise AlreadyEnded("The call had already ended.") from refused
            raise
        except NotFound as missing:
            # Most often a session Evo Voice has forgotten (over). One it still shows going on
            # was not ended: never told "nothing to hang up" while the phone rings.
            if await self._has_ended(session_id) is False:
                raise StillGoingOn("Evo Voice answered that it found no call to end (HTTP 404), "
                                   "yet still shows it going on.") from missing
            raise

    async def _has_ended(self, session_id: str) -> bool | None:
        """Whether the session says it has ended; None when it can't be read."""
        try:
            session = await self.get_session(session_id, priority=Priority.FIRST)
        except EvoVoiceError:
            return None
        return bool(session.ended)

    async def _end_session(self, session_id: str) -> None:
        path = _session_path(session_id)
        first = self.hang_up_method
        refusals: list[EvoVoiceStatusError] = []
        for method in (first, "PATCH" if first == "DELETE" else "DELETE"):
            try:
                await self._send_hang_up(method, path)
            except EvoVoiceStatusError as exc:
                if not isinstance(exc, MissingRole) and exc.status not in METHOD_TURNED_AWAY:
                    raise
                logger.warning("Evo Voice %s %s: %d %s", method, route_of(path), exc.status,
                               "Invalid Role" if isinstance(exc, MissingRole) else "turned away")
                refusals.append(exc)
                continue
            if method != self.hang_up_method:
                logger.info("Evo Voice: hanging up with %s from now on", method)
                self.hang_up_method = method
            return
        # A role is what the bot's operators can grant: said first, whatever the other answered.
        refused = next((r for r in refusals if isinstance(r, MissingRole)), refusals[0])
        if not isinstance(refused, MissingRole):
            raise refused
        refused.needed = (HANG_UP_ROLE,)
        refused.message = (
            "Evo Voice refused to end the call: the bot's login lacks the role needed to hang up "
            f"(EndSession needs {HANG_UP_ROLE}; PatchSession was refused too)."
        )
        raise refused

    async def _send_hang_up(self, method: str, path: str) -> None:
        """One hang-up by ``method``; a 429 is sent again once the budget's pause is over (every
        request waits it out: budget.py), up to ``HANG_UP_TRIES`` times. A 429 did nothing, and
        ending a call twice ends nothing more: a phone must not ring on, past a step's deadline
        or a Stop, for a "not now" nobody asks again."""
        for attempt in range(1, HANG_UP_TRIES + 1):
            try:
                if method == "DELETE":
                    await self._send("DELETE", path)
                else:
                    await self._send("PATCH", path, json={"callState": "Disconnected"})
                return
            except RateLimited:
                if attempt == HANG_UP_TRIES:
                    raise
                logger.warning("Evo Voice %s %s: 429; sending it again after the pause", method,
                               route_of(path))

    # ------------------------------------------------------------------------------ plumbing

    def list_query(self, path: str, params: dict[str, str], page: int = 0) -> dict[str, str]:
        """The query of one page of a listing (``callbot check`` sends the same)."""
        return params | {"page": str(page), "countPerPage": str(PAGE_SIZE)}

    async def _get_all_pages(
        self, model: type[_HasId], path: str, params: dict[str, str]
    ) -> list[_HasId]:
        """Every page, items de-duplicated by id: a server that ignores ``page``, or sends all
        items on every page, still yields each item once, and a page with nothing new ends it."""
        items: dict[str, _HasId] = {}
        for page in range(MAX_PAGES):
            data = await self._get_json(path, self.list_query(path, params, page))
            # One flow or number of an odd shape is left out, not every one with it.
            batch = read_items(model, data, path, each=True)
            new = [item for item in batch if item.id not in items]
            items.update((item.id, item) for item in new)
            if not (isinstance(data, dict) and data.get("hasMorePages") is True) or not new:
                return list(items.values())
        logger.warning("Evo Voice GET %s: stopped after %d pages", path, MAX_PAGES)
        return list(items.values())


def _session_path(session_id: str) -> str:
    if not session_id:
        raise ValueError("session_id must not be empty")
    # Dot segments, which a URL drops: "/sessions/." is sent as "/sessions", whose DELETE deletes
    # an account's sessions in bulk; so may "/sessions/..." or "/sessions/%20" be read, by a
    # server that trims a segment's trailing dots and spaces as Windows trims a file's name. Such
    # an id can only have come from a malformed answer.
    if not session_id.strip(". \t\r\n"):
        raise MalformedResponse("Evo Voice named a session with an id the bot cannot use.")
    return f"/sessions/{quote(session_id, safe='')}"
