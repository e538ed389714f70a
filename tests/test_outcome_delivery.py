"""Every outcome reaches the requester, however Slack answers on the way: an outcome mark Slack
refuses for a moment, a response URL that already carried a post, a thread that refuses replies."""

from __future__ import annotations

from prometheus_client import generate_latest

from bot.standins.evovoice import ErrorStatus
from tests.conftest import BotFactory, BotUnderTest, policy_with, until
from tests.follow_helpers import (
    FAST,
    FULL,
    MASKED,
    end_session,
    is_thread_reply,
    parent_of,
    status_message,
    texts,
    wait_for_edit,
    wait_for_mark,
)
from tests.interactions import click, interact, open_from_shortcut, state, submission

CANADA = "+14165550123"
CANADA_MASKED = "+1 416 ••• 0123"


async def test_a_not_placed_parent_edit_slack_refuses_is_tried_again(
    bot_factory: BotFactory,
) -> None:
    bot = await bot_factory("http", **FAST)
    bot.evo.queue_outgoing(ErrorStatus(400, "Flow is disabled"))
    # The one edit that would tell the channel is refused once (a 5xx, say).
    bot.slack.fail("chat.update", "internal_error", times=1)
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    assert "Call not placed" in (status.text or "")
    parent = parent_of(bot, status)
    assert await wait_for_mark(bot, parent) == "x"
    assert texts(parent)[-1].endswith("\n❌ Not placed.")


async def test_a_confirmed_call_keeps_the_click_s_last_response_url_post_for_the_outcome(
    bot_factory: BotFactory,
) -> None:
    # In a private channel without the bot, the click's response URL carries "Confirmed" first:
    # one of its five posts is gone before the call's parent, and the outcome still needs one.
    bot = await bot_factory("http", **FAST)
    bot.slack.fail("chat.postMessage", "channel_not_found", when=lambda c: c["channel"] == "G0PRIV")
    _, asked = await bot.command(f"{CANADA} escalation", channel_id="G0PRIV")
    [question] = await bot.slack.wait_for_response(asked)
    _, url = await click(bot, question)
    await bot.evo.wait_for_posts(1)
    [session_id] = bot.evo.sessions
    await bot.slack.wait_for_response(url, n=3)  # Confirmed, the parent, Ringing
    # Answered, and the name of who answered comes a moment later: two more changes to show.
    bot.evo.set_session_state(session_id, callState="Connected")
    await polled(bot, session_id)
    bot.evo.set_session_state(session_id, callState="Connected", answeredByName="Alice")
    await polled(bot, session_id)
    end_session(bot, session_id, after_seconds=42, outcome="Completed")
    answers = await bot.slack.wait_for_response(url, n=5)
    await bot.settle()
    assert CANADA_MASKED in answers[-1]["text"] and "Ended: Completed" in answers[-1]["text"]
    assert [p.status for p in bot.slack.response_posts if p.url == url] == [200] * 5
    assert bot.slack.channel_messages("U0MANAGER") == []  # no direct message was needed


async def test_a_form_whose_thread_refuses_replies_tells_the_requester_at_once(
    bot_factory: BotFactory,
) -> None:
    # The shortcut's form brings no response URL: the status goes by direct message, from the
    # first status on, not only once the call is over.
    bot = await bot_factory("http", **FAST)
    bot.slack.fail("chat.postMessage", "internal_error", when=is_thread_reply)
    view = await open_from_shortcut(bot)
    await interact(bot, submission(view, state(channel="C0INCIDENT")))
    dm = await bot.slack.wait_for_call(
        "chat.postMessage", lambda c: c.ok and c["channel"] == "U0MANAGER")
    assert MASKED in dm["text"] and "Call placed" in dm["text"] and "Ended" not in dm["text"]
    assert dm.response is not None
    ts = dm.response["ts"]
    [session_id] = bot.evo.sessions
    end_session(bot, session_id, after_seconds=30, outcome="Completed")
    await bot.slack.wait_for_call(
        "chat.update",
        lambda c: c.params.get("ts") == ts and "Ended: Completed" in c["text"])


