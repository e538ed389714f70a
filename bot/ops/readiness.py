"""Readiness: can the bot do its job right now? Slack, Evo Voice and the database, each probed.

`GET /healthz` says the process is up; `GET /readyz` says its dependencies answer. An orchestrator
probes every few seconds, so each answer is kept for a few seconds (failures too): probes never
hammer Slack or Evo Voice, and concurrent probes share one check in flight. Each check has its own
deadline, so a hung dependency makes the probe fail rather than hang.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.cache import TTLCache
from bot.certificates import untrusted
from bot.config import KNOWN_ROLES
from bot.evovoice.client import EvoVoiceClient, EvoVoiceError, RateLimited
from bot.slack.lanes import without_rate_limit_waits
from bot.storage.database import Database

logger = logging.getLogger(__name__)

READINESS_CACHE_SECONDS = 5.0
READINESS_TIMEOUT_SECONDS = 3.0

Probe = Callable[[], Awaitable[None]]


class Readiness:
    """Runs named probes; a probe passes by returning and fails by raising (the text says why)."""

    def __init__(
        self,
        probes: Mapping[str, Probe],
        *,
        ttl: float = READINESS_CACHE_SECONDS,
        timeout: float = READINESS_TIMEOUT_SECONDS,
        uncached: frozenset[str] = frozenset(),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._probes = dict(probes)
        # Public: a test of a hanging dependency shortens it, having checked what it is.
        self.timeout = timeout
        self._uncached = uncached
        # Answers (failures too) kept for `ttl`; an uncached probe still shares a check in flight.
        self._kept: TTLCache[str, str | None] = TTLCache(ttl, clock=clock)
        self._shared: TTLCache[str, str | None] = TTLCache(0.0, clock=clock)

    async def check(self) -> dict[str, str | None]:
        """Each probe's problem, or None when it passed."""
        names = list(self._probes)
        problems = await asyncio.gather(*(self._check_one(name) for name in names))
        return dict(zip(names, problems, strict=True))

    async def _check_one(self, name: str) -> str | None:
        cache = self._shared if name in self._uncached else self._kept
        return await cache.get(name, lambda: self._run(name))

    async def _run(self, name: str) -> str | None:
        try:
            await asyncio.wait_for(self._probes[name](), self.timeout)
        except TimeoutError:
            problem = f"no answer within {self.timeout:g} s"
        except ProbeFailed as exc:
            problem = str(exc)
        except Exception as exc:  # only the type: the text of an unknown error may hold anything
            problem = f"failed ({type(exc).__name__})"
        else:
            return None
        logger.warning("readiness: %s is not ready: %s", name, problem)
        return problem


class ProbeFailed(Exception):
    """A probe's failure, in words that are safe to show on an unauthenticated endpoint."""


def slack_probe(client: AsyncWebClient) -> Probe:
    """Slack asking the bot to slow down (auth.test answered 429) passes, unwaited: it answered,
    the token included. Its limits are the app's, met by every replica's probe at once, and a
    Retry-After waited out would outlast the probe's deadline: either would take every replica
    out of its load balancer while pages could still be placed."""
    client = without_rate_limit_waits(client)

    async def probe() -> None:
        try:
            await client.auth_test()
        except SlackApiError as exc:
            if exc.response.status_code == 429 or exc.response.get("error") == "ratelimited":
                return
            raise ProbeFailed(
                f"auth.test failed: {exc.response.get('error', 'unknown error')}"
            ) from None
        except aiohttp.ClientError as exc:
            raise ProbeFailed(untrusted("Slack", exc) or f"cannot reach Slack "
                              f"({type(exc).__name__})") from None

    return probe


def evovoice_probe(evo: EvoVoiceClient) -> Probe:
    """Evo Voice asking the bot to slow down (429, or the pause one asked for, which holds every
    request) passes: it answered, and calls wait their turn. Failing it would take the replica out
    of its load balancer, every replica at once since they share Evo Voice, and then no /call
    would be taken at all."""

    async def probe() -> None:
        if evo.budget.paused:
            return
        try:
            status = await evo.auth_status()
        except RateLimited:
            return
        except EvoVoiceError as exc:
            raise ProbeFailed(untrusted("Evo Voice", exc) or f"GET /auth/status failed: "
                              f"{exc.message}") from None
        if not status.is_authenticated:
            raise ProbeFailed("the bot's login is not authenticated")
        # Start-up refuses such a login (bot.services.choose_account): every call it placed
        # would be refused "Invalid Role", as surely as with a wrong password.
        if not set(status.roles).intersection(KNOWN_ROLES):
            raise ProbeFailed("the bot's login lacks the Manager or SystemAdministrator role, "
                              "which placing calls requires")

    return probe


def database_probe(db: Database) -> Probe:
    async def probe() -> None:
        try:
            await db.fetchone("SELECT 1")
        except Exception as exc:
            raise ProbeFailed(f"SELECT 1 failed ({type(exc).__name__})") from None

    return probe


def socket_mode_probe(problem: Callable[[], Awaitable[str | None]]) -> Probe:
    """Socket Mode's connection (`problem`: the watchdog's `readiness_problem`): auth.test
    answering says nothing of the websocket, the only way Slack's requests reach the bot."""

    async def probe() -> None:
        if (found := await problem()) is not None:
            raise ProbeFailed(found)

    return probe


def readiness_for(
    slack: AsyncWebClient, evo: EvoVoiceClient, db: Database,
    socket_problem: Callable[[], Awaitable[str | None]] | None = None,
) -> Readiness:
    """`socket_problem`: Socket Mode's, checked as "socket_mode" (HTTP mode has none)."""
    probes = {
        "slack": slack_probe(slack),
        "evovoice": evovoice_probe(evo),
        "database": database_probe(db),
    }
    if socket_problem is not None:
        probes["socket_mode"] = socket_mode_probe(socket_problem)
    # The database and the websocket are local and cheap: checked on every probe.
    return Readiness(probes, uncached=frozenset({"database", "socket_mode"}))
