"""The Evo Voice client: one long-lived httpx client, typed models, typed errors.

Every failure reaches callers as one of these (never an ``httpx`` exception or a raw dict)::

    EvoVoiceError                   .message is safe to show to a user
    ├── EvoVoiceUnreachable         could not connect after retries: nothing was sent
    ├── OutcomeUnknown              POST /sessions/outgoing may have placed the call (.cause)
    ├── EvoVoiceTimeout             a GET/DELETE was sent but no answer came back
    ├── MalformedResponse           a GET answered 2xx with a body of the wrong shape
    └── EvoVoiceStatusError         the server answered with an error status
        ├── BadRequest              400 (.field_errors)
        ├── BadLogin                401, or /auth/status saying "not authenticated" (200 or 204)
        ├── Forbidden               403 for another reason than a role (e.g. a refused client)
        │   └── MissingRole         403 "Invalid Role" (.needed: the role(s) the operation needs)
        ├── NotFound                404
        ├── Conflict                409
        ├── RateLimited             429 (.retry_after seconds, or None)
        └── ServerError             5xx on anything but POST /sessions/outgoing

Retrying is decided per request, because a call must never ring twice: POST /sessions/outgoing is
repeated only when the connection could not be opened (nothing reached the server). GETs are
idempotent and get one more try after a 502/503/504 or a lost answer. DELETE and PATCH are retried
only on connect failures.

What the evidence says about the server (docs/evovoice-api.md, with grades) and how this client
copes where it is unsure:

- ``GET /auth/status`` carries no ``[Authenticate]``: a refused Basic login answers 200 with
  ``isAuthenticated: false`` or an empty 204, not 401. All three are ``BadLogin``.
- Hanging up: ``DELETE /sessions/{id}`` (EndSession) needs the role User, which a Manager-only
  login lacks; ``PATCH /sessions/{id}`` ``{"callState": "Disconnected"}`` (PatchSession) needs
  authentication only. ``hang_up`` tries one, falls back to the other on 403 "Invalid Role", and
  remembers which worked (``hang_up_method``).
- Listing flows and numbers: one paging scheme (``page``/``countPerPage``, never ``all=true``
  alongside), items de-duplicated by id, bounded, and stopping when a page brings nothing new.
- ``find_sessions``: ``startDate`` is a date in an unknown time zone, ``to`` matches by substring,
  ``sortField`` values are undocumented; it asks from the day before, pages through (bounded), and
  keeps only sessions to exactly that number created since the given instant.
- The server rejects some clients by User-Agent: every request says ``callbot/<version>``.

An optional ``observer`` hears about every attempt (route, seconds, status or kind of failure), for
metrics; it never sees bodies, queries or credentials.
"""

from __future__ import annotations

import asyncio
import email.utils
import importlib.metadata
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Annotated, Any, Self, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from bot.evovoice.dates import parse_timestamp
from bot.evovoice.transport import AiohttpTransport, AnswerTooLarge

logger = logging.getLogger(__name__)


def _version() -> str:
    try:
        return importlib.metadata.version("callbot")
    except importlib.metadata.PackageNotFoundError:
        return "dev"


# The vendor's CLI names evovoice.io production and team.evovoice.io staging; the API page this bot
# was built from shows team.evovoice.io. Either may be the one a login belongs to.
KNOWN_HOSTS = ("https://evovoice.io", "https://team.evovoice.io")


def other_host(url: str) -> str | None:
    """The other of the two known hosts, for a URL naming one of them; else None."""
    here = url.rstrip("/").lower()
    if here not in KNOWN_HOSTS:
        return None
    return KNOWN_HOSTS[1 - KNOWN_HOSTS.index(here)]

