"""The phone rings first: once a call passed its checks, nothing on Slack's side delays its dial.

The confirmation thread is posted alongside the `POST /sessions/outgoing` and told the result
when it comes; a Slack that hangs, fails or rate-limits changes where the news goes, never whether
or when the phone rings.
"""

from __future__ import annotations

import asyncio

from bot.standins.slack import ApiCall
from tests.budget_clock import BudgetClock, LeapingClock
from tests.conftest import BotFactory, BotUnderTest, until
from tests.follow_helpers import FAST, end_session, lanes_on, services

FULL = "+18144043093"
MASKED = "+1 814 ••• 3093"


def is_reply(call: ApiCall) -> bool:
    return bool(call.params.get("thread_ts"))


async def test_the_post_leaves_while_chat_post_message_hangs(bot: BotUnderTest) -> None:
    gate = bot.slack.hold("chat.postMessage")
    await bot.command(f"{FULL} escalation")
    await gate.wait_until_held()
    await bot.evo.wait_for_posts(1)
    # The phone is ringing, and Slack has not answered a single post yet.
    assert bot.slack.calls_to("chat.postMessage") == []
    gate.open()
    await bot.settle()
    parent, reply = [c for c in bot.slack.calls_to("chat.postMessage") if c.ok]
    assert MASKED in parent.params["text"]
    assert reply.params["thread_ts"] == parent.response["ts"]
    assert "Call placed" in reply.params["text"]
    assert len(bot.evo.outgoing_posts) == 1


async def test_an_escalation_step_is_dialled_whatever_slack_does_after_the_card(
    bot_factory: BotFactory,
) -> None:
    from tests.escalations import (
        ALICE,
        dialled,
        escalation_message,
        open_on_message,
        page_of,
        start,
        submit,
    )

    bot, _ = await start(bot_factory)
    view, _message = await open_on_message(bot)
    await submit(bot, view)
    await escalation_message(bot)
    # From now on Slack refuses every post and every edit in the channel (its 5xx, say).
    bot.slack.fail("chat.postMessage", "internal_error", when=lambda c: c["channel"] == "C0OPS")
    bot.slack.fail("chat.update", "internal_error")
    await bot.evo.wait_for_posts(1)
    assert dialled(bot) == [ALICE]
    await page_of(bot, "U0ALICE")  # the person is paged in Slack all the same


# ---------------------------------------------------- where the bot can't post: response_url


async def private_channel_call(bot: BotUnderTest, url: str | None = None) -> tuple[str, str]:
    """`/call` in a private channel the bot isn't in; the response_url and the session id."""
    bot.slack.fail("chat.postMessage", "channel_not_found", when=lambda c: c["channel"] == "G0PRIV")
    _, url = await bot.command(f"{FULL} escalation", channel_id="G0PRIV", response_url=url)
    await bot.evo.wait_for_posts(1)
    [session_id] = bot.evo.sessions
    return url, session_id


async def test_the_status_is_kept_current_through_the_response_url(
    bot_factory: BotFactory,
) -> None:
    bot = await bot_factory("http", **FAST)
    url, session_id = await private_channel_call(bot)
    first = await bot.slack.wait_for_response(url, n=2)
    assert MASKED in first[0]["text"] and first[0]["response_type"] == "in_channel"
    assert "Ringing" in first[1]["text"] and first[1]["replace_original"] is True
    bot.evo.set_session_state(session_id, callState="Connected", answeredByName="Alice")
    await bot.slack.wait_for_response(url, n=3)
    end_session(bot, session_id, after_seconds=42, outcome="Completed")
    answers = await bot.slack.wait_for_response(url, n=4)
    await bot.settle()
    # One message, replaced as the call went on: the parent's line stays, the status follows.
    assert ["Connected" in a["text"] for a in answers] == [False, False, True, False]
    final = answers[-1]
    assert MASKED in final["text"] and "Ended: Completed" in final["text"]
    assert final["replace_original"] is True and final["response_type"] == "in_channel"
    assert "actions" not in str(final["blocks"])  # no buttons: no thread for a click to name
    assert bot.slack.channel_messages("U0MANAGER") == []  # no DM was needed


async def test_once_the_response_url_is_spent_the_outcome_comes_by_direct_message(
    bot_factory: BotFactory,
) -> None:
    bot = await bot_factory("http", **FAST)
    url, session_id = await private_channel_call(bot)
    await bot.slack.wait_for_response(url, n=2)
    bot.slack.expire_response_url(url)  # 30 minutes later, say
    end_session(bot, session_id, after_seconds=42, outcome="No answer")
    dm = await bot.slack.wait_for_call("chat.postMessage", lambda c: c["channel"] == "U0MANAGER")
    await bot.settle()
    assert MASKED in dm["text"] and "Ended: No answer" in dm["text"]


