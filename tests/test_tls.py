"""Slack and Evo Voice over TLS, as they really are: HTTPS for the Web API, the response_urls and
Evo Voice, wss:// for Socket Mode. The other tests speak plain HTTP to the loopback stand-ins;
these serve the same stand-ins with a certificate of the tests' own authority (tests/tls.py),
which the bot trusts through SSL_CERT_FILE, on either event loop (TLS is the loop's work, and
uvloop has its own). A certificate the bot does not trust is refused, never ignored: nothing is
dialled, and the bot says which service it could not trust."""

from __future__ import annotations

import logging
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.certificates import FIX as CERTIFICATE_FIX
from bot.evovoice.client import EvoVoiceClient
from bot.ops import init_checks
from bot.ops.init_files import Answers
from bot.ops.readiness import Readiness, evovoice_probe, slack_probe
from bot.standins.evovoice import EvoVoiceStandIn
from bot.standins.slack import SlackStandIn
from tests.conftest import (
    APP_TOKEN,
    BOT_TOKEN,
    EVO_PASSWORD,
    EVO_USER,
    FLOWS,
    OWNED,
    bot_environment,
)
from tests.process_calls import place_a_call
from tests.processes import BotProcess, run_cli
from tests.tls import ca_file, server_context

FULL = "+18144043093"


@pytest.fixture
async def evo() -> AsyncIterator[EvoVoiceStandIn]:
    standin = EvoVoiceStandIn(username=EVO_USER, password=EVO_PASSWORD)
    standin.flows[:] = [dict(f) for f in FLOWS]
    standin.phone_numbers[:] = [dict(n) for n in OWNED]
    await standin.start(tls=server_context())
    yield standin
    await standin.stop()


@pytest.fixture
async def slack() -> AsyncIterator[SlackStandIn]:
    standin = SlackStandIn(bot_token=BOT_TOKEN, app_token=APP_TOKEN)
    await standin.start(tls=server_context())
    yield standin
    await standin.stop()


@pytest.fixture
def fresh_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    """`python -m bot` itself, not forked from the tests' zygote: aiohttp reads SSL_CERT_FILE
    when it is imported, and the zygote imported it with the tests' own."""
    monkeypatch.setenv("CALLBOT_TEST_EXEC", "1")


@pytest.mark.usefixtures("fresh_interpreter")
@pytest.mark.parametrize("event_loop", ["uvloop", "asyncio"])
@pytest.mark.parametrize("mode", ["socket", "http"])
async def test_a_call_is_placed_and_told_over_tls(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path, mode: str, event_loop: str
) -> None:
    assert slack.api_url.startswith("https://") and evo.url.startswith("https://")
    env = bot_environment(mode, slack, evo, policy_path)
    env.update(SSL_CERT_FILE=ca_file(), EVENT_LOOP=event_loop)
    bot = await BotProcess.start(env, policy_path.parent)
    try:
        await bot.wait_for_line(rf"callbot ready \(.*event loop {event_loop}\)")
        assert slack.response_url().startswith("https://")
        assert slack.ws_url.startswith("wss://")
        await place_a_call(bot, slack, evo, mode, FULL)
    finally:
        code = await bot.stop(signal.SIGTERM)
    assert code == 0, bot.output()


@pytest.mark.usefixtures("fresh_interpreter")
async def test_a_certificate_the_bot_does_not_trust_is_refused_and_named(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> None:
    # SSL_CERT_FILE names another authority (tests/processes.py): as for a host whose HTTPS is
    # inspected by a proxy whose authority it was never given.
    env = bot_environment("http", slack, evo, policy_path)
    bot = await BotProcess.start(env, policy_path.parent)
    try:
        [waiting] = await bot.wait_for_line(r"callbot is up but not ready: (.*) \(trying again\)")
        assert waiting == (
            f"EVOVOICE_URL: the certificate of {evo.url} is not trusted here (unable to get local "
            f"issuer certificate); {CERTIFICATE_FIX}"
        )
        async with aiohttp.ClientSession() as http, http.get(bot.base + "/readyz") as response:
            assert response.status == 503
            assert (await response.json())["checks"]["callbot"] == f"waiting to start: {waiting}"
        code, out, _ = await run_cli(["check"], env, policy_path.parent)
    finally:
        assert await bot.stop(signal.SIGTERM) == 0
    assert evo.requests == [] and slack.calls == []  # nothing got past the handshake
    assert code == 1
    lines = out.splitlines()
    for url in (slack.api_url, evo.url):
        i = next(i for i, line in enumerate(lines)
                 if "✗ " in line and f"the certificate of {url} is not trusted here" in line)
        assert "set SSL_CERT_FILE" in " ".join(lines[i:i + 3]), out


async def test_readyz_names_a_certificate_it_does_not_trust(
    slack: SlackStandIn, evo: EvoVoiceStandIn
) -> None:
    # This process trusts no certificate of the tests' authority: as a running bot whose network
    # put a proxy that inspects HTTPS in its way.
    refused = "is not trusted here (unable to get local issuer certificate)"
    async with aiohttp.ClientSession() as http, EvoVoiceClient(
        evo.url, EVO_USER, EVO_PASSWORD, connect_retries=1
    ) as voice:
        slack_client = AsyncWebClient(token=BOT_TOKEN, session=http, retry_handlers=[],
                                      base_url=slack.api_url)
        readiness = Readiness({"slack": slack_probe(slack_client),
                               "evovoice": evovoice_probe(voice)})
        assert await readiness.check() == {"slack": f"the certificate of Slack {refused}",
                                           "evovoice": f"the certificate of Evo Voice {refused}"}


async def test_callbot_init_names_a_certificate_it_does_not_trust(
    slack: SlackStandIn, evo: EvoVoiceStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    # `callbot init`'s live checks of the tokens and the login, in this process (which trusts no
    # certificate of the tests' authority). Slack's client tries the connection again once after
    # a pause (about 1 s of this test); Evo Voice's says so at once: a certificate refused now is
    # refused a second later.
    answers = Answers(slack_api_url=slack.api_url, bot_token=BOT_TOKEN, evovoice_url=evo.url,
                      evovoice_username=EVO_USER, evovoice_password=EVO_PASSWORD)
    refused = "is not trusted here (unable to get local issuer certificate)"
    assert await init_checks.auth_test(answers, BOT_TOKEN) == (
        False, f"the certificate of {slack.api_url} {refused}; {CERTIFICATE_FIX}.")
    with caplog.at_level(logging.WARNING, "bot.evovoice"):
        assert await init_checks.login(answers) == (
            False, f"the certificate of {evo.url} {refused}; {CERTIFICATE_FIX}.", [])
    tried = [r for r in caplog.records if "GET /auth/status failed" in r.getMessage()]
    assert len(tried) == 1  # not tried again after a pause: said at once
