"""Running the bot: build everything, serve Slack over Socket Mode or HTTP, stop gracefully.

    Socket Mode (SLACK_APP_TOKEN set): events arrive over a websocket the bot opens; `/healthz`,
      `/readyz` and `/metrics` are still served on PORT so an orchestrator can probe the process.
    HTTP mode: Slack POSTs signed requests to `/slack/events` on PORT; the probes beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
import uuid
from collections.abc import Awaitable, Callable

import aiohttp
import httpx
from aiohttp import web
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.app import SLACK_TIMEOUT_SECONDS, Sleep, create_app, create_slack_client, slack_session
from bot.calls.retention import NumberRetention
from bot.config import ConfigError, DependencyUnavailable, Policy, Settings
from bot.evovoice.client import EvoVoiceClient, RequestBudget
from bot.evovoice.simulator import SimulatedEvoVoice
from bot.masking import mask_numbers_in
from bot.ops.event_loop import running_loop_name
from bot.ops.metrics import Metrics
from bot.ops.readiness import Readiness, readiness_for
from bot.services import Services, build_services
from bot.slack.http import (
    SLACK_EVENTS_PATH,
    create_web_runner,
    health_routes,
    metrics_routes,
    readiness_routes,
    slack_routes,
    while_starting,
)
from bot.slack.socket_mode import (
    WATCHDOG_INTERVAL_SECONDS, ObservedSocketModeHandler, SocketWatchdog)
from bot.slack.start_up import check_slack_token
from bot.storage.database import Database, SchemaRefused
from bot.storage.leases import Leases
from bot.storage.opening import open_database

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# How long a stopping bot waits for calls already being placed to finish their bookkeeping.
SHUTDOWN_GRACE_SECONDS = 20.0
# Connections waiting to be accepted. With the usual 128, a burst of Slack requests arriving at once
# overflows the queue: the kernel drops connection attempts, and the sender retries only after a
# second (benchmark, 1,000 at once: a fifth of them, acked after more than 1 s).
HTTP_BACKLOG = 1024
RECONNECT_MAX_SECONDS = 30.0  # start-up's longest pause before asking Slack, Evo Voice again
# How long it then waits for Socket Mode acks still being sent.
ACK_GRACE_SECONDS = 3.0


class Runtime:
    def __init__(
        self,
        settings: Settings,
        policy: Policy,
        *,
        watchdog_interval: float = WATCHDOG_INTERVAL_SECONDS,
        slack_sleep: Sleep = asyncio.sleep,  # waits out Slack's retry pauses (a test's clock)
        slack_timeout: float = SLACK_TIMEOUT_SECONDS,  # each Web API call's (a test shortens it)
        http_host: str | None = None,  # PORT's interface: every one, but the demo's loopback
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.watchdog_interval = watchdog_interval
        self.slack_sleep = slack_sleep
        self.slack_timeout = slack_timeout
        self.http_host = http_host
        self.watchdog: SocketWatchdog | None = None
        self.ready = False
        self.stopping = False  # from stop() on: the probes say "stopping", not "starting"
        self.services: Services | None = None
        self.app: AsyncApp | None = None
        self.port: int | None = None
        self.addresses: list[tuple[object, ...]] = []  # where PORT listens: (host, port, ...)
        # This bot's own registry: several bots in one process (tests) keep separate counts.
        self.metrics = Metrics()
        self._runner: web.AppRunner | None = None
        self._socket: ObservedSocketModeHandler | None = None
        # Public: a test drives its request budget's clock (a 429 at start-up pauses it for 2 s).
        self.evo: EvoVoiceClient | None = None
        self._http: aiohttp.ClientSession | None = None
        self._db: Database | None = None
        self._leases: Leases | None = None  # this replica's heartbeat from the database's opening
        self._retention: NumberRetention | None = None
        self.readiness: Readiness | None = None  # /readyz's checks, once serving
        self.simulator: SimulatedEvoVoice | None = None
        # Set while Slack or Evo Voice is awaited at start-up: what is missing, for /readyz.
        self.waiting_for: str | None = None
        self._reconnecting: asyncio.Task[None] | None = None
        secret = settings.slack_signing_secret  # HTTP mode's (Settings guarantees it there)
        self._slack_handler: Handler = while_starting(secret.get_secret_value() if secret else "")
        # Set when the bot gave up starting after all (see `failure`).
        self.failed = asyncio.Event()
        self.failure: ConfigError | None = None

    async def start(self) -> None:
        """Start serving; ready once Slack and Evo Voice have answered.

        When either can't be reached (or fails) at start-up, the bot starts all the same, not
        ready: `/healthz` says it is alive, `/readyz` says what it waits for, and it tries again
        with a growing pause until both answer, then finishes starting (followed calls and
        escalation chains resume then). An orchestrator restarting it would only try the same.
        """
        settings = self.settings
        # One connection pool for every Slack Web API call (slack_sdk opens one per call otherwise).
        self._http = slack_session(self.slack_timeout)
        slack = create_slack_client(settings, self._http, sleep=self.slack_sleep)
        url, username = settings.evovoice_url, settings.evovoice_username
        password = settings.evovoice_password.get_secret_value()
        if settings.evovoice_mode == "simulate":
            self.simulator = SimulatedEvoVoice(self.policy, settings.evovoice_account_id)
            await self.simulator.start()
            url, username, password = (self.simulator.url, self.simulator.username,
                                       self.simulator.password)
            logger.warning("EVOVOICE_MODE=simulate: calls go to a simulated Evo Voice account; "
                           "no phone will ring")
        self.evo = EvoVoiceClient(
            url,
            username,
            password,
            timeout=httpx.Timeout(settings.evovoice_timeout, connect=5.0),
            retry_backoff=settings.evovoice_retry_seconds,
            observer=self.metrics.evovoice_request,
            budget=RequestBudget(settings.evovoice_requests_per_minute),
        )
        self._db = Database(settings.database_url)
        try:
            await open_database(self._db)
            # Alive from now on, waiting for Slack and Evo Voice included: it uses the database
            # (migrate-db refuses a running bot by this; `callbot check` lists it).
            self._leases = Leases(self._db, lease_seconds=settings.lease_seconds)
            self._leases.keep([])
            self._retention = NumberRetention.of(self._db)
            socket = self._socket_problem if settings.socket_mode else None
            self.readiness = readiness_for(slack, self.evo, self._db, socket)
            await self._serve_http(self._routes(self.readiness))
            try:
                await self._connect(slack)
            except DependencyUnavailable as exc:
                self._wait_for_dependencies(slack, exc)
        except BaseException:
            await self.stop()
            raise

    def _routes(self, readiness: Readiness) -> list[web.RouteDef]:
        # Served from the start, before the Slack app exists: /slack/events answers 503 until then
        # (bot/slack/http.py `while_starting`).
        routes = health_routes(self._serving, is_stopping=lambda: self.stopping)
        routes += readiness_routes(
            self._serving, readiness,
            waiting_for=lambda: self.waiting_for, is_stopping=lambda: self.stopping,
        )
        routes += metrics_routes(self.metrics)
        if not self.settings.socket_mode:
            routes.append(web.post(SLACK_EVENTS_PATH, self._slack_events))
        return routes

    def _serving(self) -> bool:
        """Started, or up and waiting for Slack or Evo Voice (alive: a restart would not help);
        never once stopping, even while it was still waiting."""
        return not self.stopping and (self.ready or self.waiting_for is not None)

    async def _socket_problem(self) -> str | None:  # no watchdog: not started, said first
        return await self.watchdog.readiness_problem() if self.watchdog is not None else None

    async def _slack_events(self, request: web.Request) -> web.StreamResponse:
        return await self._slack_handler(request)

    async def _connect(self, slack: AsyncWebClient) -> None:
        """Log in to Evo Voice and Slack, start serving Slack, resume the work left running."""
        settings = self.settings
        assert self.evo is not None and self._db is not None and self._retention is not None
        await self._retention.erase_due_meanwhile()  # while Slack and Evo Voice are awaited too
        services = await build_services(
            settings, self.policy, slack, self.evo, self._db, metrics=self.metrics,
            retention=self._retention, leases=self._leases,
        )
        identity = await check_slack_token(slack, settings.slack_api_url)
        self.services = services
        self.app = create_app(settings, services, slack, identity)
        if not settings.socket_mode:
            assert settings.slack_signing_secret is not None  # Settings guarantees it
            [events] = slack_routes(
                self.app, settings.slack_signing_secret.get_secret_value(), self.metrics,
                acks=services.tasks.acks,
            )
            self._slack_handler = events.handler
        if settings.socket_mode:
            assert settings.slack_app_token is not None
            self._socket = ObservedSocketModeHandler(
                self.app, settings.slack_app_token.get_secret_value(), self.metrics,
                acks=services.tasks.acks,
            )
            await self._socket.connect_first()
            self.watchdog = SocketWatchdog(self._socket.client, interval=self.watchdog_interval)
            self.watchdog.start()
        # Say this replica is alive before taking work, so `callbot check` counts it.
        await services.leases.renew()
        # Calls followed when the bot last stopped are followed again.
        await services.follower.resume()
        # So are the escalation chains that were running: each goes on from its step.
        await services.escalations.resume()
        # From now on: keep this replica's leases, take over those of replicas that die (and, at
        # once, the Slack posts a stopped one left, and the requests it took and never dialled),
        # erase numbers kept past their use (README), read the role groups before they go stale.
        services.leases.keep([services.follower.take_over, services.escalations.take_over,
                              services.outbox.take_over, services.untold.take_over,
                              services.follower.erase_numbers,
                              services.confirmations.forget_expired,
                              services.responders.keep_groups_fresh])
        self.waiting_for = None
        self.ready = True
        mode = "Socket Mode" if settings.socket_mode else "HTTP mode"
        logger.info("callbot ready (%s, port %s, event loop %s)", mode, self.port,
                    running_loop_name())

    def _wait_for_dependencies(self, slack: AsyncWebClient, exc: DependencyUnavailable) -> None:
        self.waiting_for = "; ".join(exc.problems)
        logger.warning("callbot is up but not ready: %s (trying again)", self.waiting_for)
        self._reconnecting = asyncio.create_task(
            self._keep_connecting(slack), name="callbot: waiting for Slack and Evo Voice"
        )

    async def _keep_connecting(self, slack: AsyncWebClient) -> None:
        pause = self.settings.startup_retry_seconds
        while True:
            await asyncio.sleep(pause)
            try:
                await self._connect(slack)
                return
            except DependencyUnavailable as exc:
                self.waiting_for = "; ".join(exc.problems)
                pause = min(pause * 2, RECONNECT_MAX_SECONDS)
                logger.warning("callbot still not ready: %s (trying again in %g s)",
                               self.waiting_for, pause)
            except Exception as exc:
                # Reachable now, and refusing the set-up (a wrong password...): stop as at start-up.
                self.failure = exc if isinstance(exc, ConfigError) else unexpected_start_up(exc)
                self.failed.set()
                return

    async def _serve_http(self, routes: list[web.RouteDef]) -> None:
        self._runner = create_web_runner(routes)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.http_host, self.settings.port, backlog=HTTP_BACKLOG)
        try:
            await site.start()
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError([
                    f"PORT: {self.settings.port} is already in use by another program (another "
                    "callbot?); stop it or set PORT to a free port"
                ]) from None
            raise ConfigError([
                f"PORT: cannot listen on {self.settings.port}: {exc.strerror or exc}"
            ]) from None
        # With PORT=0 each interface (IPv4, IPv6) gets its own free port; report the IPv4 one,
        # in the line that tells a supervisor (or a test) where /healthz is.
        self.addresses = addresses = list(self._runner.addresses)
        ipv4 = [a for a in addresses if len(a) == 2] or addresses
        self.port = int(ipv4[0][1]) if ipv4 else self.settings.port
        logger.info("listening on port %s", self.port)

    async def stop(self, grace: float = SHUTDOWN_GRACE_SECONDS) -> None:
        """Stop taking work, let in-flight calls finish their bookkeeping, close connections.

        Slack is still answered while calls finish: new requests hear "restarting, nothing was
        dialled" (the listeners check `tasks.closed`) rather than meeting a closed door, and
        /healthz says 503 so a load balancer stops sending them.
        """
        self.ready = False
        self.stopping = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnecting
            self._reconnecting = None
        if self.watchdog is not None:
            await self.watchdog.stop()
            self.watchdog = None
        if self.services is not None:
            # Other replicas alive: this connection closes first (its acks out), so Slack sends
            # them what comes next instead of this one answering "restarting" while it drains.
            if self._socket is not None and await self.services.leases.others_alive():
                await self._close_socket()
            await self.services.tasks.drain(grace)
        await self._close_socket()
        if self._runner is not None:
            # Stops listening and lets requests being answered (acks) finish first.
            await self._runner.cleanup()
            self._runner = None
        if self.services is not None:
            # No more taking over; the leases are kept until chains and calls let go (`leaving`).
            self.services.leases.leaving()
            # Chains pause between steps (never mid-dial), released: whoever is next goes on.
            await self.services.escalations.stop(grace)
            # After the drain: calls placed during it have started to be followed. Released too.
            await self.services.follower.stop()
            # Posts not delivered yet stay in the database, for the next start or another replica.
            await self.services.outbox.stop()
            await self.services.leases.stop()  # gone from the replicas: its posts are anyone's
            # Audit records waiting for the database stay in the spool, for the next start.
            await self.services.audit.stop()
        elif self._leases is not None:  # never connected: only its heartbeat to stop
            await self._leases.stop()
        if self.evo is not None:
            await self.evo.aclose()
            self.evo = None
        if self.simulator is not None:
            await self.simulator.stop()
            self.simulator = None
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self._db is not None:
            await self._db.close()
            self._db = None
        logger.info("callbot stopped")

    async def _close_socket(self) -> None:
        if self._socket is not None:
            await self._socket.wait_acks(ACK_GRACE_SECONDS)
            await self._socket.close_async()  # type: ignore[no-untyped-call]
            self._socket = None


async def run_until_signalled(runtime: Runtime) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await runtime.start()
    except (ConfigError, SchemaRefused):
        raise  # each said in plain words by the entry point: not an unexpected failure
    except Exception as exc:
        raise unexpected_start_up(exc) from None
    signalled = asyncio.ensure_future(stop.wait())
    gave_up = asyncio.ensure_future(runtime.failed.wait())
    await asyncio.wait({signalled, gave_up}, return_when=asyncio.FIRST_COMPLETED)
    signalled.cancel()
    gave_up.cancel()
    if runtime.failure is None:
        logger.info("signal received: finishing in-flight work")
    await runtime.stop()
    if runtime.failure is not None:
        raise runtime.failure


def unexpected_start_up(exc: Exception) -> ConfigError:
    """One line for the terminal; the traceback is for whoever turns DEBUG on."""
    reference = uuid.uuid4().hex[:8]
    logger.debug("start-up failed (reference %s)", reference, exc_info=exc)
    return ConfigError([
        f"start-up failed: {type(exc).__name__}: {mask_numbers_in(str(exc))} (reference "
        f"{reference}; LOG_LEVEL=DEBUG logs the details)"
    ])
