"""The Evo Voice client against the loopback stand-in, over real HTTP."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from bot.evovoice.client import (
    AuthStatus,
    BadLogin,
    BadRequest,
    Conflict,
    EvoVoiceClient,
    EvoVoiceError,
    EvoVoiceTimeout,
    EvoVoiceUnreachable,
    Forbidden,
    MalformedResponse,
    MissingRole,
    NotFound,
    OutcomeUnknown,
    RateLimited,
    ServerError,
    other_host,
    parse_retry_after,
)
from bot.evovoice.clock import ServerClock
from bot.errors import CallerIdNotOwned
from bot.evovoice.catalog import Catalog
from bot.evovoice.dates import parse_timestamp
from bot.evovoice.errors import status_error
from bot.evovoice.models import OUTGOING_PATH, Session, is_address_of, parse_call_placed
from bot.evovoice.requester import USER_AGENT, basic_authorization
from bot.standins.evovoice import (
    Answered,
    Delayed,
    DropConnection,
    EmptyObject,
    ErrorStatus,
    EvoVoiceStandIn,
    MalformedJson,
    NoContent,
    Respond,
    TooManyRequests,
)
from tests.budget_clock import LeapingClock
from tests.conftest import until

USERNAME = "bot@example.com"
PASSWORD = "pa55-Very-S3cret"
ACCOUNT = "acct-1"
CUSTOMER = "+18144043093"
OWNED = "+18145550100"

MakeClient = Callable[..., EvoVoiceClient]


class RecordingSleep:
    """Stands in for asyncio.sleep: remembers the back-off delays instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


class CountingTransport(httpx.AsyncBaseTransport):
    """Counts the attempts the client makes, whether or not they connect."""

    def __init__(self) -> None:
        self.attempts = 0
        self._inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.attempts += 1
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)


@pytest.fixture
async def standin() -> AsyncIterator[EvoVoiceStandIn]:
    server = EvoVoiceStandIn(username=USERNAME, password=PASSWORD)
    server.flows.append({"id": "flow-esc", "name": "Escalation", "accountId": ACCOUNT})
    server.phone_numbers.append(
        {"id": "ep-1", "displayName": "+1 814 555 0100", "phoneNumber": OWNED, "accountId": ACCOUNT}
    )
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def sleep() -> RecordingSleep:
    return RecordingSleep()


@pytest.fixture
async def make_client(standin: EvoVoiceStandIn, sleep: RecordingSleep) -> AsyncIterator[MakeClient]:
    clients: list[EvoVoiceClient] = []

    def make(**overrides: object) -> EvoVoiceClient:
        options: dict[str, object] = {
            "base_url": standin.url,
            "username": USERNAME,
            "password": PASSWORD,
            "timeout": httpx.Timeout(5.0, connect=2.0),
            "sleep": sleep,
        }
        options.update(overrides)
        client = EvoVoiceClient(**options)  # type: ignore[arg-type]
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
def client(make_client: MakeClient) -> EvoVoiceClient:
    return make_client()


# ------------------------------------------------------------------------------- auth and roles


async def test_auth_status_is_parsed(client: EvoVoiceClient, standin: EvoVoiceStandIn) -> None:
    status = await client.auth_status()

    assert status == AuthStatus(
        user_id="user-1",
        is_authenticated=True,
        roles=["Manager"],
        account_ids=[ACCOUNT],
        account_names=["Acme Ops"],
        display_name="Callbot",
    )
    sent = standin.requests_to("GET", "/auth/status")[0]
    expected = base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
    assert sent.headers["Authorization"] == f"Basic {expected}"
    assert sent.headers["Accept"] == "application/json"


async def test_every_request_uses_basic_auth_and_no_cookies(
    client: EvoVoiceClient, standin: EvoVoiceStandIn
) -> None:
    await client.auth_status()
    await client.auth_status()

    second = standin.requests[1]
    assert second.headers["Authorization"].startswith("Basic ")
    assert "Cookie" not in second.headers


@pytest.mark.parametrize("answer", ["unauthenticated", "no_content"])
async def test_a_refused_login_is_bad_login_though_auth_status_never_says_401(
    make_client: MakeClient, standin: EvoVoiceStandIn, answer: str
) -> None:
    # ServiceStack: no [Authenticate] on AuthStatus, so 200 isAuthenticated:false, or 204.
    standin.refused_login = answer
    client = make_client(password="wrong")

    with pytest.raises(BadLogin) as caught:
        await client.auth_status()

    assert caught.value.status == (200 if answer == "unauthenticated" else 204)
    assert "EVOVOICE_URL" in caught.value.message
    with pytest.raises(BadLogin) as other:
        await client.list_flows([ACCOUNT])  # the routes that do carry [Authenticate]: 401
    assert other.value.status == 401


async def test_user_without_manager_role_cannot_place_calls(
    client: EvoVoiceClient, standin: EvoVoiceStandIn
) -> None:
    standin.roles = ["Reporter"]

    with pytest.raises(MissingRole) as caught:
        await client.create_outgoing_session("flow-esc", CUSTOMER)

    assert caught.value.status == 403
    assert caught.value.message == "Invalid Role"
    assert standin.sessions == {}


# ------------------------------------------------------------------------------ flows, numbers


async def test_list_flows_filters_by_account(
    client: EvoVoiceClient, standin: EvoVoiceStandIn
) -> None:
    standin.flows.append({"id": "flow-other", "name": "Other", "accountId": "acct-2"})

    flows = await client.list_flows([ACCOUNT])

    assert [(f.id, f.name, f.account_id) for f in flows] == [("flow-esc", "Escalation", ACCOUNT)]
    query = standin.requests_to("GET", "/flows")[0].query
    assert query["accountIds"] == ACCOUNT
    assert "all" not in query  # one paging scheme: all=true alongside page could repeat items