async def test_a_reaction_slack_refuses_for_a_moment_is_added_all_the_same(
    bot_factory: BotFactory,
) -> None:
    bot = await bot_factory("http", **FAST)
    bot.slack.fail("reactions.add", "internal_error", times=1)
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    [session_id] = bot.evo.sessions
    end_session(bot, session_id, after_seconds=30, outcome="Completed")
    parent = parent_of(bot, status)
    await bot.slack.wait_for_call(
        "reactions.add", lambda c: c.ok and c.params.get("timestamp") == parent.ts)
    assert texts(parent)[-1].endswith("❌ Not answered.")



async def test_an_outcome_slack_refuses_by_direct_message_for_a_moment_still_arrives(
    bot_factory: BotFactory,
) -> None:
    # In a private channel without the bot, past the response URL's life: the outcome goes by
    # direct message, and Slack refusing that once (a 5xx) only delays it.
    bot = await bot_factory("http", **FAST)
    bot.slack.fail("chat.postMessage", "channel_not_found", when=lambda c: c["channel"] == "G0PRIV")
    _, url = await bot.command(f"{FULL} escalation", channel_id="G0PRIV")
    await bot.slack.wait_for_response(url, n=2)  # the parent, Ringing
    [session_id] = bot.evo.sessions
    bot.slack.expire_response_url(url)
    bot.slack.fail("chat.postMessage", "internal_error", times=1,
                   when=lambda c: c["channel"] == "U0MANAGER")
    end_session(bot, session_id, after_seconds=42, outcome="No answer")
    dm = await bot.slack.wait_for_call(
        "chat.postMessage", lambda c: c.ok and c["channel"] == "U0MANAGER")
    assert MASKED in dm["text"] and "Ended: No answer" in dm["text"]


async def test_a_call_the_channel_and_the_response_url_refuse_is_followed_by_direct_message(
    bot_factory: BotFactory,
) -> None:
    # In a private channel without the bot, and Slack refusing the command's response URL: the
    # call's parent goes to the requester by direct message, and its thread there follows the call
    # to its outcome.
    bot = await bot_factory("http", **FAST)
    bot.slack.fail("chat.postMessage", "channel_not_found", when=lambda c: c["channel"] == "G0PRIV")
    url = bot.slack.response_url()
    bot.slack.expire_response_url(url)
    await bot.command(f"{FULL} escalation", channel_id="G0PRIV", response_url=url)
    dm = await bot.slack.wait_for_call(
        "chat.postMessage", lambda c: c.ok and c["channel"] == "U0MANAGER")
    assert MASKED in dm["text"] and not is_thread_reply(dm)
    assert dm.response is not None
    status = await status_message(bot)
    assert status.thread_ts == dm.response["ts"] and "Call placed" in (status.text or "")
    [session_id] = bot.evo.sessions
    end_session(bot, session_id, after_seconds=30, outcome="Completed")
    await wait_for_edit(bot, status, "Ended: Completed")
    # Edited in the direct message's channel (chat.update takes no user ID for it).
    assert "Ended: Completed" in (status.text or "")


async def polled(bot: BotUnderTest, session_id: str, times: int = 2) -> None:
    """Wait until the bot read the session `times` more times."""
    seen = len(bot.evo.reads_of(session_id))
    await until(lambda: len(bot.evo.reads_of(session_id)) >= seen + times)


async def test_a_call_placed_with_nobody_to_tell_still_counts_as_placed(
    bot_factory: BotFactory,
) -> None:
    # Slack refuses the channel, the response_url and the direct message: the call went out all
    # the same, so it is counted as placed and keeps its rate-limit slot.
    bot = await bot_factory("http", policy=policy_with(per_user="1/10m"))
    bot.slack.fail("chat.postMessage", "channel_not_found", times=2)
    url = bot.slack.response_url()
    bot.slack.expire_response_url(url)
    await bot.command(f"{FULL} escalation", response_url=url)
    await bot.evo.wait_for_posts(1)
    await bot.settle()
    counted = generate_latest(bot.runtime.metrics.registry).decode()
    assert 'callbot_calls_total{outcome="placed"} 1.0' in counted
    _, url = await bot.command("+18144043001 escalation")
    [answer] = await bot.slack.wait_for_response(url)
    assert "You have placed 1 call in the last 10 minutes" in answer["text"]
    assert len(bot.evo.outgoing_posts) == 1


