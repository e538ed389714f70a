"""`/call test` end to end: it rings the requester's own phone with the on-call flow, no other."""

from __future__ import annotations

import pytest

from bot.standins.slack import slash_command_body
from tests.conftest import POLICY, POLICY_NO_REPEAT_QUESTION, BotFactory, BotUnderTest
from tests.escalations import MANAGER_ONLY
from bot.calls.status_views import CALL_AGAIN_ACTION
from tests.follow_helpers import (
    FAST,
    audit_records,
    click,
    end_session,
    services,
    status_message,
    wait_for_edit,
)


async def answer_to(bot: BotUnderTest, text: str, **kwargs: str) -> dict[str, object]:
    _, url = await bot.command(text, **kwargs)
    [answer] = await bot.slack.wait_for_response(url)
    await bot.settle()
    return answer


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_rings_the_requesters_own_number_with_the_oncall_flow(
    bot_factory: BotFactory, mode: str
) -> None:
    bot = await bot_factory(mode, policy=MANAGER_ONLY)
    await bot.command("test")
    [post] = await bot.evo.wait_for_posts(1)
    await bot.settle()
    assert post.json["numberToDial"] == "+18144043090"
    assert post.json["flowId"] == "flow-esc"
    [parent] = bot.slack.channel_messages("C0OPS")
    assert "test call" in str(parent.params) and "+1 814 ••• 3090" in str(parent.text)
    # The audit trail tells a test call from a page.
    [record] = await audit_records(bot)
    assert (record.user_id, record.origin) == ("U0MANAGER", "test")


