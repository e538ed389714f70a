"""Evo Voice answers that are slow, huge or ask for a long wait: the bot stays within its bounds.

EVOVOICE_TIMEOUT bounds a whole answer (not each byte of it), answers are read only up to a size,
and a Retry-After is obeyed only up to a ceiling.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from bot.evovoice.client import (
    MAX_RETRY_AFTER_SECONDS,
    EvoVoiceClient,
    EvoVoiceTimeout,
    MalformedResponse,
    OutcomeUnknown,
    RateLimited,
)
from bot.evovoice.transport import AiohttpTransport, AnswerTooLarge
from bot.standins.evovoice import EvoVoiceStandIn, Oversized, TooManyRequests, Trickled
from tests.conftest import EVO_PASSWORD, EVO_USER, FLOWS, BotFactory, BotUnderTest
from tests.follow_helpers import FAST, FULL, end_session, status_message, wait_for_edit

# A byte every tenth of a second: each pause well within the read timeouts below (0.5 s and
# 0.25 s), so a read timeout that starts again at every byte (aiohttp's own) never trips; the whole
# answer (176 bytes for /auth/status, as many for a placed call) takes seconds, far longer than the
# timeout, so a test could never pass by waiting it out.
TRICKLED = Trickled(seconds_per_byte=0.1)


def thread_replies(bot: BotUnderTest) -> list[str]:
    return [str(c.params.get("text")) for c in bot.slack.calls_to("chat.postMessage")
            if c.params.get("thread_ts")]


async def test_a_trickled_answer_to_a_call_is_cut_at_the_timeout(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http", EVOVOICE_TIMEOUT="0.5")
    bot.evo.queue_outgoing(TRICKLED)
    await bot.command(f"{FULL} escalation")
    # The answer would take minutes to arrive; the requester hears well before.
    await asyncio.wait_for(bot.settle(), 30)
    assert len(bot.evo.outgoing_posts) == 1
    [text] = thread_replies(bot)
    # The stand-in placed the call before trickling its answer: the bot finds it instead of
    # dialling again.
    [session_id] = bot.evo.sessions
    assert "Outcome unknown" in text and session_id in text


async def test_a_trickled_lookup_is_a_timeout(evo: EvoVoiceStandIn) -> None:
    evo.queue("GET", "/auth/status", TRICKLED, TRICKLED)
    # The GET's one more try comes after a pause that is no business of this test's.
    async with EvoVoiceClient(evo.url, EVO_USER, EVO_PASSWORD,
                              timeout=httpx.Timeout(0.25, connect=5.0),
                              retry_backoff=0.01) as client:
        with pytest.raises(EvoVoiceTimeout):
            await asyncio.wait_for(client.auth_status(), 30)
    assert len(evo.requests_to("GET", "/auth/status")) == 2  # a lookup is tried once more


# Compressed (the bot accepts gzip, as httpx does), 40 MB of JSON cross the wire in 40 KB: what is
# refused is an answer that large once decoded, not only one that large on the wire.
@pytest.mark.parametrize("encoding", [None, "gzip"])
async def test_a_huge_answer_is_refused_not_read(
    evo: EvoVoiceStandIn, encoding: str | None
) -> None:
    evo.queue("GET", "/flows", Oversized(40 * 1024 * 1024, encoding=encoding))
    async with EvoVoiceClient(evo.url, EVO_USER, EVO_PASSWORD) as client:
        with pytest.raises(MalformedResponse) as raised:
            await client.list_flows(["acct-1"])
        assert "too large" in raised.value.message
        # The next answer is read as usual.
        assert [f.id for f in await client.list_flows(["acct-1"])] == [f["id"] for f in FLOWS]
    assert len(evo.requests_to("GET", "/flows")) == 2  # a huge answer is not asked for twice


async def test_the_transport_stops_reading_past_its_limit(evo: EvoVoiceStandIn) -> None:
    evo.queue("GET", "/flows", Oversized(1024 * 1024), Oversized(1024 * 1024 + 1))
    transport = AiohttpTransport(max_answer_bytes=1024 * 1024)
    # Evo Voice turns away a library's own User-Agent: this one is the test's.
    async with httpx.AsyncClient(base_url=evo.url, auth=(EVO_USER, EVO_PASSWORD),
                                 headers={"User-Agent": "callbot-tests"},
                                 transport=transport) as http:
        assert len((await http.get("/flows")).content) == 1024 * 1024  # up to the limit: read
        with pytest.raises(AnswerTooLarge) as raised:  # a byte more: not
            await http.get("/flows")
    assert raised.value.status == 200


async def test_a_huge_answer_to_a_placed_call_is_still_a_placed_call(
    bot_factory: BotFactory,
) -> None:
    bot = await bot_factory("http", **FAST)
    bot.evo.queue_outgoing(Oversized(20 * 1024 * 1024))
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    # Accepted with a 200: placed (not "outcome unknown", as for a 5xx or a lost answer); its
    # session is looked up and followed, never dialled again.
    assert "Outcome unknown" not in str(status.text)
    [session_id] = bot.evo.sessions
    end_session(bot, session_id, after_seconds=30, outcome="Completed")
    await wait_for_edit(bot, status, "Ended")
    assert len(bot.evo.outgoing_posts) == 1


async def test_a_huge_error_answer_to_a_call_is_an_unknown_outcome(evo: EvoVoiceStandIn) -> None:
    # A 5xx may have placed the call (docs/evovoice-api.md, "Retrying safely"), however large its
    # body: never "try again", which could ring twice.
    evo.queue_outgoing(Oversized(20 * 1024 * 1024, status=502))
    async with EvoVoiceClient(evo.url, EVO_USER, EVO_PASSWORD) as client:
        with pytest.raises(OutcomeUnknown):
            await client.create_outgoing_session("flow-esc", FULL)
    assert len(evo.outgoing_posts) == 1


async def test_a_day_long_retry_after_is_read_as_the_ceiling(evo: EvoVoiceStandIn) -> None:
    evo.queue("GET", "/auth/status", TooManyRequests(retry_after="86400"))
    async with EvoVoiceClient(evo.url, EVO_USER, EVO_PASSWORD) as client:
        with pytest.raises(RateLimited) as raised:
            await client.auth_status()
    assert raised.value.retry_after == MAX_RETRY_AFTER_SECONDS


@pytest.mark.parametrize("status", [201, 202])
async def test_a_huge_answer_with_any_2xx_to_a_call_is_a_placed_call(
    evo: EvoVoiceStandIn, status: int
) -> None:
    # Any 2xx accepts the call (docs/evovoice-api.md, "Create a call"), however large its body.
    evo.queue_outgoing(Oversized(9 * 1024 * 1024, status=status))
    async with EvoVoiceClient(evo.url, EVO_USER, EVO_PASSWORD) as client:
        placed = await client.create_outgoing_session("flow-esc", FULL)
    assert placed.session_id is None  # its session is looked up, as for an empty answer
    assert len(evo.outgoing_posts) == 1
