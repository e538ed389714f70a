""""Are you sure?" end to end: numbers outside the home region, and the same call within a minute.

The question is ephemeral, with a "Call" button whose value is only a random id; a click is a new
request (role and policy checked again) that dials at most once.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import generate_latest

from bot.calls.confirm_views import CANCEL_CALL_ACTION, CONFIRM_CALL_ACTION
from tests.conftest import POLICY, BotFactory, BotUnderTest, policy_with
from tests.databases import on_both_databases
from tests.interactions import ask, button, click

US = "+18144043093"
CANADA = "+14165550123"
CANADA_MASKED = "+1 416 ••• 0123"


def results(bot: BotUnderTest) -> list[str]:
    return [str(c.params["text"]) for c in bot.slack.calls_to("chat.postMessage")
            if c.params.get("thread_ts")]


async def test_number_outside_the_home_region_asks_before_dialling(bot: BotUnderTest) -> None:
    question = await ask(bot, f"{CANADA} escalation")
    assert question["response_type"] == "ephemeral"
    assert "Canada (CA)" in question["text"] and CANADA_MASKED in question["text"]
    assert "Escalation" in question["text"] and "Nothing has been dialled" in question["text"]
    assert "This question expires in 10 minutes." in question["text"]
    assert bot.evo.outgoing_posts == []
    assert bot.slack.calls_to("chat.postMessage") == []
    # The button carries an opaque id, not the number.
    value = button(question, CONFIRM_CALL_ACTION)["value"]
    assert "4165550123" not in value and "0123" not in value

    ack, url = await click(bot, question)
    assert ack.status == 200
    await bot.settle()
    [post] = bot.evo.outgoing_posts
    assert post.json["numberToDial"] == CANADA
    assert "Call placed" in results(bot)[0]
    # The question was replaced, so its buttons are gone.
    [answered] = bot.slack.responses_to(url)
    assert answered["replace_original"] is True and "Confirmed" in answered["text"]
    assert "blocks" not in answered or all(b["type"] != "actions" for b in answered["blocks"])


async def test_a_confirmed_call_dials_while_slack_is_slow_to_replace_its_question(
    bot_factory: BotFactory,
) -> None:
    # "Confirmed: checking again, then calling." goes alongside the dial: Slack slow to take it
    # (an incident's Slack) holds no call back, as no other message of a call does.
    bot = await bot_factory("http")
    question = await ask(bot, f"{CANADA} escalation")
    replacing = bot.slack.hold_responses(when=lambda body: "Confirmed" in str(body.get("text")))
    _, url = await click(bot, question)
    await replacing.wait_until_held()
    try:
        await bot.evo.wait_for_posts(1)
    finally:
        replacing.open()
    await bot.settle()
    [answered] = bot.slack.responses_to(url)
    assert answered["replace_original"] is True and "Confirmed" in answered["text"]
    assert "Call placed" in results(bot)[0]


async def test_home_region_numbers_are_dialled_without_asking(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http")
    await bot.command(f"{US} escalation")
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 1


async def test_confirm_outside_lists_the_regions_dialled_without_asking(
    bot_factory: BotFactory,
) -> None:
    bot = await bot_factory("http", policy=policy_with(confirm_outside=["US", "CA"]))
    await bot.command(f"{CANADA} escalation")
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 1


async def test_same_call_within_a_minute_asks_call_again(bot: BotUnderTest) -> None:
    await bot.command(f"{US} escalation")
    await bot.settle()
    question = await ask(bot, "(814) 404-3093 Escalation")  # the same number, written differently
    assert "You called this number" in question["text"] and "ago — call again?" in question["text"]
    # A number at home: only the repeat is asked about, so no word of regions.
    assert "calls outside" not in question["text"] and "United States" not in question["text"]
    assert len(bot.evo.outgoing_posts) == 1

    await click(bot, question)
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 2


async def test_another_flow_or_another_person_is_not_a_repeat(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http")
    await bot.command(f"{US} escalation")
    await bot.settle()
    await bot.command(f"{US} wake-up-call")
    await bot.command(f"{US} escalation", user_id="U0ADMIN")
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 3


async def test_a_repeat_to_a_faraway_number_is_one_question(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http")
    await click(bot, await ask(bot, f"{CANADA} escalation"))
    await bot.settle()
    question = await ask(bot, f"{CANADA} escalation")
    assert "You called this number" in question["text"] and "Canada" in question["text"]
    await click(bot, question)
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 2


@on_both_databases
async def test_double_clicks_and_redelivered_clicks_dial_once(bot: BotUnderTest) -> None:
    question = await ask(bot, f"{CANADA} escalation")
    value = button(question, CONFIRM_CALL_ACTION)["value"]
    clicks = [click(bot, question, value=value) for _ in range(4)]
    acks = await asyncio.gather(*clicks)
    assert all(ack.status == 200 for ack, _ in acks)
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 1
    # The copies go unnoticed: nobody is told their own call's question was "already answered".
    answers = [a["text"] for _, url in acks for a in bot.slack.responses_to(url)]
    assert sum("Confirmed" in a for a in answers) == 1
    assert not any("already answered" in a for a in answers)
    # Counted as what they are: the question, the call, and three copies of the click.
    counted = generate_latest(bot.runtime.metrics.registry).decode()
    for outcome, count in (("confirming", 1), ("placed", 1), ("duplicate", 3)):
        assert f'callbot_calls_total{{outcome="{outcome}"}} {count}.0' in counted, outcome


async def test_cancel_dials_nothing_and_the_question_cannot_be_used_after(
    bot: BotUnderTest,
) -> None:
    question = await ask(bot, f"{CANADA} escalation")
    _, url = await click(bot, question, CANCEL_CALL_ACTION)
    [answer] = await bot.slack.wait_for_response(url)
    assert "Cancelled" in answer["text"] and answer["replace_original"] is True
    _, url = await click(bot, question)
    [answer] = await bot.slack.wait_for_response(url)
    await bot.settle()
    assert "already answered or cancelled" in answer["text"]
    assert bot.evo.outgoing_posts == []


@on_both_databases
async def test_cancel_clicked_after_call_says_the_call_is_on_its_way(bot: BotUnderTest) -> None:
    # Call clicked by mistake, Cancel right after (the question still shows while Slack is slow
    # to replace it): too late, the call is placed. Told "nothing more was dialled", the person
    # would leave a wrong call ringing instead of hanging it up.
    question = await ask(bot, f"{CANADA} escalation")
    await click(bot, question)
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 1
    _, url = await click(bot, question, CANCEL_CALL_ACTION)
    [answer] = await bot.slack.wait_for_response(url)
    await bot.settle()
    assert "Too late to cancel" in answer["text"] and "Hang up" in answer["text"]
    assert "nothing" not in answer["text"]
    assert len(bot.evo.outgoing_posts) == 1
    # Cancelled first, the question tells a later Cancel nothing of a call.
    question = await ask(bot, f"{CANADA} wake-up-call")
    for _ in range(2):
        _, url = await click(bot, question, CANCEL_CALL_ACTION)
        [answer] = await bot.slack.wait_for_response(url)
    await click(bot, question)
    await bot.settle()
    _, url = await click(bot, question, CANCEL_CALL_ACTION)
    [answer] = await bot.slack.wait_for_response(url)
    assert "already answered or cancelled" in answer["text"]
    assert len(bot.evo.outgoing_posts) == 1


@pytest.mark.parametrize(("action", "answer"), [(CANCEL_CALL_ACTION, "Cancelled"),
                                                 (CONFIRM_CALL_ACTION, "Confirmed")])
async def test_an_answer_the_click_s_response_url_refuses_is_told_another_way(
    bot_factory: BotFactory, action: str, answer: str
) -> None:
    # The click's response_url answers 404 (expired, as Slack does): the question can't be
    # replaced, and the requester still learns what their click did.
    bot = await bot_factory("http")
    question = await ask(bot, f"{CANADA} escalation")
    url = bot.slack.response_url()
    bot.slack.expire_response_url(url)
    await click(bot, question, action, response_url=url)
    told = await bot.slack.wait_for_call(
        "chat.postEphemeral", lambda c: answer in str(c.params.get("text"))
    )
    assert told.params["user"] == "U0MANAGER"


async def test_only_the_requester_can_confirm(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http")
    question = await ask(bot, f"{CANADA} escalation")
    _, url = await click(bot, question, user_id="U0ADMIN")
    [answer] = await bot.slack.wait_for_response(url)
    await bot.settle()
    assert "Only the person who asked" in answer["text"]
    assert bot.evo.outgoing_posts == []
    await click(bot, question)  # the requester still can
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 1


async def test_only_the_requester_can_cancel(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http")
    question = await ask(bot, f"{CANADA} escalation")
    _, url = await click(bot, question, CANCEL_CALL_ACTION, user_id="U0ADMIN")
    [answer] = await bot.slack.wait_for_response(url)
    assert "Cancelled" not in answer["text"]
    await click(bot, question)  # the question still stands for the requester
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 1


async def test_a_click_checks_the_role_again(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http")
    question = await ask(bot, f"{CANADA} escalation", user_id="U0LEAD1")
    # U0LEAD1 leaves the user group that granted the role before clicking.
    bot.slack.usergroups["S0LEADS"] = ["U0LEAD2"]
    bot.runtime.services.access.forget_groups()  # type: ignore[union-attr]
    _, url = await click(bot, question, user_id="U0LEAD1")
    answers = await bot.slack.wait_for_response(url, n=2)
    await bot.settle()
    assert "not allowed to place calls" in answers[1]["text"]
    assert bot.evo.outgoing_posts == []
    # Not a refusal for a while (tests/test_question_asked_again.py): the question stays answered.
    assert len(bot.slack.responses_to(url)) == 2


async def test_a_click_checks_the_number_policy_again(
    bot_factory: BotFactory,
) -> None:
    bot = await bot_factory("http")
    question = await ask(bot, f"{CANADA} escalation")
    await bot.runtime.stop()
    # The operator removes Canada from the allowed regions and restarts the bot.
    bot = await bot_factory("http", policy=POLICY.replace('["US", "CA"]', '["US"]'))
    _, url = await click(bot, question)
    answers = await bot.slack.wait_for_response(url, n=2)
    await bot.settle()
    assert "calls may only go to US" in answers[1]["text"]
    assert bot.evo.outgoing_posts == []


async def test_an_expired_question_dials_nothing(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http")
    question = await ask(bot, f"{CANADA} escalation")
    # Eleven minutes on, for the questions (their rows and their ids' stamps alike): the lease
    # keeper may erase it before the click, which is told it expired all the same.
    services = bot.runtime.services
    assert services is not None
    services.confirmations.clock = lambda: time.time() + 601
    _, url = await click(bot, question)
    [answer] = await bot.slack.wait_for_response(url)
    await bot.settle()
    assert "expired" in answer["text"]
    assert bot.evo.outgoing_posts == []


async def test_a_new_question_clears_the_expired_ones(bot_factory: BotFactory) -> None:
    # An expired question still holds its number in clear: nobody can use it, so it is not kept.
    bot = await bot_factory("http")
    await ask(bot, f"{CANADA} escalation")
    services = bot.runtime.services
    assert services is not None
    [old] = await services.db.fetchall("SELECT id FROM pending_confirmations")
    # Eleven minutes on, for the questions (their rows and their ids' stamps alike). Aging the
    # row by hand raced the lease keeper's sweep, which could erase it before it was read.
    services.confirmations.clock = lambda: time.time() + 601
    await ask(bot, f"{CANADA} escalation", user_id="U0ADMIN")
    db = services.db
    remaining = await db.fetchall("SELECT id FROM pending_confirmations")
    assert len(remaining) == 1 and remaining[0]["id"] != old["id"]


@on_both_databases
async def test_an_expired_question_is_erased_with_no_other_question_or_click(
    bot_factory: BotFactory,
) -> None:
    # Asked before a quiet spell: its number, in clear, is not kept through it.
    bot = await bot_factory("http", LEASE_SECONDS="3")  # the lease keeper's rounds: every 0.5 s
    await ask(bot, f"{CANADA} escalation")
    await ask(bot, f"{CANADA} escalation", user_id="U0ADMIN")
    db = bot.runtime.services.db  # type: ignore[union-attr]
    await db.execute("UPDATE pending_confirmations SET created_at = created_at - 601"
                     " WHERE user_id = 'U0MANAGER'")
    bot.runtime.services.leases.wake()  # type: ignore[union-attr]  # its next round, at once
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while len(rows := await db.fetchall("SELECT user_id FROM pending_confirmations")) > 1:
        assert loop.time() < deadline, "the expired question was never erased"
        await asyncio.sleep(0.05)
    assert [row["user_id"] for row in rows] == ["U0ADMIN"]  # the fresh one is kept


@pytest.mark.parametrize("value", ["", "x", "../../etc", "a" * 500, "' OR 1=1 --", "\u202e" * 20])
async def test_forged_button_values_dial_nothing(bot: BotUnderTest, value: str) -> None:
    await ask(bot, f"{CANADA} escalation")
    ack, url = await click(bot, {}, value=value)
    assert ack.status == 200
    await bot.settle()
    assert bot.evo.outgoing_posts == []
    assert bot.slack.responses_to(url) == []  # ignored: no question was named


@on_both_databases
async def test_pending_questions_survive_a_restart(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http")
    question = await ask(bot, f"{CANADA} escalation")
    await bot.runtime.stop()
    bot = await bot_factory("http")
    await click(bot, question)
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 1
    db = bot.runtime.services.db  # type: ignore[union-attr]
    assert await db.fetchall("SELECT id FROM pending_confirmations") == []


async def test_a_click_naming_no_user_is_ignored(bot_factory: BotFactory) -> None:
    # A malformed payload: no clicker to check the question against, nobody to answer.
    bot = await bot_factory("http")
    question = await ask(bot, f"{CANADA} escalation")
    ack, url = await click(bot, question, user_id="")
    assert ack.status == 200
    await bot.settle()
    assert bot.slack.responses_to(url) == []
    await click(bot, question)  # the question still stands for the requester
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 1


@on_both_databases
@pytest.mark.parametrize("action", [CONFIRM_CALL_ACTION, CANCEL_CALL_ACTION])
async def test_a_question_clicked_after_it_expired_and_was_erased_says_it_expired(
    bot_factory: BotFactory, action: str
) -> None:
    # The lease keeper erases an expired question within seconds (its number is in clear), long
    # before anyone comes back to click it: the click still learns that it expired, not that it
    # was "already answered or cancelled" (it never was, and nothing "more" was dialled).
    bot = await bot_factory("http", LEASE_SECONDS="3")
    question = await ask(bot, f"{CANADA} escalation")
    services = bot.runtime.services
    assert services is not None
    services.confirmations.clock = lambda: time.time() + 601  # eleven minutes later
    services.leases.wake()  # its next round, at once
    db = services.db
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while await db.fetchall("SELECT id FROM pending_confirmations"):
        assert loop.time() < deadline, "the expired question was never erased"
        await asyncio.sleep(0.05)
    _, url = await click(bot, question, action)
    [answer] = await bot.slack.wait_for_response(url)
    await bot.settle()
    assert "expired" in answer["text"] and "already answered" not in answer["text"]
    assert bot.evo.outgoing_posts == []


async def test_a_repeat_question_says_how_long_ago_in_minutes(bot_factory: BotFactory) -> None:
    # `repeat_window` may be minutes or hours long: "You called this number 300 s ago" makes the
    # requester do the sum.
    bot = await bot_factory("http", policy=policy_with(repeat_window="1h"))
    await bot.command(f"{US} escalation")
    await bot.settle()
    db = bot.runtime.services.db  # type: ignore[union-attr]
    await db.execute("UPDATE rate_events SET at = at - 330")
    question = await ask(bot, f"{US} escalation")
    assert "You called this number 5 min 30 s ago — call again?" in question["text"], question


async def test_a_flow_of_a_very_long_name_leaves_the_question_its_region_and_expiry(
    bot: BotUnderTest,
) -> None:
    # A flow named in thousands of characters (Evo Voice sets no limit) filled the question's
    # details: Slack's clip at 3,000 took off where the number is, that nothing was dialled and
    # when the question expires. The name is shortened, as in the status message.
    for flow in bot.evo.flows:
        if flow["id"] == "flow-page":
            flow["name"] = "Page " + "the database team " * 200
    bot.runtime.services.catalog.forget()  # type: ignore[union-attr]
    question = await ask(bot, f"{CANADA} page")
    shown = "\n".join(e["text"] for b in question["blocks"] if b["type"] == "context"
                      for e in b["elements"])
    assert "Canada (CA)" in shown and "Nothing has been dialled" in shown
    assert "This question expires in 10 minutes." in shown
    assert "Page the database team" in shown