async def test_list_flows_follows_pages(client: EvoVoiceClient, standin: EvoVoiceStandIn) -> None:
    standin.flows[:] = [
        {"id": f"flow-{i}", "name": f"Flow {i}", "accountId": ACCOUNT} for i in range(5)
    ]
    standin.max_page_size = 2

    flows = await client.list_flows([ACCOUNT, "acct-2"])

    assert [f.id for f in flows] == [f"flow-{i}" for i in range(5)]
    sent = standin.requests_to("GET", "/flows")
    assert [r.query["page"] for r in sent] == ["0", "1", "2"]
    assert sent[0].query["accountIds"] == f"{ACCOUNT},acct-2"


async def test_list_phone_numbers_pages_and_falls_back_to_display_name(
    client: EvoVoiceClient, standin: EvoVoiceStandIn
) -> None:
    standin.phone_numbers += [
        {"id": "ep-2", "displayName": "+1 (814) 555-0101", "accountId": ACCOUNT},
        {"id": "ep-3", "displayName": "Front desk", "accountId": ACCOUNT},
    ]
    standin.max_page_size = 2

    numbers = await client.list_phone_numbers([ACCOUNT])

    assert [(n.id, n.phone_number, n.display_name, n.account_id) for n in numbers] == [
        ("ep-1", OWNED, "+1 814 555 0100", ACCOUNT),
        ("ep-2", "+18145550101", "+1 (814) 555-0101", ACCOUNT),
        ("ep-3", None, "Front desk", ACCOUNT),
    ]
    assert numbers[2].fields_seen == ("id", "displayName", "accountId")  # for callbot check
    sent = standin.requests_to("GET", "/endpoints")
    assert len(sent) == 2
    assert sent[0].query["type"] == "PhoneNumber"
    assert standin.requests_to("POST", "/endpoints/phone-numbers") == []


async def test_the_catalog_offers_only_the_numbers_it_could_read(
    client: EvoVoiceClient, standin: EvoVoiceStandIn
) -> None:
    standin.phone_numbers.append({"id": "ep-3", "displayName": "Front desk", "accountId": ACCOUNT})
    catalog = Catalog(client, [ACCOUNT], {})
    assert await catalog.owned_numbers() == [OWNED]
    with pytest.raises(CallerIdNotOwned) as refused:
        await catalog.check_caller_id("+18145550199")
    assert "Owned numbers: +1" in refused.value.user_message


async def test_ids_sent_as_numbers_are_read_as_text(
    client: EvoVoiceClient, standin: EvoVoiceStandIn
) -> None:
    # Nothing public says an id is never a number in JSON: one that is must not make the whole
    # list unreadable.
    standin.flows.append({"id": 42, "name": "Wake up", "accountId": ACCOUNT})
    flows = await client.list_flows([ACCOUNT])
    assert [f.id for f in flows] == ["flow-esc", "42"]


async def test_a_flow_id_typed_with_spaces_around_it_is_that_flow(client: EvoVoiceClient) -> None:
    catalog = Catalog(client, [ACCOUNT], {})
    assert (await catalog.resolve_flow("  flow-esc ")).id == "flow-esc"


async def test_list_with_wrong_shape_is_malformed(
    client: EvoVoiceClient, standin: EvoVoiceStandIn
) -> None:
    standin.queue("GET", "/flows", MalformedJson())
    with pytest.raises(MalformedResponse):
        await client.list_flows([ACCOUNT])

    standin.queue("GET", "/sessions/sess-9", EmptyObject())
    with pytest.raises(MalformedResponse):
        await client.get_session("sess-9")


# --------------------------------------------------------------------------------- placing calls


async def test_create_call_returns_the_session(
    client: EvoVoiceClient, standin: EvoVoiceStandIn
) -> None:
    placed = await client.create_outgoing_session("flow-esc", CUSTOMER, caller_id=OWNED)

    assert placed.session_id is not None
    assert placed.session is not None
    assert placed.session.to_address == CUSTOMER
    assert placed.session.from_address == OWNED
    assert placed.session.call_state == "Ringing"
    assert placed.session_id in standin.sessions
    [post] = standin.outgoing_posts
    assert post.json == {"flowId": "flow-esc", "numberToDial": CUSTOMER, "callerId": OWNED}


async def test_the_post_arrives_as_httpx_would_build_it(
    client: EvoVoiceClient, standin: EvoVoiceStandIn
) -> None:
    """The POST is built from headers merged once, not by AsyncClient.build_request: the server
    must not tell the difference (same body bytes, same headers but the connection's own)."""
    await client.create_outgoing_session("flow-esc", CUSTOMER, caller_id=OWNED)

    [post] = standin.outgoing_posts
    expected = httpx.AsyncClient(
        base_url=standin.url,
        headers={"Accept": "application/json", "User-Agent": USER_AGENT,
                 "Authorization": basic_authorization(USERNAME, PASSWORD)},
    ).build_request(
        "POST", OUTGOING_PATH,
        json={"flowId": "flow-esc", "numberToDial": CUSTOMER, "callerId": OWNED},
    )
    assert post.body == expected.content
    for name in ("Accept", "Accept-Encoding", "Authorization", "Content-Type", "Content-Length",
                 "User-Agent", "Host"):
        assert post.headers[name] == expected.headers[name], name
    assert "Cookie" not in post.headers