USER_AGENT = f"callbot/{_version()}"
# Reads may take up to 15 s: the server is slow to answer while it sets a call up.
DEFAULT_TIMEOUT = httpx.Timeout(15.0, connect=5.0)
DEFAULT_CONNECT_RETRIES = 3
DEFAULT_RETRY_BACKOFF = 0.5
PAGE_SIZE = 100
MAX_PAGES = 50
# A session lookup pages through one or two days of sessions to one number: a few pages at most.
FIND_MAX_PAGES = 5
FIND_PAGE_SIZE = 50
# The role EndSession (DELETE /sessions/{id}) requires; PatchSession requires none.
HANG_UP_ROLE = "User"
_MAX_MESSAGE_CHARS = 300
# A Retry-After longer than this is read as this: one 429 asking for a day must not silence a
# followed call (or an escalation step) for a day.
MAX_RETRY_AFTER_SECONDS = 60.0

_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_NUMBER_DECORATION = re.compile(r"[\s\-().]")
# Failures that happen before any byte of the request left: always safe to repeat.
_CONNECT_FAILURES = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_GATEWAY_STATUSES = frozenset({502, 503, 504})
_OUTGOING_PATH = "/sessions/outgoing"


# --------------------------------------------------------------------------------------- errors


class EvoVoiceError(Exception):
    """Base of every error this client raises; ``message`` is safe to show to users."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class EvoVoiceUnreachable(EvoVoiceError):
    """The connection could not be opened, even after retries: nothing was sent."""

    def __init__(self, message: str, *, attempts: int) -> None:
        super().__init__(message)
        self.attempts = attempts


class OutcomeUnknown(EvoVoiceError):
    """POST /sessions/outgoing reached the server (maybe) but no clear answer came back.

    The call may have been placed: look it up with ``find_sessions`` instead of dialling again.
    """

    def __init__(self, message: str, *, cause: str, status: int | None = None) -> None:
        super().__init__(message)
        self.cause = cause
        self.status = status


class EvoVoiceTimeout(EvoVoiceError):
    """A GET or DELETE was sent but its answer did not arrive (timed out or connection lost)."""


class MalformedResponse(EvoVoiceError):
    """A GET answered 2xx with a body that is not the expected JSON shape."""


@dataclass(frozen=True)
class FieldError:
    """One entry of ServiceStack's ``responseStatus.errors``."""

    field_name: str | None
    message: str
    error_code: str | None = None