async def test_past_29_minutes_the_outcome_comes_by_direct_message_not_the_old_response_url(
    bot_factory: BotFactory,
) -> None:
    # Slack takes a response_url's posts for 30 minutes; the bot keeps a minute's margin.
    bot = await bot_factory("http", **FAST)
    clock = BudgetClock()  # still until the test moves it
    services(bot).notifier.clock = clock
    url, session_id = await private_channel_call(bot)
    await bot.slack.wait_for_response(url, n=2)
    clock.advance(29 * 60)
    end_session(bot, session_id, after_seconds=42, outcome="No answer")
    dm = await bot.slack.wait_for_call("chat.postMessage", lambda c: c["channel"] == "U0MANAGER")
    await bot.settle()
    assert MASKED in dm["text"] and "Ended: No answer" in dm["text"]
    assert len(bot.slack.responses_to(url)) == 2  # the old response_url was not tried


async def test_when_only_the_thread_fails_the_requester_still_sees_the_status_to_the_end(
    bot_factory: BotFactory,
) -> None:
    bot = await bot_factory("http", **FAST)
    bot.slack.fail("chat.postMessage", "internal_error", when=is_reply)
    _, url = await bot.command(f"{FULL} escalation")
    await bot.evo.wait_for_posts(1)
    [session_id] = bot.evo.sessions
    [first] = await bot.slack.wait_for_response(url)
    # The parent is in the channel: the requester alone sees its status, with its context.
    assert first["response_type"] == "ephemeral" and MASKED in first["text"]
    end_session(bot, session_id, after_seconds=42, outcome="Completed")
    answers = await bot.slack.wait_for_response(url, n=2)
    await bot.settle()
    assert "Ended: Completed" in answers[-1]["text"]
    assert answers[-1]["replace_original"] is True


async def test_the_last_use_of_the_response_url_is_kept_for_the_outcome(
    bot_factory: BotFactory,
) -> None:
    bot = await bot_factory("http", **FAST)
    url, session_id = await private_channel_call(bot)
    await bot.slack.wait_for_response(url, n=2)
    # Ringing → Connected → Ringing → Connected: more changes than Slack's five posts allow.
    for state in ("Connected", "Ringing", "Connected"):
        bot.evo.set_session_state(session_id, callState=state)
        await _polled(bot, session_id)
    end_session(bot, session_id, after_seconds=42, outcome="Completed")
    answers = await bot.slack.wait_for_response(url, n=5)
    await bot.settle()
    assert "Ended: Completed" in answers[-1]["text"]
    assert [p.status for p in bot.slack.response_posts] == [200] * 5


async def test_a_restart_while_the_status_goes_through_the_response_url_still_tells_the_outcome(
    bot_factory: BotFactory,
) -> None:
    # The response_url's relay lived in the stopped bot's memory alone (its URL is never stored):
    # the next start, following the call on, tells the requester by direct message instead.
    first = await bot_factory("http", **FAST)
    url, session_id = await private_channel_call(first)
    await first.slack.wait_for_response(url, n=2)  # the parent, Ringing
    await first.runtime.stop(grace=5)

    second = await bot_factory("http", **FAST)  # the same database
    end_session(second, session_id, after_seconds=42, outcome="No answer")
    dm = await second.slack.wait_for_call(
        "chat.postMessage", lambda c: c.ok and c["channel"] == "U0MANAGER", timeout=10)
    assert MASKED in dm["text"] and "Ended: No answer" in dm["text"]
    assert "actions" not in str(dm.params.get("blocks"))  # no buttons: no thread to name


async def test_an_outcome_slack_refused_until_a_restart_reaches_the_requester_by_the_next_start(
    bot_factory: BotFactory,
) -> None:
    # The call ends past the response_url's life while Slack refuses the direct message, and the
    # bot is stopped before Slack recovers: the next start tells the requester.
    first = await bot_factory("http", **FAST)
    url, session_id = await private_channel_call(first)
    await first.slack.wait_for_response(url, n=2)  # the parent, Ringing
    first.slack.expire_response_url(url)
    first.slack.fail("chat.postMessage", "internal_error",
                     when=lambda c: c["channel"] == "U0MANAGER")
    end_session(first, session_id, after_seconds=42, outcome="No answer")
    await first.slack.wait_for_call(
        "chat.postMessage", lambda c: not c.ok and c["channel"] == "U0MANAGER")
    await first.runtime.stop(grace=1)
    first.slack.off("chat.postMessage")
    first.slack.fail("chat.postMessage", "channel_not_found",
                     when=lambda c: c["channel"] == "G0PRIV")

    second = await bot_factory("http", **FAST)  # the same database
    dm = await second.slack.wait_for_call(
        "chat.postMessage", lambda c: c.ok and c["channel"] == "U0MANAGER", timeout=10)
    assert MASKED in dm["text"] and "Ended: No answer" in dm["text"]


def most_at_once(calls: list[ApiCall]) -> int:
    """The most calls the stand-in was holding (received, not yet answered) at one time."""
    events = sorted([(c.time, 1) for c in calls] + [(c.answered, -1) for c in calls])
    most = held = 0
    for _, step in events:
        held += step
        most = max(most, held)
    return most