async def test_create_call_omits_caller_id_when_not_given(
    client: EvoVoiceClient, standin: EvoVoiceStandIn
) -> None:
    await client.create_outgoing_session("flow-esc", CUSTOMER)

    [post] = standin.outgoing_posts
    assert post.json == {"flowId": "flow-esc", "numberToDial": CUSTOMER}


@pytest.mark.parametrize("behaviour", [EmptyObject(), NoContent(), MalformedJson()])
async def test_any_2xx_is_success_even_without_a_session(
    client: EvoVoiceClient,
    standin: EvoVoiceStandIn,
    behaviour: EmptyObject | NoContent | MalformedJson,
) -> None:
    standin.queue_outgoing(behaviour)

    placed = await client.create_outgoing_session("flow-esc", CUSTOMER)

    assert placed.session_id is None
    assert placed.session is None
    assert len(standin.outgoing_posts) == 1
    [found] = await client.find_sessions([ACCOUNT], to=CUSTOMER, since=LONG_AGO)
    assert found.to_address == CUSTOMER


async def test_slow_answer_within_the_read_timeout_succeeds(
    client: EvoVoiceClient, standin: EvoVoiceStandIn
) -> None:
    standin.queue_outgoing(Delayed(0.2))

    placed = await client.create_outgoing_session("flow-esc", CUSTOMER)

    assert placed.session_id in standin.sessions


async def test_validation_error_is_bad_request_with_server_message(
    client: EvoVoiceClient, standin: EvoVoiceStandIn
) -> None:
    with pytest.raises(BadRequest) as caught:
        await client.create_outgoing_session("flow-esc", CUSTOMER, caller_id="+18005550199")

    assert caught.value.status == 400
    assert caught.value.message == "Caller ID is not an owned number"
    assert [e.field_name for e in caught.value.field_errors] == ["CallerId"]
    assert standin.sessions == {}


def test_an_error_answer_is_read_however_servicestack_words_it() -> None:
    # PascalCase (ServiceStack's other naming), the message only in the field errors, the bot's
    # password blanked wherever the server echoes it, and a long text cut for Slack.
    answer = httpx.Response(400, json={"ResponseStatus": {"ErrorCode": "NotEmpty", "Errors": [
        {"FieldName": "FlowId", "Message": f"'Flow Id' must not be {PASSWORD}.",
         "ErrorCode": "NotEmpty"}]}})
    error = status_error(answer, PASSWORD)
    assert isinstance(error, BadRequest) and error.error_code == "NotEmpty"
    assert error.message == "'Flow Id' must not be ***."
    assert [(e.field_name, e.message) for e in error.field_errors] == [
        ("FlowId", "'Flow Id' must not be ***.")]
    long = status_error(httpx.Response(500, json={"responseStatus": {"message": "x" * 1000}}), "")
    assert isinstance(long, ServerError) and len(long.message) == 300
    assert long.message.endswith("…")
    # "Invalid Role" makes a 403 a missing role, in its message or its code; no other status.
    def refusal(status: int, **fields: str) -> EvoVoiceError:
        return status_error(httpx.Response(status, json={"responseStatus": fields}), "")
    assert isinstance(refusal(403, errorCode="Invalid Role", message="Forbidden"), MissingRole)
    assert type(refusal(400, message="Invalid Role: Admin")) is BadRequest


async def test_unknown_flow_is_bad_request(client: EvoVoiceClient) -> None:
    with pytest.raises(BadRequest) as caught:
        await client.create_outgoing_session("flow-nope", CUSTOMER)

    assert caught.value.field_errors[0].field_name == "FlowId"


async def test_rate_limited_post_is_not_retried(
    client: EvoVoiceClient, standin: EvoVoiceStandIn, sleep: RecordingSleep
) -> None:
    standin.queue_outgoing(TooManyRequests(retry_after="7"))

    with pytest.raises(RateLimited) as caught:
        await client.create_outgoing_session("flow-esc", CUSTOMER)

    assert caught.value.retry_after == 7.0
    assert len(standin.outgoing_posts) == 1
    assert sleep.delays == []


async def test_server_error_on_post_is_outcome_unknown_and_not_retried(
    client: EvoVoiceClient, standin: EvoVoiceStandIn
) -> None:
    standin.queue_outgoing(ErrorStatus(503, "Service Unavailable"))

    with pytest.raises(OutcomeUnknown) as caught:
        await client.create_outgoing_session("flow-esc", CUSTOMER)

    assert caught.value.status == 503
    assert "503" in caught.value.cause
    assert len(standin.outgoing_posts) == 1


async def test_500_on_post_is_outcome_unknown(
    client: EvoVoiceClient, standin: EvoVoiceStandIn
) -> None:
    standin.queue_outgoing(ErrorStatus(500))

    with pytest.raises(OutcomeUnknown):
        await client.create_outgoing_session("flow-esc", CUSTOMER)

    assert len(standin.outgoing_posts) == 1


async def test_read_timeout_on_post_is_outcome_unknown_and_not_retried(
    make_client: MakeClient, standin: EvoVoiceStandIn
) -> None:
    client = make_client(timeout=httpx.Timeout(5.0, read=0.3))
    standin.queue_outgoing(Delayed(30.0))

    with pytest.raises(OutcomeUnknown) as caught:
        await client.create_outgoing_session("flow-esc", CUSTOMER)

    assert caught.value.cause == "no answer in time"
    assert len(standin.outgoing_posts) == 1