class EvoVoiceStatusError(EvoVoiceError):
    """The server answered with a non-2xx status."""

    def __init__(
        self,
        status: int,
        message: str,
        error_code: str | None = None,
        field_errors: list[FieldError] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.field_errors: list[FieldError] = list(field_errors or [])


class BadRequest(EvoVoiceStatusError):
    """400: the server rejected an argument (see ``field_errors``)."""


class BadLogin(EvoVoiceStatusError):
    """401: the bot's Evo Voice username or password is wrong."""


class Forbidden(EvoVoiceStatusError):
    """403 that is not "Invalid Role": the server refused the request for another reason."""


class MissingRole(Forbidden):
    """403 "Invalid Role": the bot's Evo Voice user lacks a role the operation needs."""

    needed: tuple[str, ...] = ("Manager", "SystemAdministrator")


class NotFound(EvoVoiceStatusError):
    """404."""


class Conflict(EvoVoiceStatusError):
    """409."""


class RateLimited(EvoVoiceStatusError):
    """429: too many requests; ``retry_after`` is the server's wait in seconds, if it gave one."""

    def __init__(
        self,
        status: int,
        message: str,
        error_code: str | None = None,
        field_errors: list[FieldError] | None = None,
        *,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(status, message, error_code, field_errors)
        self.retry_after = retry_after


class ServerError(EvoVoiceStatusError):
    """5xx on a call that cannot have placed a phone call."""


_STATUS_ERRORS: dict[int, tuple[type[EvoVoiceStatusError], str]] = {
    400: (BadRequest, "Evo Voice rejected the request as invalid."),
    401: (BadLogin, "Evo Voice rejected the bot's login; check its username and password."),
    403: (Forbidden, "Evo Voice refused the request (HTTP 403)."),
    404: (NotFound, "Evo Voice could not find what was asked for."),
    409: (Conflict, "Evo Voice reported a conflict with the current state."),
    429: (RateLimited, "Evo Voice is receiving too many requests; try again shortly."),
}

# --------------------------------------------------------------------------------------- models


# ServiceStack may send null for an empty list or a false flag.
_StrList = Annotated[list[str], BeforeValidator(lambda v: [] if v is None else v)]
_Flag = Annotated[bool, BeforeValidator(lambda v: False if v is None else v)]


class _ApiModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        coerce_numbers_to_str=True,
    )


class AuthStatus(_ApiModel):
    user_id: str | None = Field(default=None, alias="id")
    is_authenticated: _Flag = False
    roles: _StrList = Field(default_factory=list)
    account_ids: _StrList = Field(default_factory=list)
    account_names: _StrList = Field(default_factory=list)
    display_name: str | None = None


class Flow(_ApiModel):
    id: str
    name: str = ""
    description: str | None = None
    account_id: str | None = None


def as_e164(text: str | None) -> str | None:
    """``text`` as an E.164 number if it is one once spaces, dashes and brackets go; else None."""
    if not text:
        return None
    candidate = _NUMBER_DECORATION.sub("", text)
    return candidate if _E164.match(candidate) else None


class OwnedNumber(_ApiModel):
    id: str
    phone_number: str | None = None
    display_name: str | None = None
    account_id: str | None = None
    # The endpoint's field names as sent, for `callbot check` when no E.164 number is found.
    fields_seen: tuple[str, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _remember_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {**data, "fieldsSeen": tuple(str(key) for key in data)}
        return data

    @model_validator(mode="after")
    def _number_from_display_name(self) -> Self:
        # The E.164 is only *likely* in phoneNumber; the display name often holds it instead.
        if not self.phone_number:
            self.phone_number = as_e164(self.display_name)
        return self


class Session(_ApiModel):
    id: str
    date_created: str | None = None
    date_completed: str | None = None
    to_address: str | None = None
    from_address: str | None = None
    call_state: str | None = None
    dial_state: str | None = None
    ended: _Flag = False
    outcome: str | None = None
    answered_by_name: str | None = None
    channel: str | None = None


class CallPlaced(_ApiModel):
    """The server accepted a new outgoing call; its answer may or may not name the session."""

    session_id: str | None = None
    session: Session | None = None


_Item = TypeVar("_Item", bound=BaseModel)
_HasId = TypeVar("_HasId", Flow, "OwnedNumber", Session)


@dataclass(frozen=True)
class RequestObserved:
    """One HTTP attempt, for an observer: ``error`` is None when a 2xx came back."""

    method: str
    route: str  # the path with ids replaced by ``{id}``, so routes are few
    seconds: float
    status: int | None
    error: str | None  # unreachable, timeout, connection_lost, bad_login, server_error, …


RequestObserver = Callable[[RequestObserved], None]

_FIXED_ROUTES = frozenset({"/auth/status", "/flows", "/endpoints", "/sessions", _OUTGOING_PATH})
_STATUS_KINDS = {400: "bad_request", 401: "bad_login", 403: "missing_role", 404: "not_found",
                 409: "conflict", 429: "rate_limited"}


_AFTER_SEND_CAUSES = {"timeout": "no answer in time",
                      "connection_lost": "connection lost before the answer",
                      "unreadable_answer": "unreadable answer"}


def _route(path: str) -> str:
    return path if path in _FIXED_ROUTES else path.rsplit("/", 1)[0] + "/{id}"


def _status_kind(status: int) -> str:
    return _STATUS_KINDS.get(status, "server_error" if status >= 500 else "http_error")

# --------------------------------------------------------------------------------------- client


class EvoVoiceClient:
    """Talks to the Evo Voice API over one pooled connection, with HTTP Basic on every request."""

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        *,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        connect_retries: int = DEFAULT_CONNECT_RETRIES,
        retry_backoff: float = DEFAULT_RETRY_BACKOFF,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        observer: RequestObserver | None = None,
    ) -> None:
        if connect_retries < 1:
            raise ValueError("connect_retries counts attempts and must be at least 1")
        self._password = password
        # DELETE until the server says this login lacks the role for it, then PATCH for good.
        self.hang_up_method = "DELETE"
        self._connect_retries = connect_retries
        self._retry_backoff = retry_backoff
        self._sleep = sleep
        self._observer = observer
        # Basic auth on every request is the whole session: refuse the ss-id cookies the server
        # hands out, so no state outlives a request.
        no_cookies = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
        self._http = httpx.AsyncClient(
            base_url=base_url,
            auth=httpx.BasicAuth(username, password),
            headers={"Accept": "application/json", "User-Agent": USER_AGENT},
            timeout=timeout,
            cookies=no_cookies,
            # httpx's own pool costs too much CPU per request when many calls are placed at once.
            transport=transport if transport is not None else AiohttpTransport(),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # ----------------------------------------------------------------------------- operations

    async def auth_status(self) -> AuthStatus:
        """Who the bot is logged in as: its roles and the accounts it can reach.

        BadLogin when the login is refused, whichever way the server says so: 401, an empty 204,
        or 200 with ``isAuthenticated: false`` (ServiceStack's answer to wrong Basic credentials).
        """
        response = await self._send("GET", "/auth/status")
        if response.status_code == 204 or not response.content.strip():
            raise BadLogin(204, _REFUSED_LOGIN)
        try:
            data = response.json()
        except ValueError:
            raise MalformedResponse("Evo Voice sent an answer the bot could not read.") from None
        status = self._model(AuthStatus, data, "/auth/status")
        if not status.is_authenticated:
            raise BadLogin(response.status_code, _REFUSED_LOGIN)
        return status

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
        self, flow_id: str, number_to_dial: str, caller_id: str | None = None
    ) -> CallPlaced:
        """Ask Evo Voice to dial ``number_to_dial`` and run ``flow_id`` once answered.

        Any 2xx is success whatever its body (the response type is undeclared). Raises
        ``OutcomeUnknown`` when the call may have been placed without a clear answer.
        """
        body = {"flowId": flow_id, "numberToDial": number_to_dial}
        if caller_id is not None:
            body["callerId"] = caller_id
        response = await self._send("POST", _OUTGOING_PATH, json=body)
        return _parse_call_placed(response)

    async def get_session(self, session_id: str) -> Session:
        path = _session_path(session_id)
        return self._model(Session, await self._get_json(path), path)

    def find_sessions_query(
        self, account_ids: list[str], to: str, since: datetime
    ) -> dict[str, str]:
        """The query ``find_sessions`` sends first (``callbot check`` sends the same)."""
        # startDate's time zone is undocumented: the day before, in UTC, is on or before `since`
        # in every zone from UTC-12 to UTC+14.
        day_before = (since.astimezone(UTC) - timedelta(days=1)).date().isoformat()
        return {
            "accountIds": ",".join(account_ids),
            "to": to,
            "startDate": day_before,
            "sortField": "DateCreated",
            "sortOrder": "Descend",
            "page": "0",
            "countPerPage": str(FIND_PAGE_SIZE),
        }

    async def find_sessions(
        self, account_ids: list[str], *, to: str, since: datetime
    ) -> list[Session]:
        """Sessions to exactly ``to`` created at or after ``since``, newest first.

        ``to`` is a *contains* filter on the server and its sort may be ignored, so every page of
        the window is read (at most ``FIND_MAX_PAGES``) and filtered here, by ``toAddress`` and by
        ``dateCreated``. A session whose ``dateCreated`` can't be read is kept (it can't be ruled
        out), after the others.
        """
        params = self.find_sessions_query(account_ids, to, since)
        found: dict[str, Session] = {}
        for page in range(FIND_MAX_PAGES):
            data = await self._get_json("/sessions", params | {"page": str(page)})
            batch = self._items(Session, data, "/sessions")
            new = [item for item in batch if item.id not in found]
            for session in new:
                if as_e164(session.to_address) != to:
                    continue
                created = parse_timestamp(session.date_created)
                if created is None or created >= since:
                    found[session.id] = session
            if not new or not (isinstance(data, dict) and data.get("hasMorePages") is True):
                break
        else:
            logger.warning("Evo Voice GET /sessions: stopped after %d pages", FIND_MAX_PAGES)
        oldest = datetime.min.replace(tzinfo=UTC)
        return sorted(
            found.values(),
            key=lambda s: parse_timestamp(s.date_created) or oldest,
            reverse=True,
        )

    async def hang_up(self, session_id: str) -> None:
        """End a live call: EndSession, or PatchSession when the login lacks the role for it.

        Whichever works is remembered; a 403 other than "Invalid Role" is not a missing role and is
        raised as it is. The path is built from a non-empty id only: ``DELETE /sessions`` without
        one deletes an account's sessions in bulk.
        """
        path = _session_path(session_id)
        first = self.hang_up_method
        for method in (first, "PATCH" if first == "DELETE" else "DELETE"):
            try:
                if method == "DELETE":
                    await self._send("DELETE", path)
                else:
                    await self._send("PATCH", path, json={"callState": "Disconnected"})
            except MissingRole as exc:
                logger.warning("Evo Voice %s %s: Invalid Role", method, _route(path))
                refused = exc
                continue
            if method != self.hang_up_method:
                logger.info("Evo Voice: hanging up with %s from now on", method)
                self.hang_up_method = method
            return
        refused.needed = (HANG_UP_ROLE,)
        refused.message = (
            "Evo Voice refused to end the call: the bot's login lacks the role needed to hang up "
            f"(EndSession needs {HANG_UP_ROLE}; PatchSession was refused too)."
        )
        raise refused

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
            batch = self._items(model, data, path)
            new = [item for item in batch if item.id not in items]
            items.update((item.id, item) for item in new)
            if not (isinstance(data, dict) and data.get("hasMorePages") is True) or not new:
                return list(items.values())
        logger.warning("Evo Voice GET %s: stopped after %d pages", path, MAX_PAGES)
        return list(items.values())

    async def _get_json(self, path: str, params: dict[str, str] | None = None) -> Any:
        response = await self._send("GET", path, params=params)
        try:
            return response.json()
        except ValueError:
            raise MalformedResponse("Evo Voice sent an answer the bot could not read.") from None

    def _model(self, model: type[_Item], data: Any, path: str) -> _Item:
        try:
            return model.model_validate(data)
        except ValidationError:
            logger.warning("Evo Voice GET %s: unexpected body shape for %s", path, model.__name__)
            raise MalformedResponse("Evo Voice sent an answer the bot could not read.") from None

    def _items(self, model: type[_Item], data: Any, path: str) -> list[_Item]:
        # ServiceStack leaves out null properties, so a missing "items" is an empty page.
        raw = data.get("items") if isinstance(data, dict) else data
        if raw is None and isinstance(data, dict):
            raw = []
        if not isinstance(raw, list):
            logger.warning("Evo Voice GET %s: expected a list of items", path)
            raise MalformedResponse("Evo Voice sent an answer the bot could not read.")
        return [self._model(model, item, path) for item in raw]

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json: dict[str, str] | None = None,
    ) -> httpx.Response:
        """Send with the retry rules of the module docstring; return only a 2xx response."""
        places_call = method == "POST" and path == _OUTGOING_PATH
        after_send_retries = 1 if method == "GET" else 0
        connect_failures = 0
        while True:
            started = time.perf_counter()
            try:
                response = await self._http.request(method, path, params=params, json=json)
            except _CONNECT_FAILURES as exc:
                connect_failures += 1
                self._log_failure(method, path, exc, started)
                self._observe(method, path, started, None, "unreachable")
                if connect_failures >= self._connect_retries:
                    raise EvoVoiceUnreachable(
                        "Could not connect to Evo Voice; nothing was sent.",
                        attempts=connect_failures,
                    ) from exc
                await self._sleep(self._retry_backoff * 2 ** (connect_failures - 1))
                continue
            except (httpx.UnsupportedProtocol, httpx.ProxyError) as exc:
                self._log_failure(method, path, exc, started)
                self._observe(method, path, started, None, "unreachable")
                raise EvoVoiceUnreachable(
                    "Could not connect to Evo Voice; nothing was sent.", attempts=1
                ) from exc
            except AnswerTooLarge as exc:
                # The server answered: a GET is not worth repeating; a 2xx to the POST is a placed
                # call whose session is to be looked up, anything else may or may not be one.
                self._log_failure(method, path, exc, started)
                self._observe(method, path, started, exc.status, "answer_too_large")
                if places_call and 200 <= exc.status < 300:
                    return httpx.Response(exc.status, request=exc.request)
                if places_call:
                    raise OutcomeUnknown(
                        "Evo Voice did not confirm the call; it may or may not have been placed.",
                        cause="answer too large to read",
                    ) from exc
                raise MalformedResponse(
                    "Evo Voice sent an answer too large for the bot to read."
                ) from exc
            except httpx.HTTPError as exc:
                # Read/write timeouts, dropped connections: the request may have been acted on.
                self._log_failure(method, path, exc, started)
                kind = (
                    "timeout"
                    if isinstance(exc, httpx.TimeoutException)
                    else "connection_lost"
                    if isinstance(exc, httpx.TransportError)
                    else "unreadable_answer"
                )
                cause = _AFTER_SEND_CAUSES[kind]
                self._observe(method, path, started, None, kind)
                if after_send_retries > 0:
                    after_send_retries -= 1
                    await self._sleep(self._retry_backoff)
                    continue
                if places_call:
                    raise OutcomeUnknown(
                        "Evo Voice did not confirm the call; it may or may not have been placed.",
                        cause=cause,
                    ) from exc
                raise EvoVoiceTimeout(f"Evo Voice did not answer ({cause}).") from exc

            elapsed_ms = (time.perf_counter() - started) * 1000
            self._observe(method, path, started, response.status_code,
                          None if response.is_success else _status_kind(response.status_code))
            # Successes are DEBUG: routine reads (a followed call's poll, every few seconds) were
            # 9 lines in 10, and what a success means (a call placed, hung up) its caller logs.
            logger.log(
                logging.DEBUG if response.is_success else logging.INFO,
                "Evo Voice %s %s -> %d (%.0f ms)", method, path, response.status_code, elapsed_ms,
            )
            if response.is_success:
                return response
            if response.status_code in _GATEWAY_STATUSES and after_send_retries > 0:
                after_send_retries -= 1
                await self._sleep(self._retry_backoff)
                continue
            if places_call and response.status_code >= 500:
                raise OutcomeUnknown(
                    "Evo Voice failed while placing the call; it may or may not have been placed.",
                    cause=f"HTTP {response.status_code}",
                    status=response.status_code,
                )
            raise self._status_error(response)

    def _observe(
        self, method: str, path: str, started: float, status: int | None, error: str | None
    ) -> None:
        if self._observer is None:
            return
        observed = RequestObserved(
            method, _route(path), time.perf_counter() - started, status, error
        )
        try:
            self._observer(observed)
        except Exception:  # metrics must never break a call
            logger.exception("Evo Voice request observer failed")

    def _log_failure(self, method: str, path: str, exc: httpx.HTTPError, started: float) -> None:
        # The exception's text is left out on purpose: only its type is known to be harmless.
        elapsed_ms = (time.perf_counter() - started) * 1000
        logger.warning(
            "Evo Voice %s %s failed: %s (%.0f ms)", method, path, type(exc).__name__, elapsed_ms
        )

    def _status_error(self, response: httpx.Response) -> EvoVoiceStatusError:
        status = response.status_code
        error_class, default = _STATUS_ERRORS.get(
            status,
            (ServerError, "Evo Voice had an internal problem; try again later.")
            if status >= 500
            else (EvoVoiceStatusError, f"Evo Voice answered with HTTP status {status}."),
        )
        server_message, error_code, field_errors = _parse_response_status(response)
        if not server_message and field_errors:
            server_message = field_errors[0].message
        if status == 403 and _is_invalid_role(server_message, error_code):
            error_class = MissingRole
        message = self._safe(server_message) or default
        field_errors = [
            FieldError(e.field_name, self._safe(e.message), e.error_code) for e in field_errors
        ]
        if error_class is RateLimited:
            return RateLimited(
                status,
                message,
                error_code,
                field_errors,
                retry_after=capped_retry_after(response.headers.get("Retry-After")),
            )
        return error_class(status, message, error_code, field_errors)

    def _safe(self, text: str | None) -> str:
        """Server text trimmed for users, with the bot's password blanked should it ever echo."""
        text = (text or "").strip()
        if self._password:
            text = text.replace(self._password, "***")
        if len(text) > _MAX_MESSAGE_CHARS:
            text = text[: _MAX_MESSAGE_CHARS - 1] + "…"
        return text


