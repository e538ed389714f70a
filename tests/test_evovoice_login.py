"""Logging in to Evo Voice either way the evidence allows (docs/evovoice-api.md, Authentication):
HTTP Basic on every request, or a session from POST /auth/credentials, the only way the vendor's
CLI logs in. A server that doesn't read Basic answers it as it answers a wrong password."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from bot.calls.status_views import HANG_UP_ACTION
from bot.config import ConfigError
from bot.evovoice.budget import RequestBudget
from bot.evovoice.client import (
    BadLogin,
    EvoVoiceClient,
    EvoVoiceUnreachable,
    RateLimited,
    ServerError,
)
from bot.evovoice.login import Login, SignInFailed, session_cookies
from bot.evovoice.requester import RequestObserved
from bot.ops.findings import Status
from bot.standins.evovoice import (
    Answered,
    DropConnection,
    ErrorStatus,
    EvoVoiceStandIn,
    Gated,
    MalformedJson,
    TooManyRequests,
)
from bot.standins.slack import SlackStandIn
from tests.budget_clock import BudgetClock
from tests.checkups import by_subject, check
from tests.conftest import EVO_PASSWORD, EVO_USER, QUICK_VOICE_RETRY, BotFactory, until
from tests.follow_helpers import FAST, FULL, click, status_message, wait_for_edit

SIGN_IN = "/auth/credentials"


async def test_a_server_that_ignores_basic_places_follows_and_hangs_up_on_a_session(
    bot_factory: BotFactory, evo: EvoVoiceStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    evo.basic_enabled = False
    bot = await bot_factory("http", **FAST)
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    [session_id] = bot.evo.sessions
    bot.evo.set_session_state(session_id, callState="Connected")
    await wait_for_edit(bot, status, "🟢 Connected")
    await click(bot, status, HANG_UP_ACTION)
    await wait_for_edit(bot, status, "Hung up by <@U0MANAGER>")

    [sign_in] = bot.evo.requests_to("POST", SIGN_IN)
    # What the vendor's CLI posts, as JSON.
    assert sign_in.json == {"provider": "credentials", "userName": EVO_USER,
                            "password": EVO_PASSWORD, "rememberMe": True}
    assert sign_in.headers["Content-Type"] == "application/json"
    assert "Authorization" not in sign_in.headers and "Cookie" not in sign_in.headers
    after = bot.evo.requests[bot.evo.requests.index(sign_in) + 1:]
    assert {r.path for r in after} >= {"/sessions/outgoing", f"/sessions/{session_id}"}
    for request in after:
        assert "Authorization" not in request.headers
        assert "ss-opt=perm" in request.headers["Cookie"]
        assert "ss-pid=standin-perm-1" in request.headers["Cookie"]
    assert len(bot.evo.outgoing_posts) == 1 and bot.evo.hang_ups(session_id) == ["PATCH"]
    logged = caplog.text
    assert "does not accept HTTP Basic" in logged
    assert EVO_PASSWORD not in logged and "standin-perm" not in logged


async def test_an_expired_session_is_renewed_and_the_call_placed_once(
    bot_factory: BotFactory, evo: EvoVoiceStandIn
) -> None:
    evo.basic_enabled = False
    bot = await bot_factory("http", **FAST)
    bot.evo.logins.expire()  # the server restarted, or the session ran out
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    [session_id] = bot.evo.sessions  # one call, though its first POST was refused
    refused, placed = bot.evo.outgoing_posts
    assert "standin-perm-1" in refused.headers["Cookie"]
    assert "standin-perm-2" in placed.headers["Cookie"]
    assert bot.evo.logins.signed_in == 2
    bot.evo.set_session_state(session_id, callState="Connected")
    await wait_for_edit(bot, status, "🟢 Connected")


async def test_a_sign_in_refused_mid_run_is_not_tried_again_on_every_poll(
    bot_factory: BotFactory, evo: EvoVoiceStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bot.evovoice.client")
    evo.basic_enabled = False
    bot = await bot_factory("http", **FAST)
    await bot.command(f"{FULL} escalation")
    await status_message(bot)
    [session_id] = bot.evo.sessions
    polls = len(bot.evo.reads_of(session_id))
    bot.evo.password = "changed by an administrator"
    bot.evo.logins.expire()
    await until(lambda: len(bot.evo.reads_of(session_id)) >= polls + 5)
    assert len(bot.evo.requests_to("POST", SIGN_IN)) == 2  # the first, and one refused since
    assert "POST /auth/credentials -> 401: the login is refused; next sign-in no sooner" in (
        caplog.text)


async def test_a_wrong_password_is_still_a_refused_login_when_basic_is_not_read(
    bot_factory: BotFactory, evo: EvoVoiceStandIn, slack: SlackStandIn, policy_path: Path
) -> None:
    evo.basic_enabled = False
    evo.password = "not the bot's"
    with pytest.raises(ConfigError) as raised:
        await bot_factory("http")
    assert "refused the login" in raised.value.problems[0]
    assert evo.requests_to("POST", SIGN_IN)
    login = by_subject(await check(slack, evo, policy_path))["Evo Voice login"]
    assert login.status is Status.FAIL and "refused the login" in login.detail


async def test_check_says_the_login_needs_a_session_where_basic_is_not_read(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> None:
    evo.basic_enabled = False
    findings = by_subject(await check(slack, evo, policy_path))
    login = findings["Evo Voice login"]
    assert login.status is Status.PASS
    assert "POST /auth/credentials" in login.detail and "HTTP Basic" in login.detail
    for subject in ("Evo Voice role", "Evo Voice flows listing", "Evo Voice session lookup"):
        assert findings[subject].status is Status.PASS, findings[subject]

    evo.basic_enabled = True
    login = by_subject(await check(slack, evo, policy_path))["Evo Voice login"]
    assert login.status is Status.PASS and "credentials" not in login.detail


async def test_calls_refused_together_share_one_sign_in_and_each_rings_once(
    bot_factory: BotFactory, evo: EvoVoiceStandIn
) -> None:
    evo.basic_enabled = False
    bot = await bot_factory("http", **FAST)
    bot.slack.posting_rate = None  # five calls' threads in one channel at once: not about Slack
    bot.evo.logins.expire()
    numbers = [f"+1814555123{n}" for n in range(5)]
    await asyncio.gather(*(bot.command(f"{number} escalation") for number in numbers))
    await until(lambda: len(bot.evo.sessions) == 5)
    await bot.settle()
    assert bot.evo.logins.signed_in == 2  # at start-up, and once for the five
    assert sorted(s["toAddress"] for s in bot.evo.sessions.values()) == numbers


async def test_a_request_refused_again_after_a_sign_in_is_a_bad_login_not_a_loop(
    evo: EvoVoiceStandIn,
) -> None:
    # A sign-in that works while the route still answers 401 (a session the servers behind a
    # balancer don't share, say): one sign-in for the request, then the refusal, never a loop.
    refused = ErrorStatus(401, "Not authenticated")
    evo.queue("GET", "/flows", refused, refused, refused)
    async with EvoVoiceClient(evo.url, EVO_USER, EVO_PASSWORD) as client:
        with pytest.raises(BadLogin):
            await client.list_flows(["acct-1"])
    assert len(evo.requests_to("POST", SIGN_IN)) == 1
    assert len(evo.requests_to("GET", "/flows")) == 2


async def test_a_sign_in_evo_voice_fails_to_answer_is_no_refused_login_and_no_pause(
    evo: EvoVoiceStandIn,
) -> None:
    # A session that expired, renewed while Evo Voice answers 503: the call fails as Evo Voice
    # failing (nothing was dialled: the POST was refused for want of a login), not as a wrong
    # password, and the next call signs in at once rather than 30 s later.
    evo.basic_enabled = False
    async with EvoVoiceClient(evo.url, EVO_USER, EVO_PASSWORD) as client:
        await client.auth_status()
        evo.logins.expire()
        evo.queue("POST", SIGN_IN, ErrorStatus(503, "Service Unavailable"))
        with pytest.raises(ServerError):
            await client.create_outgoing_session("flow-esc", FULL)
        assert evo.sessions == {}

        placed = await client.create_outgoing_session("flow-esc", FULL)

    assert list(evo.sessions) == [placed.session_id]
    assert len(evo.requests_to("POST", SIGN_IN)) == 3


async def test_a_sign_in_evo_voice_does_not_answer_is_unreachable_not_a_refused_login(
    evo: EvoVoiceStandIn,
) -> None:
    evo.basic_enabled = False
    async with EvoVoiceClient(evo.url, EVO_USER, EVO_PASSWORD) as client:
        await client.auth_status()
        evo.logins.expire()
        evo.queue("POST", SIGN_IN, DropConnection())
        with pytest.raises(EvoVoiceUnreachable):
            await client.list_flows(["acct-1"])
        assert [f.id for f in await client.list_flows(["acct-1"])]  # signed in at once


async def test_a_sign_in_cancelled_while_others_wait_for_it_is_no_refused_login(
    evo: EvoVoiceStandIn,
) -> None:
    # The request signing in for everyone is cancelled (its escalation stopped, the bot stopping)
    # while a call waits for that sign-in: nothing refused the login, so the call signs in itself
    # and is placed, rather than failing as "login refused: fix EVOVOICE_PASSWORD".
    evo.basic_enabled = False
    answered: list[RequestObserved] = []
    gate = asyncio.Event()
    async with EvoVoiceClient(evo.url, EVO_USER, EVO_PASSWORD, observer=answered.append) as client:
        await client.auth_status()
        evo.logins.expire()
        evo.queue("POST", SIGN_IN, Gated(gate))
        signing_in = asyncio.create_task(client.list_flows(["acct-1"]))
        await until(lambda: len(evo.requests_to("POST", SIGN_IN)) == 2)  # held at the gate
        waiting = asyncio.create_task(client.create_outgoing_session("flow-esc", FULL))
        # Refused for want of a login, it waits for the sign-in under way.
        await until(lambda: any(r.route == "/sessions/outgoing" for r in answered))
        signing_in.cancel()
        placed = await asyncio.wait_for(waiting, 10)
        gate.set()
    assert list(evo.sessions) == [placed.session_id]
    assert len(evo.requests_to("POST", SIGN_IN)) == 3  # its own sign-in, after the cancelled one


async def test_a_sign_in_answered_503_at_start_up_is_waited_for_not_a_refused_login(
    bot_factory: BotFactory, evo: EvoVoiceStandIn
) -> None:
    evo.basic_enabled = False
    evo.queue("POST", SIGN_IN, ErrorStatus(503, "Service Unavailable"))
    bot = await bot_factory("http", STARTUP_RETRY_SECONDS="0.1", **QUICK_VOICE_RETRY)
    await until(lambda: bot.runtime.ready, timeout=20)
    assert len(evo.requests_to("POST", SIGN_IN)) == 2


async def test_auth_status_answering_without_a_login_is_tried_once_on_a_session(
    evo: EvoVoiceStandIn,
) -> None:
    # An empty 200 is no login read (as an empty 204 is): sign in, and ask again on the session.
    evo.queue("GET", "/auth/status", MalformedJson(body=""))
    async with EvoVoiceClient(evo.url, EVO_USER, EVO_PASSWORD) as client:
        assert (await client.auth_status()).is_authenticated
    assert len(evo.requests_to("POST", SIGN_IN)) == 1
    # Still "not authenticated" on the session: a refused login after one sign-in, not two.
    no = Answered({"isAuthenticated": False})
    evo.queue("GET", "/auth/status", no, no, no)
    async with EvoVoiceClient(evo.url, EVO_USER, EVO_PASSWORD) as client:
        with pytest.raises(BadLogin):
            await client.auth_status()
    assert len(evo.requests_to("POST", SIGN_IN)) == 2
    assert len(evo.requests_to("GET", "/auth/status")) == 4


def test_the_session_cookies_are_read_as_servicestack_sets_them() -> None:
    expires = "expires=Mon, 30 Nov 2046 12:00:00 GMT; path=/; samesite=lax; httponly; secure"
    answer = httpx.Response(200, headers=[
        ("Set-Cookie", "ss-id=abc; path=/; samesite=lax; httponly; secure"),
        ("Set-Cookie", f"ss-pid=def; {expires}"), ("Set-Cookie", f"ss-opt=perm; {expires}"),
        ("Set-Cookie", "ARRAffinity=lb1; Path=/; HttpOnly; Domain=evovoice.io"),  # a balancer's
        ("Set-Cookie", "X-UAId=; expires=Thu, 01 Jan 1970 00:00:00 GMT; path=/"),  # deleted
    ])
    assert session_cookies(answer) == "ss-id=abc; ss-pid=def; ss-opt=perm; ARRAffinity=lb1"
    assert session_cookies(httpx.Response(200, headers=[("Set-Cookie", "other=1")])) is None


async def test_a_sign_in_counts_only_when_it_answers_2xx_with_a_session() -> None:
    now, used, sent = [0.0], list[str](), list[httpx.Response | None]()
    login = Login(used.append, clock=lambda: now[0])

    def answering(answer: httpx.Response | None) -> Callable[[], Awaitable[httpx.Response]]:
        async def sign_in() -> httpx.Response:
            sent.append(answer)
            if answer is None:
                raise httpx.ConnectError("connection refused")
            return answer
        return sign_in

    # ServiceStack gives any caller session cookies, one it refuses included.
    refused = httpx.Response(401, headers=[("Set-Cookie", "ss-id=visitor; path=/")])
    assert await login.renew(0, answering(refused)) is False
    worked = httpx.Response(200, headers=[("Set-Cookie", "ss-pid=p1; path=/")])
    now[0] = 10
    assert await login.renew(0, answering(worked)) is False  # no sooner than 30 s after
    assert len(sent) == 1 and used == [] and login.generation == 0
    now[0] = 40
    with pytest.raises(SignInFailed):  # unreachable: Evo Voice failing, the login may be right
        await login.renew(0, answering(None))
    with pytest.raises(SignInFailed):  # so is a 503, and neither makes the next one wait
        await login.renew(0, answering(httpx.Response(503)))
    assert await login.renew(0, answering(worked)) is True
    assert used == ["ss-pid=p1"] and login.generation == 1 and login.method == "credentials"
    # A request refused before that sign-in is sent again on its session: no second sign-in.
    assert await login.renew(0, answering(None)) is True
    assert len(sent) == 4


async def test_a_request_whose_sign_in_is_refused_is_not_sent_again(
    evo: EvoVoiceStandIn,
) -> None:
    evo.basic_enabled = False
    evo.password = "not the bot's"
    async with EvoVoiceClient(evo.url, EVO_USER, EVO_PASSWORD) as client:
        with pytest.raises(BadLogin):
            await client.create_outgoing_session("flow-esc", FULL)
    assert len(evo.requests_to("POST", SIGN_IN)) == 1
    assert len(evo.requests_to("POST", "/sessions/outgoing")) == 1


@pytest.mark.parametrize(
    ("answer", "error"),
    [(TooManyRequests("7"), RateLimited), (ErrorStatus(500, "Internal"), ServerError)],
)
async def test_a_sign_in_answered_429_or_500_is_evo_voice_failing_not_a_refused_login(
    evo: EvoVoiceStandIn, answer: TooManyRequests | ErrorStatus, error: type[Exception]
) -> None:
    # Neither says the password is wrong: no BadLogin, no 30 s pause before the next sign-in; a
    # 429's Retry-After holds every request of the bot, as a 429 to any other request does.
    evo.basic_enabled = False
    clock = BudgetClock()
    budget = RequestBudget(clock=clock, sleep=clock.sleep)
    async with EvoVoiceClient(evo.url, EVO_USER, EVO_PASSWORD, budget=budget) as client:
        evo.queue("POST", SIGN_IN, answer)
        with pytest.raises(error):
            await client.list_flows(["acct-1"])
        assert budget.paused is (error is RateLimited)
        clock.advance(7)
        assert [f.id for f in await client.list_flows(["acct-1"])]  # signed in at once
    assert len(evo.requests_to("POST", SIGN_IN)) == 2

