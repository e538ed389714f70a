"""What the Evo Voice client sends and keeps on the wire, beyond what the stand-in's own host shows:
cookies a server hands out, redirects, and what a request says about itself."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from bot.evovoice.client import EvoVoiceClient, EvoVoiceStatusError, EvoVoiceUnreachable, Flow
from bot.evovoice.transport import AiohttpTransport
from bot.standins.evovoice import EvoVoiceStandIn, Gated, Redirected
from tests.conftest import until

USERNAME, PASSWORD = "bot@example.com", "secret"
ACCOUNT, CUSTOMER = "acct-1", "+18144043093"


async def no_sleep(seconds: float) -> None:
    pass


@pytest.fixture
async def standin() -> AsyncIterator[EvoVoiceStandIn]:
    server = EvoVoiceStandIn(username=USERNAME, password=PASSWORD)
    server.flows.append({"id": "flow-esc", "name": "Escalation", "accountId": ACCOUNT})
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def client(standin: EvoVoiceStandIn) -> AsyncIterator[EvoVoiceClient]:
    async with EvoVoiceClient(standin.url, USERNAME, PASSWORD, sleep=no_sleep,
                              timeout=httpx.Timeout(5.0, connect=2.0)) as evo:
        yield evo


async def test_cookies_a_named_host_sets_are_never_sent_back(standin: EvoVoiceStandIn) -> None:
    # The stand-in sets ss-id on every answer, as ServiceStack does. A cookie jar refuses cookies
    # from an IP address whatever it is told, so only a host name shows whether they are kept.
    url = standin.url.replace("127.0.0.1", "localhost")
    async with EvoVoiceClient(url, USERNAME, PASSWORD, sleep=no_sleep) as evo:
        await evo.auth_status()
        await evo.list_flows([ACCOUNT])

    assert [r.path for r in standin.requests] == ["/auth/status", "/flows"]
    assert "Cookie" not in standin.requests[1].headers


async def test_a_redirected_call_is_posted_once_and_not_followed(
    client: EvoVoiceClient, standin: EvoVoiceStandIn
) -> None:
    # A 307 asks for the same POST again: only the client decides what is sent twice.
    standin.queue_outgoing(Redirected("/sessions/outgoing", 307))

    with pytest.raises(EvoVoiceStatusError) as caught:
        await client.create_outgoing_session("flow-esc", CUSTOMER)

    assert caught.value.status == 307
    assert len(standin.outgoing_posts) == 1
    assert standin.sessions == {}


async def test_a_call_that_found_no_free_connection_in_time_is_tried_again_and_placed_once(
    standin: EvoVoiceStandIn,
) -> None:
    # Waiting too long for a connection is a connect timeout: nothing left, so it is tried again
    # (not "it may or may not have been placed").
    gate = asyncio.Event()
    standin.queue("GET", "/flows", Gated(gate))
    holding: list[asyncio.Task[list[Flow]]] = []
    waits: list[float] = []

    async def free_the_connection(seconds: float) -> None:
        waits.append(seconds)
        gate.set()
        await holding[0]

    async with EvoVoiceClient(
        standin.url, USERNAME, PASSWORD, sleep=free_the_connection,
        transport=AiohttpTransport(max_connections=1), timeout=httpx.Timeout(5.0, pool=0.2),
    ) as evo:
        holding.append(asyncio.create_task(evo.list_flows([ACCOUNT])))
        await until(lambda: len(standin.requests) == 1)

        placed = await evo.create_outgoing_session("flow-esc", CUSTOMER)

    assert waits == [0.5]
    assert len(standin.outgoing_posts) == 1
    assert placed.session_id in standin.sessions


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose listener's queue is full: the kernel drops further SYNs, so a connection to it
    never opens (a host behind a firewall that drops packets)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = [socket.socket() for _ in range(3)]
    for filler in fillers:
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
    yield port
    for filler in fillers:
        filler.close()
    listener.close()


async def test_a_connection_that_never_opens_is_given_up_at_the_connect_timeout(
    silent_port: int,
) -> None:
    # EVOVOICE_TIMEOUT bounds an answer; a connection that never opens is bounded by the connect
    # timeout, and tried again (nothing was sent), so a page is not held up for minutes.
    waits: list[float] = []

    async def no_wait(seconds: float) -> None:
        waits.append(seconds)

    async with EvoVoiceClient(f"http://127.0.0.1:{silent_port}", USERNAME, PASSWORD,
                              sleep=no_wait, timeout=httpx.Timeout(300.0, connect=0.2)) as evo:
        with pytest.raises(EvoVoiceUnreachable) as caught:
            # A guard against hanging, not a measure: each try gives up after 0.2 s.
            await asyncio.wait_for(evo.create_outgoing_session("flow-esc", CUSTOMER), 30)
    assert caught.value.attempts == 3
    assert waits == [0.5, 1.0]
