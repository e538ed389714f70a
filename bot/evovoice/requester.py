"""Sending one request to Evo Voice: the retry rules, the errors, and what an observer hears.

Retrying is decided per request, because a call must never ring twice: POST /sessions/outgoing is
repeated only when the connection could not be opened (nothing reached the server). GETs are
idempotent and get one more try after a 502/503/504 or a lost answer. DELETE and PATCH are retried
only on connect failures.

An optional ``observer`` hears about every attempt (route, seconds, status or kind of failure), for
metrics; it never sees bodies, queries or credentials.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any

import httpx

from bot.certificates import refused_certificate
from bot.evovoice.budget import Priority, RequestBudget
from bot.evovoice.clock import ServerClock
from bot.evovoice.errors import (
    UNREADABLE_JSON,
    ConflictPlacing,
    EvoVoiceTimeout,
    EvoVoiceUnreachable,
    MalformedResponse,
    OutcomeUnknown,
    RateLimited,
    error_kind,
    status_error,
    unreadable_answer,
)
from bot.evovoice.login import (
    CREDENTIALS_PATH,
    Login,
    SignInFailed,
    basic_authorization,
    encode_json,
    post_credentials,
)
from bot.evovoice.models import OUTGOING_PATH
from bot.evovoice.transport import AiohttpTransport, AnswerTooLarge

# The client's requests keep the logger name operators filter on.
logger = logging.getLogger("bot.evovoice.client")


def _version() -> str:
    try:
        return importlib.metadata.version("callbot")
    except importlib.metadata.PackageNotFoundError:
        return "dev"


USER_AGENT = f"callbot/{_version()}"
# Reads may take up to 15 s: the server is slow to answer while it sets a call up.
DEFAULT_TIMEOUT = httpx.Timeout(15.0, connect=5.0)
DEFAULT_CONNECT_RETRIES = 3
DEFAULT_RETRY_BACKOFF = 0.5
# Failures that happen before any byte of the request left: always safe to repeat.
_CONNECT_FAILURES = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_GATEWAY_STATUSES = frozenset({502, 503, 504})


@dataclass(frozen=True)
class RequestObserved:
    """One HTTP attempt, for an observer: ``error`` is None when a 2xx came back."""

    method: str
    route: str  # the path with ids replaced by ``{id}``, so routes are few
    seconds: float
    status: int | None
    error: str | None  # unreachable, timeout, bad_login, forbidden, server_error, … (errors.py)


RequestObserver = Callable[[RequestObserved], None]

_FIXED_ROUTES = frozenset(
    {"/auth/status", CREDENTIALS_PATH, "/flows", "/endpoints", "/sessions", OUTGOING_PATH}
)

_AFTER_SEND_CAUSES = {"timeout": "no answer in time",
                      "connection_lost": "connection lost before the answer",
                      "unreadable_answer": "unreadable answer"}


def route_of(path: str) -> str:
    return path if path in _FIXED_ROUTES else path.rsplit("/", 1)[0] + "/{id}"


class Requester:
    """One pooled connection to Evo Voice, logged in with HTTP Basic or a session (login.py); the
    client's base (bot/evovoice/client.py adds the API's operations)."""

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
        budget: RequestBudget | None = None,
    ) -> None:
        if connect_retries < 1:
            raise ValueError("connect_retries counts attempts and must be at least 1")
        self._username, self._password = username, password
        # HTTP Basic on every request, until the server turns it away (bot/evovoice/login.py).
        self.login = Login(self._use_session)
        self._connect_retries = connect_retries
        self._retry_backoff = retry_backoff
        self._sleep = sleep
        self._observer = observer
        # Every request of this client waits its turn here, and a 429 pauses them all.
        self.budget = budget if budget is not None else RequestBudget()
        self.clock = ServerClock()  # Evo Voice's, from its answers' Date headers
        # Basic auth on every request is the whole session: refuse the ss-id cookies the server
        # hands out, so no state outlives a request.
        no_cookies = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
        # httpx's own pool costs too much CPU per request when many calls are placed at once.
        self._transport = transport if transport is not None else AiohttpTransport()
        self._http = httpx.AsyncClient(
            base_url=base_url,
            # HTTP Basic as a default header rather than `auth=`: the same header on every
            # request, without httpx's per-request auth flow (a tenth of a POST's CPU when a
            # thousand calls are placed at once).
            headers={"Accept": "application/json", "User-Agent": USER_AGENT,
                     "Authorization": basic_authorization(username, password)},
            timeout=timeout,
            cookies=no_cookies,
            transport=self._transport,
        )

        # The fixed routes' absolute URLs, merged with the base URL once rather than per request.
        self._urls: dict[str, httpx.URL] = {}
        # What build_request would merge into every request, merged once (see _build).
        self._timeouts = self._http.timeout.as_dict()
        self._json_headers = self._headers_for_json()

    def _headers_for_json(self) -> httpx.Headers:
        headers = httpx.Headers(self._http.headers)
        headers["Content-Type"] = "application/json"
        return headers

    def _use_session(self, cookies: str) -> None:
        """From now on, the session of a sign-in instead of HTTP Basic."""
        self._http.headers.pop("Authorization", None)
        self._http.headers["Cookie"] = cookies
        self._json_headers = self._headers_for_json()

    async def sign_in_again(self, seen_generation: int) -> bool:
        """After a request sent at the login's ``seen_generation`` was refused for want of a
        login: True when a new session is in place, and the request is worth sending again.
        A sign-in Evo Voice failed to answer is raised as that failure, never as a bad login."""
        try:
            return await self.login.renew(seen_generation, self._post_credentials)
        except SignInFailed as failed:
            error = failed.as_error(self._password)
            if isinstance(error, RateLimited):
                self.budget.back_off(error.retry_after)
            raise error from None

    async def _post_credentials(self) -> httpx.Response:
        started = time.perf_counter()
        # The client's own headers, without the login it is about to replace.
        headers = {name: value for name, value in self._http.headers.items()
                   if name.lower() not in ("authorization", "cookie")}
        try:
            response = await post_credentials(self._transport, self._url(CREDENTIALS_PATH), headers,
                                              self._username, self._password, self._timeouts)
        except httpx.HTTPError:
            self._observe("POST", CREDENTIALS_PATH, started, None, "unreachable")
            raise
        self._observe("POST", CREDENTIALS_PATH, started, response.status_code,
                      error_kind(response))
        return response

    def _url(self, path: str) -> httpx.URL | str:
        if path not in _FIXED_ROUTES:
            return path
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = self._http.build_request("GET", path).url
        return url

    async def _request(
        self, method: str, path: str, params: dict[str, str] | None, json: dict[str, str] | None
    ) -> httpx.Response:
        """The client builds the request (base URL, headers, timeouts); the transport sends it.

        httpx's `send()` around the transport (auth flow, redirects, cookies, event hooks) does
        nothing for this client: Basic auth is a default header, redirects are not followed,
        cookies are refused. Skipping it saves about 0.1 ms of CPU a request, an eighth of what a
        call costs before its POST when a thousand are placed at once (benchmark, N = 1,000)."""
        if self._http.is_closed:
            raise RuntimeError("Cannot send a request, as the client has been closed.")
        request = self._build(method, path, params, json)
        response = await self._transport.handle_async_request(request)
        response.request = request
        await response.aread()
        return response

    def _build(
        self, method: str, path: str, params: dict[str, str] | None, json: dict[str, str] | None
    ) -> httpx.Request:
        """The request `AsyncClient.build_request` would build, for a fixed route without a query
        (the POST that places a call among them) built from what it merges once: its headers,
        timeouts and URL. build_request merges them afresh each time and encodes the JSON body
        through httpx's headers: 74 us of CPU a request, 23 this way, paid by every call before
        its POST. Its cookies need no merging: the client's jar refuses every cookie."""
        url = self._url(path)
        if params is not None or not isinstance(url, httpx.URL):
            return self._http.build_request(method, url, params=params, json=json)
        headers, body = self._http.headers, None
        if json is not None:
            headers, body = self._json_headers, encode_json(json)
        return httpx.Request(
            method, url, headers=headers, content=body, extensions={"timeout": self._timeouts}
        )

    async def aclose(self) -> None:
        self.budget.close()
        await self._http.aclose()

    async def _get_json(self, path: str, params: dict[str, str] | None = None, *,
                        priority: Priority = Priority.FIRST, admitted: bool = False) -> Any:
        response = await self._send("GET", path, params=params, priority=priority,
                                    admitted=admitted)
        try:
            return response.json()
        except UNREADABLE_JSON:
            raise unreadable_answer(response) from None

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json: dict[str, str] | None = None,
        priority: Priority = Priority.FIRST,
        admitted: bool = False,
        before_send: Callable[[], Awaitable[None]] | None = None,
    ) -> httpx.Response:
        """Send with the retry rules of the module docstring; return only a 2xx response.

        Each attempt waits its turn in the budget, but the first when the caller was ``admitted``
        already (it chose what to ask for once its turn came: bot/evovoice/lookups.py). Each is
        then preceded by ``before_send()``: what it raises comes out, nothing sent.
        """
        places_call = method == "POST" and path == OUTGOING_PATH
        after_send_retries = 1 if method == "GET" else 0
        connect_failures = 0
        signed_in = False
        while True:
            if not admitted:
                await self.budget.admit(priority)
            admitted = False
            if before_send is not None:
                try:  # its turn may come long after it was asked for (a 429's pause)
                    await before_send()
                except BaseException:
                    self.budget.unused()
                    raise
            started = time.perf_counter()
            generation = self.login.generation
            try:
                response = await self._request(method, path, params, json)
            except _CONNECT_FAILURES as exc:
                connect_failures += 1
                self._log_failure(method, path, exc, started)
                self._observe(method, path, started, None, "unreachable")
                # A certificate refused now is refused a second later: said at once.
                if connect_failures >= self._connect_retries or refused_certificate(exc):
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
                kind = ("timeout" if isinstance(exc, httpx.TimeoutException)
                        else "connection_lost" if isinstance(exc, httpx.TransportError)
                        else "unreadable_answer")
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
            self.clock.note(response.headers.get("Date"), response.headers.get("Age"))
            self._observe(method, path, started, response.status_code, error_kind(response))
            # Successes are DEBUG: routine reads (a followed call's poll, every few seconds) were
            # 9 lines in 10, and what a success means (a call placed, hung up) its caller logs.
            logger.log(
                logging.DEBUG if response.is_success else logging.INFO,
                "Evo Voice %s %s -> %d (%.0f ms)", method, path, response.status_code, elapsed_ms,
            )
            if response.status_code != 429:
                self.budget.answered()
            if response.is_success:
                return response
            # Refused for want of a login, before the service ran: sign in, then send it again.
            if response.status_code == 401 and not signed_in:
                signed_in = True
                if await self.sign_in_again(generation):
                    continue
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
            error = status_error(response, self._password)
            if places_call and response.status_code == 409:
                # A save's conflict, which the service may meet after creating the session.
                raise ConflictPlacing(
                    "Evo Voice answered the call with a conflict (HTTP 409); it may or may not "
                    "have been placed.",
                    conflict=error,
                ) from error
            if isinstance(error, RateLimited):
                self.budget.back_off(error.retry_after)
            raise error

    def _observe(
        self, method: str, path: str, started: float, status: int | None, error: str | None
    ) -> None:
        if self._observer is None:
            return
        observed = RequestObserved(
            method, route_of(path), time.perf_counter() - started, status, error
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
