"""A responder without a role has a limit of their own (`[oncall] escalations_per_person`), and it
holds against submissions racing each other (two tabs, a double submit): it is counted as the
escalation's row is written, so however many forms arrive together, at most `count` escalations
start; each of the others is told, in words, and rings nobody. On both databases."""

from __future__ import annotations

import asyncio

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.listeners import escalation as escalation_listener
from bot.oncall.escalation_form import EscalationField
from bot.oncall.roster import PhoneBook
from tests.conftest import BotFactory, BotUnderTest
from tests.databases import on_both_databases
from tests.escalations import ALICE, ROSTER, metrics_text, open_on_message, start, submit
from tests.follow_helpers import everything_sent_to_slack, services

DEVELOPER = "U0DEV"  # a full member of the workspace, no role, not in the rotation
TOO_MANY = "You have started 2 escalations in the last hour"
TOO_MANY_1 = "You have started 1 escalation in the last hour"


async def started_by(bot: BotUnderTest, user_id: str) -> int:
    rows = await services(bot).db.fetchall(
        "SELECT id FROM escalations WHERE requester_id = ?", (user_id,))
    return len(rows)


@on_both_databases
async def test_racing_submissions_by_someone_without_a_role_start_no_more_than_their_limit(
    bot_factory: BotFactory,
) -> None:
    bot, _ = await start(bot_factory, policy=ROSTER + 'escalations_per_person = "2/1h"\n')
    forms = [(await open_on_message(bot, text=f"down {n}", user_id=DEVELOPER))[0]
             for n in range(5)]
    # Each Escalate asks Slack afresh whether they hold a role through a user group; Slack answers
    # all five at once, so every one is checked before any escalation is written.
    services(bot).access.forget_groups()
    gate = bot.slack.hold("usergroups.users.list")
    submitting = asyncio.gather(*(submit(bot, form, user_id=DEVELOPER) for form in forms))
    await gate.wait_until_held()
    # Only for today's code to fail reliably: the other four reach the same (shared) question
    # meanwhile. Whatever the interleaving, the assertions below hold for the fixed code.
    await asyncio.sleep(0.2)
    gate.open()
    answers = await submitting
    await bot.settle()

    assert await started_by(bot, DEVELOPER) == 2
    refused = [a for a in answers if a != {}]
    in_form = [a for a in refused if TOO_MANY in a["errors"][EscalationField.REASON]]
    # A refusal that came after its form had closed is told privately instead.
    privately = everything_sent_to_slack(bot).count(TOO_MANY)
    assert len(in_form) + privately == 3, (answers, privately)
    assert 'rate_limit_refusals_total{limit="escalations_per_person"} 3.0' in metrics_text(bot)
    await bot.evo.wait_for_posts(2)
    await bot.settle()
    assert [str(p.json["numberToDial"]) for p in bot.evo.outgoing_posts] == [ALICE, ALICE]


@on_both_databases
async def test_a_form_refused_as_it_began_stays_usable_once_the_window_has_room(
    bot_factory: BotFactory,
) -> None:
    """The refused form stays open, and nothing was started from it: pressing Escalate on it once
    the window has room starts the escalation (it is not taken for a repeat)."""
    bot, clock = await start(bot_factory, policy=ROSTER + 'escalations_per_person = "2/1h"\n')
    forms = [(await open_on_message(bot, text=f"down {n}", user_id=DEVELOPER))[0]
             for n in range(3)]
    services(bot).access.forget_groups()
    gate = bot.slack.hold("usergroups.users.list")
    submitting = asyncio.gather(*(submit(bot, form, user_id=DEVELOPER) for form in forms))
    await gate.wait_until_held()
    await asyncio.sleep(0.2)
    gate.open()
    answers = await submitting
    [(form, answer)] = [(f, a) for f, a in zip(forms, answers, strict=True) if a != {}]
    assert TOO_MANY in answer["errors"][EscalationField.REASON]
    clock.advance(3601)
    assert await submit(bot, form, user_id=DEVELOPER) == {}
    await bot.evo.wait_for_posts(3)
    await bot.settle()
    assert await started_by(bot, DEVELOPER) == 3


@on_both_databases
async def test_a_refusal_that_comes_after_the_form_closed_is_told_privately(
    bot_factory: BotFactory, client: AsyncWebClient, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both forms pass the form's check and are closed before either escalation is written (the
    order of people waits on Slack for a profile's phone number past the ack's budget): the one
    refused as its row is written is told through its message's response_url, nobody called."""
    # Slack holds the profile until the forms have closed, however long the ack's budget: 0.2 s
    # of it (the checks take far less), not 2 s of real time.
    monkeypatch.setattr(escalation_listener, "VALIDATION_BUDGET_SECONDS", 0.2)
    bot, _ = await start(bot_factory, policy=ROSTER + 'escalations_per_person = "1/1h"\n')
    forms = [(await open_on_message(bot, text=f"down {n}", user_id=DEVELOPER))[0]
             for n in range(2)]
    policy = services(bot).policy
    # Carol's number comes from her Slack profile, no longer cached, and Slack is slow to give it.
    services(bot).oncall.phones = PhoneBook(client, policy.people, policy.dial_policy)
    profile = bot.slack.hold("users.info", when=lambda c: c.params.get("user") == "U0CAROL")
    answers = await asyncio.gather(*(submit(bot, form, user_id=DEVELOPER) for form in forms))
    assert answers == [{}, {}]  # closed: nothing refused them within the ack's budget
    profile.open()
    await bot.evo.wait_for_posts(1)
    await bot.settle()
    assert await started_by(bot, DEVELOPER) == 1
    told = [body for bodies in bot.slack.responses.values() for body in bodies
            if TOO_MANY_1 in str(body.get("text"))]
    assert len(told) == 1 and told[0].get("response_type") != "in_channel", told
    assert 'rate_limit_refusals_total{limit="escalations_per_person"} 1.0' in metrics_text(bot)
    assert [str(p.json["numberToDial"]) for p in bot.evo.outgoing_posts] == [ALICE]


@on_both_databases
async def test_the_refusal_says_when_another_escalation_may_be_started_and_it_may(
    bot_factory: BotFactory,
) -> None:
    """Escalations at 0 and 10 min, a third asked at 20 min: the first leaves the hour 40 min
    later, when a third may start, told in the refusal rather than left to guess at 3 a.m. The
    window is counted as the calls' limits count theirs: an escalation started exactly a window
    ago no longer counts, so at the very second the refusal named another starts, rather than
    being refused again with "in 1 s"."""
    bot, clock = await start(bot_factory, policy=ROSTER + 'escalations_per_person = "2/1h"\n')
    for n in range(2):
        form, _ = await open_on_message(bot, text=f"down {n}", user_id=DEVELOPER)
        assert await submit(bot, form, user_id=DEVELOPER) == {}
        clock.advance(600)
    form, _ = await open_on_message(bot, text="down 2", user_id=DEVELOPER)
    answer = await submit(bot, form, user_id=DEVELOPER)
    words = answer["errors"][EscalationField.REASON]
    assert TOO_MANY in words and "you may start another in 40 min" in words, words
    assert await started_by(bot, DEVELOPER) == 2
    clock.advance(2400)
    assert await submit(bot, form, user_id=DEVELOPER) == {}
    await bot.settle()
    assert await started_by(bot, DEVELOPER) == 3
