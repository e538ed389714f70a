"""Slack or Evo Voice unreachable at start-up: the bot starts not ready, says why on /readyz, and
finishes starting (followed calls resumed) when they come back, instead of exiting to be restarted
into the same wall."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from bot.standins.evovoice import ErrorStatus, EvoVoiceStandIn, HtmlPage
from bot.standins.slack import ApiCall, ApiReply, SlackStandIn, sign, slash_command_body
from tests.conftest import (
    QUICK_VOICE_RETRY,
    SIGNING_SECRET,
    BotFactory,
    BotUnderTest,
    bot_environment,
)
from tests.budget_clock import LeapingClock
from tests.follow_helpers import FAST, FULL, end_session, status_message, wait_for_edit
from tests.processes import BotProcess

# The bot's first pause before trying again (then twice as long each time), shortened from 1 s, and
# the Evo Voice client's pauses between its own three tries of each check: how long they wait is no
# test's business, and a test here waits for every pause.
QUICK_RETRY = {"STARTUP_RETRY_SECONDS": "0.1", **QUICK_VOICE_RETRY}


async def probe(base: str, path: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(base + path) as response:
        return response.status, await response.json()


def base_of(bot: BotUnderTest) -> str:
    return f"http://127.0.0.1:{bot.runtime.port}"


async def until_ready(bot: BotUnderTest, timeout: float = 20.0) -> None:
    async def ready() -> None:
        while not bot.runtime.ready:
            await asyncio.sleep(0.05)

    await asyncio.wait_for(ready(), timeout)


async def test_evo_voice_down_at_start_up_then_back_resumes_followed_calls(
    bot_factory: BotFactory, evo: EvoVoiceStandIn
) -> None:
    first = await bot_factory("http", **FAST, **QUICK_RETRY)
    await first.command(f"{FULL} escalation")
    status = await status_message(first)
    [session_id] = evo.sessions
    await first.runtime.stop(grace=5)

    port = URL(evo.url).port
    assert port is not None
    await evo.stop(keep_port=True)
    second = await bot_factory("http", **FAST, **QUICK_RETRY)  # starts, not ready
    assert not second.runtime.ready
    code, health = await probe(base_of(second), "/healthz")
    assert code == 200, health  # alive: an orchestrator must not restart it into the same wall
    code, ready = await probe(base_of(second), "/readyz")
    assert code == 503 and "callbot" in ready["failed"]
    assert "EVOVOICE_URL: cannot connect" in ready["checks"]["callbot"]
    body = slash_command_body(text=f"{FULL} escalation", response_url=second.slack.response_url())
    async with aiohttp.ClientSession() as http, http.post(
        second.events_url, data=body, headers=sign(body, SIGNING_SECRET)
    ) as response:
        # Slack never sends a command again (docs/slack-platform.md): a 503 would show the person
        # Slack's own error; they are told in the ack instead, and nothing is dialled.
        assert response.status == 200
        answer = await response.json()
    assert "callbot is starting" in answer["text"] and "nothing was dialled" in answer["text"]
    assert answer.get("response_type") != "in_channel"
    # Not signed by Slack (or stamped long ago): 401, as once the bot has started.
    for headers in ({}, sign(body, "not-the-secret"), sign(body, SIGNING_SECRET, timestamp=1)):
        async with aiohttp.ClientSession() as http, http.post(
            second.events_url, data=body, headers=headers
        ) as response:
            assert response.status == 401, headers

    evo.set_session_state(session_id, callState="Connected", answeredByName="Bo")
    await evo.start(port=port)
    await until_ready(second)
    await wait_for_edit(second, status, "Connected (answered by Bo)")
    end_session(second, session_id, after_seconds=42, outcome="Completed")
    await wait_for_edit(second, status, "Ended")
    assert len(evo.outgoing_posts) == 1  # the call was followed again, never placed again


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_slack_failing_at_start_up_is_waited_for(
    bot_factory: BotFactory, slack: SlackStandIn, status: int
) -> None:
    def unavailable(call: ApiCall) -> ApiReply:
        return ApiReply({"ok": False, "error": "service_unavailable"}, status=status)

    slack.on("auth.test", unavailable)
    # A 429 is tried twice more by the Slack client, after about a second each: on a clock that
    # leaps, not in real time (how long it pauses is no business of this test's).
    clock = LeapingClock()
    began = clock.now
    bot = await bot_factory("http", slack_sleep=clock.sleep, **QUICK_RETRY)
    assert not bot.runtime.ready
    code, ready = await probe(base_of(bot), "/readyz")
    assert code == 503 and f"HTTP {status}" in ready["checks"]["callbot"]
    if status == 429:
        assert clock.now > began, "a 429 is tried again after a pause"
    slack.off("auth.test")
    await until_ready(bot)
    code, ready = await probe(base_of(bot), "/readyz")
    assert "callbot" not in ready.get("failed", []), ready  # no longer waiting to start
    ack, _ = await bot.command(f"{FULL} escalation")
    assert ack.status == 200
    await bot.evo.wait_for_posts(1)


async def test_the_log_says_when_the_next_try_comes(
    bot_factory: BotFactory, slack: SlackStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    slack.on("auth.test", lambda call: ApiReply({"ok": False, "error": "fatal_error"}, status=503))
    bot = await bot_factory("http", **QUICK_RETRY)
    assert not bot.runtime.ready
    lines: list[str] = []
    for _ in range(200):
        lines = [r.getMessage() for r in caplog.records if "still not ready" in r.getMessage()]
        if len(lines) >= 2:
            break
        await asyncio.sleep(0.05)
    # The first try again comes after 0.1 s, the pause doubling after each: a line names the
    # pause that follows it, not the one before.
    assert "(trying again in 0.2 s)" in lines[0], lines
    assert "(trying again in 0.4 s)" in lines[1], lines


async def test_python_m_bot_waits_for_evo_voice_and_stops_on_sigterm(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> None:
    await evo.stop()
    # The bot's own pause (1 s) kept: SIGTERM finds it waiting between tries.
    env = bot_environment("http", slack, evo, policy_path) | QUICK_VOICE_RETRY
    bot = await BotProcess.start(env, policy_path.parent)
    try:
        ready = await until_served(bot.base, "/readyz")
        assert "cannot connect" in ready["checks"]["callbot"]
        assert bot.returncode is None  # still running, not crash-looping
    finally:
        code = await bot.stop(signal.SIGTERM)
    assert code == 0, bot.output()


async def test_a_login_refused_once_evo_voice_is_back_stops_python_m_bot_with_one_line(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> None:
    port = URL(evo.url).port
    await evo.stop(keep_port=True)
    env = bot_environment("http", slack, evo, policy_path) | QUICK_RETRY
    bot = await BotProcess.start(env, policy_path.parent)
    try:
        await until_served(bot.base, "/readyz")
        evo.password = "changed-meanwhile"
        await evo.start(port=port or 0)
        code = await asyncio.wait_for(bot.process.wait(), 30)
    finally:
        await bot.stop(signal.SIGKILL)
    text = bot.output()
    assert code == 2, text
    assert "✗ EVOVOICE_USERNAME / EVOVOICE_PASSWORD" in text and "refused the login" in text
    assert "Traceback" not in text


async def until_served(base: str, path: str) -> dict[str, Any]:
    for _ in range(600):
        try:
            code, body = await probe(base, path)
        except aiohttp.ClientConnectionError:
            await asyncio.sleep(0.05)
            continue
        if code == 503 and "callbot" in body.get("checks", {}) and "waiting" in str(body):
            return body
        await asyncio.sleep(0.05)
    pytest.fail(f"{path} never said what the bot waits for")


@pytest.mark.parametrize(("status", "message"), [
    (429, "Too many requests"), (500, "Internal server error"),  # Evo Voice's trouble, not ours
])
async def test_evo_voice_rate_limiting_or_failing_the_login_at_start_up_is_waited_for(
    bot_factory: BotFactory, evo: EvoVoiceStandIn, status: int, message: str
) -> None:
    evo.queue("GET", "/auth/status", ErrorStatus(status, message))
    bot = await bot_factory("http", **QUICK_RETRY)
    # A 429 without Retry-After pauses every Evo Voice request for 2 s (bot/evovoice/budget.py):
    # waited out on a clock that leaps, not in real time. Taken over before the bot tries again,
    # nothing having run since its start-up gave up.
    assert bot.runtime.evo is not None
    budget, clock = bot.runtime.evo.budget, LeapingClock()
    budget.clock, budget.sleep = clock, clock.sleep
    assert not bot.runtime.ready
    code, ready = await probe(base_of(bot), "/readyz")
    assert code == 503 and "EVOVOICE_URL" in ready["checks"]["callbot"], ready
    await until_ready(bot)


@pytest.mark.parametrize("route", ["/auth/status", "/flows"])
async def test_a_maintenance_page_at_start_up_is_waited_for_and_named(
    bot_factory: BotFactory, evo: EvoVoiceStandIn, route: str
) -> None:
    # A front end's page for people, answered 200 while the vendor works (HtmlPage): the flows
    # catalog reads it as Evo Voice unable to answer now; start-up exited on it as a set-up
    # error, so a maintenance window restarted the bot into it until its supervisor gave up.
    evo.default_behaviours[("GET", route)] = HtmlPage()
    bot = await bot_factory("http", **QUICK_RETRY)
    assert not bot.runtime.ready
    code, health = await probe(base_of(bot), "/healthz")
    assert code == 200, health
    code, ready = await probe(base_of(bot), "/readyz")
    problem = ready["checks"]["callbot"]
    assert code == 503 and problem.startswith("waiting to start: EVOVOICE_URL: "), problem
    # Named, should it be no maintenance but a URL that is no API.
    assert "(an HTML page, not JSON)" in problem and "https://evovoice.io" in problem, problem
    del evo.default_behaviours[("GET", route)]  # the maintenance is over
    await until_ready(bot)
    ack, _ = await bot.command(f"{FULL} escalation")
    assert ack.status == 200
    await bot.evo.wait_for_posts(1)