# ------------------------------------------------------------------------------------- parsing


_REFUSED_LOGIN = "Evo Voice refused the login; check the username, the password and EVOVOICE_URL."


def _is_invalid_role(message: str | None, error_code: str | None) -> bool:
    """ServiceStack's RequiredRole answers 403 "Invalid Role"; any other 403 is something else."""
    return any("invalid role" in (text or "").casefold() for text in (message, error_code))


def _session_path(session_id: str) -> str:
    if not session_id:
        raise ValueError("session_id must not be empty")
    return f"/sessions/{quote(session_id, safe='')}"


def _field(data: dict[str, Any], name: str) -> Any:
    """ServiceStack speaks camelCase unless configured otherwise: accept PascalCase too."""
    return data.get(name, data.get(name[:1].upper() + name[1:]))


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _parse_response_status(
    response: httpx.Response,
) -> tuple[str | None, str | None, list[FieldError]]:
    try:
        data = response.json()
    except ValueError:
        return None, None, []
    status = _field(data, "responseStatus") if isinstance(data, dict) else None
    if not isinstance(status, dict):
        return None, None, []
    errors = _field(status, "errors")
    field_errors = [
        FieldError(
            field_name=_text(_field(e, "fieldName")),
            message=_text(_field(e, "message")) or "",
            error_code=_text(_field(e, "errorCode")),
        )
        for e in (errors if isinstance(errors, list) else [])
        if isinstance(e, dict)
    ]
    return _text(_field(status, "message")), _text(_field(status, "errorCode")), field_errors


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), else None."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def capped_retry_after(value: str | None) -> float | None:
    """``parse_retry_after``, but never more than ``MAX_RETRY_AFTER_SECONDS``."""
    seconds = parse_retry_after(value)
    return None if seconds is None else min(seconds, MAX_RETRY_AFTER_SECONDS)


def _parse_call_placed(response: httpx.Response) -> CallPlaced:
    """Read whatever a 2xx to POST /sessions/outgoing carried; the call is accepted regardless."""
    if response.status_code == 204 or not response.content.strip():
        return CallPlaced()
    try:
        data = response.json()
    except ValueError:
        logger.warning("Evo Voice POST %s: 2xx body is not JSON; call accepted", _OUTGOING_PATH)
        return CallPlaced()
    if not isinstance(data, dict):
        return CallPlaced()
    candidate = _field(data, "session")
    if not isinstance(candidate, dict):
        candidate = data
    try:
        session = Session.model_validate(candidate)
    except ValidationError:
        raw_id = _field(candidate, "sessionId") or _field(data, "sessionId")
        session_id = str(raw_id) if isinstance(raw_id, (str, int)) and raw_id != "" else None
        return CallPlaced(session_id=session_id)
    return CallPlaced(session_id=session.id, session=session)
