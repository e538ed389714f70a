"""Lists whose items come in shapes the evidence does not rule out (docs/evovoice-api.md: the
flows' fields are named, their types are not): one odd item must not stop every call."""

from __future__ import annotations

from typing import Any

import pytest

from bot.standins.evovoice import EvoVoiceStandIn
from tests.conftest import BotFactory
from tests.follow_helpers import FULL


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
