"""The Evo Voice stand-in follows the evidence (docs/evovoice-api.md) where a client could slip,
and the bot's client keeps clear of each trap."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta

import httpx
import pytest

from bot.evovoice.client import BadRequest, EvoVoiceClient, MalformedResponse
from bot.evovoice.requester import USER_AGENT, basic_authorization
from bot.standins.evovoice import EvoVoiceStandIn

USERNAME, PASSWORD = "bot@example.com", "secret"
CUSTOMER = "+18144043093"
OWNED, OTHER_ACCOUNTS = "+18145550100", "+18145550199"
HONEST = {"User-Agent": USER_AGENT, "Authorization": basic_authorization(USERNAME, PASSWORD)}


@pytest.fixture
async def standin() -> AsyncIterator[EvoVoiceStandIn]:
    async with EvoVoiceStandIn(
        username=USERNAME, password=PASSWORD, accounts=[("acct-1", "Ops"), ("acct-2", "Sales")]
    ) as server:
        server.flows.append({"id": "flow-esc", "name": "Escalation", "accountId": "acct-1"})
        server.phone_numbers += [
            {"id": "ep-1", "phoneNumber": OWNED, "accountId": "acct-1"},
            {"id": "ep-2", "phoneNumber": OTHER_ACCOUNTS, "accountId": "acct-2"},
        ]
        yield server


@pytest.fixture
async def client(standin: EvoVoiceStandIn) -> AsyncIterator[EvoVoiceClient]:
    async with EvoVoiceClient(base_url=standin.url, username=USERNAME, password=PASSWORD) as evo:
        yield evo


async def test_json_only_for_a_client_that_asks_for_it(
    standin: EvoVoiceStandIn, client: EvoVoiceClient
) -> None:
    async with httpx.AsyncClient(base_url=standin.url, headers=HONEST) as http:
        page = await http.get("/auth/status")
        asked = await http.get("/auth/status", params={"format": "json"})
    assert page.headers["Content-Type"].startswith("text/html")
    assert asked.json()["isAuthenticated"] is True
    assert (await client.auth_status()).is_authenticated  # the bot asks with Accept


async def test_a_body_that_is_not_typed_as_json_is_not_read(standin: EvoVoiceStandIn) -> None:
    session = standin.add_session(toAddress=CUSTOMER, callState="Connected")
    async with httpx.AsyncClient(base_url=standin.url, headers=HONEST) as http:
        await http.patch(f"/sessions/{session['id']}", content=b'{"callState": "Disconnected"}',
                         headers={"Accept": "application/json", "Content-Type": "text/plain"})
    assert standin.sessions[session["id"]]["ended"] is False


async def test_a_caller_id_of_another_account_is_refused(client: EvoVoiceClient) -> None:
    # The flow runs in acct-1: the caller ID must be one of acct-1's numbers.
    with pytest.raises(BadRequest):
        await client.create_outgoing_session("flow-esc", CUSTOMER, caller_id=OTHER_ACCOUNTS)
    placed = await client.create_outgoing_session("flow-esc", CUSTOMER, caller_id=OWNED)
    assert placed.session is not None and placed.session.from_address == OWNED


async def test_delete_sessions_without_an_id_deletes_them_all_and_the_client_never_sends_it(
    standin: EvoVoiceStandIn, client: EvoVoiceClient
) -> None:
    standin.add_session(toAddress=CUSTOMER)
    with pytest.raises(ValueError):
        await client.hang_up("")
    # Path segments a URL drops: DELETE /sessions/. would be sent as DELETE /sessions.
    for dots in (".", ".."):
        with pytest.raises(MalformedResponse):
            await client.hang_up(dots)
    # Nothing but spaces and dots names no session either, and a server that trims a path
    # segment's trailing dots and spaces as Windows trims a file name's would read /sessions/.
    for blank in (" ", "\t", "...", ". ."):
        with pytest.raises(MalformedResponse):
            await client.hang_up(blank)
    assert standin.requests == [] and len(standin.sessions) == 1
    async with httpx.AsyncClient(base_url=standin.url, headers=HONEST) as http:
        assert (await http.delete("/sessions")).status_code == 204
    assert standin.sessions == {}


async def test_a_start_date_that_is_no_date_is_refused_and_the_bot_sends_a_date(
    standin: EvoVoiceStandIn, client: EvoVoiceClient
) -> None:
    async with httpx.AsyncClient(base_url=standin.url, headers=HONEST) as http:
        refused = await http.get("/sessions", params={"startDate": "yesterday"},
                                 headers={"Accept": "application/json"})
    assert refused.status_code == 400
    since = datetime.now(UTC)
    standin.add_session(toAddress=CUSTOMER)
    await client.find_sessions(["acct-1"], to=CUSTOMER, since=since - timedelta(minutes=1))
    sent = standin.requests_to("GET", "/sessions")[-1].query["startDate"]
    assert date.fromisoformat(sent) < since.date()


async def test_a_stand_in_stopped_keeping_its_port_refuses_connections_and_serves_on_it_again(
    standin: EvoVoiceStandIn,
) -> None:
    """Down, then back at the same address: meanwhile nobody else can take the port (a test of
    another worker, an outgoing connection), which would make the restart fail."""
    url = standin.url
    port = httpx.URL(url).port
    assert port is not None
    await standin.stop(keep_port=True)
    async with httpx.AsyncClient(headers=HONEST) as http:
        with pytest.raises(httpx.ConnectError):  # refused, as by a server that is down
            await http.get(f"{url}/auth/status")
        other = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        with other, pytest.raises(OSError):
            other.bind(("127.0.0.1", port))
        await standin.start(port=port)
        assert standin.url == url
        assert (await http.get(f"{url}/auth/status")).status_code == 200


@pytest.mark.parametrize(("offset", "suffix"), [(None, ""), (timedelta(hours=-5), "-0500"),
                                                (timedelta(hours=5, minutes=45), "+0545")])
async def test_session_dates_in_servicestack_s_default_form_name_the_moment(
    standin: EvoVoiceStandIn, offset: timedelta | None, suffix: str
) -> None:
    standin.session_dates_form, standin.session_dates_offset = "wcf", offset
    session = standin.add_session(toAddress=CUSTOMER, dateCreated="2026-12-01T12:00:00.250Z",
                                  dateCompleted="0001-01-01T00:00:00")
    async with httpx.AsyncClient(base_url=standin.url, headers=HONEST) as http:
        alone = (await http.get(f"/sessions/{session['id']}", params={"format": "json"})).json()
        listed = (await http.get("/sessions", params={"format": "json"})).json()["items"][0]
    moment = int(datetime(2026, 12, 1, 12, 0, 0, 250000, tzinfo=UTC).timestamp() * 1000)
    for shown in (alone, listed):
        assert shown["dateCreated"] == f"/Date({moment}{suffix})/"
        assert shown["dateCompleted"] == "0001-01-01T00:00:00"  # a placeholder is left as it is


async def test_session_dates_of_no_zone_in_servicestack_s_form_are_off_by_their_zone(
    standin: EvoVoiceStandIn,
) -> None:
    # ServiceStack.Text's ToUnixTimeMs takes a DateTime of unspecified kind for the server
    # process's local time: a naive time at UTC-5, written by a process on UTC, comes 5 h early.
    standin.session_dates_form = "wcf_unspecified"
    standin.session_dates_offset = timedelta(hours=-5)
    session = standin.add_session(toAddress=CUSTOMER, dateCreated="2026-12-01T12:00:00.250Z")
    async with httpx.AsyncClient(base_url=standin.url, headers=HONEST) as http:
        alone = (await http.get(f"/sessions/{session['id']}", params={"format": "json"})).json()
    wall = int(datetime(2026, 12, 1, 7, 0, 0, 250000, tzinfo=UTC).timestamp() * 1000)
    assert alone["dateCreated"] == f"/Date({wall}-0000)/"
