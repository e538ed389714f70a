"""One running escalation per thread: a second Escalate to on-call on a message of a thread whose
chain is still paging starts nothing, rings nobody a second time, and tells its requester whose
escalation runs there (in the form while its ack waits, else privately). Decided as the row is
written, so it holds for submissions racing each other; on both databases."""

from __future__ import annotations

import asyncio

from bot.oncall.escalation_form import EscalationField
from bot.standins.slack import Message
from tests.conftest import BotFactory, BotUnderTest
from tests.databases import on_both_databases
from tests.escalations import (
    ALICE,
    CHANNEL,
    ROSTER,
    click_stop,
    dialled,
    escalation_message,
    open_on_message,
    start,
    submit,
    wait_for_state,
)
from tests.follow_helpers import everything_sent_to_slack, services

RUNNING_HERE = "escalation is still paging on-call in this thread"


async def escalations_in(bot: BotUnderTest, thread_ts: str) -> list[str]:
    rows = await services(bot).db.fetchall(
        "SELECT requester_id FROM escalations WHERE channel_id = ? AND thread_ts = ? ORDER BY id",
        (CHANNEL, thread_ts))
    return [str(row["requester_id"]) for row in rows]


async def refused_in_form(bot: BotUnderTest, message: Message, *, user_id: str) -> str:
    view, _ = await open_on_message(bot, on=message, user_id=user_id)
    answer = await submit(bot, view, user_id=user_id)
    assert answer.get("response_action") == "errors", answer
    return str(answer["errors"][EscalationField.REASON])


async def escalated_by_the_admin(bot_factory: BotFactory) -> tuple[BotUnderTest, Message]:
    """A bot whose admin escalated a message, Alice's phone ringing: the bot, the message."""
    bot, _ = await start(bot_factory)
    view, message = await open_on_message(bot, user_id="U0ADMIN")
    assert await submit(bot, view, user_id="U0ADMIN") == {}
    await bot.evo.wait_for_posts(1)
    return bot, message


@on_both_databases
async def test_a_second_escalation_of_the_same_message_is_refused_and_rings_nobody_again(
    bot_factory: BotFactory,
) -> None:
    bot, message = await escalated_by_the_admin(bot_factory)

    words = await refused_in_form(bot, message, user_id="U0MANAGER")

    # A form's error is plain text: no <@U…> markup in it.
    assert "Another responder's " + RUNNING_HERE in words and "Nobody else was called" in words
    assert "<@" not in words
    # The same person in a second tab is told it is their own.
    assert "Your " + RUNNING_HERE in await refused_in_form(bot, message, user_id="U0ADMIN")
    await bot.settle()
    assert dialled(bot) == [ALICE]
    assert await escalations_in(bot, message.ts) == ["U0ADMIN"]


@on_both_databases
async def test_a_reply_in_a_thread_being_escalated_is_refused_too(
    bot_factory: BotFactory,
) -> None:
    """The escalation goes in the message's thread: a reply's Escalate would page the same
    people in the same thread."""
    bot, _ = await start(bot_factory)
    view, root = await open_on_message(bot, text="checkout is down", user_id="U0ADMIN")
    assert await submit(bot, view, user_id="U0ADMIN") == {}
    await bot.evo.wait_for_posts(1)
    reply = bot.slack.add_message(CHANNEL, "still down", user="U0SOMEONE", thread_ts=root.ts)

    assert RUNNING_HERE in await refused_in_form(bot, reply, user_id="U0MANAGER")
    await bot.settle()
    assert dialled(bot) == [ALICE]


@on_both_databases
async def test_submissions_racing_on_one_message_start_one_chain(
    bot_factory: BotFactory,
) -> None:
    bot, _ = await start(bot_factory)
    message = bot.slack.add_message(CHANNEL, "db primary is down", user="U0SOMEONE")
    people = ["U0ADMIN", "U0MANAGER", "U0ADMIN"]  # the admin in two tabs
    forms = [(await open_on_message(bot, on=message, user_id=who))[0] for who in people]
    # Each Escalate asks Slack afresh whether the manager holds a role through a user group; held
    # until every submission has passed its other checks.
    services(bot).access.forget_groups()
    gate = bot.slack.hold("usergroups.users.list")
    submitting = asyncio.gather(*(submit(bot, form, user_id=who)
                                  for form, who in zip(forms, people, strict=True)))
    await gate.wait_until_held()
    await asyncio.sleep(0.2)
    gate.open()
    answers = await submitting
    await bot.evo.wait_for_posts(1)
    await bot.settle()

    assert len(await escalations_in(bot, message.ts)) == 1
    in_form = [a for a in answers if RUNNING_HERE in str(a.get("errors"))]
    privately = everything_sent_to_slack(bot).count(RUNNING_HERE)
    assert len(in_form) + privately == 2, (answers, privately)
    assert dialled(bot) == [ALICE]


@on_both_databases
async def test_once_the_chain_is_stopped_the_message_can_be_escalated_again(
    bot_factory: BotFactory,
) -> None:
    bot, message = await escalated_by_the_admin(bot_factory)
    card = await escalation_message(bot)
    await click_stop(bot, card, user_id="U0ADMIN")
    await wait_for_state(bot, "stopped")

    again, _ = await open_on_message(bot, on=message, user_id="U0MANAGER")
    assert await submit(bot, again, user_id="U0MANAGER") == {}
    await bot.evo.wait_for_posts(2)
    await bot.settle()
    assert await escalations_in(bot, message.ts) == ["U0ADMIN", "U0MANAGER"]
    assert dialled(bot) == [ALICE, ALICE]


async def test_escalations_of_messages_in_other_threads_both_run(bot_factory: BotFactory) -> None:
    bot, _ = await start(bot_factory, policy=ROSTER)
    first, _ = await open_on_message(bot, text="db primary is down", user_id="U0ADMIN")
    second, _ = await open_on_message(bot, text="payments are down", user_id="U0MANAGER")
    assert await submit(bot, first, user_id="U0ADMIN") == {}
    assert await submit(bot, second, user_id="U0MANAGER") == {}
    await bot.evo.wait_for_posts(2)
    await bot.settle()
    assert dialled(bot) == [ALICE, ALICE]