async def _polled(bot: BotUnderTest, session_id: str, times: int = 2) -> None:
    """Wait until the bot read the session `times` more times."""
    seen = len(bot.evo.reads_of(session_id))
    async with asyncio.timeout(5):
        while len(bot.evo.reads_of(session_id)) < seen + times:
            await asyncio.sleep(0.01)


# ------------------------------------------------------------ Slack's per-channel posting limit


async def test_twenty_calls_in_one_channel_under_the_posting_limit(bot: BotUnderTest) -> None:
    # Slack's mechanics (a bucket per channel, 429 + Retry-After in whole seconds): bursts of 5,
    # refilled at 5 messages a second, on a clock the bot's waits for Retry-After move on.
    clock = LeapingClock()
    bot.slack.limit_posting(per_second=5, burst=5, clock=clock)
    lanes_on(bot, clock)
    bot.slack.latency = 0.01  # long enough for posts sent side by side to overlap
    gate = bot.slack.hold("chat.postMessage")
    numbers = [f"+1814404{3000 + i}" for i in range(20)]
    await asyncio.gather(*(bot.command(f"{n} escalation") for n in numbers))
    # All 20 dialled at once, while Slack had not yet answered a single post.
    await bot.evo.wait_for_posts(20)
    assert bot.slack.calls_to("chat.postMessage") == []
    gate.open()
    await bot.settle()
    posts = bot.slack.calls_to("chat.postMessage")
    assert any(c.status == 429 for c in posts)  # the limit was met…
    assert bot.slack.response_posts == []  # …and nothing fell back to the response_urls
    parents = bot.slack.channel_messages("C0OPS")
    assert len(parents) == 20
    for parent in parents:
        [status] = bot.slack.thread("C0OPS", parent.ts)
        assert "Call placed" in (status.text or "")
    # A few at a time (four at most, as the README says), never the whole burst at Slack at once.
    assert 1 < most_at_once(posts) <= 4
    dialled = {str(r.json["numberToDial"]) for r in bot.evo.outgoing_posts}
    assert dialled == set(numbers)


async def test_a_429_holds_the_channel_s_next_post_for_its_retry_after(bot: BotUnderTest) -> None:
    """Slack asks one post to wait 30 s: the channel's next post, never refused itself, waits
    them out too, rather than meeting the limit again."""
    clock = BudgetClock()  # still until the test moves it
    waits = lanes_on(bot, clock)
    # The one 429 is this test's subject: the four posts that follow it at once would meet the
    # channel's own limit too (a burst of 3), with time standing still.
    bot.slack.posting_rate = None
    bot.slack.fail("chat.postMessage", "ratelimited", times=1, retry_after=30)
    await bot.command(f"{FULL} escalation")
    await bot.slack.wait_for_call("chat.postMessage", lambda c: c.status == 429, timeout=5.0)
    await bot.command("+18144043094 escalation")
    await bot.evo.wait_for_posts(2)
    await until(lambda: len(waits) == 2)
    assert waits == [30, 30]
    assert len(bot.slack.calls_to("chat.postMessage")) == 1  # only the refused one so far
    clock.advance(30)
    await bot.settle()
    parents = bot.slack.channel_messages("C0OPS")
    assert len(parents) == 2
    for parent in parents:
        [status] = bot.slack.thread("C0OPS", parent.ts)
        assert "Call placed" in (status.text or "")
    assert bot.slack.response_posts == []
    assert [c.status for c in bot.slack.calls_to("chat.postMessage")].count(429) == 1


async def test_a_429_in_one_channel_holds_no_other_channel(bot: BotUnderTest) -> None:
    """Slack's posting limit is per channel: while one channel waits out its Retry-After, a call
    confirmed in another channel is posted at once."""
    clock = BudgetClock()  # still until the test moves it
    waits = lanes_on(bot, clock)
    bot.slack.posting_rate = None
    bot.slack.fail("chat.postMessage", "ratelimited", times=1, retry_after=30)
    await bot.command(f"{FULL} escalation")
    await bot.slack.wait_for_call("chat.postMessage", lambda c: c.status == 429, timeout=5.0)
    await bot.command("+18144043094 escalation", channel_id="C0INCIDENT")
    parent = await bot.slack.wait_for_call(
        "chat.postMessage", lambda c: c.ok and c["channel"] == "C0INCIDENT")
    assert parent.response is not None
    status = await bot.slack.wait_for_call(
        "chat.postMessage", lambda c: c.ok and c.params.get("thread_ts") == parent.response["ts"])
    assert "Call placed" in str(status.params["text"])
    assert waits == [30]  # only the held channel's post waited
    clock.advance(30)
    await bot.settle()
    [held] = bot.slack.channel_messages("C0OPS")
    assert len(bot.slack.thread("C0OPS", held.ts)) == 1
