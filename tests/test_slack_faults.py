"""When Slack misbehaves: rate limits, failing chat.postMessage, expired response_urls.

The rule under test: a call is never placed without the requester being told, and the news
finds another way when the usual one fails.
"""

from __future__ import annotations

import logging

import pytest

from bot.standins.slack import ApiCall, ApiReply
from tests.budget_clock import BudgetClock, LeapingClock
from tests.conftest import POLICY_NO_REPEAT_QUESTION, BotFactory, BotUnderTest, until
from bot.calls.confirm_views import CONFIRM_CALL_ACTION
from tests.follow_helpers import FAST, end_session, lanes_on, wait_for_edit
from tests.interactions import button

FULL = "+18144043093"
MASKED = "+1 814 ••• 3093"


def is_reply(call: ApiCall) -> bool:
    return bool(call.params.get("thread_ts"))


async def test_a_rate_limited_post_is_retried_and_the_confirmation_arrives(
    bot: BotUnderTest,
) -> None:
    # Slack answers 429 with Retry-After; the client waits and sends it again.
    bot.slack.fail("chat.postMessage", "ratelimited", times=1, retry_after=0)
    bot.slack.fail("chat.postMessage", "ratelimited", times=1, retry_after=0, when=is_reply)
    _, url = await bot.command(f"{FULL} escalation")
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 1
    ok = [c for c in bot.slack.calls_to("chat.postMessage") if c.ok]
    assert [is_reply(c) for c in ok] == [False, True]
    assert "Call placed" in ok[1].params["text"]
    assert ok[1].params["thread_ts"] == ok[0].response["ts"]
    assert len(bot.slack.calls_to("chat.postMessage")) == 4  # two 429s, two retries
    assert bot.slack.responses_to(url) == []


async def test_a_429_without_retry_after_holds_the_channel_a_second(bot: BotUnderTest) -> None:
    # A 429 whose Retry-After was lost on the way (a proxy's, say): the post waits a second, Slack's
    # rate of about a message a second per channel, rather than trying again at once.
    clock = LeapingClock()  # waiting takes no real time
    waits = lanes_on(bot, clock)
    refusals = [ApiReply({"ok": False, "error": "ratelimited"}, status=429)]
    bot.slack.on("chat.postMessage", lambda call: refusals.pop() if refusals else None)
    await bot.command(f"{FULL} escalation")
    await bot.settle()
    assert waits == [1.0]
    ok = [c for c in bot.slack.calls_to("chat.postMessage") if c.ok]
    assert [is_reply(c) for c in ok] == [False, True]


async def test_rate_limited_beyond_retries_falls_back_to_the_response_url(
    bot_factory: BotFactory,
) -> None:
    bot = await bot_factory("http")
    bot.slack.fail("chat.postMessage", "ratelimited", retry_after=0)
    _, url = await bot.command(f"{FULL} escalation")
    answers = await bot.slack.wait_for_response(url, n=2)
    await bot.settle()
    assert MASKED in answers[0]["text"] and "Call placed" in answers[1]["text"]
    assert len(bot.evo.outgoing_posts) == 1


async def test_a_minute_of_retry_after_in_all_is_the_most_a_post_waits(
    bot_factory: BotFactory,
) -> None:
    # Each 429 asks for 30 s: the third would make 90 s in all, past the minute a post waits.
    bot = await bot_factory("http")
    clock = LeapingClock()  # waiting takes no real time
    waits = lanes_on(bot, clock)
    bot.slack.fail("chat.postMessage", "ratelimited", retry_after=30)
    _, url = await bot.command(f"{FULL} escalation")
    answers = await bot.slack.wait_for_response(url, n=2)
    await bot.settle()
    assert MASKED in answers[0]["text"] and "Call placed" in answers[1]["text"]
    parents = [c for c in bot.slack.calls_to("chat.postMessage") if not is_reply(c)]
    assert len(parents) == 3 and waits == [30, 30]


