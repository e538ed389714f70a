"""The HTTP side: Slack's signed requests at `POST /slack/events`, `GET /healthz` (the process is
up), `GET /readyz` (Slack, Evo Voice and the database answer) and `GET /metrics` (Prometheus).

Every request to /slack/events is checked here before Bolt sees it: size, timestamp, signature
(over the body as sent), UTF-8. A forged or malformed request of any kind gets 401 (400 when too
large or undecodable after a valid signature), never a 500, and its body is never logged: it
carries phone numbers and a live `response_url`. A signed form body is then read as the fields
Slack sent (`slack_request`: Bolt misreads some slash commands), a NUL in its text written as
U+FFFD, and one with a part of a type Slack never sends, which Bolt would fail on, is told 400 too
(shapes.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.async_app import AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.request.async_internals import build_async_context
from slack_bolt.request.async_request import AsyncBoltRequest

from bot.errors import reference_id
from bot.ops.logs import request_context
from bot.ops.metrics import Metrics, request_kind
from bot.ops.readiness import Readiness
from bot.slack.shapes import MalformedRequest, replace_nul, unreadable_part
from bot.tasks import AcksFirst

logger = logging.getLogger(__name__)

SLACK_EVENTS_PATH = "/slack/events"
HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"
METRICS_PATH = "/metrics"
# Slack's largest payloads (view submissions of a full modal) are far below this.
MAX_BODY_BYTES = 256 * 1024
# Slack's own rule: a timestamp more than five minutes away is a replay.
MAX_CLOCK_SKEW_SECONDS = 300
# A client that sent its headers and then sends its body slowly, or never (a slow-read attack,
# or a client gone without closing): answered 408 and let go, rather than held for good. Slack
# sends a whole body (a few KB) at once.
BODY_READ_SECONDS = 10.0
# After an answer given before the whole body was read (408, or 400 for a body too large), how long
# the rest is read and dropped before the connection is closed (aiohttp's lingering_time, which
# otherwise is 10 s): closed at once, a client still sending could lose the answer to a reset.
UNREAD_BODY_LINGER_SECONDS = 2.0
# How long a connection may stay open with no whole request on it (idle between requests, or its
# headers still arriving), aiohttp's keepalive_timeout (which otherwise is an hour). Longer than
# the idle timeout of the usual load balancers (AWS's 60 s), so that they close first.
IDLE_CONNECTION_SECONDS = 75.0


def _unauthorized() -> web.Response:
    return web.json_response({"error": "invalid request"}, status=401)


def signature_valid(
    secret: str, body: bytes, timestamp: str | None, signature: str | None, now: float
) -> bool:
    if not timestamp or not signature:
        return False
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 12:
        return False
    if abs(now - int(timestamp)) > MAX_CLOCK_SKEW_SECONDS:
        return False
    base = b"v0:" + timestamp.encode() + b":" + body
    expected = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace"))


def is_ssl_check(body: bytes) -> bool:
    """A form body with `ssl_check=1` (and little else): Slack's certificate check."""
    if len(body) > 1000 or b"ssl_check=" not in body:
        return False
    return urllib.parse.parse_qs(body.decode("latin-1")).get("ssl_check") == ["1"]


def health_routes(
    is_ready: Callable[[], bool], *, is_stopping: Callable[[], bool] = lambda: False
) -> list[web.RouteDef]:
    async def healthz(request: web.Request) -> web.Response:
        if is_ready():
            return web.json_response({"status": "ok"})
        # 503 either way (a load balancer stops sending); the word tells an operator which.
        return web.json_response({"status": "stopping" if is_stopping() else "starting"},
                                 status=503)

    return [web.get(HEALTH_PATH, healthz)]


