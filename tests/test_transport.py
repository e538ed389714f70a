"""httpx over aiohttp: the errors keep the "nothing was sent" / "maybe sent" line the client's retry
rules stand on, and nothing is resent behind the client's back."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from aiohttp import web

from bot.evovoice.client import USER_AGENT, EvoVoiceClient, EvoVoiceUnreachable, OutcomeUnknown
from bot.evovoice.transport import AiohttpTransport
from bot.standins.evovoice import Delayed, DropConnection, EvoVoiceStandIn, Trickled

USER, PASSWORD = "bot@example.com", "secret"


@pytest.fixture
async def standin() -> AsyncIterator[EvoVoiceStandIn]:
    server = EvoVoiceStandIn(username=USER, password=PASSWORD)
    server.flows.append({"id": "flow-esc", "name": "Escalation", "accountId": "acct-1"})
    await server.start()
    yield server
    await server.stop()


def client_for(url: str, transport: AiohttpTransport, **timeouts: float) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=url, auth=(USER, PASSWORD), transport=transport,
        timeout=httpx.Timeout(5.0, **timeouts),
        # Evo Voice turns away library defaults, and answers JSON to a client asking for it.
        headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
    )


async def test_a_refused_connection_is_a_connect_error(refused_port: int) -> None:
    async with client_for(f"http://127.0.0.1:{refused_port}", AiohttpTransport()) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get("/auth/status")


async def test_the_evo_voice_client_retries_a_refused_connection_then_gives_up(
    refused_port: int,
) -> None:
    async def no_wait(seconds: float) -> None:
        await asyncio.sleep(0)

    evo = EvoVoiceClient(f"http://127.0.0.1:{refused_port}", USER, PASSWORD, sleep=no_wait)
    try:
        with pytest.raises(EvoVoiceUnreachable) as caught:
            await evo.create_outgoing_session("flow-esc", "+18144043093")
    finally:
        await evo.aclose()
    assert caught.value.attempts == 3


async def test_no_free_connection_in_time_is_a_connect_timeout_and_sends_nothing(
    standin: EvoVoiceStandIn,
) -> None:
    standin.queue("GET", "/auth/status", Delayed(30.0))
    async with client_for(standin.url, AiohttpTransport(max_connections=1), pool=0.2) as client:
        holding = asyncio.create_task(client.get("/auth/status"))
        await asyncio.wait_for(_until(lambda: len(standin.requests) == 1), 5)

        with pytest.raises(httpx.ConnectTimeout):
            await client.post("/sessions/outgoing", json={"flowId": "flow-esc"})

        holding.cancel()
        await asyncio.gather(holding, return_exceptions=True)
    assert standin.outgoing_posts == []


async def test_no_answer_after_sending_is_a_read_timeout(standin: EvoVoiceStandIn) -> None:
    standin.queue_outgoing(Delayed(30.0))
    async with client_for(standin.url, AiohttpTransport(), read=0.2) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post("/sessions/outgoing",
                              json={"flowId": "flow-esc", "numberToDial": "+18144043093"})
    assert len(standin.outgoing_posts) == 1


@pytest.mark.parametrize("reused", [False, True], ids=["new connection", "kept-alive connection"])
async def test_a_trickled_answer_is_cut_at_the_read_timeout_whole(
    standin: EvoVoiceStandIn, reused: bool
) -> None:
    """A byte every 0.05 s never trips a per-byte read timeout of 0.5 s; the whole answer's
    deadline, started once the connection is ready, does."""
    standin.queue("GET", "/auth/status", Trickled(seconds_per_byte=0.05))
    async with client_for(standin.url, AiohttpTransport(), read=0.5) as client:
        if reused:
            await client.get("/flows")
        with pytest.raises(httpx.ReadTimeout):
            # The whole answer would take several seconds; the cut comes after half of one.
            await asyncio.wait_for(client.get("/auth/status"), 3.0)


async def test_a_connection_dropped_after_sending_is_never_a_connect_error(
    standin: EvoVoiceStandIn,
) -> None:
    standin.queue_outgoing(DropConnection())
    async with client_for(standin.url, AiohttpTransport()) as client:
        with pytest.raises(httpx.TransportError) as caught:
            await client.post("/sessions/outgoing",
                              json={"flowId": "flow-esc", "numberToDial": "+18144043093"})
    assert not isinstance(caught.value, (httpx.ConnectError, httpx.ConnectTimeout))
    assert len(standin.outgoing_posts) == 1


async def test_a_request_on_a_dead_kept_alive_connection_is_not_resent(
    standin: EvoVoiceStandIn,
) -> None:
    session = standin.add_session(toAddress="+18144043093")
    path = f"/sessions/{session['id']}"
    standin.roles = ["Manager", "User"]  # EndSession requires User
    standin.queue("DELETE", path, DropConnection())
    async with client_for(standin.url, AiohttpTransport()) as client:
        await client.get("/auth/status")  # leaves a kept-alive connection for the DELETE
        with pytest.raises(httpx.TransportError):
            await client.delete(path)
    assert len(standin.requests_to("DELETE", path)) == 1


async def test_compressed_answers_are_decoded_once() -> None:
    body = json.dumps({"isAuthenticated": True}).encode()

    async def answer(request: web.Request) -> web.Response:
        return web.Response(body=gzip.compress(body), content_type="application/json",
                            headers={"Content-Encoding": "gzip"})

    app = web.Application()
    app.router.add_get("/auth/status", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with client_for(f"http://127.0.0.1:{port}", AiohttpTransport()) as client:
            response = await client.get("/auth/status")
    finally:
        await runner.cleanup()
    assert response.json() == {"isAuthenticated": True}


async def test_requests_go_through_the_proxy_the_environment_names(
    standin: EvoVoiceStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", standin.url)  # the stand-in serves the proxied request
    monkeypatch.setenv("NO_PROXY", "bypassed.invalid")
    transport = AiohttpTransport()
    async with client_for("http://evo.invalid", transport) as client:
        response = await client.get("/auth/status")
    async with client_for("http://bypassed.invalid", transport) as client:
        with pytest.raises(httpx.ConnectError):  # no proxy: the name itself must resolve
            await client.get("/auth/status")
    assert response.json()["isAuthenticated"] is True
    assert len(standin.requests_to("GET", "/auth/status")) == 1


async def test_a_proxy_refusing_the_connection_is_a_call_not_placed_rather_than_unknown(
    refused_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The request never reached Evo Voice: the requester must hear "nothing was dialled", not
    # "outcome unknown" (which tells them to search the call log before calling again).
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{refused_port}")

    async def no_wait(seconds: float) -> None:
        await asyncio.sleep(0)

    evo = EvoVoiceClient("http://evo.invalid", USER, PASSWORD, sleep=no_wait)
    try:
        with pytest.raises(EvoVoiceUnreachable):
            await evo.create_outgoing_session("flow-esc", "+18144043093")
    finally:
        await evo.aclose()


async def test_an_answer_that_is_not_http_is_maybe_sent_never_tried_again() -> None:
    # The request went out; what came back was no HTTP: the call may have been placed.
    received: list[bytes] = []

    async def garbled(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(garbled, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    async def no_wait(seconds: float) -> None:
        await asyncio.sleep(0)

    evo = EvoVoiceClient(f"http://127.0.0.1:{port}", USER, PASSWORD, sleep=no_wait)
    try:
        with pytest.raises(OutcomeUnknown):
            await evo.create_outgoing_session("flow-esc", "+18144043093")
    finally:
        await evo.aclose()
        server.close()
        await server.wait_closed()
    assert len(received) == 1


async def _until(check: Callable[[], bool]) -> None:
    while not check():
        await asyncio.sleep(0.01)