async def test_dropped_connection_on_post_is_outcome_unknown_and_not_retried(
    client: EvoVoiceClient, standin: EvoVoiceStandIn
) -> None:
    standin.queue_outgoing(DropConnection())

    with pytest.raises(OutcomeUnknown):
        await client.create_outgoing_session("flow-esc", CUSTOMER)

    assert len(standin.outgoing_posts) == 1
    # The ambiguous case: the call was placed, only the answer was lost.
    [session] = await client.find_sessions([ACCOUNT], to=CUSTOMER, since=LONG_AGO)
    assert session.to_address == CUSTOMER


async def test_refused_connection_is_unreachable_after_all_attempts(
    make_client: MakeClient, standin: EvoVoiceStandIn, sleep: RecordingSleep, refused_port: int
) -> None:
    transport = CountingTransport()
    client = make_client(
        base_url=f"http://127.0.0.1:{refused_port}",
        transport=transport,
        connect_retries=3,
        retry_backoff=0.5,
    )

    with pytest.raises(EvoVoiceUnreachable) as caught:
        await client.create_outgoing_session("flow-esc", CUSTOMER)

    assert caught.value.attempts == 3
    assert transport.attempts == 3
    assert sleep.delays == [0.5, 1.0]
    assert standin.requests == []


async def test_refused_connection_recovers_within_the_back_off(make_client: MakeClient) -> None:
    """Refused twice (Evo Voice restarting), then up: one call placed, after two waits."""
    server = EvoVoiceStandIn(username=USERNAME, password=PASSWORD)
    server.flows.append({"id": "flow-esc", "name": "Escalation", "accountId": ACCOUNT})
    await server.start()
    url, port = server.url, httpx.URL(server.url).port
    # Down (its port bound, not listening: refused) until it comes back on that very port.
    await server.stop(keep_port=True)
    delays: list[float] = []

    async def restart_during_second_wait(seconds: float) -> None:
        delays.append(seconds)
        if len(delays) == 2:
            await server.start(port or 0)

    client = make_client(base_url=url, sleep=restart_during_second_wait,
                         connect_retries=3, retry_backoff=0.5)
    try:
        placed = await client.create_outgoing_session("flow-esc", CUSTOMER)
    finally:
        await server.stop()
    assert delays == [0.5, 1.0]
    assert len(server.outgoing_posts) == 1
    assert placed.session_id in server.sessions


# ------------------------------------------------------------------------------ reading sessions


async def test_get_is_retried_once_on_503(
    client: EvoVoiceClient, standin: EvoVoiceStandIn, sleep: RecordingSleep
) -> None:
    standin.queue("GET", "/flows", ErrorStatus(503, "Service Unavailable"))

    flows = await client.list_flows([ACCOUNT])

    assert [f.id for f in flows] == ["flow-esc"]
    assert len(standin.requests_to("GET", "/flows")) == 2
    assert sleep.delays == [0.5]  # after a pause, not at once on a struggling server


async def test_the_catalog_serves_its_last_lists_while_a_refresh_fails(
    client: EvoVoiceClient, standin: EvoVoiceStandIn
) -> None:
    catalog = Catalog(client, [ACCOUNT], {}, ttl=0.0)  # every answer is past its ttl at once
    assert [f.id for f in await catalog.flows()] == ["flow-esc"]
    assert await catalog.owned_numbers() == [OWNED]
    standin.queue("GET", "/flows", ErrorStatus(503), ErrorStatus(503))
    standin.queue("GET", "/endpoints", ErrorStatus(503), ErrorStatus(503))
    # Past the ttl, within the hour: the last lists at once, however the refresh ends.
    assert [f.id for f in await catalog.flows()] == ["flow-esc"]
    assert await catalog.owned_numbers() == [OWNED]
    await until(lambda: len(standin.requests_to("GET", "/flows")) == 3
                and len(standin.requests_to("GET", "/endpoints")) == 3)
    standin.flows.append({"id": "flow-new", "name": "New", "accountId": ACCOUNT})
    # The failed refresh is tried again by the next request, and its answer is served.
    for _ in range(500):
        if len(await catalog.flows()) == 2:
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("the lists were never read again after the failed refresh")


async def test_get_failing_twice_is_server_error(
    client: EvoVoiceClient, standin: EvoVoiceStandIn
) -> None:
    standin.queue("GET", "/auth/status", ErrorStatus(503), ErrorStatus(502))

    with pytest.raises(ServerError) as caught:
        await client.auth_status()

    assert caught.value.status == 502
    assert len(standin.requests_to("GET", "/auth/status")) == 2


async def test_get_read_timeout_is_retried_once_then_times_out(
    make_client: MakeClient, standin: EvoVoiceStandIn
) -> None:
    client = make_client(timeout=httpx.Timeout(5.0, read=0.3))
    session = standin.add_session(toAddress=CUSTOMER)
    path = f"/sessions/{session['id']}"
    standin.queue("GET", path, Delayed(30.0), Delayed(30.0))

    with pytest.raises(EvoVoiceTimeout):
        await client.get_session(session["id"])

    assert len(standin.requests_to("GET", path)) == 2


async def test_get_is_retried_once_after_a_dropped_connection(
    client: EvoVoiceClient, standin: EvoVoiceStandIn, sleep: RecordingSleep
) -> None:
    standin.queue("GET", "/auth/status", DropConnection())

    status = await client.auth_status()

    assert status.is_authenticated is True
    assert len(standin.requests_to("GET", "/auth/status")) == 2
    assert sleep.delays == [0.5]