def readiness_routes(
    is_started: Callable[[], bool],
    readiness: Readiness,
    *,
    waiting_for: Callable[[], str | None] = lambda: None,
    is_stopping: Callable[[], bool] = lambda: False,
) -> list[web.RouteDef]:
    """`waiting_for`: what a bot started without Slack or Evo Voice still waits for, if anything."""

    async def readyz(request: web.Request) -> web.Response:
        if not is_started():
            phase = "stopping" if is_stopping() else "starting"
            return web.json_response({"status": "not ready", "failed": ["callbot"],
                                      "checks": {"callbot": phase}}, status=503)
        results = await readiness.check()
        waiting = waiting_for()
        if waiting is not None:
            results = {**results, "callbot": f"waiting to start: {waiting}"}
        checks = {name: problem or "ok" for name, problem in results.items()}
        failed = [name for name, problem in results.items() if problem is not None]
        if failed:
            return web.json_response(
                {"status": "not ready", "failed": failed, "checks": checks}, status=503
            )
        return web.json_response({"status": "ready", "checks": checks})

    return [web.get(READY_PATH, readyz)]


def metrics_routes(metrics: Metrics) -> list[web.RouteDef]:
    return [web.get(METRICS_PATH, metrics.serve)]


def slack_request(
    body: str, query: str, headers: dict[str, str | Sequence[str]]
) -> AsyncBoltRequest:
    """Bolt's request for a body Slack signed, its fields read as Slack sent them.

    Bolt takes any form body in which the word "payload" appears for an interactive payload (a
    `payload` field holding JSON): a slash command typed with it (`/call +1 814 404 3093
    payload-team`), sent from a channel named after it (#payload-incidents) or from a workspace
    whose domain holds it. It then finds no `payload` field and reads the request as empty, and
    answers it 404 "unhandled request": Slack tells the person the command failed. Such a form is
    read here as the fields it is."""
    bolt_request = AsyncBoltRequest(body=body, query=query, headers=headers)
    if "payload" in body and not bolt_request.body:
        fields = dict(urllib.parse.parse_qsl(body, keep_blank_values=True))
        if "payload" not in fields:
            bolt_request.body = fields
            bolt_request.context = build_async_context(AsyncBoltContext(), fields)
    return bolt_request


