"""Rate limits end to end: per person, per number, per day; kept in the database; refusals say
when."""

from __future__ import annotations

import asyncio
import re

import pytest

from bot.standins.evovoice import ErrorStatus
from tests.conftest import BotFactory, BotUnderTest
from tests.conftest import policy_with
from tests.databases import on_both_databases

US = "+18144043093"


def limited(**rules: str | int) -> str:
    """The test policy with some of its generous [policy] limits replaced."""
    return policy_with(**rules)


async def refusal(bot: BotUnderTest, text: str, user_id: str = "U0MANAGER") -> str:
    _, url = await bot.command(text, user_id=user_id)
    [answer] = await bot.slack.wait_for_response(url)
    await bot.settle()
    assert answer["response_type"] == "ephemeral"
    return str(answer["text"])


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_per_user_limit_refuses_and_says_when(bot_factory: BotFactory, mode: str) -> None:
    bot = await bot_factory(mode, policy=limited(per_user="2/10m"))
    for number in ("+18144043001", "+18144043002"):
        await bot.command(f"{number} escalation", user_id="U0ADMIN")
    await bot.settle()
    text = await refusal(bot, "+18144043003 escalation", user_id="U0ADMIN")
    assert "You have placed 2 calls in the last 10 minutes" in text
    assert re.search(r"You may call again in (10 min|9 min \d+ s)\.", text), text
    # A SystemAdministrator is limited like everybody: only the policy file changes limits.
    assert "per_user = \"2/10m\"" in text and "can't be lifted from Slack" in text
    assert len(bot.evo.outgoing_posts) == 2
    await bot.command("+18144043003 escalation", user_id="U0MANAGER")  # someone else may
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 3


@on_both_databases
async def test_per_number_limit_counts_every_requester(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http", policy=limited(per_number="2/1h"))
    await bot.command(f"{US} escalation", user_id="U0MANAGER")
    await bot.command(f"{US} escalation", user_id="U0ADMIN")
    await bot.settle()
    text = await refusal(bot, f"{US} wake-up-call", user_id="U0LEAD1")
    assert "+1 814 ••• 3093 has been called 2 times in the last hour" in text
    assert len(bot.evo.outgoing_posts) == 2


async def test_per_day_limit_counts_all_calls(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http", policy=limited(per_day=2))
    await bot.command("+18144043001 escalation", user_id="U0MANAGER")
    await bot.command("+18144043002 escalation", user_id="U0ADMIN")
    await bot.settle()
    text = await refusal(bot, "+18144043003 escalation", user_id="U0LEAD1")
    assert "callbot has placed 2 calls in the last 24 hours" in text and "per_day = 2" in text
    assert len(bot.evo.outgoing_posts) == 2


@on_both_databases
@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_racing_requests_cannot_pass_the_last_slot(
    bot_factory: BotFactory, mode: str
) -> None:
    bot = await bot_factory(mode, policy=limited(per_user="3/10m"))
    await asyncio.gather(*(bot.command(f"+181440430{10 + i} escalation") for i in range(12)))
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 3


async def test_refused_requests_do_not_use_up_the_limit(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http", policy=limited(per_user="1/10m"))
    await refusal(bot, "+1 900 555 0123 escalation")  # premium rate: refused by policy
    await refusal(bot, f"{US} no-such-flow")
    await bot.command(f"{US} escalation")
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 1


async def test_a_call_that_certainly_failed_gives_its_slot_back(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http", policy=limited(per_user="1/10m"))
    bot.evo.queue_outgoing(ErrorStatus(400, "Flow is disabled"))
    await bot.command(f"{US} escalation")
    await bot.settle()
    await bot.command(f"{US} escalation")  # not a repeat either: the first never rang
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 2
    assert "Call placed" in bot.slack.calls_to("chat.postMessage")[-1].params["text"]


async def test_a_call_whose_outcome_is_unknown_keeps_its_slot(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http", policy=limited(per_user="1/10m"))
    bot.evo.queue_outgoing(ErrorStatus(500))
    await bot.command(f"{US} escalation")
    await bot.settle()
    text = await refusal(bot, "+18144043094 escalation")
    assert "You have placed 1 call in the last 10 minutes" in text
    assert len(bot.evo.outgoing_posts) == 1


@on_both_databases
async def test_limits_hold_across_a_restart(bot_factory: BotFactory) -> None:
    policy = limited(per_number="1/10m")
    bot = await bot_factory("http", policy=policy)
    await bot.command(f"{US} escalation")
    await bot.settle()
    await bot.runtime.stop()
    bot = await bot_factory("socket", policy=policy)  # the same database
    text = await refusal(bot, f"{US} escalation", user_id="U0ADMIN")
    assert "has been called 1 time in the last 10 minutes" in text
    assert len(bot.evo.outgoing_posts) == 1


async def test_a_confirmed_call_still_meets_the_limits(bot_factory: BotFactory) -> None:
    from tests.interactions import ask, click

    bot = await bot_factory("http", policy=limited(per_user="1/10m"))
    question = await ask(bot, "+14165550123 escalation")  # asks: no slot taken yet
    await bot.command(f"{US} escalation")
    await bot.settle()
    _, url = await click(bot, question)
    answers = await bot.slack.wait_for_response(url, n=2)
    await bot.settle()
    assert "You have placed 1 call" in answers[1]["text"]
    assert len(bot.evo.outgoing_posts) == 1


async def test_the_database_holds_no_phone_numbers(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http")
    await bot.command(f"{US} escalation")
    await bot.settle()
    db = bot.runtime.services.db  # type: ignore[union-attr]
    rows = await db.fetchall("SELECT * FROM rate_events")
    assert len(rows) == 1
    assert "4043093" not in repr([tuple(r) for r in rows])


@on_both_databases
async def test_a_refusal_by_several_limits_says_when_the_last_of_them_lets_a_call_through(
    bot_factory: BotFactory,
) -> None:
    # Both the requester's own limit (free again in 10 minutes) and the day's (free again in 24
    # hours) are full: "You may call again in 10 min" would send them back to another refusal.
    bot = await bot_factory("http", policy=limited(per_user="1/10m", per_day=2))
    await bot.command("+18144043001 escalation", user_id="U0MANAGER")
    await bot.command("+18144043002 escalation", user_id="U0ADMIN")
    await bot.settle()
    text = await refusal(bot, "+18144043003 escalation", user_id="U0MANAGER")
    assert "callbot has placed 2 calls in the last 24 hours" in text, text
    assert re.search(r"You may call again in (24 h|23 h \d+ min)\.", text), text
    assert len(bot.evo.outgoing_posts) == 2


@pytest.mark.parametrize(
    "second", [f"{US} escalation", "+14165550123 escalation"], ids=["repeat", "faraway"])
async def test_no_question_is_asked_whose_yes_a_full_limit_would_refuse(
    bot_factory: BotFactory, second: str
) -> None:
    """The person's own limit is full: calling the same number again (the repeat question) or a
    number abroad (the region question) is refused at once with when they may call again, not
    asked first and refused after their Yes."""
    bot = await bot_factory("http", policy=limited(per_user="1/10m"))
    await bot.command(f"{US} escalation")
    await bot.settle()
    text = await refusal(bot, second)
    assert "You have placed 1 call in the last 10 minutes" in text, text
    assert "You may call again in" in text
    assert len(bot.evo.outgoing_posts) == 1