async def test_a_call_whose_bot_was_removed_from_its_private_channel_tells_its_outcome_by_dm(
    bot_factory: BotFactory,
) -> None:
    # Someone removes the bot from the private channel while the call rings: Slack refuses every
    # edit there (channel_not_found) and always will. Tried again for ten minutes, the outcome
    # would reach nobody: the requester hears it by direct message, with the call's context.
    bot = await bot_factory("http", **FAST)
    await bot.command(f"{FULL} escalation", channel_id="G0INCIDENT")
    status = await status_message(bot)
    bot.slack.channels["G0INCIDENT"] = {"is_private": True, "is_member": False}
    [session_id] = bot.evo.sessions
    end_session(bot, session_id, after_seconds=42, outcome="No answer")
    dm = await bot.slack.wait_for_call(
        "chat.postMessage", lambda c: c.ok and c["channel"] == "U0MANAGER")
    assert MASKED in dm["text"] and "Ended: No answer" in dm["text"]
    await bot.settle()
    assert "Ended" not in (status.text or "")  # Slack kept what it showed before
    assert [c["channel"] for c in bot.slack.calls_to("chat.postMessage")].count("U0MANAGER") == 1


async def test_a_status_message_someone_deleted_mid_call_tells_the_outcome_by_dm(
    bot_factory: BotFactory,
) -> None:
    # An admin deletes the call's status message while the call rings: Slack refuses its edits
    # for good (message_not_found). The requester hears how the call went by direct message, and
    # the channel on the parent, as always.
    bot = await bot_factory("http", **FAST)
    await bot.command(f"{FULL} escalation")
    status = await status_message(bot)
    bot.slack.delete_message(status.channel, status.ts)
    [session_id] = bot.evo.sessions
    end_session(bot, session_id, after_seconds=42, outcome="No answer")
    dm = await bot.slack.wait_for_call(
        "chat.postMessage", lambda c: c.ok and c["channel"] == "U0MANAGER")
    assert MASKED in dm["text"] and "Ended: No answer" in dm["text"]
    parent = parent_of(bot, status)
    assert await wait_for_mark(bot, parent) == "x"
    assert texts(parent)[-1].endswith("❌ Not answered.")


async def test_a_not_placed_outcome_whose_direct_message_slack_fails_once_still_arrives(
    bot_factory: BotFactory,
) -> None:
    # In a private channel without the bot, the command's response URL carries the parent and
    # has no use left; Evo Voice refuses the call, and Slack fails the direct message telling so
    # once (a 5xx). The call is over at once, so no later change of it would tell it: the
    # outcome must still arrive, once.
    bot = await bot_factory("http", **FAST)
    bot.slack.fail("chat.postMessage", "channel_not_found", when=lambda c: c["channel"] == "G0PRIV")
    bot.slack.response_url_max_posts = 1
    bot.slack.fail("chat.postMessage", "internal_error", times=1,
                   when=lambda c: c["channel"] == "U0MANAGER")
    bot.evo.queue_outgoing(ErrorStatus(400, "Flow is disabled"))
    _, url = await bot.command(f"{FULL} escalation", channel_id="G0PRIV")
    [parent] = await bot.slack.wait_for_response(url)
    assert MASKED in parent["text"]

    def told() -> list[str]:
        return [c["text"] for c in bot.slack.calls_to("chat.postMessage")
                if c.ok and c["channel"] == "U0MANAGER"]

    await until(lambda: told(), timeout=10)
    await bot.settle()
    [dm] = told()
    assert MASKED in dm and "Call not placed" in dm