async def test_a_post_the_channel_would_hold_past_the_minute_takes_the_next_way(
    bot_factory: BotFactory,
) -> None:
    # The first call's parent meets a 429 asking for 50 s: the channel is held that long. The
    # second call's parent waits those 50 s behind it, then meets a 429 asking for 30 s more:
    # 80 s in all, past the minute a post waits, so it goes through the response_url.
    bot = await bot_factory("http", policy=POLICY_NO_REPEAT_QUESTION)
    clock = BudgetClock()  # still until the test moves it
    lanes_on(bot, clock)
    second = "+18144043094"
    bot.slack.fail("chat.postMessage", "ratelimited", times=1, retry_after=50)
    bot.slack.fail("chat.postMessage", "ratelimited", times=1, retry_after=30,
                   when=lambda call: "3094" in str(call.params.get("text")))
    await bot.command(f"{FULL} escalation")
    await until(lambda: clock.sleepers == 1)  # the first parent waits out its 50 s
    _, url = await bot.command(f"{second} escalation")
    await until(lambda: clock.sleepers == 2)  # the second waits behind it
    clock.advance(50)
    answers = await bot.slack.wait_for_response(url, n=2)
    # The 30 s that 429 asked for hold the channel all the same: the first call's status waits
    # them out before it is posted in its thread.
    await until(lambda: clock.sleepers == 1)
    clock.advance(30)
    await bot.settle()
    assert "+1 814 ••• 3094" in answers[0]["text"] and "Call placed" in answers[1]["text"]
    assert len(bot.evo.outgoing_posts) == 2
    replies = [c for c in bot.slack.calls_to("chat.postMessage") if is_reply(c) and c.ok]
    assert len(replies) == 1 and "Call placed" in str(replies[0].params.get("text"))
    parents = [c for c in bot.slack.calls_to("chat.postMessage")
               if not is_reply(c) and "3094" in str(c.params.get("text"))]
    assert len(parents) == 1  # refused once, never sent again after the minute


async def test_a_retry_after_past_the_minute_holds_the_channel_for_the_next_call_too(
    bot_factory: BotFactory,
) -> None:
    # The first call's parent meets a 429 asking for two minutes: it takes the next way at once
    # (the response_url). The second call, a moment later in the same channel, doesn't knock on
    # Slack inside those two minutes: it takes the next way too, and its requester still hears.
    bot = await bot_factory("http", policy=POLICY_NO_REPEAT_QUESTION)
    lanes_on(bot, BudgetClock())  # still: the two minutes never pass
    bot.slack.fail("chat.postMessage", "ratelimited", times=1, retry_after=120)
    _, first = await bot.command(f"{FULL} escalation")
    await bot.slack.wait_for_response(first, n=2)
    _, second = await bot.command("+18144043094 escalation")
    answers = await bot.slack.wait_for_response(second, n=2)
    await bot.settle()
    assert "+1 814 ••• 3094" in answers[0]["text"] and "Call placed" in answers[1]["text"]
    assert len(bot.slack.calls_to("chat.postMessage")) == 1  # the one Slack refused
    assert len(bot.evo.outgoing_posts) == 2


def http_500(call: ApiCall) -> ApiReply:
    return ApiReply({"ok": False, "error": "internal_error"}, status=500)


@pytest.mark.parametrize("failure", ["internal_error", "fatal_error", "http-500"])
async def test_a_failing_parent_post_falls_back_to_the_response_url(
    bot_factory: BotFactory, failure: str
) -> None:
    bot = await bot_factory("http")
    if failure == "http-500":
        bot.slack.on("chat.postMessage", http_500)
    else:
        bot.slack.fail("chat.postMessage", failure)
    _, url = await bot.command(f"{FULL} escalation")
    answers = await bot.slack.wait_for_response(url, n=2)
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 1
    assert MASKED in answers[0]["text"] and "Call placed" in answers[1]["text"]


@pytest.mark.parametrize("failure", ["internal_error", "ratelimited"])
async def test_a_failing_thread_reply_reaches_the_requester_with_its_context(
    bot: BotUnderTest, failure: str
) -> None:
    bot.slack.fail("chat.postMessage", failure, when=is_reply, retry_after=0)
    _, url = await bot.command(f"{FULL} escalation")
    [answer] = await bot.slack.wait_for_response(url)
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 1
    # Out of the thread, the result comes with the line saying which call it is about.
    assert MASKED in answer["text"] and "Call placed" in answer["text"]
    assert answer["response_type"] == "ephemeral"
    # The response URL carried nothing of the bot's yet: a new message, replacing none.
    assert answer["replace_original"] is False


