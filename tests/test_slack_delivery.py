"""Slack posts whose result matters are delivered at least once: the final status edit of a call
and the posts in an escalation's thread, through a Slack refusing them for a while."""

from __future__ import annotations

import asyncio

import pytest

from bot.standins.slack import ApiCall, ApiReply
from tests.conftest import BotFactory
from tests.follow_helpers import FAST, FULL, end_session, services, status_message
from tests.conftest import until
from tests.escalations import (
    ALICE,
    BOB,
    IN_ALICES_SHIFT,
    MANAGER,
    ROSTER,
    Clock,
    dialled,
    escalation_message,
    open_on_message,
    start,
    submit,
    wait_for_edit,
)


async def test_the_final_status_edit_outlasts_a_slack_storm(bot_factory: BotFactory) -> None:
    # The pauses between the final edit's tries double from the first poll interval: from 5 ms,
    # five of them take 0.16 s (from FAST's 50 ms, 1.6 s).
    bot = await bot_factory("http", **(FAST | {"CALL_POLL_SECONDS": "0.005"}))
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    [session_id] = bot.evo.sessions
    # More refusals in a row than the final edit used to be tried (3). Not many more: each one more
    # costs twice the last pause in time.
    bot.slack.fail("chat.update", "internal_error", times=5,
                   when=lambda c: "Ended" in str(c.params.get("text")))
    end_session(bot, session_id, after_seconds=30, outcome="Completed")
    await bot.slack.wait_for_call(
        "chat.update",
        lambda c: c.ok and c.params.get("ts") == status.ts and "Ended" in str(c.params.get("text")),
        timeout=30,
    )
    assert "Ended" in (status.text or "")
    refused = [c for c in bot.slack.calls_to("chat.update")
               if not c.ok and "Ended" in str(c.params.get("text"))]
    assert len(refused) == 5  # it outlasted every refusal


async def test_nobody_acknowledged_refused_by_slack_is_delivered_later(
    bot_factory: BotFactory,
) -> None:
    bot, clock = await start(bot_factory)
    pauses: list[float] = []

    async def pause(seconds: float) -> None:  # the outbox's pauses between tries, not waited
        pauses.append(seconds)
        await asyncio.sleep(0)

    services(bot).outbox.sleep = pause
    view, _ = await open_on_message(bot)
    await submit(bot, view)
    escalation = await escalation_message(bot)

    def loud(c: ApiCall) -> bool:
        return "Nobody acknowledged" in str(c.params.get("text"))

    bot.slack.fail("chat.postMessage", "internal_error", times=2, when=loud)
    # Down the chain: Alice and Bob don't answer, Carol has no number, the manager doesn't either.
    steps = [("<@U0ALICE> (+1 814 ••• 3093)", "1. "), ("<@U0BOB> (+1 814 ••• 3094)", "2. "),
             ("<@U0MANAGER> (escalate_to) (+1 814 ••• 3090)", "4. ")]
    for person, place in steps:
        await wait_for_edit(bot, escalation, f"{place}{person} — 🔔")  # ringing, deadline set
        clock.advance(91)
        await wait_for_edit(bot, escalation, f"{place}{person} — ❌ no answer after 90 s")
    assert dialled(bot) == [ALICE, BOB, MANAGER]
    delivered = await bot.slack.wait_for_call(
        "chat.postMessage", lambda c: c.ok and loud(c), timeout=30)
    assert delivered.params["reply_broadcast"] in (True, "true", "1")
    assert sum(1 for c in bot.slack.calls_to("chat.postMessage") if c.ok and loud(c)) == 1
    # Tried again after a pause each time Slack refused it, each pause twice the last.
    assert pauses == [1.0, 2.0]


@pytest.mark.parametrize("retry_after", ["1.5", "Wed, 21 Oct 2015 07:28:00 GMT", ""])
async def test_a_status_edit_refused_with_an_unreadable_retry_after_still_shows_the_outcome(
    bot_factory: BotFactory, retry_after: str
) -> None:
    # A 429 whose Retry-After is not whole seconds (a proxy's date or fraction, or nothing): the
    # edit waits a second, as when Retry-After is missing, and the outcome still lands.
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:  # the Slack client's pause after a 429, not waited
        pauses.append(seconds)
        await asyncio.sleep(0)

    bot = await bot_factory("http", slack_sleep=sleep, **FAST)
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    [session_id] = bot.evo.sessions
    refusals = [ApiReply({"ok": False, "error": "ratelimited"}, status=429,
                         headers={"Retry-After": retry_after})]

    def refuse_once(call: ApiCall) -> ApiReply | None:
        return refusals.pop() if refusals and "Ended" in str(call.params.get("text")) else None

    bot.slack.on("chat.update", refuse_once)
    end_session(bot, session_id, after_seconds=30, outcome="Completed")
    await bot.slack.wait_for_call(
        "chat.update",
        lambda c: c.ok and c.params.get("ts") == status.ts and "Ended" in str(c.params.get("text")),
        timeout=10,
    )
    assert "Ended" in (status.text or "")
    assert len(pauses) == 1 and 1 <= pauses[0] < 3, pauses


async def test_nobody_acknowledged_whose_answer_slack_lost_is_broadcast_once(
    bot_factory: BotFactory,
) -> None:
    # Slack takes "Nobody acknowledged" but its answer never comes back: the bot gives up waiting
    # (its Slack timeout, shortened here) and tries again later. The post is in the thread
    # already: it is found there by the id it carries, not broadcast to the channel a second time.
    clock = Clock()
    bot = await bot_factory("http", policy=ROSTER, slack_timeout=2.0, **FAST)
    services(bot).oncall.clock = lambda: IN_ALICES_SHIFT
    services(bot).escalations.clock = clock

    async def pause(seconds: float) -> None:  # the outbox's pauses between tries, not waited
        await asyncio.sleep(0)

    services(bot).outbox.sleep = pause
    view, _ = await open_on_message(bot)
    await submit(bot, view)
    escalation = await escalation_message(bot)

    def loud(c: ApiCall) -> bool:
        return "Nobody acknowledged" in str(c.params.get("text"))

    lost = bot.slack.hold("chat.postMessage", when=loud, after=True)  # posted, answer held
    steps = [("<@U0ALICE> (+1 814 ••• 3093)", "1. "), ("<@U0BOB> (+1 814 ••• 3094)", "2. "),
             ("<@U0MANAGER> (escalate_to) (+1 814 ••• 3090)", "4. ")]
    for person, place in steps:
        await wait_for_edit(bot, escalation, f"{place}{person} — 🔔")
        clock.advance(91)
        await wait_for_edit(bot, escalation, f"{place}{person} — ❌ no answer after 90 s")
    await lost.wait_until_held(1, timeout=20)

    def sent() -> int:  # the thread's posts (the card and the pages are edited to say it too)
        return sum(1 for m in bot.slack.messages.values()
                   if m.metadata and "Nobody acknowledged" in (m.text or ""))

    # The bot's next try: a look in the thread, or the post sent again.
    await until(lambda: any(c.ok for c in bot.slack.calls_to("conversations.replies"))
                or sent() > 1, timeout=20)
    lost.open()
    await bot.settle()

    async def forgotten() -> None:  # once found, the kept post is forgotten (its redelivery's task)
        while await services(bot).db.fetchall("SELECT id FROM slack_posts"):
            await asyncio.sleep(0.01)

    await asyncio.wait_for(forgotten(), 10)
    assert sent() == 1