async def signed_text(request: web.Request, signing_secret: str) -> str | web.Response:
    """The body of a request to /slack/events, once it is within the size limit, signed by Slack
    and UTF-8; otherwise the answer it gets (400 or 401; Slack's certificate check: 200). Made
    while the bot is starting too, so that a forged request is told 401 then as well."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        return web.json_response({"error": "body too large"}, status=400)
    try:
        if request.content.is_eof():
            # All of it has arrived (Slack sends its few KB at once): read without waiting, and
            # without arming and cancelling a timer (8-9 µs of the route's 80-90 µs a /call).
            body = await request.read()
        else:
            async with asyncio.timeout(BODY_READ_SECONDS):
                body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return web.json_response({"error": "body too large"}, status=400)
    except TimeoutError:
        logger.warning("rejected a request whose body did not arrive within %.0f s",
                       BODY_READ_SECONDS)
        # Closed after the answer (what still comes of the body is dropped for at most
        # UNREAD_BODY_LINGER_SECONDS), never kept for another request.
        return web.json_response({"error": "request timeout"}, status=408,
                                 headers={"Connection": "close"})
    except (web.RequestPayloadError, ConnectionResetError):
        # A body that ends mid-chunk, or its client gone: no signature can be checked over it.
        logger.warning("rejected a request whose body could not be read")
        return _unauthorized()
    headers = request.headers
    if is_ssl_check(body):
        # Slack checking the certificate of a slash command's URL: Bolt answers it 200 with an
        # empty body before any verification (the request may be unsigned) and does nothing.
        return web.Response(status=200, text="")
    if not signature_valid(
        signing_secret,
        body,
        headers.get("X-Slack-Request-Timestamp"),
        headers.get("X-Slack-Signature"),
        time.time(),
    ):
        logger.warning("rejected an unsigned or badly signed request (%d bytes)", len(body))
        return _unauthorized()
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return web.json_response({"error": "body is not UTF-8"}, status=400)


# The ack of a slash command sent before the bot has started.
STARTING = ("callbot is starting (it waits for Slack and Evo Voice to answer), so nothing was "
            "dialled. Try again in a minute.")


def while_starting(signing_secret: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    """/slack/events before the Slack app exists: checked as any request is (a forged one is told
    401, as it would be a moment later). Slack never sends a command or an interaction again
    (docs/slack-platform.md): a slash command is told, in its ack, that nothing was dialled;
    anything else is told 503 (Slack retries an event; for an interaction it shows the person
    its own error, and a form stays open to be sent again)."""

    async def starting(request: web.Request) -> web.Response:
        checked = await signed_text(request, signing_secret)
        if isinstance(checked, web.Response):
            return checked
        fields = urllib.parse.parse_qs(checked)
        if "command" in fields and "payload" not in fields:
            return web.json_response({"response_type": "ephemeral", "text": STARTING})
        return web.json_response({"error": "callbot is starting"}, status=503)

    return starting


def slack_routes(
    app: AsyncApp, signing_secret: str, metrics: Metrics | None = None,
    acks: AcksFirst | None = None,
) -> list[web.RouteDef]:
    async def slack_events(request: web.Request) -> web.Response:
        # Everything logged about this request, and by the work it starts, carries its id.
        with request_context():
            return await handle(request, time.perf_counter())

    async def handle(request: web.Request, received: float) -> web.Response:
        checked = await signed_text(request, signing_secret)
        if isinstance(checked, web.Response):
            return checked
        # Counted while it is answered: the work it starts waits for its answer (bot/tasks.py).
        # Not while its body comes: a client sending headers and then nothing held every dial.
        if acks is not None:
            acks.entered()
        try:
            return await dispatch(checked, request, received)
        finally:
            if acks is not None:
                acks.left()

    async def dispatch(checked: str, request: web.Request, received: float) -> web.Response:
        try:
            bolt_request = slack_request(checked, request.query_string, {**request.headers})
            if replace_nul(bolt_request.body):  # Bolt's context, read from the body, too
                logger.warning("a NUL in the request's text was replaced (shapes.replace_nul)")
                bolt_request.context = build_async_context(AsyncBoltContext(), bolt_request.body)
            if (part := unreadable_part(bolt_request.body)) is not None:
                # Bolt would fail on it (bot/slack/shapes.py): refused as unreadable.
                raise MalformedRequest(part)
            bolt_response = await app.async_dispatch(bolt_request)
            if metrics is not None:
                metrics.slack_acked(request_kind(bolt_request.body), time.perf_counter() - received)
        except Exception as exc:
            # A signed body Bolt can't parse (bad form, bad JSON payload, a part of a type Slack
            # never sends): the sender's fault.
            ref = reference_id()
            logger.warning("signed request could not be handled, reference %s: %s", ref,
                           exc if isinstance(exc, MalformedRequest) else type(exc).__name__)
            return web.json_response({"error": "malformed request", "reference": ref}, status=400)
        return await to_aiohttp_response(bolt_response)

    return [web.post(SLACK_EVENTS_PATH, slack_events)]


# Whether the server decodes a `Content-Encoding` body (web.AppRunner's `auto_decompress`). No:
# the body is checked as sent (Slack signs the bytes on the wire and never compresses them), and
# aiohttp's decoding of a body it couldn't decode ended in a 500 and an error in the log.
DECOMPRESS_BODIES = False


def create_web_app(routes: list[web.RouteDef]) -> web.Application:
    web_app = web.Application(client_max_size=MAX_BODY_BYTES)
    web_app.add_routes(routes)
    return web_app


def create_web_runner(routes: list[web.RouteDef]) -> web.AppRunner:
    """The server of `routes`, with the limits above (the caller sets up and starts its site)."""
    return web.AppRunner(
        create_web_app(routes), handle_signals=False, shutdown_timeout=5.0,
        auto_decompress=DECOMPRESS_BODIES, keepalive_timeout=IDLE_CONNECTION_SECONDS,
        lingering_time=UNREAD_BODY_LINGER_SECONDS,
    )
