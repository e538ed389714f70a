"""A role held through a Slack user group is checked on the way to the dial: Slack's slowness or
rate limits there must not hold a page for longer than it takes to say so (issue 15)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import aiohttp
from slack_sdk.web.async_client import AsyncWebClient

from bot.access import AccessControl, Responders, UserGroups
from bot.standins.slack import SlackStandIn
from tests.budget_clock import BudgetClock, Pauses
from tests.conftest import BOT_TOKEN, BotFactory, until
from tests.escalations import ROSTER
from tests.follow_helpers import audit_records, services

FULL = "+18144043093"
T = TypeVar("T")


async def test_a_rate_limited_group_lookup_says_when_to_try_again_without_waiting_it_out(
    bot_factory: BotFactory,
) -> None:
    # Slack answers the lookup of S0LEADS (the Manager role's group) with 429 and Retry-After: 30.
    # Waiting that out twice (slack_sdk's way) held the lead's call a minute, then told them to
    # check the usergroups:read scope. The lead is told at once when to try again.
    pauses = Pauses()
    bot = await bot_factory("http", slack_sleep=pauses)
    bot.slack.fail("usergroups.users.list", "ratelimited", retry_after=30)
    _, url = await bot.command(f"{FULL} escalation", user_id="U0LEAD1")
    [answer] = await bot.slack.wait_for_response(url)
    await bot.settle()
    assert pauses == []
    assert "(ratelimited). Try again in 30 s." in answer["text"]
    assert "usergroups:read" not in answer["text"]
    assert bot.evo.outgoing_posts == []
    [record] = await audit_records(bot)
    assert (record.decision, record.reason) == ("denied", "GroupLookupFailed")


async def test_a_group_read_minutes_ago_is_used_while_slack_is_asked_again(
    slack: SlackStandIn,
) -> None:
    # Past its five minutes a group's members are still used (up to a quarter of an hour in all)
    # while one request asks Slack again: a role check never waits on a Slack that hangs for a
    # group it read minutes ago. A removal still takes effect once Slack has answered.
    clock = BudgetClock()
    session = aiohttp.ClientSession()
    try:
        groups = UserGroups(AsyncWebClient(token=BOT_TOKEN, base_url=slack.api_url,
                                           session=session), clock=clock)
        assert "U0LEAD1" in await groups.members("S0LEADS")
        slack.usergroups["S0LEADS"] = ["U0LEAD2"]  # U0LEAD1 has left the group
        clock.advance(301)
        gate = slack.hold("usergroups.users.list")
        # Not waiting on the held lookup (which would time out here).
        assert "U0LEAD1" in await asyncio.wait_for(groups.members("S0LEADS"), 5)
        await gate.wait_until_held()
        gate.open()
        await until_async(lambda: groups.members("S0LEADS"), lambda m: "U0LEAD1" not in m)
        clock.advance(901)  # too old to use: the next check waits for Slack's answer
        slack.usergroups["S0LEADS"] = ["U0LEAD1"]
        assert "U0LEAD1" in await groups.members("S0LEADS")
        assert len(slack.calls_to("usergroups.users.list")) == 3
    finally:
        await session.close()


async def test_a_responder_read_minutes_ago_escalates_while_slack_is_asked_again(
    slack: SlackStandIn,
) -> None:
    # The same for who may escalate without a role ("everyone": a full member, users.info).
    clock = BudgetClock()
    session = aiohttp.ClientSession()
    try:
        client = AsyncWebClient(token=BOT_TOKEN, base_url=slack.api_url, session=session)
        groups = UserGroups(client, clock=clock)
        responders = Responders(AccessControl({}, groups), groups, client, None, clock=clock)
        assert await responders.require("U0DEV") is False  # a responder, holding no role
        slack.users["U0DEV"] = {"is_restricted": True}  # made a guest
        clock.advance(301)
        gate = slack.hold("users.info")
        await asyncio.wait_for(responders.require("U0DEV"), 5)  # not waiting on the held read
        await gate.wait_until_held()
        gate.open()
        await until_async(lambda: responders.allows("U0DEV"), lambda allowed: allowed is False)
        slack.users["U0DEV"] = {}  # a full member again
        clock.advance(901)  # too old to use: the next check waits for Slack's answer
        assert await responders.allows("U0DEV") is True
        assert len(slack.calls_to("users.info")) == 3
    finally:
        await session.close()


async def until_async(
    read: Callable[[], Awaitable[T]], holds: Callable[[T], bool], timeout: float = 5.0
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not holds(await read()):
        assert loop.time() < deadline, "condition never held"
        await asyncio.sleep(0.01)


async def test_a_rate_limited_users_info_says_when_to_try_again_without_waiting_it_out(
    bot_factory: BotFactory,
) -> None:
    # Whether someone without a role may escalate ("everyone": a full member) is users.info's
    # answer: its 429 held them twice Retry-After before "try again in a minute".
    pauses = Pauses()
    bot = await bot_factory("http", policy=ROSTER, slack_sleep=pauses)
    bot.slack.fail("users.info", "ratelimited", retry_after=20)
    _, url = await bot.command("oncall", user_id="U0DEV")
    [answer] = await bot.slack.wait_for_response(url)
    assert pauses == []
    assert "(ratelimited). Try again in 20 s." in answer["text"]


async def test_a_role_s_group_is_kept_fresh_so_a_call_after_a_quiet_spell_never_waits_on_slack(
    bot_factory: BotFactory,
) -> None:
    # Nobody called for 15 minutes: the members read by the last call were too old to use, and
    # the lead's call (10 s, then a refusal, if Slack hung) waited for Slack. The lease keeper's
    # rounds read them again before then.
    bot = await bot_factory("http")
    clock = BudgetClock()
    groups = services(bot).groups
    groups.clock = clock
    await bot.command(f"{FULL} escalation", user_id="U0LEAD1")
    await bot.evo.wait_for_posts(1)
    read = len(bot.slack.calls_to("usergroups.users.list"))
    clock.advance(250)
    services(bot).leases.wake()
    await bot.slack.wait_for_calls("usergroups.users.list", read + 1)
    await until(lambda: groups.age("S0LEADS") == 0)
    gate = bot.slack.hold("usergroups.users.list")
    clock.advance(700)  # 950 s after the first read: read again since
    await bot.command("+18144043094 escalation", user_id="U0LEAD1")
    await bot.evo.wait_for_posts(2)  # while Slack hangs
    gate.open()