async def test_hang_up_is_not_retried_after_it_was_sent(
    make_client: MakeClient, standin: EvoVoiceStandIn
) -> None:
    client = make_client(timeout=httpx.Timeout(5.0, read=0.3))
    session = standin.add_session(toAddress=CUSTOMER)
    path = f"/sessions/{session['id']}"
    standin.roles = ["Manager", "User"]  # EndSession needs User
    standin.queue("DELETE", path, ErrorStatus(503), Delayed(30.0))

    with pytest.raises(ServerError):
        await client.hang_up(session["id"])
    with pytest.raises(EvoVoiceTimeout):
        await client.hang_up(session["id"])

    assert len(standin.requests_to("DELETE", path)) == 2


async def test_a_hang_up_answered_429_is_sent_again_after_the_pause_a_bounded_number_of_times(
    client: EvoVoiceClient, standin: EvoVoiceStandIn
) -> None:
    # A 429 did nothing; ending a call twice ends nothing more. The budget's pause is waited out
    # (here leapt over), then the hang-up sent again; three "not now"s in a row are raised.
    budget_clock = LeapingClock()
    client.budget.clock, client.budget.sleep = budget_clock, budget_clock.sleep
    session = standin.add_session(toAddress=CUSTOMER, callState="Ringing")
    path = f"/sessions/{session['id']}"
    standin.queue("PATCH", path, TooManyRequests("5"))
    await client.hang_up(session["id"])
    assert standin.hang_ups(session["id"]) == ["PATCH"]
    assert budget_clock.now >= 5  # after the pause Evo Voice asked for

    other = standin.add_session(toAddress=CUSTOMER, callState="Ringing")
    standin.queue("PATCH", f"/sessions/{other['id']}", *[TooManyRequests("1")] * 3)
    with pytest.raises(RateLimited):
        await client.hang_up(other["id"])
    assert len(standin.requests_to("PATCH", f"/sessions/{other['id']}")) == 3
    assert standin.requests_to("DELETE", f"/sessions/{other['id']}") == []  # a 429: no role


async def test_find_sessions_newest_first(client: EvoVoiceClient, standin: EvoVoiceStandIn) -> None:
    since = datetime.now(UTC) - timedelta(seconds=5)
    first = await client.create_outgoing_session("flow-esc", CUSTOMER)
    standin.add_session(toAddress="+18145550199")
    second = await client.create_outgoing_session("flow-esc", CUSTOMER)

    found = await client.find_sessions([ACCOUNT], to=CUSTOMER, since=since)

    assert [s.id for s in found] == [second.session_id, first.session_id]
    query = standin.requests_to("GET", "/sessions")[0].query
    assert query == {
        "accountIds": ACCOUNT,
        "to": CUSTOMER,
        "startDate": (since - timedelta(days=1)).date().isoformat(),
        "endDate": (datetime.now(UTC) + timedelta(days=2)).date().isoformat(),
        "sortField": "DateCreated",
        "sortOrder": "Descend",
        "page": "0",
        "countPerPage": "50",
    }


def test_evo_voice_s_clock_is_its_answers_date_header_unless_that_is_broken() -> None:
    clock = ServerClock()
    received = datetime(2027, 1, 15, 8, 0, 0, 500_000, tzinfo=UTC)
    clock.note("Fri, 15 Jan 2027 07:58:00 GMT", None, received)
    assert clock.offset == timedelta(minutes=-2, seconds=-0.5)
    clock.note("Fri, 15 Jan 2027 07:57:00 GMT", "60", received)  # kept a minute by a cache
    assert clock.offset == timedelta(minutes=-2, seconds=-0.5)
    for broken in ("Thu, 01 Jan 1970 00:00:00 GMT", "Fri, 15 Jan 2027 09:01:00 GMT",
                   "yesterday", "", None, "Fri, 15 Jan 99999 07:58:00 GMT"):
        clock.note(broken, None, received)  # a broken header, not a clock
    assert clock.offset == timedelta(minutes=-2, seconds=-0.5)
    assert clock.on_server(received) == datetime(2027, 1, 15, 7, 58, tzinfo=UTC)


async def test_find_sessions_finds_a_call_to_a_number_of_the_longest_e164_length(
    client: EvoVoiceClient, standin: EvoVoiceStandIn
) -> None:
    # E.164 allows 15 digits (some German numbers are that long): a call lost in an ambiguous
    # failure is found whatever the length of its number.
    longest = "+491234567890123"
    standin.queue_outgoing(DropConnection())
    with pytest.raises(OutcomeUnknown):
        await client.create_outgoing_session("flow-esc", longest)

    [session] = await client.find_sessions([ACCOUNT], to=longest, since=LONG_AGO)

    assert session.to_address == longest


async def test_find_sessions_keeps_what_it_cannot_rule_out(
    client: EvoVoiceClient, standin: EvoVoiceStandIn
) -> None:
    # The lookup after an unanswered POST: a session created at `since`, or whose date can't be
    # read, may be the call; one created before it is not.
    since = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    later_ms = int((since + timedelta(seconds=5)).timestamp() * 1000)
    standin.queue("GET", "/sessions", Answered({"items": [
        {"id": "at", "toAddress": CUSTOMER, "dateCreated": "2026-11-30T12:00:00Z"},
        {"id": "before", "toAddress": CUSTOMER, "dateCreated": "2026-11-30T11:59:59Z"},
        {"id": "undated", "toAddress": CUSTOMER},
        {"id": "later", "toAddress": CUSTOMER, "dateCreated": f"/Date({later_ms}-0000)/"},
    ]}))
    found = await client.find_sessions([ACCOUNT], to=CUSTOMER, since=since)
    assert [s.id for s in found] == ["later", "at", "undated"]


