"""`GET /readyz`: 200 only when Slack, Evo Voice and the database answer; 503 naming what failed."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from slack_sdk.web.async_client import AsyncWebClient

from bot.ops.readiness import ProbeFailed, Readiness, slack_probe
from bot.slack.http import create_web_app, readiness_routes
from bot.standins.evovoice import ErrorStatus, TooManyRequests
from tests.conftest import BotFactory, BotUnderTest


async def readyz(bot: BotUnderTest) -> tuple[int, dict[str, Any]]:
    async with bot.http.get(f"http://127.0.0.1:{bot.runtime.port}/readyz") as response:
        return response.status, await response.json()


async def test_ready_when_everything_answers(bot: BotUnderTest) -> None:
    status, body = await readyz(bot)
    assert status == 200
    # Socket Mode's connection is checked too: Slack reaches the bot over nothing else.
    socket = {"socket_mode": "ok"} if bot.mode == "socket" else {}
    assert body == {"status": "ready",
                    "checks": {"slack": "ok", "evovoice": "ok", "database": "ok", **socket}}


async def test_slack_refusing_the_token_is_named(
    bot_factory: BotFactory, caplog: pytest.LogCaptureFixture
) -> None:
    bot = await bot_factory("socket")
    bot.slack.fail("auth.test", "invalid_auth")
    status, body = await readyz(bot)
    assert status == 503
    assert body["failed"] == ["slack"]
    assert body["checks"]["slack"] == "auth.test failed: invalid_auth"
    assert body["checks"]["evovoice"] == "ok"
    # The operator finds it in the logs too, at WARNING.
    [logged] = [r for r in caplog.records if r.getMessage().startswith("readiness: slack")]
    assert logged.levelname == "WARNING" and "invalid_auth" in logged.getMessage()


async def test_slack_asking_the_bot_to_slow_down_keeps_it_ready(bot_factory: BotFactory) -> None:
    """auth.test answered 429 is Slack answering, the token included. Its limit is the app's, so
    every replica's probe meets it at once: not ready would take them all out of the load
    balancer while a page could still be placed. Nor is the Retry-After waited out (30 s here):
    the probe would give up after its 3 s."""
    bot = await bot_factory("http")
    readiness = bot.runtime.readiness
    assert readiness is not None
    readiness.timeout = 0.5  # what the probe may take here, rather than its 3 s
    bot.slack.fail("auth.test", "ratelimited", retry_after=30)
    status, body = await readyz(bot)
    assert (status, body["checks"]["slack"]) == (200, "ok"), body


async def test_evovoice_failing_is_named(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http")
    bot.evo.queue("GET", "/auth/status", ErrorStatus(500, "maintenance"))
    status, body = await readyz(bot)
    assert status == 503
    assert body["failed"] == ["evovoice"]
    assert "maintenance" in body["checks"]["evovoice"]


async def test_evovoice_asking_the_bot_to_slow_down_keeps_it_ready(bot_factory: BotFactory) -> None:
    """A 429 is Evo Voice answering, the bot's login included: calls wait their turn, and a
    replica taken out of its load balancer would take no /call at all (every replica at once,
    since they share Evo Voice)."""
    bot = await bot_factory("http")
    bot.evo.queue("GET", "/auth/status", TooManyRequests(retry_after="30"))
    status, body = await readyz(bot)
    assert (status, body["checks"]["evovoice"]) == (200, "ok"), body


async def test_ready_while_calls_wait_out_evovoice_asking_for_a_pause(
    bot_factory: BotFactory,
) -> None:
    """A call's POST answered 429 with Retry-After: 30 holds every request to Evo Voice for 30 s,
    the probe's too: the probe doesn't wait for it (it would give up after 3 s, 503)."""
    bot = await bot_factory("http")
    readiness = bot.runtime.readiness
    assert readiness is not None
    readiness.timeout = 0.5  # what today's probe waits before giving up, not 3 s
    bot.evo.queue_outgoing(TooManyRequests(retry_after="30"))
    await bot.command("+18144043093 page")
    await bot.evo.wait_for_posts(1)
    status, body = await readyz(bot)
    assert (status, body["checks"]["evovoice"]) == (200, "ok"), body


async def test_a_login_evovoice_no_longer_takes_is_named(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http")
    bot.evo.password = "rotated"  # changed in Evo Voice after the bot started
    # GET /auth/status answers 200 even so: "isAuthenticated": false.
    status, body = await readyz(bot)
    assert status == 503
    assert body["failed"] == ["evovoice"]
    assert body["checks"]["evovoice"] == (
        "GET /auth/status failed: Evo Voice refused the login; check the username, the password "
        "and EVOVOICE_URL.")


async def test_a_login_that_lost_its_role_is_named(bot_factory: BotFactory) -> None:
    # Start-up refuses a login without the role, and every call it places is refused 403
    # "Invalid Role": it can't do its job any more than with a wrong password.
    bot = await bot_factory("http")
    bot.evo.roles = ["User"]  # taken away in Evo Voice after the bot started
    status, body = await readyz(bot)
    assert status == 503, body
    assert body["failed"] == ["evovoice"]
    assert body["checks"]["evovoice"] == (
        "the bot's login lacks the Manager or SystemAdministrator role, which placing calls "
        "requires")


async def test_a_slack_that_hangs_fails_the_probe_after_3_s(bot_factory: BotFactory) -> None:
    # README's promise, which an orchestrator's probe timeout is set by: the running bot's.
    bot = await bot_factory("http")
    readiness = bot.runtime.readiness
    assert readiness is not None and readiness.timeout == 3.0
    # Slack hangs until the gate opens, however long the probe waits: 0.1 s of it here, not 3 s.
    readiness.timeout = 0.1
    gate = bot.slack.hold("auth.test")
    try:
        status, body = await readyz(bot)
    finally:
        gate.open()
    assert status == 503
    assert body["checks"]["slack"] == "no answer within 0.1 s"


async def test_a_slack_that_cannot_be_reached_is_named(refused_port: int) -> None:
    async with aiohttp.ClientSession() as http:
        # No retry handlers: slack_sdk's default tries a refused connection again after a
        # back-off, which is no business of the probe's wording.
        slack = AsyncWebClient(token="xoxb-1", session=http, retry_handlers=[],
                               base_url=f"http://127.0.0.1:{refused_port}/api/")
        readiness = Readiness({"slack": slack_probe(slack)})
        assert await readiness.check() == {"slack": "cannot reach Slack (ClientConnectorError)"}


async def test_database_gone_is_named(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http")
    assert bot.runtime.services is not None
    assert (await readyz(bot))[0] == 200
    await bot.runtime.services.db.close()
    # At once, not after the others' answers expire: the local database is asked every time.
    status, body = await readyz(bot)
    assert status == 503
    assert body["failed"] == ["database"]
    assert body["checks"]["database"] == "SELECT 1 failed (RuntimeError)"


async def test_probes_within_the_cache_time_ask_slack_and_evovoice_once(
    bot_factory: BotFactory,
) -> None:
    bot = await bot_factory("http")
    before_slack = len(bot.slack.calls_to("auth.test"))
    before_evo = len(bot.evo.requests_to("GET", "/auth/status"))
    # Concurrent probes share one check in flight; sequential ones within 5 s reuse its answer.
    results = await asyncio.gather(*(readyz(bot) for _ in range(5)))
    results += [await readyz(bot), await readyz(bot)]
    assert {status for status, _ in results} == {200}
    assert len(bot.slack.calls_to("auth.test")) - before_slack == 1
    assert len(bot.evo.requests_to("GET", "/auth/status")) - before_evo == 1


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_answers_are_cached_for_the_ttl_failures_included() -> None:
    clock = Clock()
    calls: list[str] = []
    healthy = {"value": False}

    async def flaky() -> None:
        calls.append("flaky")
        if not healthy["value"]:
            raise ProbeFailed("down")

    readiness = Readiness({"flaky": flaky}, ttl=5.0, clock=clock)
    assert await readiness.check() == {"flaky": "down"}
    healthy["value"] = True
    clock.now += 4.9
    assert await readiness.check() == {"flaky": "down"}, "a failure is cached too"
    clock.now += 0.2
    assert await readiness.check() == {"flaky": None}
    assert len(calls) == 2


async def test_uncached_probes_run_every_time() -> None:
    calls: list[str] = []

    async def database() -> None:
        calls.append("db")

    readiness = Readiness({"database": database}, uncached=frozenset({"database"}))
    await readiness.check()
    await readiness.check()
    assert len(calls) == 2


async def test_a_hung_dependency_fails_the_probe_instead_of_hanging_it() -> None:
    async def hangs() -> None:
        await asyncio.Event().wait()

    async def fine() -> None:
        return None

    readiness = Readiness({"voice": hangs, "db": fine}, timeout=0.05)
    assert await readiness.check() == {"voice": "no answer within 0.05 s", "db": None}


async def test_unexpected_errors_show_only_their_type() -> None:
    async def leaky() -> None:
        raise ValueError("password=hunter2")

    assert await Readiness({"x": leaky}).check() == {"x": "failed (ValueError)"}


async def test_not_ready_before_start_and_while_stopping() -> None:
    runner = web.AppRunner(create_web_app(readiness_routes(lambda: False, Readiness({}))))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    [(_, port)] = runner.addresses
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                assert response.status == 503
                assert (await response.json())["failed"] == ["callbot"]
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
async def test_probes_are_served_in_socket_mode_too(bot_factory: BotFactory, path: str) -> None:
    bot = await bot_factory("socket")
    async with bot.http.get(f"http://127.0.0.1:{bot.runtime.port}{path}") as response:
        assert response.status == 200
