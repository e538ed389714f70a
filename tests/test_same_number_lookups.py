"""Calls to one number close together, one of them of unknown outcome: each call keeps its own
session, whatever else a lookup by number lists (docs/evovoice-api.md: `to` is a "contains"
search, and a lookup lists every call to the number)."""

from __future__ import annotations

import asyncio

from bot.standins.evovoice import Acted, DropConnection, Gated
from tests.conftest import POLICY_NO_REPEAT_QUESTION, BotFactory, BotUnderTest
from tests.follow_helpers import FAST, FULL, services


async def session_of(bot: BotUnderTest, user_id: str) -> str | None:
    row = await services(bot).db.fetchone(
        "SELECT session_id FROM calls WHERE requester_id = ?", (user_id,))
    assert row is not None
    return row["session_id"]


async def until_placement_known(bot: BotUnderTest, user_id: str, timeout: float = 10.0) -> None:
    async def known() -> None:
        while (await services(bot).db.fetchone(
                "SELECT placement FROM calls WHERE requester_id = ?",
                (user_id,)))["placement"] == "dialling":
            await asyncio.sleep(0.01)

    await asyncio.wait_for(known(), timeout)


async def test_an_unconfirmed_call_is_not_given_a_later_call_to_the_same_number(
    bot_factory: BotFactory,
) -> None:
    # Two people page the same on-call number a moment apart. The first call's answer is lost
    # after Evo Voice placed it; the second is placed meanwhile and its answer is still on its
    # way when the first looks its session up. That lookup lists both calls to the number: the
    # newer one is the second call's, not the first's.
    bot = await bot_factory("http", policy=POLICY_NO_REPEAT_QUESTION, EVOVOICE_TIMEOUT="30",
                            **FAST)
    first, second = asyncio.Event(), asyncio.Event()
    bot.evo.queue_outgoing(Acted(Gated(first, DropConnection())), Acted(Gated(second)))
    await bot.command(f"{FULL} escalation", user_id="U0MANAGER")
    await bot.evo.wait_for_posts(1)
    await bot.command(f"{FULL} escalation", user_id="U0ADMIN")
    await bot.evo.wait_for_posts(2)
    first_session, second_session = bot.evo.sessions
    first.set()
    # The first call's row is filled in (with the session its lookup chose) before the second
    # call's answer comes.
    await until_placement_known(bot, "U0MANAGER")
    second.set()
    await bot.settle()
    assert await session_of(bot, "U0MANAGER") == first_session
    assert await session_of(bot, "U0ADMIN") == second_session
    assert len(bot.evo.outgoing_posts) == 2
