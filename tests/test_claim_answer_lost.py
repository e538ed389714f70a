"""A claim whose write committed but whose answer was lost (the connection dropped after COMMIT, a
PostgreSQL failover) is tried again by its holder, and granted to it again: the page and the step's
call it guards are done once, not by nobody (bot/storage/claims.py). On both databases."""

from __future__ import annotations

import pytest

from tests.claim_faults import AnswerLost
from tests.conftest import BotFactory, BotUnderTest
from tests.databases import on_both_databases
from bot.oncall.escalation_store import EscalationState
from tests.escalations import (
    ALICE,
    ALICE_ONLY,
    ROSTER,
    Clock,
    broadcasts,
    click_ack,
    dialled,
    escalation_message,
    open_on_message,
    page_of,
    start,
    submit,
    wait_for_edit,
    wait_for_state,
)
from tests.follow_helpers import audit_records, services


async def _escalation_losing_the_answer_to(
    bot_factory: BotFactory, monkeypatch: pytest.MonkeyPatch, *keys: str, policy: str = ROSTER
) -> tuple[BotUnderTest, Clock, AnswerLost]:
    bot, clock = await start(bot_factory, policy=policy)
    claims = services(bot).claims
    fault = AnswerLost(claims, *keys)
    monkeypatch.setattr(claims, "claim", fault)
    view, _ = await open_on_message(bot)
    await submit(bot, view)
    await escalation_message(bot)
    return bot, clock, fault


@on_both_databases
async def test_a_step_and_its_page_whose_claims_lost_their_answers_are_dialled_and_sent_once(
    bot_factory: BotFactory, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    bot, _, fault = await _escalation_losing_the_answer_to(
        bot_factory, monkeypatch, "escalation:1:step:0", "escalation:1:step:0:page")
    await bot.evo.wait_for_posts(1, timeout=20)  # Alice's phone rings all the same
    page = await page_of(bot, "U0ALICE")  # and she is paged all the same
    assert "You are being paged" in (page.text or "")
    await bot.settle()
    assert sorted(fault.lost) == ["escalation:1:step:0", "escalation:1:step:0:page"]
    assert dialled(bot) == [ALICE]
    assert len([c for c in bot.slack.calls_to("chat.postMessage")
                if c.params.get("channel") == "U0ALICE"]) == 1


@on_both_databases
async def test_the_end_and_a_late_acknowledgement_whose_claims_lost_their_answers_are_told_once(
    bot_factory: BotFactory, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    bot, clock, fault = await _escalation_losing_the_answer_to(
        bot_factory, monkeypatch, "escalation:1:end", "escalation:1:late-ack",
        "escalation:1:acknowledged", policy=ALICE_ONLY)
    page = await page_of(bot, "U0ALICE")
    clock.advance(91)  # nobody answered
    await wait_for_state(bot, EscalationState.EXHAUSTED)
    await click_ack(bot, page, user_id="U0ALICE")  # late
    card = await escalation_message(bot)
    await wait_for_edit(bot, card, "<@U0ALICE> acknowledged at")
    await bot.settle()
    assert sorted(fault.lost) == ["escalation:1:acknowledged", "escalation:1:end",
                                  "escalation:1:late-ack"]
    said = ["nobody came" if "Nobody acknowledged" in t else "on it" if "they are on it" in t
            else t for t in broadcasts(bot)]
    assert said == ["nobody came", "on it"]
    [record] = await audit_records(bot)  # Alice's call: her acknowledgement recorded once
    assert [e.actor_id for e in record.events if e.kind == "acknowledged"] == ["U0ALICE"]
