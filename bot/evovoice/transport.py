"""httpx requests sent over aiohttp: the Evo Voice client's transport.

httpx stays the client's API (base URL, auth, timeouts, the errors `evovoice` maps); only the wire
changes. httpx's own pool (httpcore) costs about 2 ms of CPU per request and its bookkeeping grows
with the connections open: when a thousand calls were placed at once, the pool, not the network,
decided when each POST left (benchmark: 26 s for the last POST). aiohttp's connector does the same
work for about a tenth of that, and the bot already runs on aiohttp.

Two limits a plain aiohttp request lacks: the read timeout bounds the whole answer from the moment
the connection is ready (aiohttp's own read timeout restarts at every byte, so a body trickled one
byte a second never trips it), and an answer larger than `MAX_ANSWER_BYTES` (decoded) is not read
into memory.

The errors keep the meaning the client's retry rules depend on, erring towards "maybe sent":

    could not connect or no connection free in time (nothing sent)   ConnectError, ConnectTimeout
    proxy refused, URL unusable (nothing sent)                       ProxyError, UnsupportedProtocol
    no (whole) answer in time after connecting                       ReadTimeout
    an answer larger than MAX_ANSWER_BYTES                           AnswerTooLarge
    connection dropped after sending                                 RemoteProtocolError
    anything else                                                    ReadError

aiohttp would quietly resend a GET or DELETE once when a kept-alive connection turns out dead;
that is switched off, so the client alone decides what is repeated. HTTP(S)_PROXY and NO_PROXY
are read once per host, as httpx reads them once per client (aiohttp's own `trust_env` would ask a
thread for them, and for ~/.netrc, on every request); aiohttp's reader ignores ALL_PROXY.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import Callable
from contextvars import ContextVar

import aiohttp
import httpx
from aiohttp.connector import Connection
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

# Calls placed at the same moment each hold a connection while Evo Voice sets them up (seconds);
# beyond this many, requests wait for a free connection (up to the pool timeout) rather than open
# more sockets than a process may have.
MAX_CONNECTIONS = 1000
# Shorter than servers usually keep idle connections, so a POST rarely meets one the server has
# closed (which would make its outcome unknown).
KEEPALIVE_SECONDS = 5.0
# Evo Voice's largest answers are pages of 100 flows or sessions (tens of kilobytes); a bigger one
# is a fault, and reading it whole could take the process's memory (a 40 MB answer: 1.4 GB).
MAX_ANSWER_BYTES = 8 * 1024 * 1024
# Set by httpx's client and recomputed by aiohttp from the body.
_DROPPED_REQUEST_HEADERS = frozenset({"content-length", "transfer-encoding"})
# The Content-Encodings aiohttp decodes (its parser's own list): httpx is handed them decoded.
_DECODED_ENCODINGS = frozenset({"gzip", "deflate", "br", "zstd"})


def _as_httpx_error(exc: BaseException, request: httpx.Request) -> httpx.TransportError:
    message = f"{type(exc).__name__}: {exc}"
    error_class: type[httpx.TransportError]
    if isinstance(exc, (aiohttp.ClientProxyConnectionError, aiohttp.ClientHttpProxyError)):
        error_class = httpx.ProxyError
    elif isinstance(exc, aiohttp.ConnectionTimeoutError):
        error_class = httpx.ConnectTimeout
    elif isinstance(exc, aiohttp.ClientConnectorError):
        error_class = httpx.ConnectError
    elif isinstance(exc, (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError)):
        error_class = httpx.UnsupportedProtocol
    elif isinstance(exc, asyncio.TimeoutError):  # aiohttp.SocketTimeoutError among them
        error_class = httpx.ReadTimeout
    elif isinstance(exc, aiohttp.ServerDisconnectedError):
        error_class = httpx.RemoteProtocolError
    else:
        error_class = httpx.ReadError
    return error_class(message, request=request)


class AnswerTooLarge(httpx.DecodingError):
    """The answer was larger than the transport reads; the request did reach the server, which
    answered with ``status``."""

    def __init__(self, message: str, *, request: httpx.Request, status: int) -> None:
        super().__init__(message, request=request)
        self.status = status


class _AnswerDeadline:
    """Starts the whole-answer deadline once a connection is ready (new or reused)."""

    def __init__(self, deadline: asyncio.Timeout, seconds: float | None) -> None:
        self._deadline = deadline
        self._seconds = seconds

    def start(self) -> None:
        if self._seconds is not None and self._deadline.when() is None:
            self._deadline.reschedule(asyncio.get_running_loop().time() + self._seconds)


# Set by a caller that wants to hear the moment its request has left (its headers written; a body
# as small as Evo Voice's follows at once): bot/calls/dials_first.py.
REQUEST_SENT: ContextVar[Callable[[], None] | None] = ContextVar(
    "evovoice_request_sent", default=None
)
# The deadline of the request this task is sending (AiohttpTransport.handle_async_request).
_DEADLINE: ContextVar[_AnswerDeadline | None] = ContextVar("evovoice_deadline", default=None)


class _SentRequest(aiohttp.ClientRequest):
    """aiohttp sends a request once a connection is ready for it, new or reused, in the task that
    asked for it: the moment its answer's deadline starts, and after which it has left.

    Rather than aiohttp's tracing, which would do the same: with a trace, aiohttp builds and
    awaits a dozen signals for every request (its DNS, pool, connection, each chunk sent and
    received). A thousand POSTs at once cost 0.87 ms of CPU each this way, 0.91 traced."""

    async def send(self, conn: Connection) -> aiohttp.ClientResponse:
        deadline = _DEADLINE.get()
        if deadline is not None:
            deadline.start()
        response = await super().send(conn)
        hear = REQUEST_SENT.get()
        if hear is not None:
            hear()
        return response


async def _read_limited(
    response: aiohttp.ClientResponse, limit: int, request: httpx.Request
) -> bytes:
    too_large = AnswerTooLarge(
        f"answer larger than {limit} bytes", request=request, status=response.status
    )
    if response.content_length is not None and response.content_length > limit:
        raise too_large
    content = bytearray()
    async for chunk in response.content.iter_chunked(64 * 1024):
        content += chunk
        if len(content) > limit:
            raise too_large
    return bytes(content)


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """The CA bundle httpx would have used, loaded once a process: loading it costs about 25 ms of
    CPU, which each new client (`callbot check`, a test's bot) would otherwise pay again."""
    return httpx.create_ssl_context()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """One aiohttp session (created on first use, in the running loop) for every request."""

    def __init__(
        self,
        *,
        max_connections: int = MAX_CONNECTIONS,
        keepalive: float = KEEPALIVE_SECONDS,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
    ) -> None:
        self._max_connections = max_connections
        self._keepalive = keepalive
        self._max_answer_bytes = max_answer_bytes
        self._session: aiohttp.ClientSession | None = None
        self._proxies: dict[tuple[str, str], tuple[URL | None, aiohttp.BasicAuth | None]] = {}

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections,
                keepalive_timeout=self._keepalive,
                ssl=_ssl_context(),
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                # httpx's client keeps (or refuses) cookies; a second jar here would undo that.
                cookie_jar=aiohttp.DummyCookieJar(),
                # aiohttp decodes Content-Encoding a bounded piece at a time, so MAX_ANSWER_BYTES
                # counts what the answer decodes to: left to httpx, the whole body was decoded at
                # once after the limit was checked (40 KB of gzip became 40 MB in memory). The
                # client accepts gzip and deflate, as httpx does.
                auto_decompress=True,
                request_class=_SentRequest,
            )
            self._session._retry_connection = False
        return self._session

    def _proxy_for(self, url: httpx.URL) -> tuple[URL | None, aiohttp.BasicAuth | None]:
        key = (url.scheme, url.host)
        if key not in self._proxies:
            try:
                self._proxies[key] = get_env_proxy_for_url(URL(str(url)))
            except LookupError:  # no proxy for this URL
                self._proxies[key] = (None, None)
        return self._proxies[key]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._open()
        timeouts = request.extensions.get("timeout", {})
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=timeouts.get("pool"),  # waiting for a free connection, and connecting
            sock_connect=timeouts.get("connect"),
            # No sock_read: the whole-answer deadline (below) bounds every read from the moment
            # the request leaves, so aiohttp's timer would never fire first, and setting it
            # again at each chunk cost a tenth of a POST's CPU when a thousand are in flight.
        )
        headers = [
            (name, value)
            for name, value in request.headers.multi_items()
            if name.lower() not in _DROPPED_REQUEST_HEADERS
        ]
        body = await request.aread()
        proxy, proxy_auth = self._proxy_for(request.url)
        try:
            # No deadline while waiting for a connection (the pool and connect timeouts bound
            # that, and nothing has been sent); from the moment one is ready, the read timeout.
            async with asyncio.timeout(None) as deadline:
                sending = _DEADLINE.set(_AnswerDeadline(deadline, timeouts.get("read")))
                try:
                    async with session.request(
                        request.method,
                        str(request.url),
                        headers=headers,
                        data=body or None,
                        allow_redirects=False,
                        timeout=timeout,
                        proxy=proxy,
                        proxy_auth=proxy_auth,
                    ) as response:
                        content = await _read_limited(response, self._max_answer_bytes, request)
                finally:
                    _DEADLINE.reset(sending)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise _as_httpx_error(exc, request) from exc
        encoding = response.headers.get("Content-Encoding", "")
        answer_headers = list(response.raw_headers)
        if encoding.isascii() and encoding.lower() in _DECODED_ENCODINGS:
            # Decoded already: httpx must not decode it again.
            answer_headers = [(k, v) for k, v in answer_headers if k.lower() != b"content-encoding"]
        return httpx.Response(
            status_code=response.status,
            headers=answer_headers,
            content=content,
            request=request,
            extensions={"http_version": b"HTTP/1.1",
                        "reason_phrase": (response.reason or "").encode("latin-1", "replace")},
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
