"""Lists whose items come in shapes the evidence does not rule out (docs/evovoice-api.md: the
flows' fields are named, their types are not): one odd item must not stop every call."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bot.calls.store import FINAL_STATES
from bot.standins.evovoice import Acted, DropConnection, EvoVoiceStandIn
from tests.conftest import BotFactory
from tests.follow_helpers import FAST, FULL, services


@pytest.mark.parametrize("odd", [
    # A server writing its nulls (ServiceStack may: the client reads null lists so already).
    {"id": "flow-draft", "name": None, "description": None, "accountId": "acct-1"},
    # A name that is no text at all.
    {"id": "flow-draft", "name": {"en": "Draft"}, "accountId": "acct-1"},
], ids=["null-name", "object-name"])
async def test_a_flow_of_an_odd_shape_stops_no_call_with_another_flow(
    bot_factory: BotFactory, evo: EvoVoiceStandIn, odd: dict[str, Any]
) -> None:
    evo.flows.append(odd)
    bot = await bot_factory("http")
    await bot.command(f"{FULL} escalation")
    await bot.settle()
    assert [p.json["flowId"] for p in bot.evo.outgoing_posts] == ["flow-esc"]


async def test_a_session_of_an_odd_shape_hides_no_other_call_to_the_number(
    bot_factory: BotFactory,
) -> None:
    # An earlier call to the number whose outcome Evo Voice writes as an object (nothing says it
    # is text). A call to that number whose POST's answer is lost is looked up by the number: the
    # listing holds both, and the odd one must not fail the lookup, and the call end "not found"
    # while its phone rings.
    bot = await bot_factory("http", **{**FAST, "CALL_FIND_SECONDS": "0.5"})
    odd = bot.evo.add_session(toAddress=FULL, outcome={"code": 3, "text": "Busy"}, ended=True)
    bot.evo.queue_outgoing(Acted(DropConnection()))
    await bot.command(f"{FULL} escalation")
    await bot.evo.wait_for_posts(1)
    [placed] = [sid for sid in bot.evo.sessions if sid != odd["id"]]
    db = services(bot).db
    async with asyncio.timeout(10):
        while (row := await db.fetchone("SELECT session_id, state FROM calls")) is None or (
                row["session_id"] is None and row["state"] not in FINAL_STATES):
            await asyncio.sleep(0.01)
    assert row["session_id"] == placed and row["state"] not in FINAL_STATES, dict(row)
