"""How the stand-in's answers misbehave, as scripted by a test (see the package's docstring)."""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

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
class Answered:
    """Do the route's side effect, answer 200 with ``body`` as JSON.

    POST /sessions/outgoing declares no response type (docs/evovoice-api.md, "Create a call"): its
    answer may carry an ``id`` that names something other than the session."""

    body: Any


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
class HtmlPage:
    """Answer ``status`` with an HTML page, whatever the client asked for; no side effect.

    A front end before the API (a load balancer, a CDN, IIS) may answer for it while the vendor
    works on it, often 200 with a page for people: nothing public says Evo Voice's does, nor that
    it doesn't. A web site answers so too where EVOVOICE_URL names no API."""

    status: int = 200
    body: str = "<!doctype html><html><body><h1>Down for maintenance</h1></body></html>"


@dataclass(frozen=True)
class Redirected:
    """Answer ``status`` with ``Location: location``; no side effect.

    Nothing public says Evo Voice redirects; whatever stands in front of it may (http to https, a
    host that moved), and a 307 or 308 asks for the same method and body again elsewhere."""

    location: str
    status: int = 307


@dataclass(frozen=True)
class Acted:
    """Do the route's side effect at once, then answer as ``then`` (adding no second one).

    "A POST /sessions/outgoing that timed out after the request was sent, or answered 5xx, may
    still have placed the call" (docs/evovoice-api.md, "Retrying safely"): ``Acted(ErrorStatus())``
    is a 500 for a call that was placed, ``Acted(Gated(gate))`` a call placed long before its
    answer comes. ``Acted(ErrorStatus(409))``: ServiceStack's 409 is an optimistic-concurrency
    conflict on a save, which a service may meet after it created the session (not ruled out);
    ``ErrorStatus(409)`` is the other reading, nothing created."""

    then: Behaviour


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
    """Do the route's side effect, answer ``status`` with ``size`` bytes of valid JSON, sent
    chunked (no Content-Length), so only counting what arrives can tell it is too large."""

    size: int = 40 * 1024 * 1024
    status: int = 200  # a 5xx: a gateway's error page, say, after the call was placed
    # "gzip": sent with Content-Encoding: gzip, as a server may answer a client accepting it; the
    # n bytes of JSON then cross the wire in a few tens of kilobytes.
    encoding: str | None = None


Behaviour = (
    Respond
    | Answered
    | Acted
    | EmptyObject
    | NoContent
    | MalformedJson
    | DropConnection
    | ErrorStatus
    | HtmlPage
    | Redirected
    | TooManyRequests
    | Delayed
    | Gated
    | Trickled
    | Oversized
)


def error_body(
    error_code: str | None, message: str, errors: Iterable[Mapping[str, str]] = ()
) -> dict[str, Any]:
    status: dict[str, Any] = {"message": message}
    if error_code:
        status["errorCode"] = error_code
    errors = [dict(e) for e in errors]
    if errors:
        status["errors"] = errors
    return {"responseStatus": status}


def error(
    status: int, error_code: str | None, message: str, errors: Iterable[Mapping[str, str]] = ()
) -> web.Response:
    return web.json_response(error_body(error_code, message, errors), status=status)


async def json_object(request: web.Request) -> dict[str, Any] | web.Response:
    """The request's JSON object, or ServiceStack's 400 for a body that is not one."""
    if request.content_type != "application/json":
        # The API's own page sends its JSON body with "Content-Type: application/json" (seed,
        # evovoice-new-outgoing-session.txt); a body of another type is not read as JSON, so the
        # request's fields are all empty.
        return {}
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return error(400, "SerializationException", "The request body is not a JSON object")
    return body


def in_the_format_asked(request: web.Request, response: web.Response) -> web.Response:
    """``response``, or ServiceStack's HTML page for a client that asked for no JSON: "JSON with
    Accept: application/json (or ?format=json)" (docs/evovoice-api.md, The server)."""
    accept = request.headers.get("Accept", "").lower()
    wants_json = "application/json" in accept or request.query.get("format", "") == "json"
    if wants_json or response.content_type != "application/json":
        return response
    return web.Response(status=response.status, content_type="text/html",
                        text="<!doctype html><html><body>Snapshot</body></html>")


def field_error(field_name: str, error_code: str, message: str) -> web.Response:
    return error(
        400,
        error_code,
        message,
        [{"errorCode": error_code, "fieldName": field_name, "message": message}],
    )


async def perform(
    behaviour: Behaviour,
    request: web.Request,
    produce: Callable[[], web.Response],
    stopping: asyncio.Event,
) -> web.StreamResponse:
    """Answer ``request`` as ``behaviour`` says; ``produce`` does the side effect and answer."""
    if isinstance(behaviour, Acted):
        done = produce()
        return await perform(behaviour.then, request, lambda: done, stopping)
    while isinstance(behaviour, (Delayed, Gated)):
        if isinstance(behaviour, Gated):
            stopped = asyncio.ensure_future(stopping.wait())
            opened = asyncio.ensure_future(behaviour.gate.wait())
            await asyncio.wait({stopped, opened}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            opened.cancel()
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), behaviour.seconds)
        behaviour = behaviour.then
    if isinstance(behaviour, ErrorStatus):
        return error(
            behaviour.status, behaviour.error_code, behaviour.message, behaviour.field_errors
        )
    if isinstance(behaviour, HtmlPage):
        return web.Response(status=behaviour.status, text=behaviour.body, content_type="text/html")
    if isinstance(behaviour, Redirected):
        return web.Response(status=behaviour.status, headers={"Location": behaviour.location})
    if isinstance(behaviour, TooManyRequests):
        response = error(429, "TooManyRequests", behaviour.message)
        if behaviour.retry_after is not None:
            response.headers["Retry-After"] = behaviour.retry_after
        return response
    normal = produce()
    if isinstance(behaviour, Answered):
        return web.json_response(behaviour.body)
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
        return await _trickle(request, normal, behaviour.seconds_per_byte, stopping)
    if isinstance(behaviour, Oversized):
        return await _oversized(request, behaviour.size, behaviour.status, behaviour.encoding)
    return normal


async def _trickle(
    request: web.Request, normal: web.Response, seconds_per_byte: float, stopping: asyncio.Event
) -> web.StreamResponse:
    body = normal.body if isinstance(normal.body, bytes) else b""
    response = web.StreamResponse(status=normal.status, headers=normal.headers)
    response.content_length = len(body)
    await response.prepare(request)
    for i in range(len(body)):
        await response.write(body[i:i + 1])
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), seconds_per_byte)
        if stopping.is_set() or request.transport is None:
            break
    return response


async def _oversized(
    request: web.Request, size: int, status: int, encoding: str | None
) -> web.StreamResponse:
    response = web.StreamResponse(status=status)
    response.content_type = "application/json"
    response.enable_chunked_encoding()
    gzip = zlib.compressobj(wbits=31) if encoding == "gzip" else None
    if gzip is not None:
        response.headers["Content-Encoding"] = "gzip"
    await response.prepare(request)

    async def write(data: bytes, *, last: bool = False) -> None:
        if gzip is not None:
            data = gzip.compress(data) + (gzip.flush() if last else b"")
        if data:
            await response.write(data)

    head, tail = b'{"items": [], "padding": "', b'"}'
    chunk = b"x" * 65536
    await write(head)
    left = max(0, size - len(head) - len(tail))
    try:
        while left > 0:
            await write(chunk[:left])
            left -= min(left, len(chunk))
        await write(tail, last=True)
    except (ConnectionResetError, RuntimeError):  # the client stopped reading: fine
        pass
    return response
