"""A write that committed but whose answer was lost (the connection dropped after COMMIT, a
PostgreSQL failover) is tried again. A claim is granted again to its holder: the page, the step's
call and the words it guards are done once, not by nobody (bot/storage/claims.py). An escalation's
end decided by such a write is found over by the retry, and shown and said all the same. On both
databases."""

from __future__ import annotations

from typing import Any

import pytest

from bot.oncall.escalation_store import EscalationState
from tests.claim_faults import AnswerLost, CommitAnswerLost
from tests.conftest import BotFactory, BotUnderTest
from tests.databases import on_both_databases
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
    wait_for_post,
    wait_for_state,
)
from tests.follow_helpers import audit_records, services
from tests.interactions import ask
from tests.interactions import click as click_question

# Work waiting for the database to answer tries again within 0.01 s, not the bot's 0.5 s.
pytestmark = pytest.mark.usefixtures("database_retried_quickly")


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


def _losing_the_answer_to(
    bot: BotUnderTest, monkeypatch: pytest.MonkeyPatch, state: EscalationState
) -> list[str]:
    """The escalation's first change to `state` commits and then loses its answer (a connection
    dropped after COMMIT); the states whose answers were lost."""
    store = services(bot).escalations.store
    real = store.set_state
    lost: list[str] = []

    async def set_state(escalation_id: int, before: Any, after: str, **values: Any) -> bool:
        changed = await real(escalation_id, before, after, **values)
        if after == state and not lost:
            lost.append(after)
            raise ConnectionError("connection lost after COMMIT")
        return changed

    monkeypatch.setattr(store, "set_state", set_state)
    return lost


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
    await wait_for_post(bot, "they are on it")  # told under the escalation's lease, as its end
    await bot.settle()
    assert sorted(fault.lost) == ["escalation:1:acknowledged", "escalation:1:end",
                                  "escalation:1:late-ack"]
    said = ["nobody came" if "Nobody acknowledged" in t else "on it" if "they are on it" in t
            else t for t in broadcasts(bot)]
    assert said == ["nobody came", "on it"]
    [record] = await audit_records(bot)  # Alice's call: her acknowledgement recorded once
    assert [e.actor_id for e in record.events if e.kind == "acknowledged"] == ["U0ALICE"]


@on_both_databases
async def test_an_end_whose_decision_lost_its_answer_is_shown_and_said_once(
    bot_factory: BotFactory, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nobody answered: the chain's change to "exhausted" commits, its answer is lost, and the
    # chain tries again; it finds the escalation over, and says so once all the same.
    bot, clock = await start(bot_factory, policy=ALICE_ONLY)
    lost = _losing_the_answer_to(bot, monkeypatch, EscalationState.EXHAUSTED)
    view, _ = await open_on_message(bot)
    await submit(bot, view)
    card = await escalation_message(bot)
    await page_of(bot, "U0ALICE")
    clock.advance(91)
    await wait_for_state(bot, EscalationState.EXHAUSTED)
    await wait_for_post(bot, "Nobody acknowledged the on-call escalation")
    await wait_for_edit(bot, card, ": nobody ")
    await bot.settle()
    assert lost == ["exhausted"]
    assert ["Nobody acknowledged" in t for t in broadcasts(bot)] == [True]


@on_both_databases
async def test_a_failure_whose_decision_lost_its_answer_is_told_once_with_its_reason(
    bot_factory: BotFactory, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The requester may no longer escalate: the chain's change to "failed" commits, its answer is
    # lost, and the chain tries again; it finds the escalation over, and tells why all the same.
    bot, clock = await start(bot_factory, policy=ROSTER + 'responders = ["S0ONCALL"]\n')
    bot.slack.usergroups["S0ONCALL"] = ["U0SRE"]
    lost = _losing_the_answer_to(bot, monkeypatch, EscalationState.FAILED)
    view, _ = await open_on_message(bot, user_id="U0SRE")
    await submit(bot, view, user_id="U0SRE")
    card = await escalation_message(bot)
    await page_of(bot, "U0ALICE")
    bot.slack.usergroups["S0ONCALL"] = []  # taken out of the group while Alice's phone rings
    services(bot).access.forget_groups()
    clock.advance(91)
    await wait_for_state(bot, EscalationState.FAILED)
    told = await wait_for_post(bot, "The on-call escalation stopped")
    assert told.params["text"] == ("⚠️ <@U0SRE> The on-call escalation stopped: <@U0SRE> is no "
                                   "longer allowed to escalate to on-call.")
    await wait_for_edit(bot, card, "could not go on.")
    await bot.settle()
    assert lost == ["failed"]
    posted = [str(c.params.get("text")) for c in bot.slack.calls_to("chat.postMessage") if c.ok]
    assert len([t for t in posted if "The on-call escalation stopped" in t]) == 1
    assert dialled(bot) == [ALICE]


@on_both_databases
async def test_a_confirmation_whose_answer_was_lost_can_be_clicked_again(
    bot_factory: BotFactory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Call under a question: the question is taken and the click claimed in one transaction,
    which commits and then loses its answer. The clicker is told nothing was dialled and to try
    again: the next click dials, once (not ignored as a second click of a question answered)."""
    bot = await bot_factory("http")
    question = await ask(bot, "+14165550123 escalation")  # Canada: asked first
    db = services(bot).db
    fault = CommitAnswerLost(db, "DELETE FROM pending_confirmations WHERE id")
    monkeypatch.setattr(db, "transaction", fault)
    _, url = await click_question(bot, question)
    [answer] = await bot.slack.wait_for_response(url, timeout=20)
    await bot.settle()
    assert fault.lost
    assert "could not write to its database, so nothing was dialled" in answer["text"]
    assert "Try again in a minute" in answer["text"]
    assert bot.evo.outgoing_posts == []
    _, url = await click_question(bot, question)
    await bot.evo.wait_for_posts(1)
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 1
    assert "Confirmed" in str(bot.slack.responses_to(url))