async def test_rings_with_whichever_flow_the_oncall_section_names(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http", policy=MANAGER_ONLY.replace('"Escalation"', '"Wake Up Call"'))
    await bot.command("test")
    [post] = await bot.evo.wait_for_posts(1)
    assert post.json["flowId"] == "flow-wake"


async def test_a_request_slack_delivers_twice_rings_once(bot_factory: BotFactory) -> None:
    # Without the "you called this number 20 s ago" question, which would hide a second dial.
    bot = await bot_factory("http", policy=POLICY_NO_REPEAT_QUESTION + MANAGER_ONLY[len(POLICY):])
    body = slash_command_body(text="test", user_id="U0MANAGER", trigger_id="5.6.again",
                              response_url=bot.slack.response_url())
    await bot.post_signed(body)
    await bot.evo.wait_for_posts(1)
    await bot.settle()
    await bot.post_signed(body)  # Slack's retry of the same command
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 1


async def test_a_number_from_the_slack_profile_serves_too(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http", policy=MANAGER_ONLY)
    bot.slack.users["U0ADMIN"] = {"profile": {"phone": "+1 814 404 3099"}}
    await bot.command("test", user_id="U0ADMIN")
    [post] = await bot.evo.wait_for_posts(1)
    assert post.json["numberToDial"] == "+18144043099"


async def test_without_a_number_nothing_rings_and_you_learn_why(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http", policy=MANAGER_ONLY)
    answer = await answer_to(bot, "test", user_id="U0ADMIN")  # no [people] entry, empty profile
    assert answer["response_type"] == "ephemeral"
    assert "phone number" in str(answer["text"]) and "Slack profile" in str(answer["text"])
    assert bot.evo.outgoing_posts == []


async def test_needs_an_oncall_flow(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http")  # POLICY: no [oncall]
    answer = await answer_to(bot, "test")
    assert "No on-call rotation is set up" in str(answer["text"])
    assert bot.evo.outgoing_posts == []


async def test_needs_a_role_like_any_call(bot_factory: BotFactory) -> None:
    intruder = 'U0MANAGER = "(814) 404-3090"\nU0INTRUDER = "+18144043091"'
    policy = MANAGER_ONLY.replace('U0MANAGER = "(814) 404-3090"', intruder)
    bot = await bot_factory("http", policy=policy)
    answer = await answer_to(bot, "test", user_id="U0INTRUDER")
    assert "Manager" in str(answer["text"])
    assert bot.evo.outgoing_posts == []


async def test_without_a_role_or_a_number_you_learn_of_the_role(bot_factory: BotFactory) -> None:
    # Adding a number would not help: the role is what is missing.
    bot = await bot_factory("http", policy=MANAGER_ONLY)
    answer = await answer_to(bot, "test", user_id="U0INTRUDER")  # no role, no number
    assert "Manager" in str(answer["text"])
    assert "Slack profile" not in str(answer["text"])
    assert bot.evo.outgoing_posts == []


async def test_takes_no_arguments(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http", policy=MANAGER_ONLY)
    ack, _ = await bot.command("test +18144043093")
    assert "takes nothing after it" in ack.text
    await bot.settle()
    assert bot.evo.outgoing_posts == []


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_a_refusal_slack_delivers_twice_is_told_once(bot_factory: BotFactory,
                                                           mode: str) -> None:
    from bot.standins.slack import slash_command_payload

    bot = await bot_factory(mode, policy=MANAGER_ONLY)
    url = bot.slack.response_url()
    fields = dict(text="test", user_id="U0ADMIN", trigger_id="5.6.twice", response_url=url)
    for _ in range(2):  # the same command again: a redelivered envelope, a proxy resending
        if bot.mode == "socket":
            await bot.slack.send_envelope("slash_commands", slash_command_payload(**fields))
        else:
            assert (await bot.post_signed(slash_command_body(**fields))).status == 200
    await bot.settle()
    [told] = bot.slack.responses_to(url)  # no [people] entry, empty profile: told once
    assert "Slack profile" in str(told["text"])
    assert bot.evo.outgoing_posts == []


async def test_call_again_on_a_test_call_rings_only_for_the_person_it_tested(
    bot_factory: BotFactory,
) -> None:
    """A test call rings only the person who asked: Call again by someone else (an admin, who may
    press any call's buttons) would ring that person's phone, a number the admin never saw."""
    bot = await bot_factory("http", policy=MANAGER_ONLY, **FAST)
    await bot.command("test")
    status = await status_message(bot)
    [session_id] = bot.evo.sessions
    end_session(bot, session_id, after_seconds=5, outcome="Completed")
    await wait_for_edit(bot, status, "Ended")

    _, url = await click(bot, status, CALL_AGAIN_ACTION, user_id="U0ADMIN")
    [answer] = await bot.slack.wait_for_response(url)
    assert "rings only <@U0MANAGER>" in str(answer["text"]), answer
    assert "rings only <@U0MANAGER>" in str(answer["blocks"]), answer  # drawn as a mention
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 1

    # Its own tester may hear it again; that call is a test call too.
    await click(bot, status, CALL_AGAIN_ACTION, user_id="U0MANAGER")
    again = await status_message(bot, 2)
    [_, session_id] = bot.evo.sessions
    end_session(bot, session_id, after_seconds=5, outcome="Completed")
    await wait_for_edit(bot, again, "Ended")
    _, url = await click(bot, again, CALL_AGAIN_ACTION, user_id="U0ADMIN")
    [answer] = await bot.slack.wait_for_response(url)
    assert "rings only <@U0MANAGER>" in str(answer["text"]), answer
    await bot.settle()
    assert [p.json["numberToDial"] for p in bot.evo.outgoing_posts] == ["+18144043090"] * 2


async def test_call_again_on_a_test_call_never_rings_a_number_no_longer_yours(
    bot_factory: BotFactory,
) -> None:
    """A test call rings the number you have now. Its Call again, once your number changed (the
    test rang someone else's phone: a typo in your profile, now fixed), would ring the old one, a
    stranger's, again; nothing rings, and you are told to run the test again."""
    bot = await bot_factory("http", policy=MANAGER_ONLY, **FAST)
    bot.slack.users["U0ADMIN"] = {"profile": {"phone": "+1 814 404 3099"}}
    await bot.command("test", user_id="U0ADMIN")
    status = await status_message(bot)
    [session_id] = bot.evo.sessions
    end_session(bot, session_id, after_seconds=30, outcome="No answer")
    await wait_for_edit(bot, status, "Ended")

    bot.slack.users["U0ADMIN"] = {"profile": {"phone": "+1 814 404 3098"}}
    services(bot).oncall.phones.forget()  # as when the cached profile expires
    _, url = await click(bot, status, CALL_AGAIN_ACTION, user_id="U0ADMIN")
    [answer] = await bot.slack.wait_for_response(url)
    await bot.settle()
    assert "/call test" in str(answer["text"]), answer
    assert [p.json["numberToDial"] for p in bot.evo.outgoing_posts] == ["+18144043099"]

    # The number you have now rings with /call test, and its own Call again rings it again.
    await bot.command("test", user_id="U0ADMIN")
    again = await status_message(bot, 2)
    [_, session_id] = bot.evo.sessions
    end_session(bot, session_id, after_seconds=5, outcome="Completed")
    await wait_for_edit(bot, again, "Ended")
    await click(bot, again, CALL_AGAIN_ACTION, user_id="U0ADMIN")
    await bot.evo.wait_for_posts(3)
    assert [p.json["numberToDial"] for p in bot.evo.outgoing_posts] == [
        "+18144043099", "+18144043098", "+18144043098"]


@pytest.mark.parametrize(
    ("user_id", "decision"), [("U0INTRUDER", "denied"), ("U0ADMIN", "refused")],
    ids=["no role", "no number"])
async def test_a_refused_test_call_is_in_the_audit_trail(
    bot_factory: BotFactory, user_id: str, decision: str
) -> None:
    """A `/call test` refused before its call is made (no role; no number to ring) is recorded
    like any refused `/call`: who asked, as a test call, and why."""
    bot = await bot_factory("http", policy=MANAGER_ONLY)
    await answer_to(bot, "test", user_id=user_id)
    [record] = await audit_records(bot)
    assert (record.user_id, record.origin, str(record.decision)) == (user_id, "test", decision)
    assert record.reason
