"""Socket Mode faults: disconnects of every kind, and the watchdog for a silently dead
connection."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.config import load_policy, load_settings
from bot.runtime import Runtime
from bot.slack.socket_mode import SOCKET_DOWN_READY_SECONDS
from bot.standins.evovoice import EvoVoiceStandIn
from bot.standins.slack import SlackStandIn
from tests.conftest import APP_TOKEN, BotUnderTest, bot_environment, until

StartBot = Callable[..., Awaitable[BotUnderTest]]


@pytest.fixture
async def socket_bot(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> AsyncIterator[StartBot]:
    """Like bot_factory("socket"), with the watchdog's interval chosen by the test."""
    started: list[Runtime] = []
    http = aiohttp.ClientSession()

    async def start(watchdog_interval: float = 0.1) -> BotUnderTest:
        values = bot_environment("socket", slack, evo, policy_path)
        settings = load_settings(_env_file=None, **{k.lower(): v for k, v in values.items()})
        runtime = Runtime(settings, load_policy(settings.callbot_config),
                          watchdog_interval=watchdog_interval)
        await runtime.start()
        started.append(runtime)
        await slack.wait_connected()
        return BotUnderTest(runtime, "socket", slack, evo, http)

    yield start
    for runtime in started:
        await runtime.stop(grace=5)
    await http.close()


async def still_works(bot: BotUnderTest, number: str) -> None:
    """A /call sent now is acked and dialled (send_envelope waits for a live connection)."""
    ack, _ = await bot.command(f"{number} escalation")
    assert ack.status == 200
    await bot.settle()
    assert any(p.json["numberToDial"] == number for p in bot.evo.outgoing_posts)


async def test_a_clean_close_reconnects(socket_bot: StartBot) -> None:
    bot = await socket_bot(watchdog_interval=60)
    await bot.slack.disconnect_socket()
    await bot.slack.wait_socket_connections(2)
    await still_works(bot, "+18144043001")


async def test_slacks_disconnect_message_reconnects(socket_bot: StartBot) -> None:
    bot = await socket_bot(watchdog_interval=60)
    await bot.slack.send_disconnect_message("refresh_requested")
    await bot.slack.wait_socket_connections(2)
    await still_works(bot, "+18144043002")


async def test_an_abrupt_drop_reconnects(socket_bot: StartBot) -> None:
    bot = await socket_bot()
    await bot.slack.disconnect_socket(abrupt=True)
    await bot.slack.wait_socket_connections(2, timeout=15)
    await still_works(bot, "+18144043003")