async def test_a_call_whose_thread_refuses_replies_still_tells_its_outcome(
    bot_factory: BotFactory,
) -> None:
    bot = await bot_factory("http", **FAST)
    bot.slack.fail("chat.postMessage", "internal_error", when=is_reply, retry_after=0)
    _, url = await bot.command(f"{FULL} escalation")
    [placed] = await bot.slack.wait_for_response(url)
    assert "Call placed" in placed["text"]
    [session_id] = bot.evo.sessions
    end_session(bot, session_id, after_seconds=30, outcome="No answer")
    # The status out of the thread is kept current too: never left at "Call placed".
    answers = await bot.slack.wait_for_response(url, n=2)
    assert MASKED in answers[1]["text"] and "Ended: No answer" in answers[1]["text"]


async def test_an_expired_response_url_still_reaches_the_requester(bot: BotUnderTest) -> None:
    url = bot.slack.response_url()
    bot.slack.expire_response_url(url)
    await bot.command(f"{FULL} no-such-flow", response_url=url)
    await bot.settle()
    [ephemeral] = bot.slack.calls_to("chat.postEphemeral")
    assert ephemeral.params["user"] == "U0MANAGER" and ephemeral.params["channel"] == "C0OPS"
    assert "No flow is called" in ephemeral.params["text"]


async def test_expired_response_url_and_no_ephemeral_ends_in_a_direct_message(
    bot_factory: BotFactory,
) -> None:
    bot = await bot_factory("http")
    url = bot.slack.response_url()
    bot.slack.expire_response_url(url)
    bot.slack.fail("chat.postEphemeral", "channel_not_found")
    await bot.command(f"{FULL} no-such-flow", response_url=url, channel_id="G0PRIVATE")
    await bot.settle()
    [dm] = bot.slack.calls_to("chat.postMessage")
    assert dm.params["channel"] == "U0MANAGER" and "No flow is called" in dm.params["text"]


async def test_a_question_reaches_the_requester_when_the_response_url_expired(
    bot: BotUnderTest,
) -> None:
    url = bot.slack.response_url()
    bot.slack.expire_response_url(url)
    await bot.command("+14165550123 escalation", response_url=url)
    await bot.settle()
    [ephemeral] = bot.slack.calls_to("chat.postEphemeral")
    assert button(ephemeral.params, CONFIRM_CALL_ACTION)
    assert bot.evo.outgoing_posts == []