async def test_listings_stop_at_a_page_with_nothing_new(
    client: EvoVoiceClient, standin: EvoVoiceStandIn
) -> None:
    # A server that ignores `page` sends the same page, "more to come", every time.
    same = Answered({"items": [{"id": "s1", "toAddress": CUSTOMER}], "hasMorePages": True})
    standin.queue("GET", "/sessions", *[same] * 5)
    found = await client.find_sessions([ACCOUNT], to=CUSTOMER, since=datetime.now(UTC))
    assert [s.id for s in found] == ["s1"]
    assert len(standin.requests_to("GET", "/sessions")) == 2
    flow = Answered({"items": [{"id": "flow-esc", "name": "Escalation"}], "hasMorePages": True})
    standin.queue("GET", "/flows", *[flow] * 5)
    assert [f.id for f in await client.list_flows([ACCOUNT])] == ["flow-esc"]
    assert len(standin.requests_to("GET", "/flows")) == 2


async def test_a_lookup_stops_at_a_page_with_nothing_new_even_when_none_of_it_is_the_call(
    client: EvoVoiceClient, standin: EvoVoiceStandIn
) -> None:
    # A server that ignores `page` sends the first page again, "more to come": the number's
    # earlier calls (before the attempt, so none of them the call), or another number's that
    # contain it (`to` matches by substring). A page of sessions already seen ends the lookup.
    standin.page_honoured = False
    yesterday = (datetime.now(UTC) - timedelta(hours=20)).isoformat()
    for _ in range(60):
        standin.add_session(toAddress=CUSTOMER, dateCreated=yesterday)
    found = await client.find_sessions([ACCOUNT], to=CUSTOMER, since=datetime.now(UTC))
    assert found == []
    # Twice with the plus, twice without it (finding nothing, the lookup asks so too).
    asked = [r.query["to"] for r in standin.requests_to("GET", "/sessions")]
    assert asked == [CUSTOMER] * 2 + [CUSTOMER[1:]] * 2
    # The pages it could not read may hold the call: it has not ruled it out.
    assert not found.complete
    standin.page_honoured = True
    assert (await client.find_sessions([ACCOUNT], to=CUSTOMER, since=datetime.now(UTC))).complete


async def test_a_page_without_has_more_pages_is_the_last(
    client: EvoVoiceClient, standin: EvoVoiceStandIn
) -> None:
    # ServiceStack may leave out a false or default property: no hasMorePages is no more pages.
    standin.queue("GET", "/flows", Answered({"items": [{"id": "flow-esc", "name": "Escalation"}]}))
    assert [f.id for f in await client.list_flows([ACCOUNT])] == ["flow-esc"]
    assert len(standin.requests_to("GET", "/flows")) == 1


async def test_a_listing_without_items_is_empty_not_unreadable(
    client: EvoVoiceClient, standin: EvoVoiceStandIn
) -> None:
    # ServiceStack leaves null properties out: a lookup that found nothing may answer `{}`. The
    # lookup after an unanswered POST must then say "not found", not "unreadable answer".
    standin.queue("GET", "/sessions", EmptyObject())
    assert await client.find_sessions([ACCOUNT], to=CUSTOMER, since=datetime.now(UTC)) == []
    standin.queue("GET", "/flows", EmptyObject())
    assert await client.list_flows([ACCOUNT]) == []


async def test_get_session_follows_state(client: EvoVoiceClient, standin: EvoVoiceStandIn) -> None:
    placed = await client.create_outgoing_session("flow-esc", CUSTOMER)
    assert placed.session_id is not None
    standin.set_session_state(placed.session_id, callState="Connected", answeredByName="Human")

    session = await client.get_session(placed.session_id)

    assert session.call_state == "Connected"
    assert session.answered_by_name == "Human"
    assert session.ended is False


async def test_unknown_session_is_not_found(client: EvoVoiceClient) -> None:
    with pytest.raises(NotFound):
        await client.get_session("sess-404")


async def test_hang_up_ends_the_session(client: EvoVoiceClient, standin: EvoVoiceStandIn) -> None:
    placed = await client.create_outgoing_session("flow-esc", CUSTOMER)
    assert placed.session_id is not None

    await client.hang_up(placed.session_id)

    session = await client.get_session(placed.session_id)
    assert session.ended is True
    assert session.call_state == "Disconnected"
    assert session.outcome == "Hung up"
    assert standin.hang_ups(placed.session_id) == ["PATCH"]  # Manager only: EndSession refused


async def test_a_hang_up_refused_for_another_reason_than_a_role_is_not_sent_another_way(
    client: EvoVoiceClient, standin: EvoVoiceStandIn
) -> None:
    placed = await client.create_outgoing_session("flow-esc", CUSTOMER)
    assert placed.session_id is not None
    path = f"/sessions/{placed.session_id}"
    standin.roles = ["Manager", "User"]  # EndSession is allowed: its 403 is not a missing role
    standin.queue("DELETE", path, ErrorStatus(403, "This client is not allowed"))

    with pytest.raises(Forbidden) as caught:
        await client.hang_up(placed.session_id)

    assert not isinstance(caught.value, MissingRole)
    assert standin.requests_to("PATCH", path) == []
    assert client.hang_up_method == "DELETE"


async def test_a_patch_session_its_service_does_not_support_falls_back_to_end_session(
    client: EvoVoiceClient, standin: EvoVoiceStandIn
) -> None:
    # ServiceStack answers 405 to a service that throws NotSupportedException: a PatchSession
    # that won't change callState. EndSession may still end the call.
    standin.roles = ["Manager", "User"]
    session = standin.add_session(toAddress=CUSTOMER, callState="Connected")
    path = f"/sessions/{session['id']}"
    client.hang_up_method = "PATCH"
    standin.queue("PATCH", path, ErrorStatus(405, "PatchSession does not support callState"))

    await client.hang_up(session["id"])

    assert standin.hang_ups(session["id"]) == ["DELETE"]
    assert client.hang_up_method == "DELETE"