async def test_the_watchdog_revives_a_silently_dead_connection(
    socket_bot: StartBot, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.slack.socket_mode")
    bot = await socket_bot(watchdog_interval=0.1)
    assert bot.runtime.watchdog is not None
    bot.slack.silence_socket()  # open, but nothing answers any more
    await bot.slack.wait_socket_connections(2, timeout=10)
    assert bot.runtime.watchdog.reconnects >= 1
    assert "no answer to pings" in caplog.text
    await still_works(bot, "+18144043004")


async def test_the_watchdog_outlives_a_reconnect_slack_refuses(socket_bot: StartBot) -> None:
    # The first new connection the watchdog asks for is refused (Slack's 5xx): it tries again at
    # its next check rather than stopping, which would leave every /call failing until a restart.
    bot = await socket_bot(watchdog_interval=0.1)
    bot.slack.fail("apps.connections.open", "internal_error", times=1)
    bot.slack.silence_socket()  # open, but nothing answers any more
    await bot.slack.wait_for_call("apps.connections.open", lambda c: not c.ok, timeout=10)
    await bot.slack.wait_socket_connections(2, timeout=10)
    await still_works(bot, "+18144043007")


async def test_the_watchdog_revives_a_client_that_stopped_receiving(
    socket_bot: StartBot, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.slack.socket_mode")
    bot = await socket_bot(watchdog_interval=0.1)
    assert bot.runtime.watchdog is not None
    client = bot.runtime.watchdog.client
    # python-slack-sdk#1701: the connection is up, is_connected() is True, nothing is received.
    client.message_receiver.cancel()
    assert await client.is_connected()
    await bot.slack.wait_socket_connections(2, timeout=10)
    assert "stopped receiving" in caplog.text
    await still_works(bot, "+18144043005")


async def test_a_healthy_connection_is_left_alone(socket_bot: StartBot) -> None:
    bot = await socket_bot(watchdog_interval=0.05)
    watchdog = bot.runtime.watchdog
    assert watchdog is not None
    for _ in range(10):
        assert await watchdog.check() is None
        await asyncio.sleep(0.01)
    await still_works(bot, "+18144043006")
    assert watchdog.reconnects == 0
    assert bot.slack.socket_connections == 1


async def test_http_mode_has_no_watchdog(
    bot_factory: Callable[..., Awaitable[BotUnderTest]],
) -> None:
    bot = await bot_factory("http")
    assert bot.runtime.watchdog is None


async def test_the_watchdog_leaves_a_reconnect_under_way_alone(socket_bot: StartBot) -> None:
    """Slack closed the socket and slack_sdk's own reconnect waits on apps.connections.open (a
    slow Slack). The watchdog, finding the connection closed meanwhile, must not open a second one
    beside it: the client would keep one and leave the other open, read by nobody, and Slack's
    envelopes sent there would be lost."""
    bot = await socket_bot(watchdog_interval=60)  # checked by hand below
    watchdog = bot.runtime.watchdog
    assert watchdog is not None
    gate = bot.slack.hold("apps.connections.open")
    await bot.slack.disconnect_socket()
    await gate.wait_until_held()  # slack_sdk's reconnect, holding its connect lock
    assert await watchdog.check() is None
    gate.open()
    await bot.slack.wait_socket_connections(2, timeout=10)
    await still_works(bot, "+18144043008")
    await asyncio.sleep(0.3)  # a second connection would be opening now
    assert len(bot.slack.calls_to("apps.connections.open")) == 2
    assert bot.slack.socket_connections == 2


async def readyz(bot: BotUnderTest) -> tuple[int, dict[str, Any]]:
    async with bot.http.get(f"http://127.0.0.1:{bot.runtime.port}/readyz") as response:
        return response.status, await response.json()


class StoppedClock:
    """The watchdog's clock, moved by the test: how long the connection has been down."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_readyz_says_not_ready_once_socket_mode_stays_down(socket_bot: StartBot) -> None:
    """In Socket Mode Slack reaches the bot only over its websocket: with it down, /call fails
    whatever auth.test says. A reconnect under way is ready for a while (Slack refreshes every
    connection now and then); one that takes longer than SOCKET_DOWN_READY_SECONDS is not, so an
    orchestrator or an alert sees it."""
    bot = await socket_bot(watchdog_interval=60)  # the probes observe; no check of its own
    watchdog = bot.runtime.watchdog
    assert watchdog is not None
    clock = watchdog.clock = StoppedClock()
    assert await readyz(bot) == (200, {"status": "ready", "checks": {
        "slack": "ok", "evovoice": "ok", "database": "ok", "socket_mode": "ok"}})
    gate = bot.slack.hold("apps.connections.open")
    await bot.slack.disconnect_socket()
    await gate.wait_until_held()  # slack_sdk's reconnect, waiting on Slack

    status, body = await readyz(bot)
    assert (status, body["checks"]["socket_mode"]) == (200, "ok")  # a reconnect may take a while
    clock.now += SOCKET_DOWN_READY_SECONDS + 1
    status, body = await readyz(bot)
    assert status == 503 and body["failed"] == ["socket_mode"]
    assert body["checks"]["socket_mode"].startswith(
        f"Socket Mode connection to Slack down for {SOCKET_DOWN_READY_SECONDS + 1:.0f} s")

    gate.open()
    await bot.slack.wait_socket_connections(2, timeout=10)
    await until(lambda: bot.runtime.watchdog is not None)
    for _ in range(100):  # the client takes its new connection a moment after Slack accepts it
        if (await readyz(bot))[0] == 200:
            break
        await asyncio.sleep(0.02)
    assert (await readyz(bot))[1]["checks"]["socket_mode"] == "ok"
    await still_works(bot, "+18144043009")


async def test_an_app_token_revoked_while_running_is_named_by_readyz(
    socket_bot: StartBot, caplog: pytest.LogCaptureFixture
) -> None:
    """The connection drops and Slack now refuses the app-level token (revoked, Socket Mode
    turned off): reconnecting can't work until someone fixes it, and /readyz and the log say
    what to fix rather than only that something failed."""
    bot = await socket_bot(watchdog_interval=0.1)
    watchdog = bot.runtime.watchdog
    assert watchdog is not None
    clock = watchdog.clock = StoppedClock()
    bot.slack.fail("apps.connections.open", "invalid_auth")
    await bot.slack.disconnect_socket()
    await bot.slack.wait_for_calls("apps.connections.open", 3, lambda c: not c.ok, timeout=10)
    clock.now += SOCKET_DOWN_READY_SECONDS + 1
    status, body = await readyz(bot)
    assert status == 503 and body["failed"] == ["socket_mode"]
    problem = body["checks"]["socket_mode"]
    assert "SLACK_APP_TOKEN: Slack refused it (invalid_auth)" in problem
    assert APP_TOKEN not in caplog.text
    logged = [r for r in caplog.records if "SLACK_APP_TOKEN: Slack refused it" in r.getMessage()]
    assert logged and logged[0].levelname == "ERROR"

    bot.slack.off("apps.connections.open")
    await bot.slack.wait_socket_connections(2, timeout=10)
    await still_works(bot, "+18144043010")


async def test_a_websocket_host_down_until_the_urls_expired_is_reconnected_to(
    socket_bot: StartBot,
) -> None:
    """Slack's websocket host refuses connections while its Web API answers, for longer than
    the URLs apps.connections.open gave meanwhile last (they are temporary). slack_sdk's
    connect() tries the URL it has again for as long as it fails, never a fresh one: the
    watchdog's own reconnect, waiting on it, hung with it, and the bot never came back."""
    bot = await socket_bot(watchdog_interval=0.1)
    bot.slack.refuse_sockets()
    await bot.slack.disconnect_socket()
    # slack_sdk's reconnect and the watchdog's, each refused.
    await until(lambda: bot.slack.refused_sockets >= 2, timeout=10)
    bot.slack.expire_tickets()
    bot.slack.refuse_sockets(False)
    await bot.slack.wait_socket_connections(2, timeout=10)
    await still_works(bot, "+18144043011")