async def test_a_call_placed_while_slack_fails_is_still_reported(
    bot_factory: BotFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """The parent was posted; every later post (the direct message too) fails and the response_url
    has expired: the call was placed, so the outcome is logged for the operators (nobody else can
    be told now; the status message is kept and sent again)."""
    caplog.set_level(logging.INFO, logger="bot")
    bot = await bot_factory("http")
    url = bot.slack.response_url()
    bot.slack.fail("chat.postMessage", "internal_error",
                   when=lambda c: is_reply(c) or c["channel"] == "U0MANAGER")
    bot.slack.expire_response_url(url)
    await bot.command(f"{FULL} escalation", response_url=url)
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 1
    [parent] = [c for c in bot.slack.calls_to("chat.postMessage") if c.ok]
    assert MASKED in parent.params["text"]
    # Kept in the outbox and sent again: a warning now, an error only once nothing will.
    [line] = [r for r in caplog.records if "outcome could not be posted" in r.getMessage()]
    assert line.getMessage() == ("call placed outcome could not be posted for U0MANAGER yet: "
                                 "kept, and sent again"), line.getMessage()
    assert line.levelno == logging.WARNING


async def test_a_slack_that_never_answers_a_post_is_given_up_on_and_the_news_goes_another_way(
    bot_factory: BotFactory,
) -> None:
    # slack_sdk applies its timeout only to sessions it makes itself: on the bot's shared one, a
    # post Slack never answers would wait aiohttp's default of five minutes, and the requester
    # with it. The bot's own limit (SLACK_TIMEOUT_SECONDS; shortened here) gives it up.
    bot = await bot_factory("http", slack_timeout=0.3)
    hung = bot.slack.hold("chat.postMessage", when=lambda c: not is_reply(c))
    _, url = await bot.command(f"{FULL} escalation")
    await bot.evo.wait_for_posts(1)  # dialled meanwhile: Slack is off the dialling path
    answers = await bot.slack.wait_for_response(url, n=2, timeout=5)
    assert MASKED in answers[0]["text"] and "Call placed" in answers[1]["text"]
    hung.open()
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 1


async def test_a_status_message_slack_took_without_answering_is_kept_current_in_its_thread(
    bot_factory: BotFactory,
) -> None:
    # Slack posts the call's status message in its thread but its answer never comes back (the
    # bot's Slack timeout, shortened here). The message is there: found by the id it carries, it
    # is the one edited as the call goes on, not left at "Calling…" while the news goes elsewhere.
    bot = await bot_factory("http", slack_timeout=1.0, **FAST)
    lost = bot.slack.hold("chat.postMessage", when=is_reply, after=True)  # posted, answer held
    _, url = await bot.command(f"{FULL} escalation")
    await lost.wait_until_held(1, timeout=10)
    [status] = [m for m in bot.slack.messages.values() if m.is_reply]
    [session_id] = bot.evo.sessions
    end_session(bot, session_id, after_seconds=30, outcome="No answer")
    await wait_for_edit(bot, status, "Ended: No answer", timeout=20)
    lost.open()
    await bot.settle()
    assert [m for m in bot.slack.messages.values() if m.is_reply] == [status]
    assert bot.slack.responses_to(url) == []  # the thread had it: no copy through response_url


async def test_a_status_message_whose_answer_s_connection_dropped_is_posted_once(
    bot_factory: BotFactory,
) -> None:
    # Slack posts the call's status message, then the connection drops before its answer (a proxy
    # or the network failing mid-answer). Sent again blindly, it would be in the thread twice, the
    # first copy left at "Call placed" for good: it is found by the id it carries instead.
    bot = await bot_factory("http", **FAST)
    bot.slack.cut("chat.postMessage", when=is_reply)
    _, url = await bot.command(f"{FULL} escalation")
    await bot.evo.wait_for_posts(1)
    [session_id] = bot.evo.sessions
    await until(lambda: any(m.is_reply for m in bot.slack.messages.values()))
    [status] = [m for m in bot.slack.messages.values() if m.is_reply]
    end_session(bot, session_id, after_seconds=30, outcome="No answer")
    await wait_for_edit(bot, status, "Ended: No answer")
    await bot.settle()
    assert [m for m in bot.slack.messages.values() if m.is_reply] == [status]
    assert bot.slack.responses_to(url) == []


async def test_a_response_url_post_whose_answer_s_connection_dropped_is_shown_once(
    bot_factory: BotFactory,
) -> None:
    # In a channel the bot can't post in, the call's parent goes through the response URL, which
    # shows it; then the connection drops before Slack's answer. Sent again, the channel would
    # show it twice: the news takes the next way instead, the direct message, to the outcome.
    bot = await bot_factory("http", **FAST)
    bot.slack.fail("chat.postMessage", "channel_not_found", when=lambda c: c["channel"] == "G0PRIV")
    bot.slack.cut_responses()
    _, url = await bot.command(f"{FULL} escalation", channel_id="G0PRIV")
    await bot.evo.wait_for_posts(1)
    [session_id] = bot.evo.sessions
    end_session(bot, session_id, after_seconds=30, outcome="No answer")
    await bot.slack.wait_for_call(
        "chat.update", lambda c: c["channel"] == "D0MANAGER" and "Ended: No answer" in c["text"])
    [parent] = bot.slack.responses_to(url)
    assert MASKED in parent["text"] and "Call placed" not in parent["text"]