async def test_a_hang_up_turned_away_one_way_and_refused_the_role_the_other_says_the_role(
    client: EvoVoiceClient, standin: EvoVoiceStandIn
) -> None:
    # A Manager-only login (EndSession: Invalid Role) whose PatchSession a front end turns away:
    # granting User is what makes a hang-up work.
    session = standin.add_session(toAddress=CUSTOMER, callState="Connected")
    standin.refused_methods = {"PATCH": 405}

    with pytest.raises(MissingRole) as caught:
        await client.hang_up(session["id"])

    assert caught.value.needed == ("User",)
    assert standin.hang_ups(session["id"]) == []
    assert [r.method for r in standin.requests if r.path == f"/sessions/{session['id']}"] == [
        "DELETE", "PATCH"]


async def test_a_refused_hang_up_is_not_called_ended_when_the_session_cannot_be_read(
    client: EvoVoiceClient, standin: EvoVoiceStandIn
) -> None:
    # Only the session saying it has ended makes a refusal "nothing to hang up"; unread, the call
    # may still ring, and the refusal is what the caller hears.
    standin.roles = ["Manager", "User"]  # EndSession needs User
    session = standin.add_session(toAddress=CUSTOMER, callState="Connected")
    path = f"/sessions/{session['id']}"
    standin.queue("DELETE", path, ErrorStatus(409, "Conflict"))
    standin.queue("GET", path, ErrorStatus(503), ErrorStatus(503))

    with pytest.raises(Conflict):
        await client.hang_up(session["id"])

    assert len(standin.requests_to("GET", path)) == 2


async def test_a_refused_hang_up_of_a_call_not_yet_live_is_not_called_ended(
    client: EvoVoiceClient, standin: EvoVoiceStandIn
) -> None:
    # Disconnected is also what a call shows before it rings (docs/evovoice.md): only ``ended``
    # says the call is over.
    standin.roles = ["Manager", "User"]
    session = standin.add_session(toAddress=CUSTOMER, callState="Disconnected", ended=False)
    standin.queue("DELETE", f"/sessions/{session['id']}", ErrorStatus(409, "Conflict"))

    with pytest.raises(Conflict):
        await client.hang_up(session["id"])


async def test_wait_for_posts_returns_once_they_arrived(
    client: EvoVoiceClient, standin: EvoVoiceStandIn
) -> None:
    await client.create_outgoing_session("flow-esc", CUSTOMER)

    posts = await standin.wait_for_posts(1, timeout=1.0)

    assert len(posts) == 1
    with pytest.raises(AssertionError):
        await standin.wait_for_posts(2, timeout=0.05)


# ------------------------------------------------------------------------------------- secrets


async def test_password_never_appears_in_errors_or_logs(
    make_client: MakeClient, standin: EvoVoiceStandIn, caplog: pytest.LogCaptureFixture,
    refused_port: int,
) -> None:
    caplog.set_level(logging.DEBUG)
    # A server that echoes the password back must not get it shown to users.
    standin.queue_outgoing(ErrorStatus(400, f"bad password {PASSWORD}"), DropConnection())
    standin.queue("GET", "/flows", ErrorStatus(503), ErrorStatus(503))
    client = make_client()
    unreachable = make_client(base_url=f"http://127.0.0.1:{refused_port}")
    attempts: list[Callable[[], Awaitable[object]]] = [
        lambda: client.create_outgoing_session("flow-esc", CUSTOMER),
        lambda: client.create_outgoing_session("flow-esc", CUSTOMER),
        lambda: client.list_flows([ACCOUNT]),
        lambda: make_client(password="wrong").auth_status(),
        lambda: unreachable.create_outgoing_session("flow-esc", CUSTOMER),
    ]
    errors: list[EvoVoiceError] = []
    for attempt in attempts:
        with pytest.raises(EvoVoiceError) as caught:
            await attempt()
        errors.append(caught.value)

    assert [type(e) for e in errors] == [
        BadRequest,
        OutcomeUnknown,
        ServerError,
        BadLogin,
        EvoVoiceUnreachable,
    ]
    basic = base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
    for error in errors:
        for text in (str(error), repr(error), error.message, repr(vars(error))):
            assert PASSWORD not in text
            assert basic not in text
    assert PASSWORD not in caplog.text
    assert basic not in caplog.text


async def test_client_log_has_no_phone_numbers_or_query_strings(
    client: EvoVoiceClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bot.evovoice.client")

    await client.create_outgoing_session("flow-esc", CUSTOMER, caller_id=OWNED)
    await client.find_sessions([ACCOUNT], to=CUSTOMER, since=LONG_AGO)

    own = [r.getMessage() for r in caplog.records if r.name == "bot.evovoice.client"]
    assert any("POST /sessions/outgoing -> 200" in line for line in own)
    assert any("GET /sessions -> 200" in line for line in own)
    for line in own:
        assert "4043093" not in line
        assert "5550100" not in line
        assert "?" not in line


async def test_client_log_names_no_number_when_things_go_wrong_either(
    client: EvoVoiceClient, standin: EvoVoiceStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bot.evovoice")
    # A lookup whose answers are lost, one the server can't sort, one of an unexpected shape.
    standin.queue("GET", "/sessions", DropConnection(), DropConnection())
    with pytest.raises(EvoVoiceTimeout):
        await client.find_sessions([ACCOUNT], to=CUSTOMER, since=LONG_AGO)
    standin.sort_refused = True
    await client.find_sessions([ACCOUNT], to=CUSTOMER, since=LONG_AGO)
    # (twice: found nothing, the number is looked up again without its plus)
    oddly = Answered({"items": [{"toAddress": CUSTOMER}]})
    standin.queue("GET", "/sessions", oddly, oddly)
    odd = await client.find_sessions([ACCOUNT], to=CUSTOMER, since=LONG_AGO)
    assert odd == [] and not odd.complete  # left out, and it might have been the one looked for
    # A poll the listing leaves out, read alone.
    session = standin.add_session(toAddress=CUSTOMER)
    standin.omitted_from_listings.add(session["id"])
    await client.poll_session(session["id"], [ACCOUNT])

    own = [r.getMessage() for r in caplog.records if r.name.startswith("bot.evovoice")]
    assert any("failed: RemoteProtocolError" in line for line in own)
    assert any("refused sortField" in line for line in own)
    assert any("1 item(s) of an unexpected shape" in line for line in own)
    assert any("polling it on its own" in line for line in own)
    for line in own:
        assert "4043093" not in line, line
        assert "?" not in line, line


# -------------------------------------------------------------------------------- pure helpers


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    later = datetime.now(UTC) + timedelta(seconds=120)

    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    from_date = parse_retry_after(format_datetime(later, usegmt=True))
    assert from_date is not None and 60 < from_date <= 120
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


async def test_respond_is_the_default_behaviour(
    client: EvoVoiceClient, standin: EvoVoiceStandIn
) -> None:
    standin.queue_outgoing(Respond())

    placed = await client.create_outgoing_session("flow-esc", CUSTOMER)

    assert placed.session is not None


def test_the_other_host_is_staging_for_production_and_back() -> None:
    # Where a refused login is tried too, to say "your login works at …" (bot/services.py).
    assert other_host("https://evovoice.io/") == "https://team.evovoice.io"
    assert other_host("https://Team.EvoVoice.io") == "https://evovoice.io"
    assert other_host("https://evo.example.com") is None


def test_servicestack_dates_and_nulls_are_read_as_sent() -> None:
    # A DateTime never set comes as .NET's MinValue or the epoch: no date, in either form.
    for unset in ("0001-01-01T00:00:00", "1970-01-01T00:00:00Z", "/Date(0)/", "/Date(0-0000)/"):
        assert parse_timestamp(unset) is None, unset
    assert parse_timestamp("/Date(1700000000000-0500)/") == datetime(2023, 11, 14, 22, 13, 20,
                                                                    tzinfo=UTC)
    assert parse_timestamp("2026-11-30T14:00:00") == datetime(2026, 11, 30, 14, tzinfo=UTC)
    # ServiceStack may send null for a false flag.
    assert Session.model_validate({"id": "s1", "ended": None}).ended is False


def test_a_sessions_address_names_the_number_in_any_form_but_never_another_number() -> None:
    # toAddress's form is unknown (docs/evovoice-api.md names the field only).
    for address in (CUSTOMER, "18144043093", "tel:+18144043093", "TEL:+1-814-404-3093",
                    "sip:+18144043093@sip.example.com;user=phone", "+1 (814) 404-3093"):
        assert is_address_of(address, CUSTOMER), address
    # A national form may be another country's number; an extension is another line.
    for address in ("8144043093", "+181440430930", "tel:+18144043093;ext=12", "tel:", "", None,
                    "support@example.com"):
        assert not is_address_of(address, CUSTOMER), address


def test_a_placed_calls_answer_may_name_its_session_by_session_id_alone() -> None:
    # The answer's type is undeclared (docs/evovoice-api.md): an id is taken wherever it is.
    for body in ({"sessionId": "sess-9"}, {"session": {"sessionId": "sess-9"}}, {"sessionId": 9}):
        expected = str(body.get("sessionId", "sess-9"))
        assert parse_call_placed(httpx.Response(200, json=body)).session_id == expected
    # An empty or blank id names no session: the call is looked up instead.
    for blank in ({"sessionId": ""}, {"sessionId": " "}, {"id": " ", "toAddress": CUSTOMER}):
        assert parse_call_placed(httpx.Response(200, json=blank)).session_id is None, blank


@pytest.mark.parametrize("status", [502, 503, 504])
async def test_get_is_retried_once_on_each_gateway_status(
    client: EvoVoiceClient, standin: EvoVoiceStandIn, status: int
) -> None:
    standin.queue("GET", "/flows", ErrorStatus(status, "Gateway"), ErrorStatus(status, "Gateway"))

    with pytest.raises(ServerError):
        await client.list_flows([ACCOUNT])

    assert len(standin.requests_to("GET", "/flows")) == 2


async def test_get_answered_500_is_not_retried(
    client: EvoVoiceClient, standin: EvoVoiceStandIn
) -> None:
    # A 500 is the service failing, not a gateway between: asking again at once won't help.
    standin.queue("GET", "/flows", ErrorStatus(500, "Internal"))

    with pytest.raises(ServerError):
        await client.list_flows([ACCOUNT])

    assert len(standin.requests_to("GET", "/flows")) == 1


def test_retry_after_that_is_no_finite_number_or_a_date_without_zone_reads_safely() -> None:
    # "-0000" gives a date without a zone (read as UTC); nan and inf are floats but no wait.
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 -0000") == 0.0
    assert parse_retry_after("nan") is None
    assert parse_retry_after("inf") is None
